"""Lock timeouts with retry for transactional migrations: an ALTER TABLE queued behind a long
transaction must not queue the table's readers behind itself for longer than the timeout.

Readers measure their wait on the server, not the wall clock: each SELECT runs with its own
`lock_timeout` of the migration's timeout plus a margin, so a reader held up longer fails with
LockNotAvailableError whatever the machine's load.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from helpers import fetchval, ledger, pgfast_cli, write

import pgfast

DDL_TIMEOUT = 0.3
READER_LIMIT = "1800ms"  # DDL_TIMEOUT plus a margin of 1.5 s


@pytest_asyncio.fixture
async def holder(blank_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A session with an open transaction that has read table t (as a report or a slow request)."""
    conn = await asyncpg.connect(blank_db, server_settings={"application_name": "long report"})
    await conn.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    await conn.execute("BEGIN; SELECT * FROM t")
    try:
        yield conn
    finally:
        await conn.close()


def add_column(tmp_path: Path, header: str = "") -> list[pgfast.Migration]:
    write(tmp_path, "migrations/1_add_c_up.sql", f"{header}ALTER TABLE t ADD COLUMN c int;\n")
    return pgfast.discover_migrations([tmp_path / "migrations"])


async def read_t(reader: asyncpg.Connection) -> None:
    await reader.execute(f"SET lock_timeout = '{READER_LIMIT}'")
    await reader.fetchval("SELECT count(*) FROM t")


async def value(url: str, sql: str, *args: object) -> object:
    """fetchval from a thread: helpers' functions run an event loop of their own."""
    return await asyncio.to_thread(fetchval, url, sql, *args)


async def applied(url: str) -> list[tuple[int, str]]:
    return await asyncio.to_thread(ledger, url)


@pytest.mark.asyncio
async def test_readers_are_never_held_longer_than_the_ddl_lock_timeout(
    blank_db: str, holder: asyncpg.Connection, tmp_path: Path
) -> None:
    migrations = add_column(tmp_path)
    waits: list[pgfast.LockWait] = []
    conn = await asyncpg.connect(blank_db)
    reader = await asyncpg.connect(blank_db)
    try:
        migrating = asyncio.ensure_future(
            pgfast.apply_migrations(
                conn,
                migrations,
                ddl_lock_timeout=DDL_TIMEOUT,
                ddl_lock_retries=100,
                on_lock_wait=waits.append,
            )
        )
        reads = 0
        while len(waits) < 3:  # reads overlap three attempts of the ALTER, each waiting its timeout
            assert not migrating.done(), migrating.exception()
            await read_t(reader)  # LockNotAvailableError here: held longer than the timeout + margin
            reads += 1
            await asyncio.sleep(0.01)
        await holder.execute("COMMIT")
        done = await asyncio.wait_for(migrating, 60)
    finally:
        await conn.close()
        await reader.close()
    assert [m.label for m in done] == ["1_add_c"]
    assert await value(blank_db, "SELECT count(c) FROM t") == 0  # the column is there
    assert reads > 3
    first = waits[0]
    holder_pid = holder.get_server_pid()
    assert (first.attempt, first.attempts, first.timeout) == (1, 101, DDL_TIMEOUT)
    assert (first.relation, first.mode, first.pid) == ("table t", "AccessExclusiveLock", holder_pid)
    assert first.application_name == "long report" and first.running is not None and first.running > 0
    assert [w.attempt for w in waits[:3]] == [1, 2, 3]
    line = str(first)
    assert line.startswith(
        f"applying 1_add_c: attempt 1 of 101 waited 0.3s for AccessExclusiveLock on table t, "
        f"held by pid {holder_pid} (application_name 'long report', in its transaction for "
    )
    assert "; rolled back, retrying in " in line and "\n" not in line


