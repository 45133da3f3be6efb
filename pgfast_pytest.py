"""pytest fixtures for pgfast: a fresh, migrated PostgreSQL database for every test.

Installed with pip, the plugin is active on its own. Vendored, enable it in a conftest.py with
`pytest_plugins = ["pgfast_pytest"]` or `from pgfast_pytest import *` (fixtures only).

The server is TEST_DATABASE_URL (its role needs CREATEDB); unset, pgfast starts a throwaway
PostgreSQL tuned for tests (tmpfs, no fsync) for the run, shared by xdist workers. Migrations
and fixture files are found as `pgfast schema` finds them, from the pytest root directory;
override the `pgfast_config` fixture to point elsewhere. PGFAST_PREWARM is how many databases
each process keeps cloned ahead of the tests that will use them (default: 2 on a server with
fsync off, 6 on a durable one).

When tests share an event loop (pytest-asyncio's loop scope above "function"), the next test's
pool is connected while the current test runs and db_transaction keeps its connection.
"""

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator
from typing import Any, Final, NoReturn, TypeVar

import asyncpg
import pytest

import pgfast

try:
    import pytest_asyncio
except ImportError:  # anyio's pytest plugin runs plain async fixtures (in tests marked anyio)
    pytest_asyncio = None  # type: ignore[assignment]

# The fixtures (the private ones included) and the hooks, so that a conftest's star import
# enables everything. Installed too, the hooks then run twice: each is written to allow that.
__all__ = [
    "pytest_sessionfinish",
    "pytest_testnodedown",
    "app",
    "app_client",
    "sync_app_client",
    "pytest_addoption",
    "pytest_runtest_makereport",
    "pytest_terminal_summary",
    "_pgfast_databases",
    "_pgfast_loops",
    "_pgfast_runner",
    "db_pool_factory",
    "db_transaction",
    "db_with_fixtures",
    "fixture_loader",
    "isolated_db",
    "pgfast_app_role",
    "pgfast_config",
    "pgfast_server_url",
]

# The databases kept for failed tests: [test id, URL, how to clean up].
_KEPT = pytest.StashKey[list[list[str]]]()
_SUMMARY_SHOWN = pytest.StashKey[bool]()
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_SERVER = pytest.StashKey[pgfast.EmbeddedPostgres]()


