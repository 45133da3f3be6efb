"""Strict migration and fixture files, strict headers, and where discovery looks: no database."""

import logging
import os
from pathlib import Path

import pytest

import pgfast


def write(root: Path, relative: str, text: str = "SELECT 1;") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def discovery_error(root: Path) -> pgfast.MigrationFileError:
    with pytest.raises(pgfast.MigrationFileError) as info:
        pgfast.discover_migrations(root=root)
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize(
    ("name", "fix"),
    [
        ("2_b_Up.sql", "rename it to 2_b_up.sql"),
        ("2_b_up.SQL", "rename it to 2_b_up.sql"),
        ("2_b_upp.sql", "rename it to 2_b_up.sql"),
        ("0002_second.up.sql", "rename it to 0002_second_up.sql"),  # golang-migrate
        ("0002_second.down.sql", "rename it to 0002_second_down.sql"),
        (
            "001_first.sql",  # dbmate
            "rename it to 001_first_up.sql (a dbmate file: move its '-- migrate:down' section into "
            "001_first_down.sql)",
        ),
        ("20250101_users-x_down.sql", "rename it to 20250101_users_x_down.sql"),
        ("abc_users_up.sql", "rename it to VERSION_NAME_up.sql or VERSION_NAME_down.sql"),
    ],
)
def test_near_miss_file_names_are_errors_naming_the_expected_name(
    tmp_path: Path, name: str, fix: str
) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    path = write(tmp_path, f"migrations/{name}")
    error = discovery_error(tmp_path)
    assert str(error).startswith(f"{path}: cannot parse this migration file name; {fix} (")
    assert error.paths == (path,)


def test_another_tools_python_file_is_refused_not_skipped(tmp_path: Path) -> None:
    other = write(tmp_path, "migrations/0001_initial.PY", "")  # another tool's, e.g. Django's
    error = discovery_error(tmp_path)
    assert str(error).startswith(f"{other}: cannot parse this migration file name; rename it to ")
    assert "list pgfast's own in migrations_dirs / PGFAST_MIGRATIONS_DIRS" in str(error)


def test_other_files_init_and_pycache_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    write(tmp_path, "migrations/__init__.py", "")
    write(tmp_path, "migrations/__pycache__/stale_up.py", "")
    write(tmp_path, "migrations/README.md", "notes")
    write(tmp_path, "migrations/.gitkeep", "")
    write(tmp_path, "migrations/1_a_up.sql.bak", "")
    assert [m.label for m in pgfast.discover_migrations(root=tmp_path)] == ["1_a"]


@pytest.mark.parametrize(
    ("name", "fix"),
    [("1_users_Fixture.sql", "1_users_fixture.sql"), ("1_users.sql", "1_users_fixture.sql")],
)
def test_misnamed_fixture_is_an_error_naming_the_expected_name(tmp_path: Path, name: str, fix: str) -> None:
    write(tmp_path, "migrations/1_users_up.sql")
    path = write(tmp_path, f"fixtures/{name}")
    migrations = pgfast.discover_migrations(root=tmp_path)
    with pytest.raises(pgfast.MigrationFileError) as info:
        pgfast.discover_fixtures(migrations, root=tmp_path)
    assert str(info.value).startswith(f"{path}: cannot parse this fixture file name; rename it to {fix} (")
    assert info.value.paths == (path,)


PGFAST_WORDS = "'-- pgfast: no-transaction' or '-- pgfast: lock_timeout=30s'"


@pytest.mark.parametrize(
    ("directive", "right"),
    [
        ("-- depend_on: 1", "'-- depends_on: VERSION, ...'"),
        ("-- depends on: 1", "'-- depends_on: VERSION, ...'"),
        ("-- dependson: 1", "'-- depends_on: VERSION, ...'"),
        ("-- pgfast: no_transaction", PGFAST_WORDS),
        ("-- pgfast: notransaction", PGFAST_WORDS),
        ("-- pgfast: fast", PGFAST_WORDS),
        ("-- pgfast: lock-timeout=1s", PGFAST_WORDS),
    ],
)
def test_directive_that_does_not_parse_names_file_line_and_spelling(
    tmp_path: Path, directive: str, right: str
) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    path = write(tmp_path, "migrations/2_b_up.sql", f"-- add b\n{directive}\nSELECT 1;")
    error = discovery_error(tmp_path)
    assert str(error) == f"{path}:2: cannot parse the directive {directive!r}; write {right}"
    assert (error.paths, error.line) == ((path,), 2)