@pytest.mark.asyncio
async def test_without_the_timeout_the_same_reader_is_blocked(
    blank_db: str, holder: asyncpg.Connection, tmp_path: Path
) -> None:
    migrations = add_column(tmp_path, "-- pgfast: lock_timeout=off\n")
    assert migrations[0].ddl_lock_timeout == 0
    conn = await asyncpg.connect(blank_db)
    reader = await asyncpg.connect(blank_db)
    try:
        migrating = asyncio.ensure_future(pgfast.apply_migrations(conn, migrations))
        waiting = "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted"
        for _ in range(600):  # a hang guard of 60 s, not a timing assertion
            if await value(blank_db, waiting, conn.get_server_pid()) == 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the ALTER never queued behind the holder")
        with pytest.raises(asyncpg.LockNotAvailableError, match="lock timeout"):
            await read_t(reader)
        assert not migrating.done()
        await holder.execute("COMMIT")
        await asyncio.wait_for(migrating, 60)
    finally:
        await conn.close()
        await reader.close()
    assert await applied(blank_db) == [(1, "add_c")]


@pytest.mark.asyncio
async def test_when_retries_run_out_the_error_names_the_holder_and_nothing_is_applied(
    blank_db: str, holder: asyncpg.Connection, tmp_path: Path
) -> None:
    write(tmp_path, "migrations/1_first_up.sql", "CREATE TABLE other (id int);")
    write(
        tmp_path,
        "migrations/2_add_c_up.sql",
        "-- pgfast: lock_timeout=200ms\nALTER TABLE t ADD COLUMN c int;",
    )
    migrations = pgfast.discover_migrations([tmp_path / "migrations"])
    waits: list[pgfast.LockWait] = []
    conn = await asyncpg.connect(blank_db)
    try:
        with pytest.raises(pgfast.DdlLockTimeoutError) as info:
            await pgfast.apply_migrations(conn, migrations, ddl_lock_retries=1, on_lock_wait=waits.append)
    finally:
        await conn.close()
    error, pid = info.value, holder.get_server_pid()
    assert isinstance(error, pgfast.MigrationFailedError) and isinstance(error, TimeoutError)
    assert [w.attempt for w in waits] == [1] and error.wait.attempt == 2 and error.wait.retry_in is None
    assert error.wait.pid == pid and [m.label for m in error.applied] == ["1_first"]
    assert str(error).startswith(
        f"applying 2_add_c gave up: attempt 2 of 2 waited 0.2s for AccessExclusiveLock on table t, held by "
        f"pid {pid} (application_name 'long report', in its transaction for "
    )
    assert str(error).endswith(
        "; rolled back, no attempts left; it is not recorded. Already applied in this run: 1_first. "
        f"Let pid {pid} finish its transaction (or end it: SELECT pg_terminate_backend(PID)) and run "
        "again, or wait longer with ddl_lock_timeout=SECONDS or ddl_lock_retries=N (or the header "
        "'-- pgfast: lock_timeout=30s')"
    )
    assert await applied(blank_db) == [(1, "first")]
    assert (
        await value(
            blank_db, "SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'c'"
        )
        == 0
    )


@pytest.mark.asyncio
async def test_cli_prints_one_line_per_wait_and_says_the_flags(
    blank_db: str, holder: asyncpg.Connection, tmp_path: Path
) -> None:
    add_column(tmp_path)
    result = await asyncio.to_thread(
        pgfast_cli, tmp_path, blank_db, "schema", "up", "--ddl-lock-timeout", "0.2", "--ddl-lock-retries", "2"
    )
    pid = holder.get_server_pid()
    waits = [line for line in result.stderr.splitlines() if line.startswith("pgfast: applying")]
    assert len(waits) == 2, result.stderr
    assert waits[0].startswith(
        f"pgfast: applying 1_add_c: attempt 1 of 3 waited 0.2s for AccessExclusiveLock on table t, "
        f"held by pid {pid} (application_name 'long report'"
    )
    assert "attempt 2 of 3" in waits[1]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pgfast: error: applying 1_add_c gave up: attempt 3 of 3 waited 0.2s")
    assert last.endswith(
        "or wait longer with --ddl-lock-timeout SECONDS or --ddl-lock-retries N (or the header "
        "'-- pgfast: lock_timeout=30s')"
    )
    assert await applied(blank_db) == []