@pytest.fixture(scope="session")
def pgfast_server_url(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Iterator[str]:
    """TEST_DATABASE_URL, else the URL of an embedded PostgreSQL started for this test run."""
    url = pgfast.test_server_url()
    if url:
        yield url
        return
    # xdist workers of one run share its testrunuid, and so one server.
    worker = getattr(pytestconfig, "workerinput", {})
    try:
        server = pgfast.EmbeddedPostgres(worker.get("testrunuid"))
        url = server.acquire()
    except pgfast.PgfastError as exc:  # no PostgreSQL to start, say: once, not once per test
        _stop_run(request.session, f"pgfast: {exc}")
    pytestconfig.stash[_SERVER] = server  # checked when a test database cannot be made
    yield url
    # Databases kept for failed tests live in this server: then it stays up after the run.
    server.release(keep_running=bool(pytestconfig.stash.get(_KEPT, [])))


@pytest.fixture(scope="session")
def pgfast_app_role(pytestconfig: pytest.Config) -> str | None:
    """The role the application connects as (ini option `pgfast_app_role`; none: the server's
    admin user). Test databases are then used as that role, so row-level security applies and
    the privileges are those the migrations grant it; templates are still built as the admin."""
    return str(pytestconfig.getini("pgfast_app_role")) or None


@pytest.fixture(scope="session")
def pgfast_config(pytestconfig: pytest.Config, pgfast_server_url: str) -> pgfast.DatabaseConfig:
    """The server and the migration/fixture directories the test databases are built from."""
    return pgfast.DatabaseConfig.for_tests(pytestconfig.rootpath, url=pgfast_server_url)


@pytest.fixture(scope="session")
def _pgfast_databases(
    request: pytest.FixtureRequest,
    pytestconfig: pytest.Config,
    pgfast_config: pgfast.DatabaseConfig,
    pgfast_app_role: str | None,
) -> Iterator[pgfast.IsolatedDatabases]:
    # Sync and session-scoped: the manager runs its own event loop, independent of any test's.
    root = pytestconfig.rootpath  # where directories a config leaves to discovery are searched
    migrations = pgfast.discover_migrations(pgfast_config.migrations_dirs, root=root)
    fixtures = pgfast.discover_fixtures(migrations, pgfast_config.fixtures_dirs, root=root)
    prewarm = int(os.environ["PGFAST_PREWARM"]) if os.environ.get("PGFAST_PREWARM") else None
    terminal = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    on_build = functools.partial(_announce_slow_build, terminal, capture) if terminal else None
    databases = pgfast.IsolatedDatabases(
        pgfast_config.url, migrations, fixtures, prewarm=prewarm, on_build=on_build, app_role=pgfast_app_role
    )
    try:
        databases.start()
    except pgfast.PgfastError as exc:  # no test can have a database: say so once, not per test
        _stop_if_server_lost(request.session)
        _stop_run(request.session, f"pgfast: {exc}")
    try:
        yield databases
    finally:
        databases.close()


@contextlib.contextmanager
def _announce_slow_build(terminal: Any, capture: Any, what: str) -> Iterator[None]:
    """Say what the first test waits for when building a template takes over a second. (The
    test's set-up, which waits, runs with output captured: the line goes around the capture.)"""
    started = time.monotonic()
    said = threading.Event()

    def say(line: str) -> None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            terminal.write_line(line)

    def announce() -> None:
        said.set()
        say(f"pgfast: building {what}...")

    timer = threading.Timer(1.0, announce)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if said.is_set():
            say(f"pgfast: built {what} in {time.monotonic() - started:.1f}s")


def _stop_if_server_lost(session: pytest.Session) -> None:
    """End the run with one message if the embedded server's data directory was deleted (else
    every later test would fail on its own, each with a traceback)."""
    server = session.config.stash.get(_SERVER, None)
    if server is None:
        return
    try:
        server.check()
    except pgfast.DatabaseUnavailableError as exc:
        _stop_run(session, f"pgfast: {exc}")


def _stop_run(session: pytest.Session, message: str) -> NoReturn:
    """End the run with one message, where every later test would fail on its own, each with a
    traceback."""
    if not hasattr(session.config, "workerinput"):
        pytest.exit(message, returncode=pytest.ExitCode.INTERRUPTED)
    # An xdist worker's pytest.exit reaches the controller as a crash, its message lost; a
    # worker's shouldstop ends the whole run, with this message, once.
    session.shouldstop = message
    pytest.skip(message)


_F = TypeVar("_F", bound=Callable[..., Any])


def _async_fixture(function: _F) -> _F:
    """A function-scoped async fixture for whichever runner is installed: pytest-asyncio wants
    its own decorator (in strict mode it runs nothing else); anyio's plugin takes a plain one."""
    if pytest_asyncio is not None:
        return pytest_asyncio.fixture(function)  # type: ignore[return-value]
    return pytest.fixture(function)


@pytest.fixture
def _pgfast_runner(request: pytest.FixtureRequest) -> None:
    """Without pytest-asyncio, only anyio's plugin runs pgfast's async fixtures: say so in one
    line instead of letting pytest fail on an async fixture that nothing runs."""
    if pytest_asyncio is None and "anyio_backend" not in request.fixturenames:
        pytest.fail(
            "pgfast's database fixtures need an async test runner: install pytest-asyncio "
            "(pip install 'pgfast[pytest]') or mark the test with @pytest.mark.anyio (anyio's plugin)",
            pytrace=False,
        )


# One connection opened with the pool (most tests never need a second) but no floor: asyncpg
# restores a floor when the server goes away (a deleted embedded data directory), logging a
# traceback each try. asyncpg < 0.32 has no init_size: there the floor is the way to open one.
_ONE_CONNECTION_AHEAD: Final = (
    {"init_size": 1} if "init_size" in inspect.signature(asyncpg.create_pool).parameters else {"min_size": 1}
)


class _LoopState:
    """What is kept on one event loop for the next test that runs on it."""

    def __init__(self, databases: pgfast.IsolatedDatabases, first_test: str) -> None:
        self.databases = databases
        self.first_test = first_test
        self.shared = False  # a second test ran on this loop: it outlives its tests
        self.spares: dict[bool, asyncio.Task[tuple[str, asyncpg.Pool]]] = {}  # by "with fixtures"
        self.connection: asyncpg.Connection | None = None  # db_transaction's
        self._keeper: asyncio.Task[None] | None = None

    def keep_until_loop_closes(self) -> None:
        # pytest-asyncio closes a loop through asyncio.Runner, which first cancels every task
        # still pending: this one then lets go of what was kept, while the loop still runs.
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(self._wait_and_let_go())

    async def _wait_and_let_go(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self.let_go()

    def let_go(self) -> None:
        for task in self.spares.values():
            if not task.done():
                task.cancel()  # the database is released by _Loops.open_pool, or by close()
            elif not task.cancelled() and task.exception() is None:
                name, pool = task.result()
                pool.terminate()
                self.databases.release(name)
        self.spares.clear()
        if self.connection is not None:
            self.connection.terminate()
            self.connection = None


class _Loops:
    """Connections made ahead of the tests, for each event loop that outlives one test.

    asyncpg connections belong to the loop they were made on, and pytest-asyncio gives every
    test a new loop by default: then nothing can be connected ahead and each test waits for
    its connection (~2 ms of server start-up). When tests share a loop (loop scope "module"
    or "session"), the next test's pool is connected while the current test runs, and
    db_transaction keeps its connection from one test to the next.
    """

    def __init__(
        self, databases: pgfast.IsolatedDatabases, config: pgfast.DatabaseConfig, session: pytest.Session
    ) -> None:
        self.databases = databases
        self.config = config
        self.session = session
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def state(self, test: pytest.Item) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState(self.databases, test.nodeid)
        elif test.nodeid != state.first_test:
            state.shared = True
        return state

    def stop_if_server_lost(self) -> None:
        _stop_if_server_lost(self.session)

    async def pool(self, test: pytest.Item, fixtures: bool) -> tuple[str, asyncpg.Pool]:
        """A pool on a new migrated database: the one connected ahead, if there is one."""
        self.stop_if_server_lost()
        state = self.state(test)
        spare = state.spares.pop(fixtures, None)
        result = None
        if spare is not None:
            with contextlib.suppress(Exception):  # it failed: connect again, and raise this time
                result = await spare
        if result is None:
            result = await self.open_pool(fixtures)
        if state.shared:
            state.spares[fixtures] = asyncio.get_running_loop().create_task(self.open_pool(fixtures))
            state.keep_until_loop_closes()
        return result

    async def open_pool(self, fixtures: bool) -> tuple[str, asyncpg.Pool]:
        try:
            name = await self.databases.create(fixtures=fixtures)
        except Exception:
            self.stop_if_server_lost()
            raise
        config = dataclasses.replace(self.config, url=self.databases.url(name), min_connections=0)
        try:
            return name, await pgfast.create_pool(config, **_ONE_CONNECTION_AHEAD)
        except BaseException:
            self.databases.release(name)
            self.stop_if_server_lost()
            raise
        finally:
            self.databases.refill()  # the test now runs: a good time for background work

    async def connection(self, test: pytest.Item) -> asyncpg.Connection:
        """A connection to the shared database: the previous test's, on a shared loop."""
        self.stop_if_server_lost()
        state = self.state(test)
        conn, state.connection = state.connection, None
        if conn is None or conn.is_closed():
            try:
                name = await self.databases.shared()
                settings = dict(self.config.server_settings or {})  # the app role, if any
                conn = await asyncpg.connect(
                    self.databases.url(name), statement_cache_size=0, server_settings=settings
                )
            except Exception:
                self.stop_if_server_lost()
                raise
        return conn

    async def give_back(self, test: pytest.Item, conn: asyncpg.Connection) -> None:
        """Roll back and reset `conn`; keep it for the next test if the loop is shared."""
        state = self.state(test)
        try:
            await conn.execute(f"ROLLBACK; {conn.get_reset_query()}")
        except Exception:
            conn.terminate()
            return
        if state.shared and state.connection is None:
            state.connection = conn
            state.keep_until_loop_closes()
        else:
            await conn.close(timeout=2)


@pytest.fixture(scope="session")
def _pgfast_loops(
    request: pytest.FixtureRequest,
    _pgfast_databases: pgfast.IsolatedDatabases,
    pgfast_config: pgfast.DatabaseConfig,
    pgfast_app_role: str | None,
) -> "_Loops":
    return _Loops(_pgfast_databases, _as_role(pgfast_config, pgfast_app_role), request.session)


def _as_role(config: pgfast.DatabaseConfig, role: str | None) -> pgfast.DatabaseConfig:
    """`config` whose connections act as `role`: SET ROLE at connection start (a startup
    setting, so the pool's RESET ALL keeps it), so no password or pg_hba entry is needed."""
    if not role:
        return config
    return dataclasses.replace(config, server_settings={**(config.server_settings or {}), "role": role})


class _PoolFactory:
    """`await db_pool_factory()` opens a pool on a new database; the test's end drops them all."""

    def __init__(self, loops: _Loops, test: pytest.Item) -> None:
        self._loops = loops
        self._databases = loops.databases
        self._test = test
        self._pools: dict[asyncpg.Pool, str] = {}

    async def __call__(self, *, fixtures: bool = False) -> asyncpg.Pool:
        name, pool = await self._loops.pool(self._test, fixtures)
        self._pools[pool] = name
        return pool

    def name(self, pool: asyncpg.Pool) -> str:
        """The database name behind `pool`."""
        return self._pools[pool]

    def url(self, pool: asyncpg.Pool) -> str:
        """The URL of the database behind `pool` (the server's user and password)."""
        return self._databases.url(self._pools[pool])

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


@_async_fixture
async def db_pool_factory(
    request: pytest.FixtureRequest, _pgfast_runner: None, _pgfast_loops: _Loops
) -> AsyncIterator[_PoolFactory]:
    """An async callable returning a pool on a new migrated database at each call."""
    factory = _PoolFactory(_pgfast_loops, request.node)
    try:
        yield factory
    finally:
        keep = request.config.getoption("pgfast_keep_failed", False) and _failed(request)
        kept = await factory._finish(keep=keep)
        for name in kept:
            url = _shown(_pgfast_loops.databases.url(name))
            cleanup = _cleanup_hint(request.config, _pgfast_loops.databases)
            request.config.stash.setdefault(_KEPT, []).append([request.node.nodeid, url, cleanup])


@_async_fixture
async def isolated_db(db_pool_factory: _PoolFactory) -> asyncpg.Pool:
    """A pool on a fresh database holding the migrated schema; dropped after the test."""
    return await db_pool_factory()


@_async_fixture
async def db_with_fixtures(db_pool_factory: _PoolFactory) -> asyncpg.Pool:
    """Like `isolated_db`, with every SQL fixture file loaded (cloned from its own template)."""
    return await db_pool_factory(fixtures=True)


@_async_fixture
async def fixture_loader(
    isolated_db: asyncpg.Pool, db_pool_factory: "_PoolFactory", _pgfast_databases: pgfast.IsolatedDatabases
) -> Callable[[Iterable[str | int]], Awaitable[None]]:
    """`await fixture_loader(["users", ...])` loads those fixture files into `isolated_db`, as the
    admin user (test data may span tenants that the app role's policies keep apart)."""

    async def load(names: Iterable[str | int]) -> None:
        if isinstance(names, (str, int)):
            names = [names]
        chosen = pgfast.select_fixtures(_pgfast_databases.fixtures, names)
        conn = await asyncpg.connect(db_pool_factory.url(isolated_db), statement_cache_size=0)
        try:
            await pgfast.load_fixtures(conn, chosen)
        finally:
            await conn.close()

    return load


@_async_fixture
async def db_transaction(
    request: pytest.FixtureRequest, _pgfast_runner: None, _pgfast_loops: _Loops
) -> AsyncIterator[asyncpg.Connection]:
    """A connection to one shared migrated database, inside a transaction rolled back after the test.

    No clone at all, for tests that never need to commit (nor see another connection's
    writes): one connection per test, or none when tests share an event loop.
    """
    conn = await _pgfast_loops.connection(request.node)
    try:
        await conn.execute("BEGIN")
        yield conn
    finally:
        await _pgfast_loops.give_back(request.node, conn)


@pytest.fixture
def app() -> Any:
    """Your FastAPI app, for `app_client` / `sync_app_client`: define this fixture yourself."""
    pytest.fail(
        "pgfast's app clients need your app: define a fixture named 'app' in a conftest.py that "
        "returns it, e.g. `@pytest.fixture\ndef app():\n    return create_app()`",
        pytrace=False,
    )


@_async_fixture
async def app_client(app: Any, isolated_db: asyncpg.Pool) -> AsyncIterator[Any]:
    """An `httpx.AsyncClient` for your `app`, on the test's database (`isolated_db`, as the app
    role if one is set): every pgfast dependency gets that pool (mounted apps too, and the app's
    lifespan finds it as `app.state.pgfast_pool`), the rest of the app's lifespan runs, and
    pgfast's own lifespan opens no pool of its own."""
    import httpx

    async def test_pool() -> asyncpg.Pool:
        return isolated_db

    with _given_pool(app, test_pool):
        async with app.router.lifespan_context(app) as state:

            async def with_state(scope: Any, receive: Any, send: Any) -> None:
                # As a server does: each request gets a copy of the lifespan's state.
                if scope["type"] in ("http", "websocket") and state:
                    scope = {**scope, "state": dict(state)}
                await app(scope, receive, send)

            transport = httpx.ASGITransport(app=with_state)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client


@pytest.fixture
def sync_app_client(
    request: pytest.FixtureRequest,
    app: Any,
    _pgfast_databases: pgfast.IsolatedDatabases,
    _pgfast_loops: _Loops,
) -> Iterator[Any]:
    """FastAPI's `TestClient` for your `app`, on a database of the test's own. The TestClient
    runs the app in an event loop of its own thread; the pool is made in that loop (when the
    app's lifespan or a request first asks for it)."""
    from fastapi.testclient import TestClient

    name = asyncio.run(_pgfast_databases.create())
    config = dataclasses.replace(_pgfast_loops.config, url=_pgfast_databases.url(name), min_connections=0)
    made: list[asyncpg.Pool] = []

    async def test_pool() -> asyncpg.Pool:
        if not made:
            made.append(await pgfast.create_pool(config, **_ONE_CONNECTION_AHEAD))
        return made[0]

    try:
        with _given_pool(app, test_pool), TestClient(app) as client:
            try:
                yield client
            finally:
                if made and client.portal is not None:
                    client.portal.call(pgfast.close_pool, made[0])
    finally:
        if request.config.getoption("pgfast_keep_failed", False) and _failed(request):
            kept = _shown(_pgfast_databases.url(asyncio.run(_pgfast_databases.keep(name))))
            request.config.stash.setdefault(_KEPT, []).append(
                [request.node.nodeid, kept, _cleanup_hint(request.config, _pgfast_databases)]
            )
        else:
            _pgfast_databases.release(name)


@contextlib.contextmanager
def _given_pool(app: Any, pool: Callable[[], Awaitable[asyncpg.Pool]]) -> Iterator[None]:
    """Give `app` the test's pool: pgfast's lifespan takes it (and opens none), and get_db_pool
    is overridden for an app without pgfast's lifespan."""
    if not (hasattr(app, "dependency_overrides") and hasattr(app, "router")):
        what = "a function: return create_app(), not create_app" if callable(app) else type(app).__name__
        pytest.fail(f"the 'app' fixture must return your FastAPI app; it returned {what}", pytrace=False)
    app.dependency_overrides[pgfast.get_db_pool] = pool
    app.state.pgfast_test_pool = pool
    try:
        yield
    finally:
        app.dependency_overrides.pop(pgfast.get_db_pool, None)
        app.state.pgfast_test_pool = None


def _cleanup_hint(config: pytest.Config, databases: pgfast.IsolatedDatabases) -> str:
    server = config.stash.get(_SERVER, None)
    if server is not None:  # the embedded server, kept running for them
        return f"pgfast test-db server --stop-kept {server.root}  # stops it and deletes its data"
    return f"TEST_DATABASE_URL='{_shown(databases.admin_url)}' pgfast test-db cleanup --all"


def _shown(url: str) -> str:
    """`url` to print for a command to run: without its password (in no form), which the
    summary says to give in PGPASSWORD."""
    return pgfast.mask_url(url).replace(":***@", "@")


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(report.failed for report in reports.values())


# Hooks. A star import in a conftest and the installed entry point may both register them.


def pytest_addoption(parser: pytest.Parser) -> None:
    with contextlib.suppress(ValueError):  # added already, by the other registration
        _add_options(parser)


def _add_options(parser: pytest.Parser) -> None:
    parser.getgroup("pgfast").addoption(  # first: the second registration stops here
        "--pgfast-keep-failed",
        action="store_true",
        dest="pgfast_keep_failed",
        help="keep the databases of failed tests and print how to connect to them",
    )
    parser.addini(
        "pgfast_app_role",
        "the role the app connects as: test databases are used as it (created if missing)",
        default="",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    # An xdist worker: its kept databases travel to the controller, which prints the summary.
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["pgfast_kept"] = session.config.stash.get(_KEPT, [])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    kept = node.config.stash.setdefault(_KEPT, [])
    for entry in getattr(node, "workeroutput", {}).get("pgfast_kept", []):
        if entry not in kept:  # (the hook may be registered twice)
            kept.append(entry)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    kept = config.stash.get(_KEPT, [])
    if kept and not config.stash.get(_SUMMARY_SHOWN, False):
        config.stash[_SUMMARY_SHOWN] = True
        terminalreporter.section("pgfast: databases kept for failed tests")
        for test, url, _cleanup in kept:
            terminalreporter.write_line(f"{test}:\n    psql '{url}'")
        for cleanup in dict.fromkeys(entry[2] for entry in kept):
            terminalreporter.write_line(f"clean up when done: {cleanup}")
        if "***" in pgfast.mask_url(pgfast.test_server_url() or ""):
            terminalreporter.write_line("(the server's password is left out: give it in PGPASSWORD)")
