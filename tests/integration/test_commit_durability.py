"""Migrations commit without waiting for the disk except the run's last commit: nothing is lost.

A crash is an immediate stop (`pg_ctl -m immediate`) of a throwaway cluster this module starts
itself, made durable for the purpose: synchronous_commit on, wal_level replica, and a WAL writer
that waits 10 s between flushes, so that a commit that did not wait for the disk is still in
shared memory when the server is stopped, and is lost with it. Each test checks what survived
the crash against what `up` reported.
"""

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from helpers import error_line, fetch, fetchval, free_port, pgfast_cli, start_pgfast, wait_for, write

import pgfast


@pytest.fixture(scope="module")
def server() -> Iterator[pgfast.EmbeddedPostgres]:
    server = pgfast.EmbeddedPostgres(run_id=f"durable-{uuid.uuid4().hex[:8]}", port=free_port())
    with server:
        for setting in (
            "synchronous_commit = on",
            "fsync = on",
            "wal_level = replica",
            "max_wal_senders = 2",
            "wal_writer_delay = '10s'",
            "bgwriter_lru_maxpages = 0",  # its page writes would flush the WAL before them
        ):
            fetch(server.url, f"ALTER SYSTEM SET {setting}")
        pg_ctl(server, "-m", "fast", "restart")
        assert fetchval(server.url, "SHOW wal_writer_delay") == "10s"
        yield server


def pg_ctl(server: pgfast.EmbeddedPostgres, *args: str) -> None:
    log = str(server.root / "server.log")
    result = server._run("pg_ctl", "-D", str(server.root / "data"), "-l", log, "-w", *args)
    assert result.returncode == 0, result.stderr


def crash_and_restart(server: pgfast.EmbeddedPostgres) -> None:
    pg_ctl(server, "-m", "immediate", "stop")
    pg_ctl(server, "start")


@pytest.fixture
def db(server: pgfast.EmbeddedPostgres) -> str:
    name = f"d_{uuid.uuid4().hex[:12]}"
    fetch(server.url, f"CREATE DATABASE {name}")
    return pgfast.database_url(server.url, name)


def project(root: Path, count: int, failing: int | None = None) -> Path:
    for i in range(1, count + 1):
        sql = "SELECT 1/0;\n" if i == failing else f"CREATE TABLE t_{i} (id int PRIMARY KEY);\n"
        write(root, f"migrations/{i:04d}_t{i}_up.sql", sql)
    return root


def survivors(url: str) -> tuple[list[int], list[int]]:
    """The versions in the ledger and the tables t_N, after a crash."""
    ledger = [r["version"] for r in fetch(url, "SELECT version FROM _pgfast_migrations ORDER BY version")]
    tables = fetch(url, "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ '^t_[0-9]+$'")
    return ledger, sorted(int(r["relname"][2:]) for r in tables)


def test_a_finished_run_survives_a_crash_right_after_it(
    server: pgfast.EmbeddedPostgres, db: str, tmp_path: Path
) -> None:
    result = pgfast_cli(project(tmp_path, 30), db, "schema", "up")
    assert result.returncode == 0, result.stderr
    assert "applied 30 migration(s)" in result.stdout
    crash_and_restart(server)
    assert survivors(db) == (list(range(1, 31)), list(range(1, 31)))


def test_what_a_failed_run_reports_as_applied_survives_a_crash(
    server: pgfast.EmbeddedPostgres, db: str, tmp_path: Path
) -> None:
    result = pgfast_cli(project(tmp_path, 30, failing=20), db, "schema", "up")
    assert result.returncode == 1
    line = error_line(result)
    assert "applying 20_t20 failed at" in line and "division by zero" in line
    assert "it was rolled back and not recorded" in line
    assert "Already applied in this run: 1_t1, 2_t2, " in line and line.endswith("18_t18, 19_t19")
    assert "without waiting for the disk" not in line  # the connection stayed: they were flushed
    crash_and_restart(server)
    assert survivors(db) == (list(range(1, 20)), list(range(1, 20)))


def test_a_crash_in_the_middle_keeps_each_migration_with_its_ledger_row(
    server: pgfast.EmbeddedPostgres, db: str, tmp_path: Path
) -> None:
    root = project(tmp_path, 300)
    run = start_pgfast(root, db, "schema", "up")
    try:
        wait_for(lambda: fetchval(db, "SELECT count(*) FROM pg_class WHERE relname = 't_10'"), "t_10")
    except BaseException:
        run.kill()
        raise
    pg_ctl(server, "-m", "immediate", "stop")
    try:
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
        pg_ctl(server, "start")  # the module's other tests need it, whatever this one found
    assert run.returncode == 1
    message = stderr.strip().splitlines()[-1]
    # The server went away mid-statement (ConnectionDoesNotExistError) or between two of them
    # (InterfaceError: connection is closed): whether that migration committed is not known.
    assert "ConnectionDoesNotExistError" in message or "InterfaceError: connection is closed" in message
    assert "rolled back" not in message, message
    assert "the connection broke, so whether it committed is unknown" in message
    assert "committed without waiting for the disk: if the server itself went down" in message
    ledger, tables = survivors(db)
    assert ledger == tables  # each migration with its ledger row, or neither
    assert ledger == list(range(1, len(ledger) + 1))  # in order: no gap
    status = pgfast_cli(root, db, "schema", "status")
    assert status.returncode == 0, status.stderr
    again = pgfast_cli(root, db, "schema", "up")
    assert again.returncode == 0, again.stderr
    assert survivors(db) == (list(range(1, 301)), list(range(1, 301)))


