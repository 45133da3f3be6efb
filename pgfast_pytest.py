"""pytest fixtures for pgfast: a fresh, migrated PostgreSQL database for every test.

Installed with pip, the plugin is active on its own. Vendored, enable it in a conftest.py with
`pytest_plugins = ["pgfast_pytest"]` or `from pgfast_pytest import *` (fixtures only).

The server is TEST_DATABASE_URL (its role needs CREATEDB); unset, pgfast starts a throwaway
PostgreSQL tuned for tests (tmpfs, no fsync) for the run, shared by xdist workers. Migrations
and fixture files are found as `pgfast schema` finds them, from the pytest root directory;
override the `pgfast_config` fixture to point elsewhere. PGFAST_PREWARM (default 2) is how
many databases each process keeps cloned ahead of the tests that will use them.
"""

import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

import pgfast

# Fixtures only (the private one included): a conftest star import must not bring the hooks.
__all__ = [
    "_pgfast_databases",
    "db_pool_factory",
    "db_transaction",
    "db_with_fixtures",
    "fixture_loader",
    "isolated_db",
    "pgfast_config",
    "pgfast_server_url",
]

_KEPT = pytest.StashKey[list[str]]()
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.fixture(scope="session")
def pgfast_server_url(pytestconfig: pytest.Config) -> Iterator[str]:
    """TEST_DATABASE_URL, else the URL of an embedded PostgreSQL started for this test run."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    # xdist workers of one run share its testrunuid, and so one server.
    worker = getattr(pytestconfig, "workerinput", {})
    server = pgfast.EmbeddedPostgres(worker.get("testrunuid"))
    yield server.acquire()
    server.release()


@pytest.fixture(scope="session")
def pgfast_config(pytestconfig: pytest.Config, pgfast_server_url: str) -> pgfast.DatabaseConfig:
    """The server and the migration/fixture directories the test databases are built from."""
    return pgfast.DatabaseConfig.for_tests(pytestconfig.rootpath, url=pgfast_server_url)


@pytest.fixture(scope="session")
def _pgfast_databases(
    pytestconfig: pytest.Config, pgfast_config: pgfast.DatabaseConfig
) -> Iterator[pgfast.IsolatedDatabases]:
    # Sync and session-scoped: the manager runs its own event loop, independent of any test's.
    migrations = pgfast.discover_migrations(pgfast_config.migrations_dirs)
    fixtures = pgfast.discover_fixtures(migrations, pgfast_config.fixtures_dirs)
    prewarm = int(os.environ.get("PGFAST_PREWARM", "2"))
    # Templates are kept per project: the root directory and the migration directories, so
    # two suites of one repository with different migrations do not replace each other's.
    dirs = sorted(str(Path(d).resolve()) for d in pgfast_config.migrations_dirs or ())
    project = f"{pytestconfig.rootpath}|{'|'.join(dirs)}"
    with pgfast.IsolatedDatabases(
        pgfast_config.url, migrations, fixtures, project=project, prewarm=prewarm
    ) as databases:
        yield databases


class _PoolFactory:
    """`await db_pool_factory()` opens a pool on a new database; the test's end drops them all."""

    def __init__(self, databases: pgfast.IsolatedDatabases, config: pgfast.DatabaseConfig) -> None:
        self._databases = databases
        self._config = config
        self._pools: dict[asyncpg.Pool, str] = {}

    async def __call__(self, *, fixtures: bool = False) -> asyncpg.Pool:
        name = await self._databases.create(fixtures=fixtures)
        # One connection up front: most tests never need a second.
        config = dataclasses.replace(self._config, url=self._databases.url(name), min_connections=1)
        try:
            pool = await pgfast.create_pool(config)
        except BaseException:
            self._databases.release(name)
            raise
        finally:
            self._databases.refill()  # the test now runs: a good time for background work
        self._pools[pool] = name
        return pool

    def name(self, pool: asyncpg.Pool) -> str:
        """The database name behind `pool`."""
        return self._pools[pool]

    async def cleanup(self, pool: asyncpg.Pool) -> None:
        """Close `pool` and drop its database now (a connection still held is terminated)."""
        name = self._pools.pop(pool)
        await pgfast.close_pool(pool, timeout=2.0)
        await self._databases.drop(name)

    async def _finish(self, *, keep: bool) -> list[str]:
        kept = []
        for pool, name in list(self._pools.items()):
            self._pools.pop(pool)
            if keep:
                await pgfast.close_pool(pool, timeout=2.0)
                kept.append(await self._databases.keep(name))
            else:
                pool.terminate()  # its database is dropped anyway: no need to say goodbye
                self._databases.release(name)  # dropped in the background
        return kept


