"""The RLS dependency behind a real PgBouncer in transaction mode with 2 server connections.

The same harness runs a negative control (settings applied with is_local=false, and asyncpg's
statement cache left on) to show that it can see a leak when there is one.
"""

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import Depends, FastAPI, Request
from helpers import UrlOf

import pgfast

pytestmark = pytest.mark.asyncio
TENANTS = [f"t{i:02d}" for i in range(50)]


@pytest.fixture(scope="module")
def pgbouncer_port(postgres_server: str) -> Iterator[int]:
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        message = "pgbouncer is not installed (apt-get install pgbouncer)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # Not under pytest's tmp dirs: those are private to root, and PgBouncer runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="pgfast-pgbouncer-"))
    folder.chmod(0o777)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "users.txt").write_text('"postgres" ""\n"pgfast_tenant" ""\n')
    target = urlsplit(postgres_server)
    backend_host = dict(parse_qsl(target.query)).get("host") or target.hostname or "127.0.0.1"
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={backend_host} port={target.port or 5432}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder}/users.txt\npool_mode = transaction\n"
        "default_pool_size = 2\nmax_db_connections = 2\nmax_client_conn = 500\nserver_reset_query =\n"
        f"logfile = {folder}/pgbouncer.log\n"
    )
    for f in folder.iterdir():
        f.chmod(0o666)
    command = [binary, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        command = ["runuser", "-u", "postgres", "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        process.terminate()
        log = folder / "pgbouncer.log"
        pytest.fail(f"pgbouncer did not start: {log.read_text() if log.exists() else 'no log'}")
    yield port
    process.terminate()
    process.wait(timeout=10)
    shutil.rmtree(folder, ignore_errors=True)


def through_bouncer(url: str, port: int, user: str) -> str:
    database = urlsplit(url).path.lstrip("/")
    return f"postgresql://{user}@127.0.0.1:{port}/{database}"


def make_app(url: str, *, pgbouncer: bool = True) -> FastAPI:
    config = pgfast.DatabaseConfig(url=url, min_connections=1, max_connections=20, pgbouncer=pgbouncer)
    app = FastAPI(lifespan=pgfast.create_lifespan(config))

    def tenant(request: Request) -> dict[str, str]:
        return {"app.tenant_id": request.headers["x-tenant"]}

    rls = pgfast.create_rls_dependency(tenant)

    async def visible(conn: Any) -> dict[str, Any]:
        rows = await conn.fetch("SELECT DISTINCT tenant_id FROM notes")
        setting = await conn.fetchval("SELECT current_setting('app.tenant_id', true)")
        return {"tenants": sorted(r["tenant_id"] for r in rows), "setting": setting}

    @app.get("/notes")
    async def notes(conn: Any = Depends(rls)) -> dict[str, Any]:
        return await visible(conn)

    @app.get("/leaky")
    async def leaky_notes(request: Request, conn: Any = Depends(pgfast.get_db_connection)) -> dict[str, Any]:
        # The mistake the RLS dependency exists to prevent: a session-level setting, no transaction.
        await conn.execute("SELECT set_config('app.tenant_id', $1, false)", request.headers["x-tenant"])
        return await visible(conn)

    return app


async def hammer(app: FastAPI, path: str, requests: int = 2000, clients: int = 50) -> tuple[int, int, int]:
    """(requests answered, answers showing another tenant, errors)."""
    wrong = errors = done = 0
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def worker(index: int) -> None:
                nonlocal wrong, errors, done
                for n in range(requests // clients):
                    tenant = TENANTS[(index + n) % len(TENANTS)]
                    response = await client.get(path, headers={"x-tenant": tenant})
                    done += 1
                    if response.status_code != 200:
                        errors += 1
                    elif response.json() != {"tenants": [tenant], "setting": tenant}:
                        wrong += 1

            await asyncio.gather(*(worker(i) for i in range(clients)))
    return done, wrong, errors


@pytest_asyncio.fixture
async def tenant_db(isolated_db: asyncpg.Pool) -> asyncpg.Pool:
    await isolated_db.executemany(
        "INSERT INTO notes (tenant_id, body) VALUES ($1, 'x')", [(t,) for t in TENANTS]
    )
    return isolated_db


async def test_rls_dependency_never_shows_another_tenant_behind_pgbouncer(
    tenant_db: asyncpg.Pool, pgbouncer_port: int, url_of: UrlOf
) -> None:
    url = through_bouncer(url_of(tenant_db), pgbouncer_port, "pgfast_tenant")
    done, wrong, errors = await hammer(make_app(url), "/notes")
    assert (done, wrong, errors) == (2000, 0, 0)


async def test_negative_control_session_settings_do_leak_behind_pgbouncer(
    tenant_db: asyncpg.Pool, pgbouncer_port: int, url_of: UrlOf
) -> None:
    url = through_bouncer(url_of(tenant_db), pgbouncer_port, "pgfast_tenant")
    done, wrong, _errors = await hammer(make_app(url), "/leaky", requests=1000)
    assert done == 1000
    assert wrong > 0, "the harness should see the leak of is_local=false settings"


async def test_statement_cache_must_be_off_behind_pgbouncer(
    tenant_db: asyncpg.Pool, pgbouncer_port: int, url_of: UrlOf
) -> None:
    url = through_bouncer(url_of(tenant_db), pgbouncer_port, "pgfast_tenant")
    _, wrong, errors = await hammer(make_app(url, pgbouncer=False), "/notes", requests=600)
    assert wrong + errors > 0, "with asyncpg's statement cache on, PgBouncer mixes prepared statements up"
    _, wrong, errors = await hammer(make_app(url, pgbouncer=True), "/notes", requests=600)
    assert (wrong, errors) == (0, 0)
