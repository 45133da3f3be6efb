"""The pytest plugin as users meet it: small projects run by pytest in a subprocess."""

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from helpers import databases_named, run_pytest, user_env

import pgfast

MIGRATION = """
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
"""
SECOND = """-- depends_on: 20250101000000
CREATE TABLE orders (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES users);
"""
USERS_FIXTURE = "INSERT INTO users (name) VALUES ('alice'), ('bob');"
ORDERS_FIXTURE = "INSERT INTO orders (user_id) SELECT id FROM users WHERE name = 'alice';"

TESTS = """
import pytest

pytestmark = pytest.mark.asyncio


async def test_isolated_db_has_schema_and_no_data(isolated_db):
    assert await isolated_db.fetchval("SELECT count(*) FROM users") == 0
    await isolated_db.execute("INSERT INTO users (name) VALUES ('only-here')")


async def test_each_test_gets_its_own_database(isolated_db):
    assert await isolated_db.fetchval("SELECT count(*) FROM users") == 0


async def test_db_with_fixtures_has_every_fixture(db_with_fixtures):
    assert await db_with_fixtures.fetchval("SELECT count(*) FROM orders") == 1


async def test_fixture_loader_loads_named_in_dependency_order(isolated_db, fixture_loader):
    await fixture_loader(["orders", "users"])
    assert await isolated_db.fetchval("SELECT count(*) FROM orders") == 1


async def test_fixture_loader_unknown_name_lists_available(fixture_loader):
    with pytest.raises(ValueError, match="no fixture named 'nope'; available: users, orders"):
        await fixture_loader(["nope"])


async def test_db_pool_factory_gives_separate_databases(db_pool_factory):
    one = await db_pool_factory()
    two = await db_pool_factory()
    assert await one.fetchval("SELECT current_database()") != await two.fetchval("SELECT current_database()")
    await db_pool_factory.cleanup(one)
    assert one._closed
"""


def orphans(server: str) -> list[str]:
    """Test databases whose creator process is gone: what a run must never leave behind."""

    async def run() -> list[str]:
        conn = await asyncpg.connect(server)
        try:
            found = await pgfast.list_test_databases(conn)
        finally:
            await conn.close()
        return [
            db.name for db in found if db.kind == "test" and db.creator.startswith("pid") and not db.running
        ]

    return asyncio.run(run())


def databases_of_tests(server: str) -> list[str]:
    return databases_named(server, "pgfast\\_test\\_%")


def make_project(root: Path, conftest: str = "", ini: str = "asyncio_mode = strict") -> Path:
    (root / "app/migrations").mkdir(parents=True)
    (root / "app/migrations/20250101000000_users_up.sql").write_text(MIGRATION)
    (root / "app/migrations/20250102000000_orders_up.sql").write_text(SECOND)
    (root / "app/fixtures").mkdir(parents=True)
    (root / "app/fixtures/20250101000000_users_fixture.sql").write_text(USERS_FIXTURE)
    (root / "app/fixtures/20250102000000_orders_fixture.sql").write_text(ORDERS_FIXTURE)
    (root / "tests").mkdir()
    (root / "tests/test_app.py").write_text(TESTS)
    (root / "tests/conftest.py").write_text(conftest)
    if "asyncio_default_fixture_loop_scope" not in ini:  # pytest-asyncio warns when it is unset
        ini += "\nasyncio_default_fixture_loop_scope = function"
    (root / "pytest.ini").write_text(f"[pytest]\n{ini}\nfilterwarnings = error\n")
    return root


