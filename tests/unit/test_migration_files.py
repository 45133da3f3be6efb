"""Discovery, naming errors, ordering, cycles, checksums and statement splitting: no database."""

import itertools
from pathlib import Path

import pytest

import pgfast


def write(root: Path, relative: str, text: str = "") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_discovery_finds_nested_migration_dirs_sorted_by_version(tmp_path: Path) -> None:
    write(tmp_path, "app/users/migrations/20250102000000_users_up.sql", "CREATE TABLE users ();")
    write(tmp_path, "app/users/migrations/20250102000000_users_down.sql", "DROP TABLE users;")
    write(tmp_path, "db/migrations/core/20250101000000_core_up.sql", "SELECT 1;")
    found = pgfast.discover_migrations(root=tmp_path)
    assert [(m.version, m.name, m.down_path is not None) for m in found] == [
        (20250101000000, "core", False),
        (20250102000000, "users", True),
    ]


def test_discovery_prunes_virtualenvs_hidden_and_package_dirs(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_real_up.sql")
    write(tmp_path, "venv/pyvenv.cfg")
    write(tmp_path, "venv/lib/migrations/2_from_venv_up.sql")
    write(tmp_path, ".git/migrations/3_hidden_up.sql")
    write(tmp_path, "x/site-packages/pkg/migrations/4_site_up.sql")
    write(tmp_path, "web/node_modules/migrations/5_node_up.sql")
    assert [m.name for m in pgfast.discover_migrations(root=tmp_path)] == ["real"]


def test_discovery_judges_only_paths_below_the_root(tmp_path: Path) -> None:
    project = tmp_path / ".hidden" / "site-packages" / "app"  # pruned names above the root are fine
    write(project, "migrations/1_ok_up.sql")
    assert [m.name for m in pgfast.discover_migrations(root=project)] == ["ok"]


def test_nested_migrations_dir_is_not_discovered_twice(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_outer_up.sql")
    write(tmp_path, "migrations/sub/migrations/2_inner_up.sql")
    assert [m.version for m in pgfast.discover_migrations(root=tmp_path)] == [1, 2]


def test_explicit_dirs_win_and_env_var_is_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "migrations/1_auto_up.sql")
    write(tmp_path, "a/1_explicit_up.sql")
    write(tmp_path, "b/2_from_env_up.sql")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PGFAST_MIGRATIONS_DIRS", str(tmp_path / "b"))
    assert [m.name for m in pgfast.discover_migrations([tmp_path / "a"])] == ["explicit"]
    assert [m.name for m in pgfast.discover_migrations()] == ["from_env"]
    monkeypatch.delenv("PGFAST_MIGRATIONS_DIRS")
    assert [m.name for m in pgfast.discover_migrations()] == ["auto"]


def test_missing_configured_dir_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGFAST_MIGRATIONS_DIRS", str(tmp_path / "nope"))
    with pytest.raises(pgfast.ConfigError, match=r"PGFAST_MIGRATIONS_DIRS names .*nope.*not a directory"):
        pgfast.discover_migrations()


@pytest.mark.parametrize(
    "name", ["20250101_Users_up.sql", "abc_users_up.sql", "0_zero_up.sql", "20250101_users-x_down.sql"]
)
def test_misnamed_file_is_an_error_naming_it(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"migrations/{name}")
    with pytest.raises(pgfast.MigrationFileError, match="cannot parse this migration file name") as info:
        pgfast.discover_migrations(root=tmp_path)
    assert info.value.paths == (path,)
    assert str(path) in str(info.value)


def test_down_without_up_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    orphan = write(tmp_path, "migrations/2_b_down.sql")
    with pytest.raises(pgfast.MigrationFileError, match=r"down file\(s\) without an up file: .*2_b_down.sql"):
        pgfast.discover_migrations(root=tmp_path)
    assert orphan.exists()


def test_duplicate_versions_name_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "migrations/a/7_first_up.sql")
    second = write(tmp_path, "migrations/b/7_second_up.sql")
    with pytest.raises(pgfast.MigrationFileError, match="two migrations have version 7") as info:
        pgfast.discover_migrations(root=tmp_path)
    assert set(info.value.paths) == {first, second}