@pytest_asyncio.fixture
async def db_pool_factory(
    request: pytest.FixtureRequest,
    _pgfast_databases: pgfast.IsolatedDatabases,
    pgfast_config: pgfast.DatabaseConfig,
) -> AsyncIterator[_PoolFactory]:
    """An async callable returning a pool on a new migrated database at each call."""
    factory = _PoolFactory(_pgfast_databases, pgfast_config)
    try:
        yield factory
    finally:
        keep = request.config.getoption("pgfast_keep_failed", False) and _failed(request)
        kept = await factory._finish(keep=keep)
        for name in kept:
            request.config.stash.setdefault(_KEPT, []).append(_pgfast_databases.url(name))


@pytest_asyncio.fixture
async def isolated_db(db_pool_factory: _PoolFactory) -> asyncpg.Pool:
    """A pool on a fresh database holding the migrated schema; dropped after the test."""
    return await db_pool_factory()


@pytest_asyncio.fixture
async def db_with_fixtures(db_pool_factory: _PoolFactory) -> asyncpg.Pool:
    """Like `isolated_db`, with every SQL fixture file loaded (cloned from its own template)."""
    return await db_pool_factory(fixtures=True)


@pytest_asyncio.fixture
async def fixture_loader(
    isolated_db: asyncpg.Pool, _pgfast_databases: pgfast.IsolatedDatabases
) -> Callable[[Iterable[str | int]], Awaitable[None]]:
    """`await fixture_loader(["users", ...])` loads those fixture files into `isolated_db`."""

    async def load(names: Iterable[str | int]) -> None:
        if isinstance(names, (str, int)):
            names = [names]
        chosen = pgfast.select_fixtures(_pgfast_databases.fixtures, names)
        async with isolated_db.acquire() as conn:
            await pgfast.load_fixtures(conn, chosen)

    return load


@pytest_asyncio.fixture
async def db_transaction(_pgfast_databases: pgfast.IsolatedDatabases) -> AsyncIterator[asyncpg.Connection]:
    """A connection to one shared migrated database, inside a transaction rolled back after the test.

    About a millisecond instead of a clone, for tests that never need to commit (nor see
    another connection's writes).
    """
    name = await _pgfast_databases.shared()
    conn = await asyncpg.connect(_pgfast_databases.url(name), statement_cache_size=0)
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield conn
    finally:
        try:
            await transaction.rollback()
            await conn.close(timeout=2)
        except Exception:
            conn.terminate()


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(report.failed for report in reports.values())


# Hooks: not in __all__, so a conftest star import brings fixtures only.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("pgfast").addoption(
        "--pgfast-keep-failed",
        action="store_true",
        dest="pgfast_keep_failed",
        help="keep the databases of failed tests and print how to connect to them",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    kept = config.stash.get(_KEPT, [])
    if kept:
        terminalreporter.section("pgfast: databases kept for failed tests")
        for url in kept:
            terminalreporter.write_line(f"psql '{pgfast.mask_url(url)}'")
        terminalreporter.write_line("drop them with: pgfast test-db cleanup --all")