@pytest.mark.parametrize("directive", ["-- depends_on: 1", "-- pgfast: no-transaction", "--DEPENDS_ON: 1"])
def test_directive_after_the_first_statement_is_an_error(tmp_path: Path, directive: str) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    path = write(tmp_path, "migrations/2_b_up.sql", f"-- b\nCREATE TABLE b ();\n{directive}\n")
    error = discovery_error(tmp_path)
    assert str(error) == (
        f"{path}:3: {directive!r} comes after the first statement, where pgfast does not read it; "
        "move it into the header at the top of the file"
    )
    assert error.line == 3


def test_prose_comments_are_not_directives(tmp_path: Path) -> None:
    write(
        tmp_path,
        "migrations/1_a_up.sql",
        "-- depends on the extension being there\nSELECT 1;\n-- pgfast rocks\n",
    )
    assert pgfast.discover_migrations(root=tmp_path)[0].depends_on == ()


def test_down_header_is_read_at_discovery(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    write(
        tmp_path, "migrations/1_a_down.sql", "-- undo\n-- pgfast: no-transaction\nDROP INDEX CONCURRENTLY i;"
    )
    write(tmp_path, "migrations/2_b_up.sql")
    write(tmp_path, "migrations/2_b_down.sql", "DROP TABLE b;\n-- pgfast: no-transaction\n")
    bad = discovery_error(tmp_path)
    assert str(bad).startswith(f"{tmp_path / 'migrations/2_b_down.sql'}:2: ")
    write(tmp_path, "migrations/2_b_down.sql", "DROP TABLE b;")
    a, b = pgfast.discover_migrations(root=tmp_path)
    assert (a.down_no_transaction, b.down_no_transaction, a.no_transaction) == (True, False, False)
    write(tmp_path, "migrations/2_b_down.sql", "-- depends_on: 1\nDROP TABLE b;")
    assert "depends_on belongs in the up file's header; move it to 2_b_up.sql" in str(
        discovery_error(tmp_path)
    )


def test_symlinked_directories_are_followed_once_and_loops_end(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    write(tmp_path, "shared/2_b_up.sql")
    (tmp_path / "migrations/shared").symlink_to(tmp_path / "shared", target_is_directory=True)
    (tmp_path / "migrations/again").symlink_to(tmp_path / "shared", target_is_directory=True)
    (tmp_path / "migrations/loop").symlink_to(tmp_path / "migrations", target_is_directory=True)
    assert [m.label for m in pgfast.discover_migrations(root=tmp_path)] == ["1_a", "2_b"]


@pytest.mark.parametrize("target", ["nowhere.sql", "self"])
def test_dangling_or_self_looping_symlink_is_one_line_naming_it(tmp_path: Path, target: str) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    link = tmp_path / "migrations" / ("2_b_up.sql" if target != "self" else "self")
    link.symlink_to(link.parent / target)
    error = discovery_error(tmp_path)
    assert str(error) == (
        f"{link}: broken symbolic link (its target {str(link.parent / target)!r} is missing or loops); "
        "point it at an existing file or directory, or delete it"
    )
    assert error.paths == (link,)


def test_version_above_bigint_is_an_error_at_discovery(tmp_path: Path) -> None:
    write(tmp_path, "migrations/9223372036854775807_last_up.sql")
    assert pgfast.discover_migrations(root=tmp_path)[0].version == 2**63 - 1
    path = write(tmp_path, "migrations/9223372036854775808_over_up.sql")
    assert str(discovery_error(tmp_path)) == (
        f"{path}: cannot parse this migration file name; version 9223372036854775808 is out of range: "
        "use 1 to 9223372036854775807 (the ledger stores a bigint), e.g. the UTC time YYYYMMDDHHMMSS"
    )


def test_build_output_directly_under_the_root_is_pruned(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    write(tmp_path, "build/lib/app/migrations/1_a_up.sql")  # a copy setuptools made
    write(tmp_path, "dist/app/migrations/1_a_up.sql")
    write(tmp_path, "src/app.egg-info/migrations/1_a_up.sql")
    write(tmp_path, "src/app/build/migrations/2_b_up.sql")  # only the root's own build/ is output
    assert [m.label for m in pgfast.discover_migrations(root=tmp_path)] == ["1_a", "2_b"]


def test_project_under_a_directory_called_build_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "build" / "dist" / "proj"
    write(project, "pyproject.toml", "")
    write(project, "migrations/1_a_up.sql")
    monkeypatch.chdir(project)
    assert [m.label for m in pgfast.discover_migrations()] == ["1_a"]


def test_default_root_is_the_project_root_and_subprojects_are_not_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c", "d"):
        write(tmp_path, f"{name}/pyproject.toml", "")
        write(tmp_path, f"{name}/migrations/1_{name}_up.sql")
    monkeypatch.chdir(tmp_path)
    assert pgfast.discover_migrations() == []  # not 4 projects' migrations at once
    write(tmp_path, "b/.git/HEAD", "")
    write(tmp_path, "b/app/migrations/2_app_up.sql")
    monkeypatch.chdir(tmp_path / "b" / "app")  # anywhere in project b: b's migrations, all of them
    assert [m.label for m in pgfast.discover_migrations()] == ["1_b", "2_app"]
    assert pgfast._project_root(tmp_path / "b" / "app") == tmp_path / "b"


def test_virtualenv_found_from_its_listing_is_pruned(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    write(tmp_path, "env/pyvenv.cfg", "")
    write(tmp_path, "env/lib/python3.11/dist-packages/x/migrations/2_b_up.sql")
    write(tmp_path, "usr/lib/python3/dist-packages/y/migrations/3_c_up.sql")
    assert [m.label for m in pgfast.discover_migrations(root=tmp_path)] == ["1_a"]


def test_unreadable_migration_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "migrations/1_a_up.sql")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert (
        str(discovery_error(tmp_path)) == f"{path}: cannot read it (Permission denied); fix its permissions"
    )


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads every directory; test_discovery_cli.py runs it as another user"
)
def test_unreadable_directory_is_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    (tmp_path / "locked").mkdir(mode=0)
    with caplog.at_level(logging.WARNING, "pgfast"):
        assert [m.label for m in pgfast.discover_migrations(root=tmp_path)] == ["1_a"]
    assert [r.getMessage() for r in caplog.records] == [
        f"pgfast: skipped 1 unreadable directory while looking for 'migrations' directories under {tmp_path}: "
        f"{tmp_path / 'locked'}"
    ]


@pytest.mark.parametrize(
    "header",
    [
        "-- depends-on: 1",
        "-- depends_on = 1",
        "/* depends_on: 1 */",
        "-- depends_on:",
        "-- pgfast no-transaction",
        "-- no-transaction",
        "/* pgfast: no-transaction */",
        "-- pgfast = no-transaction",
    ],
)
def test_more_directive_look_alikes_are_errors(tmp_path: Path, header: str) -> None:
    # Found by an adversarial pass: each was ignored and the migration applied without it.
    write(tmp_path, "migrations/1_a_up.sql")
    write(tmp_path, "migrations/2_b_up.sql", f"{header}\nCREATE INDEX CONCURRENTLY i ON t (x);\n")
    error = discovery_error(tmp_path)
    assert str(error).startswith(f"{tmp_path / 'migrations' / '2_b_up.sql'}:1: ")
    assert error.line == 1


def test_a_linked_file_is_a_migration_of_its_own_and_the_target_stays(tmp_path: Path) -> None:
    # Found by an adversarial pass: files were deduplicated by the file they point at, so a
    # regular migration vanished when another name linked to it.
    write(tmp_path, "migrations/1_a_up.sql", "SELECT 1;")
    write(tmp_path, "shared/common.sql", "SELECT 2;")
    (tmp_path / "migrations" / "2_b_up.sql").symlink_to(tmp_path / "migrations" / "1_a_up.sql")
    (tmp_path / "migrations" / "3_c_up.sql").symlink_to(tmp_path / "shared" / "common.sql")
    (tmp_path / "migrations" / "1_a_down.sql").symlink_to(tmp_path / "shared" / "common.sql")
    found = pgfast.discover_migrations([tmp_path / "migrations"])
    assert [(m.version, m.sql, m.down_path is not None) for m in found] == [
        (1, "SELECT 1;", True),
        (2, "SELECT 1;", False),
        (3, "SELECT 2;", False),
    ]
