"""The embedded server's data directory deleted mid-run: one message, and no server left behind."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_TESTS = """
import os
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest


def delete_the_servers_directory(url):
    root = Path(parse_qs(urlsplit(url).query)["host"][0])
    pid = (root / "data" / "postmaster.pid").read_text().split()[0]
    Path(os.environ["SERVER_SEEN"]).write_text(f"{pid}\\n{root}\\n")
    # Moved out of the way first: the server still writes in it, so a delete in place can meet a
    # file that vanished meanwhile and fail part way (seen under load).
    moved = root.with_name("deleted-" + root.name)  # not a name pgfast looks for
    root.rename(moved)
    shutil.rmtree(moved, ignore_errors=True)


if os.environ["FIRST_USES_A_DATABASE"] == "yes":

    @pytest.mark.asyncio
    async def test_1_deletes_the_directory(pgfast_server_url, isolated_db):
        assert await isolated_db.fetchval("SELECT count(*) FROM users") == 0
        delete_the_servers_directory(pgfast_server_url)

else:

    def test_1_deletes_the_directory(pgfast_server_url):
        delete_the_servers_directory(pgfast_server_url)


@pytest.mark.asyncio
async def test_2_needs_a_database(isolated_db):
    assert False, "never runs"


@pytest.mark.asyncio
async def test_3_needs_the_shared_database(db_transaction):
    assert False, "never runs"
"""


def processes_of(pid: int, root: str) -> list[str]:
    """Live processes that are `pid`, its children, or name `root` on their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_text(errors="replace").replace("\0", " ")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if state != "Z" and (int(entry.name) == pid or int(ppid) == pid or root in cmdline):
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="looks for processes in /proc")
@pytest.mark.parametrize(
    ("first_uses_a_database", "workers"),
    [
        ("yes", ["-p", "no:xdist"]),
        ("no", ["-p", "no:xdist"]),
        # One file on one worker: its tests run in order, and the stop goes through the controller.
        ("yes", ["-n", "2", "--dist", "loadfile"]),
    ],
)
def test_deleted_data_directory_ends_the_run_once_and_stops_the_server(
    tmp_path: Path, first_uses_a_database: str, workers: list[str]
) -> None:
    project = tmp_path / "project"
    (project / "migrations").mkdir(parents=True)
    (project / "migrations" / "1_users_up.sql").write_text("CREATE TABLE users (id int);\n")
    (project / "test_app.py").write_text(PROJECT_TESTS)
    (project / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    seen = tmp_path / "server-seen"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFAST_") and k != "TEST_DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", *workers],
        cwd=project,
        env=env | {"SERVER_SEEN": str(seen), "FIRST_USES_A_DATABASE": first_uses_a_database},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert seen.exists(), output
    pid, root = seen.read_text().split()
    assert result.returncode == pytest.ExitCode.INTERRUPTED, output
    message = (
        f"pgfast: the embedded PostgreSQL's data directory {root}/data was deleted while the tests ran "
        f"(by a clean-up of {Path(root).parent}?); its server (pid {pid}) is stopped. Run the tests "
        "again; to keep the server out of such clean-ups, set TEST_DATABASE_URL to a server of your own"
    )
    assert output.count(message) == 1, output
    assert "1 passed" in output and "failed" not in output and "error" not in output, output
    if "-n" in workers:  # the worker skips the test that found it, and the controller stops the run
        assert "1 passed, 1 skipped" in output, output
    assert "Traceback" not in output and "never runs" not in output, output
    assert processes_of(int(pid), root) == []
    shutil.rmtree(
        Path(root).with_name("deleted-" + Path(root).name), ignore_errors=True
    )  # what the server wrote after the delete