@pytest.mark.asyncio
async def test_no_transaction_migrations_run_without_a_ddl_lock_timeout(
    blank_db: str, tmp_path: Path
) -> None:
    write(
        tmp_path,
        "migrations/1_setting_up.sql",
        "-- pgfast: no-transaction\nCREATE TABLE seen AS SELECT current_setting('lock_timeout') AS v;",
    )
    write(
        tmp_path,
        "migrations/2_setting_up.sql",
        "CREATE TABLE seen2 AS SELECT current_setting('lock_timeout') AS v;",
    )
    write(
        tmp_path,
        "migrations/3_setting_up.sql",
        "-- pgfast: lock_timeout=1min\nCREATE TABLE seen3 AS SELECT current_setting('lock_timeout') AS v;",
    )
    conn = await asyncpg.connect(blank_db)
    try:
        await pgfast.apply_migrations(conn, pgfast.discover_migrations([tmp_path / "migrations"]))
        after = await conn.fetchval("SELECT current_setting('lock_timeout')")
    finally:
        await conn.close()
    assert await value(blank_db, "SELECT v FROM seen") == "0"
    assert await value(blank_db, "SELECT v FROM seen2") == "2s"
    assert await value(blank_db, "SELECT v FROM seen3") == "1min"
    assert after == "0"  # SET LOCAL: the session's own setting is untouched


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("30s", 30.0), ("500ms", 0.5), ("2min", 120.0), ("1.5s", 1.5), ("0", 0.0), ("off", 0.0), ("OFF", 0.0)],
)
def test_header_sets_the_lock_timeout(tmp_path: Path, header: str, seconds: float) -> None:
    migrations = add_column(tmp_path, f"-- adds c\n-- pgfast: lock_timeout={header}\n")
    assert migrations[0].ddl_lock_timeout == seconds


@pytest.mark.parametrize("value", ["30", "fast", "", "-1s", "5h"])
def test_header_with_a_bad_duration_is_an_error(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, "migrations/1_a_up.sql", f"-- pgfast: lock_timeout={value}\nSELECT 1;")
    with pytest.raises(pgfast.MigrationFileError) as info:
        pgfast.discover_migrations([tmp_path / "migrations"])
    assert str(info.value) == (
        f"{path}:1: lock_timeout={value!r} is not a duration; write e.g. "
        "'-- pgfast: lock_timeout=30s' (or 500ms, 2min; 0 or off for no limit)"
    )


def test_header_lock_timeout_in_a_no_transaction_migration_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path, "migrations/1_a_up.sql", "-- pgfast: no-transaction\n-- pgfast: lock_timeout=5s\nSELECT 1;"
    )
    with pytest.raises(
        pgfast.MigrationFileError,
        match=r"1_a_up.sql:2: lock_timeout applies to migrations that run in a transaction",
    ) as info:
        pgfast.discover_migrations([tmp_path / "migrations"])
    assert info.value.line == 2 and info.value.paths == (path,)


@pytest.mark.parametrize(("option", "value"), [("ddl_lock_timeout", -1.0), ("ddl_lock_retries", -1)])
@pytest.mark.asyncio
async def test_bad_ddl_lock_options_are_refused(blank_db: str, option: str, value: float) -> None:
    conn = await asyncpg.connect(blank_db)
    try:
        with pytest.raises(pgfast.ConfigError, match=rf"^{option}=-1(\.0)? is invalid; use ") as info:
            await pgfast.apply_migrations(conn, [], **{option: value})
    finally:
        await conn.close()
    assert info.value.setting == option