def test_header_reads_depends_on_and_no_transaction(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    write(tmp_path, "migrations/2_b_up.sql")
    write(
        tmp_path,
        "migrations/3_c_up.sql",
        "-- add an index\n--depends_on: 2 1\n-- pgfast: no-transaction\n\nCREATE INDEX CONCURRENTLY i ON t (x);\n",
    )
    c = pgfast.discover_migrations(root=tmp_path)[-1]
    assert c.depends_on == (1, 2)
    assert c.no_transaction


def test_bad_depends_on_value_names_file(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql", "-- depends_on: first\nSELECT 1;")
    with pytest.raises(pgfast.MigrationFileError, match=r"1_a_up.sql:1: depends_on lists 'first'"):
        pgfast.discover_migrations(root=tmp_path)


def migration(version: int, *deps: int) -> pgfast.Migration:
    return pgfast.Migration(version, f"m{version}", Path(f"{version}_m{version}_up.sql"), None, "", "x", deps)


def test_order_is_topological_with_version_tie_break() -> None:
    ordered = pgfast.order_migrations(
        [migration(5), migration(1, 4), migration(3), migration(4), migration(2)]
    )
    assert [m.version for m in ordered] == [2, 3, 4, 1, 5]


def test_unknown_dependency_names_both_versions() -> None:
    with pytest.raises(
        pgfast.DependencyError, match=r"1_m1_up.sql: depends_on 9, but no migration has version 9"
    ):
        pgfast.order_migrations([migration(1, 9)])


def test_cycle_error_prints_the_whole_cycle() -> None:
    with pytest.raises(pgfast.CycleError) as info:
        pgfast.order_migrations([migration(1, 3), migration(2, 1), migration(3, 2), migration(4)])
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1] and set(cycle) == {1, 2, 3}
    text = str(info.value)
    assert " -> ".join(f"{v}_m{v}" for v in cycle) in text
    # each needs the next: 1 needs 3, 3 needs 2, 2 needs 1
    needs = {1: 3, 3: 2, 2: 1}
    assert all(needs[a] == b for a, b in itertools.pairwise(cycle))


def test_checksum_ignores_line_endings_and_down_file(tmp_path: Path) -> None:
    write(tmp_path, "a/migrations/1_x_up.sql", "SELECT 1;\nSELECT 2;\n")
    write(tmp_path, "b/migrations/1_x_up.sql", "SELECT 1;\r\nSELECT 2;\r\n")
    write(tmp_path, "b/migrations/1_x_down.sql", "SELECT 0;")
    (a,) = pgfast.discover_migrations(root=tmp_path / "a")
    (b,) = pgfast.discover_migrations(root=tmp_path / "b")
    assert a.checksum == b.checksum
    write(tmp_path, "a/migrations/1_x_up.sql", "SELECT 1;\nSELECT 3;\n")
    (changed,) = pgfast.discover_migrations(root=tmp_path / "a")
    assert changed.checksum != a.checksum


def test_byte_order_mark_is_dropped_so_header_and_checksum_see_the_sql(tmp_path: Path) -> None:
    text = "-- pgfast: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x);\n"
    write(tmp_path, "a/migrations/1_x_up.sql", text)
    (tmp_path / "b/migrations").mkdir(parents=True)
    (tmp_path / "b/migrations/1_x_up.sql").write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Notepad saves
    (plain,) = pgfast.discover_migrations(root=tmp_path / "a")
    (marked,) = pgfast.discover_migrations(root=tmp_path / "b")
    assert marked.sql == text and marked.no_transaction
    assert marked.checksum == plain.checksum


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1; SELECT 2", ["SELECT 1", " SELECT 2"]),
        ("SELECT ';'; SELECT 'it''s;'", ["SELECT ';'", " SELECT 'it''s;'"]),
        ("SELECT E'\\';'; SELECT 2", ["SELECT E'\\';'", " SELECT 2"]),
        ('SELECT 1 AS "a;b"; SELECT 2', ['SELECT 1 AS "a;b"', " SELECT 2"]),
        (
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql; SELECT 2",
            ["CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql", " SELECT 2"],
        ),
        (
            "DO $body$ BEGIN PERFORM 1; END $body$; SELECT 2",
            ["DO $body$ BEGIN PERFORM 1; END $body$", " SELECT 2"],
        ),
        ("SELECT 1 -- no; split\n; SELECT 2", ["SELECT 1 -- no; split\n", " SELECT 2"]),
        ("SELECT /* a; /* nested; */ b; */ 1; SELECT 2", ["SELECT /* a; /* nested; */ b; */ 1", " SELECT 2"]),
        ("-- only a comment\n/* and; another */\n", []),
        ("", []),
        ("SELECT 1;;  ; -- trailing\n", ["SELECT 1"]),
        (  # an SQL-standard function body, a CASE ... END inside it
            "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC "
            "SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END; SELECT 2; END; SELECT 3",
            [
                "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC "
                "SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END; SELECT 2; END",
                " SELECT 3",
            ],
        ),
        ("begin /* c */ atomic select 1; end; SELECT 2", ["begin /* c */ atomic select 1; end", " SELECT 2"]),
        ("BEGIN; ATOMIC; SELECT end_date FROM t", ["BEGIN", " ATOMIC", " SELECT end_date FROM t"]),
        ("SELECT a$b, straße FROM t; SELECT 2", ["SELECT a$b, straße FROM t", " SELECT 2"]),
    ],
)
def test_split_statements_respects_quotes_and_comments(sql: str, expected: list[str]) -> None:
    pieces = pgfast.split_statements(sql)
    assert [text for _, text in pieces] == expected
    assert all(sql[offset : offset + len(text)] == text for offset, text in pieces)


def test_create_migration_writes_a_pair_and_never_overwrites(tmp_path: Path) -> None:
    import datetime as dt

    moment = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    up, down = pgfast.create_migration(tmp_path / "billing", "add_invoices", now=moment)
    assert up == tmp_path / "billing/migrations/20250304050607_add_invoices_up.sql"
    assert down.name == "20250304050607_add_invoices_down.sql"
    again_up, _ = pgfast.create_migration(tmp_path / "billing" / "migrations", "add_invoices", now=moment)
    assert again_up.name == "20250304050608_add_invoices_up.sql"  # the taken second is skipped
    first, _ = pgfast.discover_migrations(root=tmp_path)
    assert (first.depends_on, first.no_transaction) == ((), False)  # the template's hints are not headers
    assert pgfast.split_statements(first.sql) == []


def test_create_migration_rejects_bad_names(tmp_path: Path) -> None:
    with pytest.raises(
        pgfast.ConfigError, match=r"'Add Users' must use only a-z, 0-9 and _; e.g. 'add_users'"
    ):
        pgfast.create_migration(tmp_path, "Add Users")
    assert not (tmp_path / "migrations").exists()
