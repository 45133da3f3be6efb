"""The exact lock and rewrite report: each pending migration run on a scratch copy of the applied
schema, pg_locks and relfilenodes read before it commits there; the target is never touched."""

import asyncio
from pathlib import Path

import asyncpg
import pytest
from helpers import fetch, ledger, pgfast_cli, write

import pgfast

USERS = "CREATE TABLE users (id int PRIMARY KEY, name text); CREATE TABLE audit (id int);"


def project(root: Path) -> list[pgfast.Migration]:
    (root / "pyproject.toml").write_text("")
    write(root, "migrations/1_users_up.sql", USERS)
    write(root, "migrations/2_widen_up.sql", "ALTER TABLE users ALTER COLUMN id TYPE bigint;")
    write(root, "migrations/3_by_name_up.sql", "CREATE INDEX users_name ON users (name);")
    write(root, "migrations/4_notes_up.sql", "CREATE TABLE notes (id int); INSERT INTO audit VALUES (1);")
    write(
        root,
        "migrations/5_concurrent_up.sql",
        "-- pgfast: no-transaction\nCREATE INDEX CONCURRENTLY n ON notes (id);",
    )
    return pgfast.discover_migrations([root / "migrations"])


def reports(url: str, migrations: list[pgfast.Migration]) -> list[pgfast.LockReport]:
    async def run() -> list[pgfast.LockReport]:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(USERS)
            return await pgfast.report_locks(conn, migrations[1:])
        finally:
            await conn.close()

    return asyncio.run(run())


def test_report_names_access_exclusive_locks_and_rewrites(blank_db: str, tmp_path: Path) -> None:
    widen, by_name, notes, concurrent = reports(blank_db, project(tmp_path))
    assert widen.locks["table users"] == "AccessExclusiveLock"
    assert widen.rewritten == ("index users_pkey", "table users")
    assert "test_lock_report" not in str(widen.lines())
    assert widen.lines()[0] == "2_widen: ACCESS EXCLUSIVE: blocks reads and writes on index users_pkey"
    assert "2_widen: ACCESS EXCLUSIVE: blocks reads and writes on table users" in widen.lines()
    assert "2_widen: rewrites table users (a full copy, under its lock)" in widen.lines()
    # CREATE INDEX blocks writes only, and rewrites nothing; new relations are not reported.
    assert by_name.locks == {"table users": "ShareLock"} and by_name.rewritten == ()
    assert notes.locks == {"table audit": "RowExclusiveLock"} and notes.rewritten == ()
    assert notes.lines() == [
        "4_notes: ROW EXCLUSIVE: blocks CREATE INDEX and stronger, not reads or writes on table audit"
    ]
    assert not concurrent.measured
    assert concurrent.lines() == ["5_concurrent: runs without a transaction; locks not measured"]


def test_a_project_can_assert_a_migration_takes_no_access_exclusive_lock(
    blank_db: str, tmp_path: Path
) -> None:
    _, by_name, notes, _ = reports(blank_db, project(tmp_path))
    for report in (by_name, notes):
        assert report.locks.get("table users") != "AccessExclusiveLock"


def test_failing_migration_names_file_and_line(blank_db: str, tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_bad_up.sql", "SELECT 1;\nSELEC 2;")
    migrations = pgfast.discover_migrations([tmp_path / "migrations"])

    async def run() -> None:
        conn = await asyncpg.connect(blank_db)
        try:
            await pgfast.report_locks(conn, migrations)
        finally:
            await conn.close()

    with pytest.raises(
        pgfast.MigrationFailedError,
        match=r"^measuring 1_bad on a scratch database failed at .*1_bad_up.sql:2: PostgresSyntaxError",
    ):
        asyncio.run(run())


def test_cli_dry_run_locks_measures_on_a_scratch_copy_never_the_target(
    blank_db: str, postgres_server: str, tmp_path: Path
) -> None:
    project(tmp_path)
    env = {"TEST_DATABASE_URL": postgres_server}
    assert pgfast_cli(tmp_path, blank_db, "schema", "up", "--target", "1", env=env).returncode == 0
    result = pgfast_cli(tmp_path, blank_db, "schema", "up", "--dry-run", "--locks", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "dry run: 4 migration(s) measured on a scratch copy of the applied schema:"
    assert "  2_widen: ACCESS EXCLUSIVE: blocks reads and writes on table users" in lines
    assert "  2_widen: rewrites table users (a full copy, under its lock)" in lines
    assert "  3_by_name: SHARE: blocks writes, not reads on table users" in lines
    assert ledger(blank_db) == [(1, "users")]
    assert (
        fetch(
            blank_db,
            "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'id'",
        )[0][0]
        == "integer"
    )
    assert fetch(blank_db, "SELECT to_regclass('notes')")[0][0] is None


def test_cli_locks_needs_dry_run(tmp_path: Path, blank_db: str) -> None:
    project(tmp_path)
    result = pgfast_cli(tmp_path, blank_db, "schema", "up", "--locks")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "pgfast: error: --locks goes with --dry-run: 'pgfast schema up --dry-run --locks'"
    )