def run_pytest_on(
    server: str, project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """pytest in the user's `project`, whose tests run on `server`."""
    return run_pytest(project, *args, env={"TEST_DATABASE_URL": server, **(env or {})})


def assert_passed(result: subprocess.CompletedProcess[str], count: int) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{count} passed" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("conftest", "args"),
    [
        ("", ()),  # the installed entry point alone
        ('pytest_plugins = ["pgfast_pytest"]\n', ()),  # vendored style, also installed
        ("from pgfast_pytest import *  # noqa\n", ()),  # star import, also installed
        ("from pgfast_pytest import *  # noqa\n", ("-p", "no:pgfast_pytest")),  # star import alone
        ('from pgfast_pytest import *  # noqa\npytest_plugins = ["pgfast_pytest"]\n', ()),  # all three
    ],
    ids=["entry-point", "pytest_plugins", "star-import", "star-import-only", "all-combined"],
)
def test_every_way_of_enabling_the_plugin_works(
    tmp_path: Path, conftest: str, args: tuple[str, ...], postgres_server: str
) -> None:
    # Every way takes the plugin's options too (0.9.0's star import brought no hooks).
    result = run_pytest_on(postgres_server, make_project(tmp_path, conftest), *args, "--pgfast-keep-failed")
    assert_passed(result, 6)
    assert orphans(postgres_server) == []


def test_auto_mode_needs_no_marks(tmp_path: Path, postgres_server: str) -> None:
    project = make_project(tmp_path, ini="asyncio_mode = auto")
    (project / "tests/test_app.py").write_text(TESTS.replace("pytestmark = pytest.mark.asyncio", ""))
    assert_passed(run_pytest_on(postgres_server, project), 6)


def test_session_loop_scope_works(tmp_path: Path, postgres_server: str) -> None:
    ini = "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = session\nasyncio_default_test_loop_scope = session"
    assert_passed(run_pytest_on(postgres_server, make_project(tmp_path, ini=ini)), 6)


AHEAD_CONFTEST = """
import time

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.config.stash[STARTED] = time.time()


STARTED = pytest.StashKey[float]()


@pytest.fixture
def setup_started(request):
    return request.config.stash[STARTED]
"""

AHEAD_TESTS = """
import asyncio
import os

import pytest

pytestmark = pytest.mark.asyncio
BACKEND_START = "SELECT extract(epoch FROM backend_start) FROM pg_stat_activity WHERE pid = pg_backend_pid()"


@pytest.mark.parametrize("n", range(5))
async def test_isolated(isolated_db, setup_started, n):
    assert await isolated_db.fetchval("SELECT count(*) FROM users") == 0
    await isolated_db.execute("INSERT INTO users (name) VALUES ('left here')")
    connected = await isolated_db.fetchval(BACKEND_START)
    with open(os.environ["AHEAD_FILE"], "a") as f:
        f.write(f"isolated {n} {connected < setup_started}\\n")
    if 1 <= n <= 3 and os.environ.get("AHEAD_WAIT"):
        # Give the next test's database time to be cloned (slow on a busy durable server) and
        # connected: wait until another of this process's databases has a newer connection.
        others = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname <> current_database() "
            f"AND datname LIKE 'pgfast_test_%_{os.getpid()}_%' AND backend_start > "
            "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"
        )
        for _ in range(300):
            if await isolated_db.fetchval(others):
                break
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("n", range(3))
async def test_transaction(db_transaction, n):
    assert await db_transaction.fetchval("SELECT count(*) FROM users") == 0
    assert await db_transaction.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    ) == 0
    await db_transaction.execute("INSERT INTO users (name) VALUES ('rolled back')")
    await db_transaction.execute("SELECT pg_advisory_lock(42)")  # session-level: must not outlive the test
    with open(os.environ["AHEAD_FILE"], "a") as f:
        f.write(f"transaction {n} {await db_transaction.fetchval('SELECT pg_backend_pid()')}\\n")
"""


@pytest.mark.parametrize("loop_scope", ["session", "function"])
def test_tests_sharing_a_loop_get_connections_made_ahead(
    tmp_path: Path, loop_scope: str, postgres_server: str
) -> None:
    ini = f"asyncio_default_fixture_loop_scope = {loop_scope}\nasyncio_default_test_loop_scope = {loop_scope}"
    project = make_project(tmp_path, conftest=AHEAD_CONFTEST, ini=ini)
    (project / "tests/test_app.py").write_text(AHEAD_TESTS)
    ahead = tmp_path / "ahead.txt"
    env = {"AHEAD_FILE": str(ahead), "AHEAD_WAIT": "1" if loop_scope == "session" else ""}
    result = run_pytest_on(postgres_server, project, "-W", "error", env=env)
    assert_passed(result, 8)
    assert "Unclosed" not in result.stdout + result.stderr
    lines = [line.split() for line in ahead.read_text().splitlines()]
    made_ahead = [flag for kind, _, flag in lines if kind == "isolated"]
    pids = {pid for kind, _, pid in lines if kind == "transaction"}
    if loop_scope == "session":
        # the first two tests show the loop is shared; from the third on, pools were connected ahead
        assert made_ahead == ["False", "False", "True", "True", "True"]
        assert len(pids) == 1  # the loop is known to be shared by then: one connection for all three
    else:
        assert made_ahead == ["False"] * 5
        assert len(pids) == 3
    assert orphans(postgres_server) == []


