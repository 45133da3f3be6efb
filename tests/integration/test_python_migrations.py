"""Python migrations (`_up.py` / `_down.py` defining `async def migrate(conn)`) on a real
PostgreSQL: mixed with SQL ones in both directions, failing, status, verify, down, dry run and
no-transaction, through the library and the CLI as users run it."""

import asyncio
from pathlib import Path

import asyncpg
import pytest
from helpers import error_line, fetch, ledger, pgfast_cli, write

import pgfast

USERS_UP = "CREATE TABLE users (id int PRIMARY KEY, name text, slug text);"
# Computed in Python from data a SQL migration put there; a SQL one after it depends on it.
SLUGS_UP = '''# depends_on: 1
"""Fill users.slug from the names, in Python."""
import asyncpg


def slug(name: str) -> str:
    return "-".join(name.lower().split())


async def migrate(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO users VALUES (1, 'Ada Lovelace'), (2, 'Alan Turing')")
    for row in await conn.fetch("SELECT id, name FROM users"):
        await conn.execute("UPDATE users SET slug = $1 WHERE id = $2", slug(row["name"]), row["id"])
'''
SLUGS_DOWN = """async def migrate(conn):
    await conn.execute("DELETE FROM users")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path, "migrations/1_users_up.sql", USERS_UP)
    write(tmp_path, "migrations/1_users_down.sql", "DROP TABLE users;")
    write(tmp_path, "migrations/2_slugs_up.py", SLUGS_UP)
    write(tmp_path, "migrations/2_slugs_down.py", SLUGS_DOWN)
    write(
        tmp_path,
        "migrations/3_slug_index_up.sql",
        "-- depends_on: 2\nCREATE UNIQUE INDEX users_slug ON users (slug);",
    )
    write(tmp_path, "migrations/3_slug_index_down.sql", "DROP INDEX users_slug;")
    return tmp_path


def run(url: str, work: object) -> object:
    async def go() -> object:
        conn = await asyncpg.connect(url)
        try:
            return await work(conn)  # type: ignore[operator]
        finally:
            await conn.close()

    return asyncio.run(go())


def test_python_migration_between_sql_ones_applies_in_order_and_records_its_checksum(
    project: Path, blank_db: str
) -> None:
    # SQL after Python (3 needs 2) and Python after SQL (2 needs 1; 10 needs the later 11):
    write(project, "migrations/10_first_up.py", "# depends_on: 11\nasync def migrate(conn):\n    pass\n")
    write(project, "migrations/11_base_up.sql", "CREATE TABLE base (id int);")
    result = pgfast_cli(project, blank_db, "schema", "up")
    assert result.returncode == 0, result.stderr
    assert ledger(blank_db) == [(1, "users"), (2, "slugs"), (3, "slug_index"), (11, "base"), (10, "first")]
    assert [tuple(r) for r in fetch(blank_db, "SELECT id, slug FROM users ORDER BY id")] == [
        (1, "ada-lovelace"),
        (2, "alan-turing"),
    ]
    source = (project / "migrations/2_slugs_up.py").read_text()
    checksum = fetchone(blank_db, "SELECT checksum FROM _pgfast_migrations WHERE version = 2")
    assert (
        checksum
        == next(m for m in pgfast.discover_migrations([project / "migrations"]) if m.version == 2).checksum
    )
    assert checksum == __import__("hashlib").sha256(source.encode()).hexdigest()
    assert not list(project.rglob("__pycache__"))  # nothing written beside the user's files


def fetchone(url: str, sql: str) -> object:
    return fetch(url, sql)[0][0]


def test_failing_migrate_rolls_back_and_names_file_line_type_and_message(
    project: Path, blank_db: str
) -> None:
    path = write(
        project,
        "migrations/4_bad_up.py",
        "# depends_on: 3\n"
        "async def migrate(conn):\n"
        "    await conn.execute('CREATE TABLE half (id int)')\n"
        "    raise ValueError('no slug for user 7')\n",
    )
    result = pgfast_cli(project, blank_db, "schema", "up")
    assert result.returncode == 1
    assert error_line(result).startswith(
        f"pgfast: error: applying 4_bad failed at {path}:4: ValueError: no slug for user 7; it was rolled back "
        "and not recorded. Already applied in this run: 1_users, 2_slugs, 3_slug_index"
    )
    assert fetchone(blank_db, "SELECT to_regclass('half') IS NULL") is True
    assert [v for v, _ in ledger(blank_db)] == [1, 2, 3]
    # A database error inside migrate() names the line that ran the statement.
    path.write_text("async def migrate(conn):\n    x = 1\n    await conn.execute('SELECT nope FROM users')\n")
    error = run(blank_db, lambda c: _apply_error(c, project))
    assert isinstance(error, pgfast.MigrationFailedError)
    assert error.line == 3
    assert str(error).startswith(f'applying 4_bad failed at {path}:3: UndefinedColumnError: column "nope"')


async def _apply_error(conn: asyncpg.Connection, project: Path) -> BaseException:
    try:
        await pgfast.apply_migrations(conn, pgfast.discover_migrations([project / "migrations"]))
    except pgfast.MigrationError as exc:
        return exc
    raise AssertionError("apply_migrations did not fail")


def test_status_verify_down_and_dry_run_treat_python_files_like_sql(project: Path, blank_db: str) -> None:
    dry = pgfast_cli(project, blank_db, "schema", "up", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"-- 2_slugs ({project / 'migrations/2_slugs_up.py'})\n# depends_on: 1\n" in dry.stdout
    assert "async def migrate(conn: asyncpg.Connection) -> None:" in dry.stdout
    assert fetchone(blank_db, "SELECT to_regclass('users') IS NULL") is True
    assert pgfast_cli(project, blank_db, "schema", "up").returncode == 0

    status = pgfast_cli(project, blank_db, "schema", "status")
    assert status.returncode == 0, status.stderr
    assert "slugs" in status.stdout and "3 applied, 0 pending, 0 modified" in status.stdout

    (project / "migrations/2_slugs_up.py").write_text(SLUGS_UP + "# edited\n")
    verify = pgfast_cli(project, blank_db, "schema", "verify")
    assert verify.returncode == 1
    assert f"{project / 'migrations/2_slugs_up.py'} changed after it was applied" in verify.stderr
    (project / "migrations/2_slugs_up.py").write_text(SLUGS_UP)

    down_dry = pgfast_cli(project, blank_db, "schema", "down", "--steps", "2", "--dry-run")
    assert down_dry.returncode == 0, down_dry.stderr
    assert 'await conn.execute("DELETE FROM users")' in down_dry.stdout
    down = pgfast_cli(project, blank_db, "schema", "down", "--steps", "2")
    assert down.returncode == 0, down.stderr
    assert [v for v, _ in ledger(blank_db)] == [1]
    assert fetchone(blank_db, "SELECT count(*) FROM users") == 0
    # And up again: the Python migration runs a second time.
    assert pgfast_cli(project, blank_db, "schema", "up").returncode == 0
    assert fetchone(blank_db, "SELECT count(*) FROM users WHERE slug IS NOT NULL") == 2


def test_migrate_can_use_its_own_transaction_block_as_a_savepoint(tmp_path: Path, blank_db: str) -> None:
    write(tmp_path, "migrations/1_t_up.sql", "CREATE TABLE t (id int PRIMARY KEY);")
    write(
        tmp_path,
        "migrations/2_fill_up.py",
        "import asyncpg\n\n"
        "async def migrate(conn):\n"
        "    await conn.execute('INSERT INTO t VALUES (1)')\n"
        "    try:\n"
        "        async with conn.transaction():\n"
        "            await conn.execute('INSERT INTO t VALUES (1)')\n"
        "    except asyncpg.UniqueViolationError:\n"
        "        pass\n"
        "    await conn.execute('INSERT INTO t VALUES (2)')\n",
    )
    result = pgfast_cli(tmp_path, blank_db, "schema", "up")
    assert result.returncode == 0, result.stderr
    assert [r[0] for r in fetch(blank_db, "SELECT id FROM t ORDER BY id")] == [1, 2]


def test_no_transaction_python_migration_runs_outside_and_a_failure_is_partial(
    tmp_path: Path, blank_db: str
) -> None:
    write(tmp_path, "migrations/1_t_up.sql", "CREATE TABLE t (id int);")
    path = write(
        tmp_path,
        "migrations/2_index_up.py",
        "# depends_on: 1\n"
        "# pgfast: no-transaction\n"
        "async def migrate(conn):\n"
        "    assert not conn.is_in_transaction()\n"
        "    await conn.execute('CREATE INDEX CONCURRENTLY t_id ON t (id)')\n"
        "    await conn.execute('INSERT INTO t VALUES (1)')\n"
        "    raise RuntimeError('stopped after the index')\n",
    )
    result = pgfast_cli(tmp_path, blank_db, "schema", "up")
    assert result.returncode == 1
    assert error_line(result).startswith(
        f"pgfast: error: applying 2_index failed at {path}:7: RuntimeError: stopped after the index; it runs "
        f"without a transaction and stopped part way: its migrate() ({path}) stopped part way (failed): "
        "what it did before that stays"
    )
    assert fetchone(blank_db, "SELECT count(*) FROM t") == 1  # not rolled back
    assert [v for v, _ in ledger(blank_db)] == [1]
    status = pgfast_cli(tmp_path, blank_db, "schema", "status")
    assert "partial" in status.stdout
    refused = pgfast_cli(tmp_path, blank_db, "schema", "up")
    assert "runs its migrate() again, from the start" in error_line(refused)
    # Repaired by hand and forgotten, the fixed file applies and is recorded.
    fetch(blank_db, "DROP INDEX t_id")
    fetch(blank_db, "DELETE FROM t")
    assert pgfast_cli(tmp_path, blank_db, "schema", "mark", "2", "--pending").returncode == 0
    path.write_text(path.read_text().replace("    raise RuntimeError('stopped after the index')\n", ""))
    done = pgfast_cli(tmp_path, blank_db, "schema", "up")
    assert done.returncode == 0, done.stderr
    assert [v for v, _ in ledger(blank_db)] == [1, 2]
    assert fetchone(blank_db, "SELECT count(*) FROM t") == 1


def test_schema_create_python_writes_a_pair_that_applies_and_rolls_back(
    tmp_path: Path, blank_db: str
) -> None:
    write(tmp_path, "pyproject.toml", "")
    write(tmp_path, "app/migrations/1_users_up.sql", USERS_UP)
    result = pgfast_cli(tmp_path, None, "schema", "create", "--python", "app", "fill_users")
    assert result.returncode == 0, result.stderr
    ups = sorted((tmp_path / "app/migrations").glob("*_fill_users_up.py"))
    downs = sorted((tmp_path / "app/migrations").glob("*_fill_users_down.py"))
    assert len(ups) == len(downs) == 1
    assert ups[0].read_text().startswith("# depends_on: 1\n")
    assert "async def migrate(conn: asyncpg.Connection) -> None:" in downs[0].read_text()
    assert (
        f"created {ups[0].relative_to(tmp_path)}\ncreated {downs[0].relative_to(tmp_path)}\n" in result.stdout
    )
    up = pgfast_cli(tmp_path, blank_db, "schema", "up")
    assert up.returncode == 0, up.stderr
    assert len(ledger(blank_db)) == 2
    assert pgfast_cli(tmp_path, blank_db, "schema", "down").returncode == 0
    assert len(ledger(blank_db)) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "import not_a_module_anywhere\nasync def migrate(conn):\n    pass\n",
            "{path}:1: loading it failed: ModuleNotFoundError: No module named 'not_a_module_anywhere'; "
            "fix the file (it did not run)",
        ),
        (
            "async def migrate(conn):\n    pass\nmigrate = 3\n",
            "{path}: after loading, migrate is int, not an async function; define 'async def migrate(conn)'",
        ),
    ],
)
def test_a_file_that_fails_to_load_is_one_line_and_nothing_runs(
    tmp_path: Path, blank_db: str, text: str, message: str
) -> None:
    write(tmp_path, "migrations/1_t_up.sql", "CREATE TABLE t (id int);")
    path = write(tmp_path, "migrations/2_bad_up.py", text)
    result = pgfast_cli(tmp_path, blank_db, "schema", "up")
    assert result.returncode == 1
    assert error_line(result) == "pgfast: error: " + message.format(path=path)
    assert [v for v, _ in ledger(blank_db)] == [1]


def test_lock_report_measures_a_python_migration(tmp_path: Path, blank_db: str) -> None:
    fetch(blank_db, "CREATE TABLE t (id int, n int)")
    write(
        tmp_path,
        "migrations/1_widen_up.py",
        "async def migrate(conn):\n    await conn.execute('ALTER TABLE t ALTER COLUMN n TYPE bigint')\n",
    )
    migrations = pgfast.discover_migrations([tmp_path / "migrations"])
    (report,) = run(blank_db, lambda c: pgfast.report_locks(c, migrations))  # type: ignore[misc]
    assert (report.locks, report.rewritten) == ({"table t": "AccessExclusiveLock"}, ("table t",))
    bad = write(tmp_path, "migrations/2_bad_up.py", "async def migrate(conn):\n    raise KeyError('x')\n")
    migrations = pgfast.discover_migrations([tmp_path / "migrations"])
    with pytest.raises(
        pgfast.MigrationFailedError,
        match=f"^measuring 2_bad on a scratch database failed at {bad}:2: KeyError: 'x'",
    ):
        run(blank_db, lambda c: pgfast.report_locks(c, migrations[1:]))
