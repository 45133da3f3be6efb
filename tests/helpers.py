"""Small helpers the test files share: SQL on a URL, pgfast or pytest in a subprocess, an app
served with its lifespan, waiting for a condition. Imported as `from helpers import ...`
(pytest puts tests/ on sys.path for tests/conftest.py)."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx

CHECKOUT = Path(__file__).resolve().parents[1]
UrlOf = Callable[[asyncpg.Pool], str]  # the `url_of` fixture (tests/conftest.py)


def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run `sql` on a connection of its own to `url` and return its rows."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def fetchval(url: str, sql: str, *args: Any) -> Any:
    """The first column of the first row of `sql` on `url`."""
    rows = fetch(url, sql, *args)
    return rows[0][0] if rows else None


def ledger(url: str) -> list[tuple[int, str]]:
    """(version, name) of each applied migration, in the order applied."""
    return [tuple(r) for r in fetch(url, "SELECT version, name FROM _pgfast_migrations ORDER BY apply_order")]


def databases_named(url: str, pattern: str) -> list[str]:
    """The names on `url`'s server that match the LIKE `pattern`."""
    return [r[0] for r in fetch(url, "SELECT datname FROM pg_database WHERE datname LIKE $1", pattern)]


def write(root: Path, relative: str, text: str = "SELECT 1;") -> Path:
    """Write `text` to `root/relative`, making the folders on the way."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def user_env(**extra: str) -> dict[str, str]:
    """This process's environment as a user's shell would have it: none of the variables that
    point pgfast at a server or at directories, nor xdist's worker markers; then `extra`."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PGFAST_", "PYTEST_XDIST")) and k not in ("DATABASE_URL", "TEST_DATABASE_URL")
    }
    return clean | extra


def pgfast_cli(
    cwd: Path, url: str | None, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m pgfast ARGS` in `cwd` with DATABASE_URL=`url` (unset for None), as a user runs
    it (`env` on top of `user_env()`)."""
    return subprocess.run(
        [sys.executable, "-m", "pgfast", *args],
        cwd=cwd,
        env=_cli_env(url, env),
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
    )


def start_pgfast(
    cwd: Path, url: str | None, *args: str, env: dict[str, str] | None = None
) -> "subprocess.Popen[str]":
    """`pgfast_cli` started in the background, its output piped, for a test to race or stop."""
    return subprocess.Popen(
        [sys.executable, "-m", "pgfast", *args],
        cwd=cwd,
        env=_cli_env(url, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _cli_env(url: str | None, env: dict[str, str] | None) -> dict[str, str]:
    return user_env(**({"DATABASE_URL": url} if url is not None else {}), **(env or {}))


def run_pytest(
    project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """pytest in a user's `project` (`env` on top of `user_env()`)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark", *args],
        cwd=project,
        env=user_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one line a failed schema command printed besides where it found its migrations."""
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    # Every schema command first says where it found its migrations (test_discovery_cli.py).
    lines = [
        line for line in result.stderr.strip().splitlines() if not line.startswith("pgfast: looked under")
    ]
    assert len(lines) == 1, result.stderr
    return lines[0]


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk to it over ASGI, as a deployed app would be talked to."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll `condition` until it returns something true and return that; fail after `timeout`
    seconds saying `what` never happened (a generous bound: it only matters for a hang)."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)
    return result