def test_parallel_with_xdist_leaves_nothing_behind(tmp_path: Path, postgres_server: str) -> None:
    result = run_pytest_on(postgres_server, make_project(tmp_path), "-n", "2")
    assert_passed(result, 6)
    assert orphans(postgres_server) == []


def test_failed_test_with_unreleased_connection_still_gets_dropped(
    tmp_path: Path, postgres_server: str
) -> None:
    project = make_project(tmp_path)
    (project / "tests/test_app.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_leaves_a_transaction_open(isolated_db):\n"
        "    conn = await isolated_db.acquire()\n"
        "    await conn.execute('BEGIN; LOCK TABLE users')\n"
        "    assert False, 'failing on purpose'\n"
    )
    started = time.monotonic()
    result = run_pytest_on(postgres_server, project)
    assert result.returncode == 1 and "failing on purpose" in result.stdout
    assert time.monotonic() - started < 60
    assert orphans(postgres_server) == []


def test_keep_failed_keeps_database_and_prints_how_to_connect(tmp_path: Path, postgres_server: str) -> None:
    project = make_project(tmp_path)
    (project / "tests/test_app.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_fails(isolated_db):\n"
        "    await isolated_db.execute(\"INSERT INTO users (name) VALUES ('evidence')\")\n"
        "    assert False\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_passes(isolated_db):\n"
        "    pass\n"
    )
    before = set(databases_of_tests(postgres_server))
    result = run_pytest_on(postgres_server, project, "--pgfast-keep-failed")
    assert result.returncode == 1
    assert "pgfast: databases kept for failed tests" in result.stdout
    # other tests may keep databases meanwhile (pgfast test-db create): take the one printed
    kept = sorted(n for n in set(databases_of_tests(postgres_server)) - before if f"/{n}" in result.stdout)
    assert (
        len(kept) == 1 and "psql 'postgresql://postgres@" in result.stdout and f"/{kept[0]}" in result.stdout
    )
    assert "_0_" in kept[0]  # owned by no process, so the next run's sweep leaves it

    async def check_and_drop() -> str:
        conn = await asyncpg.connect(pgfast.database_url(postgres_server, kept[0]))
        try:
            return str(await conn.fetchval("SELECT name FROM users"))
        finally:
            await conn.close()
            admin = await asyncpg.connect(postgres_server)
            await pgfast.cleanup_test_databases(admin, only=kept)
            await admin.close()

    assert asyncio.run(check_and_drop()) == "evidence"


def test_killed_run_is_swept_by_the_next_run(tmp_path: Path, own_server: str) -> None:
    project = make_project(tmp_path)
    (project / "tests/test_slow.py").write_text(
        "import asyncio, pytest\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_hangs(isolated_db):\n"
        "    await asyncio.sleep(120)\n"
    )
    env = user_env(TEST_DATABASE_URL=own_server)
    log = project / "run.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:benchmark",
                "tests/test_slow.py",
            ],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while not any(f"_{process.pid}_" in name for name in databases_of_tests(own_server)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"the run never created its database:\n{log.read_text()}")
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = [name for name in databases_of_tests(own_server) if f"_{process.pid}_" in name]
    assert left, "SIGKILL should have left the database behind"
    (project / "tests/test_slow.py").unlink()
    assert_passed(run_pytest_on(own_server, project), 6)
    assert not set(left) & set(databases_of_tests(own_server))
