"""The plugin with each async test runner users have: anyio's plugin with no pytest-asyncio at all,
and pytest-asyncio in strict and auto mode. One user test file passes every way."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

MIGRATION = "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);\n"

# FastAPI's documentation teaches async tests with anyio's marker; this file uses only that.
ANYIO_TESTS = """
import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_sync_tests_still_run():
    assert True


@pytest.mark.anyio
async def test_isolated_db(isolated_db):
    await isolated_db.execute("INSERT INTO users (name) VALUES ('a')")
    assert await isolated_db.fetchval("SELECT count(*) FROM users") == 1


@pytest.mark.anyio
async def test_each_test_has_its_own(isolated_db):
    assert await isolated_db.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.anyio
async def test_db_transaction(db_transaction):
    await db_transaction.execute("INSERT INTO users (name) VALUES ('b')")
    assert await db_transaction.fetchval("SELECT count(*) FROM users") == 1


@pytest.mark.anyio
async def test_db_pool_factory(db_pool_factory):
    pool = await db_pool_factory()
    assert await pool.fetchval("SELECT count(*) FROM users") == 0
"""


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with pytest, anyio, asyncpg and FastAPI, pgfast installed (its entry point
    included), and no pytest-asyncio."""
    venv = tmp_path_factory.mktemp("venv")
    # No pip of its own (seeding one takes seconds): this interpreter's pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, "pytest", "anyio", "asyncpg", "fastapi"], check=True, capture_output=True)
    # What `pip install pgfast` leaves, without building a wheel: the modules on the path and the
    # pytest11 entry point.
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "pgfast-checkout.pth").write_text(f"{REPO}\n")
    info = site / "pgfast-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pgfast\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text("[pytest11]\npgfast_pytest = pgfast_pytest\n")
    check = subprocess.run([str(python), "-c", "import pytest_asyncio"], capture_output=True)
    assert check.returncode != 0, "the venv must not have pytest-asyncio"
    return python


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "1_users_up.sql").write_text(MIGRATION)
    (tmp_path / "test_app.py").write_text(ANYIO_TESTS)
    return tmp_path


def run(python: Path | str, project: Path, *args: str, ini: str = "") -> subprocess.CompletedProcess[str]:
    (project / "pytest.ini").write_text(f"[pytest]\nfilterwarnings = error\n{ini}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGFAST_", "PYTHONPATH"))}
    env["TEST_DATABASE_URL"] = SERVER
    return subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


SERVER = ""


@pytest.fixture(autouse=True)
def _server(postgres_server: str) -> Iterator[None]:
    global SERVER
    SERVER = postgres_server
    yield


def test_anyio_without_pytest_asyncio(bare_python: Path, project: Path) -> None:
    # 0.9.0 imported pytest_asyncio at the top: pytest stopped at start-up, even for sync tests.
    result = run(bare_python, project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout


def test_without_any_async_runner_a_fixture_says_what_to_install(bare_python: Path, project: Path) -> None:
    (project / "test_app.py").write_text(
        "def test_sync():\n    pass\n\n\ndef test_wants_a_database(isolated_db):\n    pass\n"
    )
    result = run(bare_python, project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed, 1 error" in result.stdout
    assert (
        "pgfast's database fixtures need an async test runner: install pytest-asyncio "
        "(pip install 'pgfast[pytest]') or mark the test with @pytest.mark.anyio" in result.stdout
    )
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "ini",
    [
        "asyncio_mode = strict\nasyncio_default_fixture_loop_scope = function",
        "asyncio_mode = strict\nasyncio_default_fixture_loop_scope = session\nasyncio_default_test_loop_scope = session",
    ],
    ids=["strict", "strict-session-loop"],
)
def test_anyio_tests_alongside_pytest_asyncio(project: Path, ini: str) -> None:
    result = run(sys.executable, project, ini=ini)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
