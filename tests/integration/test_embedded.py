"""The embedded throwaway PostgreSQL (no TEST_DATABASE_URL), db_transaction, `test-db server`."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from helpers import pid_alive, run_pytest, user_env, wait_for

import pgfast

PROJECT_TESTS = """
import os

import pytest

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("n", range(4))
async def test_server_facts(isolated_db, n):
    facts = [await isolated_db.fetchval(f"SHOW {name}") for name in ("data_directory", "fsync", "synchronous_commit")]
    with open(os.environ["FACTS_FILE"], "a") as f:
        f.write(" ".join(facts) + "\\n")


async def test_transaction_writes(db_transaction):
    await db_transaction.execute("INSERT INTO items (name) VALUES ('rolled back')")
    assert await db_transaction.fetchval("SELECT count(*) FROM items") == 1


async def test_transaction_sees_nothing_left(db_transaction):
    assert await db_transaction.fetchval("SELECT count(*) FROM items") == 0
"""


def user_project(root: Path) -> Path:
    (root / "migrations").mkdir(parents=True)
    (root / "migrations/1_items_up.sql").write_text("CREATE TABLE items (id serial PRIMARY KEY, name text);")
    (root / "tests").mkdir()
    (root / "tests/test_it.py").write_text(PROJECT_TESTS)
    (root / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    return root


def run_without_server(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in the user's project with no TEST_DATABASE_URL: the embedded server's path."""
    return run_pytest(project, *args, env={"FACTS_FILE": str(project / "facts.txt")}, timeout=300)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    yield user_project(tmp_path / "project")


def test_no_test_database_url_starts_one_tuned_server_shared_by_workers(project: Path) -> None:
    result = run_without_server(project, "-n", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout
    facts = {line for line in (project / "facts.txt").read_text().splitlines()}
    assert len(facts) == 1, facts  # both workers, one server
    data_directory, fsync, synchronous_commit = facts.pop().split()
    assert (fsync, synchronous_commit) == ("off", "off")
    assert data_directory.startswith(str(pgfast.EmbeddedPostgres().base / "pgfast-pg-"))
    server_root = Path(data_directory).parent  # stopped and removed, its lock file too
    assert not server_root.exists() and not server_root.with_suffix(".lock").exists()


def test_a_killed_runs_server_is_stopped_by_the_next_run(project: Path) -> None:
    (project / "tests/test_hang.py").write_text(
        "import asyncio, pytest\n\n@pytest.mark.asyncio\nasync def test_hang(isolated_db):\n"
        "    print(await isolated_db.fetchval('SHOW data_directory'), flush=True)\n    await asyncio.sleep(300)\n"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:benchmark",
            "tests/test_hang.py",
        ],
        cwd=project,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    line = ""
    deadline = time.monotonic() + 120
    while "pgfast-pg-" not in line:
        assert time.monotonic() < deadline and process.poll() is None, "the run never reached its test"
        line = process.stdout.readline()
    data_directory = Path(line.strip().split()[-1])
    # Read while the run lives: once it is dead, another worker starting a server may sweep it.
    postmaster = int((data_directory / "postmaster.pid").read_text().split()[0])
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    assert pid_alive(postmaster), "SIGKILL leaves the server running"
    (project / "tests/test_hang.py").unlink()
    result = run_without_server(project)
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(lambda: not pid_alive(postmaster), "the next run stopped the killed run's server", timeout=10)
    assert not data_directory.parent.exists()
    assert not data_directory.parent.with_suffix(".lock").exists()


def test_a_lock_report_inside_a_run_leaves_the_runs_server_running(project: Path) -> None:
    # The lock report starts an embedded server of run id pid, as the plugin's does when run
    # without xdist: in one process they are the same server, which the report's end stopped.
    (project / "migrations/2_more_up.sql").write_text("ALTER TABLE items ADD COLUMN n int;")
    (project / "tests/test_it.py").write_text(
        "import pytest\n\nimport pgfast\n\n\n"
        "def test_lock_report(pgfast_server_url, monkeypatch):\n"
        "    monkeypatch.setenv('DATABASE_URL', pgfast_server_url)\n"
        "    assert pgfast.main(['schema', 'up', '--dry-run', '--locks']) == 0\n\n\n"
        "@pytest.mark.asyncio\nasync def test_after(isolated_db):\n"
        "    assert await isolated_db.fetchval('SELECT count(*) FROM items') == 0\n"
    )
    result = run_without_server(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_one_process_acquiring_a_server_twice_keeps_it_until_both_release(tmp_path: Path) -> None:
    first = pgfast.EmbeddedPostgres(f"twice-{os.getpid()}")
    url = first.acquire()
    try:
        with pgfast.EmbeddedPostgres(first.run_id) as again:
            assert again == url

        async def probe() -> int:
            conn = await asyncpg.connect(url)
            try:
                return int(await conn.fetchval("SELECT 1"))
            finally:
                await conn.close()

        assert asyncio.run(probe()) == 1  # still serving the first
    finally:
        first.release()
    assert not first.root.exists()


def test_testdb_server_prints_a_url_and_cleans_up_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "pgfast", "test-db", "server"],
        cwd=tmp_path,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    assert "embedded PostgreSQL is running" in first, first + process.stderr.read()
    export = process.stdout.readline().strip()
    assert export.startswith("export TEST_DATABASE_URL='postgresql://postgres@/postgres?host=")
    url = export.split("'")[1]

    async def check() -> str:
        conn = await asyncpg.connect(url)
        try:
            return str(await conn.fetchval("SHOW fsync"))
        finally:
            await conn.close()

    import asyncio

    assert asyncio.run(check()) == "off"
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    process.stdout.close()
    process.stderr.close()
    socket_dir = Path(url.split("host=")[1])
    assert not socket_dir.exists()


def test_a_server_that_cannot_start_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:  # its port is in use, so PostgreSQL cannot listen there
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        server = pgfast.EmbeddedPostgres(f"cannot-start-{os.getpid()}", port=port)
        with pytest.raises(pgfast.PgfastError) as failure:
            server.acquire()
    message = str(failure.value)
    assert message.startswith("the embedded PostgreSQL did not start: could not create any TCP/IP sockets")
    assert "set TEST_DATABASE_URL" in message and "Address already in use" in message
    assert time.monotonic() - started < 30  # told at once, not after the 60 s start-up deadline
    assert not server.root.exists() and not (server.base / f"{server.root.name}.lock").exists()


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_no_postgresql_to_start_stops_the_run_once_with_one_message(
    project: Path, args: tuple[str, ...]
) -> None:
    # 0.9.0 repeated the error with a full traceback for every test (127 lines for 2 tests), and
    # ignored a PGFAST_PG_BIN without binaries, starting whatever else it found.
    result = run_pytest(
        project, *args, env={"PGFAST_PG_BIN": "/nowhere/bin", "FACTS_FILE": str(project / "f")}
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    message = (
        "pgfast: PGFAST_PG_BIN='/nowhere/bin' has no initdb, pg_ctl, postgres; point it at the bin "
        "directory of a PostgreSQL server installation"
    )
    assert output.count(message) == 1, output
    assert "Traceback" not in output and "passed" not in result.stdout
    assert len(output.splitlines()) < 15, output