def slow_project(root: Path, count: int, slow: int, python: bool = False) -> list[pgfast.Migration]:
    """count migrations; `slow` sleeps a minute before it writes anything, so the commits before
    it end the WAL (in the server's memory, with this cluster's 10 s WAL writer)."""
    for i in range(1, count + 1):
        if i == slow and python:
            write(root, f"migrations/{i:04d}_t{i}_up.py", SLEEP_PY)
        else:
            sleep = "SELECT pg_sleep(60);\n" if i == slow else ""
            write(
                root, f"migrations/{i:04d}_t{i}_up.sql", f"{sleep}CREATE TABLE t_{i} (id int PRIMARY KEY);\n"
            )
    return pgfast.discover_migrations([root / "migrations"])


SLEEP_PY = "async def migrate(conn):\n    await conn.execute('SELECT pg_sleep(60)')\n"


async def until_sleeping(db: str) -> None:
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()"
    )
    await asyncio.to_thread(wait_for, lambda: fetchval(db, query), "the slow migration")


async def after_crash(server: pgfast.EmbeddedPostgres, db: str) -> tuple[list[int], list[int]]:
    await asyncio.to_thread(crash_and_restart, server)
    return await asyncio.to_thread(survivors, db)


async def lock_holders(db: str) -> int:
    sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    return int(await asyncio.to_thread(fetchval, db, sql))


@pytest.mark.asyncio
@pytest.mark.parametrize("python", [False, True], ids=["sql", "python"])
async def test_a_run_cancelled_in_a_migration_flushes_the_ones_before_and_lets_go(
    server: pgfast.EmbeddedPostgres, db: str, tmp_path: Path, python: bool
) -> None:
    """Ctrl-C (asyncio.run cancels the task) while migration 10 runs: 1-9 committed without waiting;
    the CancelledError must come after a commit that waited, with no transaction left open and
    the migration lock released."""
    migrations = slow_project(tmp_path, 12, slow=10, python=python)
    conn = await asyncpg.connect(db)
    try:
        task = asyncio.ensure_future(pgfast.apply_migrations(conn, migrations))
        await until_sleeping(db)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT 1") == 1  # not an aborted transaction block
        assert await lock_holders(db) == 0
    finally:
        await conn.close()
    assert await after_crash(server, db) == (list(range(1, 10)), list(range(1, 10)))


@pytest.mark.asyncio
async def test_a_run_in_a_cancelled_anyio_scope_flushes_the_ones_before_it_raises(
    server: pgfast.EmbeddedPostgres, db: str, tmp_path: Path
) -> None:
    """anyio (Starlette's, FastAPI's) cancels level-triggered: every await in a cancelled scope is
    cancelled again, the cleanup's too (anyio.fail_after around a lifespan's migrations)."""
    import anyio

    migrations = slow_project(tmp_path, 12, slow=10)
    conn = await asyncpg.connect(db)
    try:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(pgfast.apply_migrations, conn, migrations)
                await until_sleeping(db)
                scope.cancel()
        assert scope.cancelled_caught
        assert await conn.fetchval("SELECT 1") == 1  # not an aborted transaction block
        assert await lock_holders(db) == 0  # let go although every await there was cancelled
    finally:
        await conn.close()
    assert await after_crash(server, db) == (list(range(1, 10)), list(range(1, 10)))


@pytest.mark.asyncio
async def test_a_ddl_lock_timeout_after_commits_that_did_not_wait_flushes_them(
    server: pgfast.EmbeddedPostgres, db: str, tmp_path: Path
) -> None:
    for i in range(1, 10):
        write(tmp_path, f"migrations/{i:04d}_t{i}_up.sql", f"CREATE TABLE t_{i} (id int PRIMARY KEY);\n")
    write(tmp_path, "migrations/0010_alter_up.sql", "ALTER TABLE held ADD COLUMN c int;\n")
    migrations = pgfast.discover_migrations([tmp_path / "migrations"])
    await asyncio.to_thread(fetch, db, "CREATE TABLE held (id int)")
    holder = await asyncpg.connect(db)
    conn = await asyncpg.connect(db)
    try:
        await holder.execute("BEGIN; SELECT * FROM held")
        with pytest.raises(pgfast.DdlLockTimeoutError, match=r"Already applied in this run: 1_t1, .*9_t9"):
            await pgfast.apply_migrations(conn, migrations, ddl_lock_timeout=0.2, ddl_lock_retries=1)
    finally:
        await conn.close()
        await holder.close()
    assert await after_crash(server, db) == (list(range(1, 10)), list(range(1, 10)))


@pytest.mark.asyncio
async def test_a_python_migrations_own_oserror_is_not_called_a_broken_connection(
    db: str, tmp_path: Path
) -> None:
    """FileNotFoundError (an OSError) from the migration's own code, on a connection that is fine:
    it was rolled back, and the ones before were flushed by the failure's extra commit."""
    for i in (1, 2):
        write(tmp_path, f"migrations/{i:04d}_t{i}_up.sql", f"CREATE TABLE t_{i} (id int PRIMARY KEY);\n")
    write(
        tmp_path,
        "migrations/0003_seed_up.py",
        "async def migrate(conn):\n    open('/nonexistent/seed.csv')\n",
    )
    migrations = pgfast.discover_migrations([tmp_path / "migrations"])
    conn = await asyncpg.connect(db)
    try:
        with pytest.raises(pgfast.MigrationFailedError) as failed:
            await pgfast.apply_migrations(conn, migrations)
    finally:
        await conn.close()
    message = str(failed.value)
    assert "FileNotFoundError" in message and "it was rolled back and not recorded" in message, message
    assert "connection broke" not in message and "without waiting for the disk" not in message, message
