"""The FastAPI half: lifespan, pool and connection dependencies, RLS, against real PostgreSQL."""

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import asyncpg
import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from helpers import UrlOf, free_port, serve

import pgfast

pytestmark = pytest.mark.asyncio


def tenant_settings(request: Request) -> dict[str, str]:
    return {
        "app.tenant_id": request.headers.get("x-tenant", ""),
        "app.user_id": request.headers.get("x-user", ""),
    }


def notes_app(url: str, **config: Any) -> FastAPI:
    """A small multi-tenant app over the test schema's `notes` table."""
    app = FastAPI(lifespan=pgfast.create_lifespan(pgfast.DatabaseConfig(url=url, **config)))
    rls = pgfast.create_rls_dependency(tenant_settings)

    @app.get("/notes")
    async def list_notes(conn: Any = Depends(rls)) -> dict[str, Any]:
        rows = await conn.fetch("SELECT tenant_id, body FROM notes ORDER BY id")
        setting = await conn.fetchval("SELECT current_setting('app.tenant_id', true)")
        user = await conn.fetchval("SELECT current_setting('app.user_id', true)")
        return {
            "tenants": sorted({r["tenant_id"] for r in rows}),
            "bodies": [r["body"] for r in rows],
            "setting": setting,
            "user": user,
        }

    @app.post("/notes")
    async def add_note(body: str, fail: bool = False, conn: Any = Depends(rls)) -> dict[str, str]:
        tenant = await conn.fetchval("SELECT current_setting('app.tenant_id')")
        await conn.execute("INSERT INTO notes (tenant_id, body) VALUES ($1, $2)", tenant, body)
        if fail:
            raise HTTPException(status_code=409, detail="handler refused after writing")
        return {"stored": body}

    @app.post("/links")
    async def add_broken_link(conn: Any = Depends(rls)) -> dict[str, bool]:
        await conn.execute("INSERT INTO note_links (note_id) VALUES (987654)")  # fails only at COMMIT
        return {"ok": True}

    @app.get("/same-connection")
    async def same(
        plain: Any = Depends(pgfast.get_db_connection), secured: Any = Depends(rls)
    ) -> dict[str, bool]:
        return {"same": plain is secured}

    @app.get("/same-connection-rls-first")
    async def same_rls_first(
        secured: Any = Depends(rls), plain: Any = Depends(pgfast.get_db_connection)
    ) -> dict[str, Any]:
        tenant = await plain.fetchval("SELECT current_setting('app.tenant_id')")
        return {"same": plain is secured, "tenant": tenant}

    @app.get("/rls-sleep")
    async def rls_sleep(conn: Any = Depends(rls)) -> dict[str, bool]:
        await conn.execute("SELECT pg_sleep(0.3)")
        return {"slept": True}

    @app.post("/notes-slowly")
    async def add_note_slowly(body: str, conn: Any = Depends(rls)) -> dict[str, str]:
        await conn.execute(
            "INSERT INTO notes (tenant_id, body) VALUES (current_setting('app.tenant_id'), $1)", body
        )
        await conn.execute("SELECT pg_sleep(5)")
        return {"stored": body}

    @app.get("/sleep-long")
    async def sleep_long(conn: Any = Depends(pgfast.get_db_connection)) -> dict[str, bool]:
        await conn.execute("SELECT pg_sleep(5)")
        return {"slept": True}

    @app.get("/health")
    async def health(status: dict[str, Any] = Depends(pgfast.get_db_health)) -> dict[str, Any]:
        return status

    @app.get("/sleep")
    async def sleep(conn: Any = Depends(pgfast.get_db_connection)) -> dict[str, bool]:
        await conn.execute("SELECT pg_sleep(0.3)")
        return {"slept": True}

    return app


async def test_lifespan_opens_validated_pool_and_closes_it(
    isolated_db: asyncpg.Pool, db_pool_factory: Any, url_of: UrlOf
) -> None:
    name = db_pool_factory.name(isolated_db)
    app = FastAPI(
        lifespan=pgfast.create_lifespan(pgfast.DatabaseConfig(url=url_of(isolated_db), min_connections=2))
    )
    seen: dict[str, Any] = {}

    @app.get("/pool")
    async def pool_info(pool: asyncpg.Pool = Depends(pgfast.get_db_pool)) -> dict[str, Any]:
        seen["pool"] = pool
        return {"db": await pool.fetchval("SELECT current_database()"), "size": pool.get_size()}

    async with serve(app) as client:
        response = await client.get("/pool")
        assert response.json() == {"db": name, "size": 2}
        assert app.state.pgfast_pool is seen["pool"]
    assert seen["pool"]._closed  # type: ignore[attr-defined]
    assert app.state.pgfast_pool is None


async def test_get_db_pool_without_lifespan_says_how_to_fix() -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint(pool: Any = Depends(pgfast.get_db_pool)) -> None:
        raise AssertionError("not reached")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(
            pgfast.PgfastError, match=r"create it with FastAPI\(lifespan=pgfast.create_lifespan\(config\)\)"
        ):
            await client.get("/")


async def test_unreachable_server_fails_startup_fast_with_masked_password() -> None:
    config = pgfast.DatabaseConfig(url="postgresql://app:hunter2@127.0.0.1:1/shop", timeout=0.5)
    app = FastAPI(lifespan=pgfast.create_lifespan(config))
    started = asyncio.get_running_loop().time()
    with pytest.raises(pgfast.DatabaseUnavailableError) as info:
        async with app.router.lifespan_context(app):
            pass
    assert asyncio.get_running_loop().time() - started < 3
    message = str(info.value)
    assert "cannot connect to PostgreSQL at 127.0.0.1:1/shop after 0.5s of retries" in message
    assert "hunter2" not in message and "app:***@" in message


async def test_wrong_database_fails_at_once_naming_it(postgres_server: str) -> None:
    url = pgfast.database_url(postgres_server, "pgfast_no_such_db")
    with pytest.raises(pgfast.DatabaseUnavailableError, match=r"/pgfast_no_such_db: .*does not exist"):
        await pgfast.create_pool(pgfast.DatabaseConfig(url=url, timeout=5))


async def test_startup_waits_for_a_database_that_comes_up_later(
    isolated_db: asyncpg.Pool, url_of: UrlOf
) -> None:
    """A relay that answers its first two connections as a booting PostgreSQL does (57P03, "the
    database system is starting up") and then relays to the real database."""
    target = urlsplit(url_of(isolated_db))
    socket_dir = dict(parse_qsl(target.query)).get("host")
    refused: list[int] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(refused) < 2:
            refused.append(1)
            await answer_starting_up(reader, writer)
            return
        if socket_dir:
            up_reader, up_writer = await asyncio.open_unix_connection(
                f"{socket_dir}/.s.PGSQL.{target.port or 5432}"
            )
        else:
            up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port or 5432)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    url = f"postgresql://{target.username}@127.0.0.1:{server.sockets[0].getsockname()[1]}{target.path}"
    try:
        pool = await pgfast.create_pool(pgfast.DatabaseConfig(url=url, min_connections=1, timeout=8))
        try:
            assert await pool.fetchval("SELECT current_database()") == target.path.lstrip("/")
        finally:
            await pgfast.close_pool(pool)
    finally:
        server.close()
    assert len(refused) == 2


async def answer_starting_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the client's startup packet (after declining TLS) and answer FATAL 57P03."""
    length, code = struct.unpack("!ii", await reader.readexactly(8))
    if code == 80877103:  # SSLRequest
        writer.write(b"N")
        length, code = struct.unpack("!ii", await reader.readexactly(8))
    await reader.readexactly(length - 8)
    fields = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
    writer.write(b"E" + struct.pack("!i", 4 + len(fields)) + fields)
    await writer.drain()
    writer.close()


async def test_close_pool_terminates_connections_never_released(
    isolated_db: asyncpg.Pool, url_of: UrlOf
) -> None:
    pool = await pgfast.create_pool(pgfast.DatabaseConfig(url=url_of(isolated_db), min_connections=1))
    held = await pool.acquire()
    started = asyncio.get_running_loop().time()
    await pgfast.close_pool(pool, timeout=0.5)
    assert asyncio.get_running_loop().time() - started < 3
    with pytest.raises(asyncpg.InterfaceError):
        await held.fetchval("SELECT 1")


async def test_rls_filters_rows_per_tenant_for_a_non_superuser(
    db_with_fixtures: asyncpg.Pool, as_tenant: Callable[[str], str], url_of: UrlOf
) -> None:
    async with serve(notes_app(as_tenant(url_of(db_with_fixtures)))) as client:
        acme = (await client.get("/notes", headers={"x-tenant": "acme", "x-user": "u1"})).json()
        globex = (await client.get("/notes", headers={"x-tenant": "globex"})).json()
        nobody = (await client.get("/notes")).json()
    assert acme == {
        "tenants": ["acme"],
        "bodies": ["acme plans", "acme budget"],
        "setting": "acme",
        "user": "u1",
    }
    assert globex["bodies"] == ["globex secrets"]
    assert nobody["bodies"] == []


async def test_rls_commits_on_success_and_rolls_back_on_error(
    db_with_fixtures: asyncpg.Pool, as_tenant: Callable[[str], str], url_of: UrlOf
) -> None:
    async with serve(notes_app(as_tenant(url_of(db_with_fixtures)))) as client:
        ok = await client.post("/notes", params={"body": "kept"}, headers={"x-tenant": "acme"})
        refused = await client.post(
            "/notes", params={"body": "undone", "fail": True}, headers={"x-tenant": "acme"}
        )
    assert ok.status_code == 200 and refused.status_code == 409
    bodies = [
        r["body"]
        for r in await db_with_fixtures.fetch("SELECT body FROM notes WHERE tenant_id = 'acme' ORDER BY id")
    ]
    assert bodies == ["acme plans", "acme budget", "kept"]


async def test_failed_commit_is_a_500_never_a_200(
    isolated_db: asyncpg.Pool, as_tenant: Callable[[str], str], url_of: UrlOf
) -> None:
    async with serve(notes_app(as_tenant(url_of(isolated_db)))) as client:
        for _ in range(5):
            response = await client.post("/links", headers={"x-tenant": "acme"})
            assert response.status_code == 500
    assert await isolated_db.fetchval("SELECT count(*) FROM note_links") == 0


async def test_nothing_leaks_to_the_next_request_on_a_one_connection_pool(
    db_with_fixtures: asyncpg.Pool, as_tenant: Callable[[str], str], url_of: UrlOf
) -> None:
    app = notes_app(as_tenant(url_of(db_with_fixtures)), min_connections=1, max_connections=1)
    async with serve(app) as client:
        first = (await client.get("/notes", headers={"x-tenant": "acme", "x-user": "alice"})).json()
        second = (await client.get("/notes")).json()
    assert first["bodies"] and first["user"] == "alice"
    assert second == {"tenants": [], "bodies": [], "setting": "", "user": ""}


async def test_handler_using_both_dependencies_holds_one_connection(
    isolated_db: asyncpg.Pool, as_tenant: Callable[[str], str], url_of: UrlOf
) -> None:
    # One connection in the pool: a handler needing two would wait for itself and get a 503.
    app = notes_app(as_tenant(url_of(isolated_db)), min_connections=1, max_connections=1, timeout=2)
    async with serve(app) as client:
        plain_first = await client.get("/same-connection", headers={"x-tenant": "acme"})
        rls_first = [
            await client.get("/same-connection-rls-first", headers={"x-tenant": t})
            for t in ("acme", "globex")
        ]
    assert plain_first.json() == {"same": True}
    # the plain dependency is inside the RLS transaction, and the connection went back each time
    assert [r.json() for r in rls_first] == [
        {"same": True, "tenant": "acme"},
        {"same": True, "tenant": "globex"},
    ]


async def test_200_concurrent_requests_for_alternating_tenants_see_only_their_rows(
    db_with_fixtures: asyncpg.Pool, as_tenant: Callable[[str], str], url_of: UrlOf
) -> None:
    app = notes_app(as_tenant(url_of(db_with_fixtures)), min_connections=2, max_connections=8)
    async with serve(app) as client:
        tenants = ["acme", "globex"] * 100
        responses = await asyncio.gather(*(client.get("/notes", headers={"x-tenant": t}) for t in tenants))
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["tenants"] for r in responses] == [[t] for t in tenants]


@pytest.mark.parametrize("method, path", [("POST", "/notes-slowly?body=lost"), ("GET", "/sleep-long")])
@pytest.mark.parametrize("cancel_by", ["task.cancel", "anyio scope"])
async def test_cancelled_request_rolls_back_and_gives_its_connection_back(
    db_with_fixtures: asyncpg.Pool,
    as_tenant: Callable[[str], str],
    method: str,
    path: str,
    cancel_by: str,
    url_of: UrlOf,
) -> None:
    # What a client that goes away does under middleware that cancels the handler. An anyio
    # scope cancels every await inside it again, clean-up included, until something shields it.
    app = notes_app(as_tenant(url_of(db_with_fixtures)), min_connections=1, max_connections=1, timeout=2)
    scope = anyio.CancelScope()

    async def call(client: httpx.AsyncClient) -> None:
        with scope:
            await client.request(method, path, headers={"x-tenant": "acme"})
        assert scope.cancelled_caught

    async with serve(app) as client:
        request = asyncio.create_task(call(client))
        for _ in range(500):  # until the handler is in its query: the server says so
            if await db_with_fixtures.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query = 'SELECT pg_sleep(5)'"
            ):
                break
            await asyncio.sleep(0.01)
        if cancel_by == "task.cancel":
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
        else:
            scope.cancel()
            await request
        # The one connection is back in the pool, its transaction gone: the next request gets it.
        after = await client.get("/notes", headers={"x-tenant": "acme"})
        pool = app.state.pgfast_pool
        assert (pool.get_size(), pool.get_idle_size()) == (1, 1)
    assert after.status_code == 200
    assert after.json()["bodies"] == ["acme plans", "acme budget"]  # "lost" was never committed
    assert not await db_with_fixtures.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "  # this test's only
        "AND (state LIKE 'idle in transaction%' OR query = 'SELECT pg_sleep(5)')"
    )


async def test_dependency_called_outside_a_fastapi_route_says_what_is_missing(
    isolated_db: asyncpg.Pool,
) -> None:
    # pgfast's dependencies clean up on the exit stacks FastAPI's routes keep in the request scope.
    app = FastAPI()
    request = Request({"type": "http", "app": app, "headers": [], "method": "GET", "path": "/"})
    idle = isolated_db.get_idle_size()
    with pytest.raises(pgfast.PgfastError, match=r"keeps no 'fastapi_inner_astack' .*\(>= 0\.121\)"):
        await pgfast.get_db_connection(request, isolated_db)
    assert isolated_db.get_idle_size() == idle  # checked before a connection was taken


@pytest.mark.parametrize("path", ["/sleep", "/rls-sleep"])
async def test_pool_exhaustion_progresses_then_answers_503_with_retry_after(
    isolated_db: asyncpg.Pool,
    as_tenant: Callable[[str], str],
    path: str,
    url_of: UrlOf,
) -> None:
    app = notes_app(as_tenant(url_of(isolated_db)), min_connections=1, max_connections=2, timeout=1.0)
    async with serve(app) as client:
        responses = await asyncio.gather(*(client.get(path, headers={"x-tenant": "acme"}) for _ in range(16)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2, codes  # the pool makes progress
    assert codes.count(503) >= 1, codes  # and the rest are told to come back, not hung
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1"
    assert "no connection became free within 1s" in busy.json()["detail"]


async def test_refused_setting_names_never_reach_sql(
    isolated_db: asyncpg.Pool, as_tenant: Callable[[str], str], url_of: UrlOf
) -> None:
    app = FastAPI(lifespan=pgfast.create_lifespan(pgfast.DatabaseConfig(url=as_tenant(url_of(isolated_db)))))

    def role_from_header(request: Request) -> dict[str, str]:
        return {request.headers["x-name"]: "postgres"}

    rls = pgfast.create_rls_dependency(role_from_header)

    @app.get("/")
    async def endpoint(conn: Any = Depends(rls)) -> str:
        return str(await conn.fetchval("SELECT current_user"))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        for name in ("role", "search_path", "statement_timeout", "app.x'; DROP TABLE notes; --", "notdotted"):
            with pytest.raises(pgfast.ConfigError, match=r"RLS setting .* refused: only custom dotted names"):
                await client.get("/", headers={"x-name": name})
    assert await isolated_db.fetchval("SELECT count(*) FROM notes") == 0  # table still there


async def test_builtin_setting_allowed_by_name(isolated_db: asyncpg.Pool, url_of: UrlOf) -> None:
    app = FastAPI(lifespan=pgfast.create_lifespan(pgfast.DatabaseConfig(url=url_of(isolated_db))))
    rls = pgfast.create_rls_dependency(
        lambda: {"search_path": "pg_catalog", "app.x": "1"}, allow_settings=["search_path"]
    )

    @app.get("/")
    async def endpoint(conn: Any = Depends(rls)) -> str:
        return str(await conn.fetchval("SHOW search_path"))

    async with serve(app) as client:
        assert (await client.get("/")).json() == "pg_catalog"


async def test_superuser_rls_connection_logs_a_bypass_warning_once(
    isolated_db: asyncpg.Pool, caplog: pytest.LogCaptureFixture, url_of: UrlOf
) -> None:
    app = notes_app(url_of(isolated_db))  # connects as postgres, a superuser
    with caplog.at_level(logging.WARNING, logger="pgfast"):
        async with serve(app) as client:
            for _ in range(3):
                assert (await client.get("/notes", headers={"x-tenant": "acme"})).status_code == 200
    warnings = [
        r.getMessage() for r in caplog.records if "bypass" in r.getMessage() or "BYPASSRLS" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "'postgres', a superuser or BYPASSRLS role" in warnings[0]


async def test_health_reports_pool_and_answers_503_when_down(
    isolated_db: asyncpg.Pool, url_of: UrlOf
) -> None:
    app = notes_app(url_of(isolated_db), min_connections=1, max_connections=3)
    async with serve(app) as client:
        response = await client.get("/health")
        assert response.json() == {"status": "ok", "pool": {"size": 1, "idle": 1, "max": 3}}
        await isolated_db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await app.state.pgfast_pool.expire_connections()
        app.state.pgfast_pool._connect_args = ("postgresql://postgres@127.0.0.1:1/x",)
        down = await client.get("/health")
    assert down.status_code == 503 and down.json()["detail"].startswith("database unavailable:")


async def test_dependency_override_of_get_db_pool_redirects_every_dependency(
    isolated_db: asyncpg.Pool,
    db_pool_factory: Any,
    as_tenant: Callable[[str], str],
    url_of: UrlOf,
) -> None:
    other = await db_pool_factory()
    await other.execute(
        "ALTER TABLE notes DISABLE ROW LEVEL SECURITY; INSERT INTO notes (tenant_id, body) VALUES ('acme', 'from override')"
    )
    app = notes_app(as_tenant(url_of(isolated_db)))
    app.dependency_overrides[pgfast.get_db_pool] = lambda: other
    async with serve(app) as client:
        response = await client.get("/notes", headers={"x-tenant": "acme"})
    assert response.json()["bodies"] == ["from override"]


async def test_session_state_a_handler_leaves_is_reset_before_the_next_request(
    isolated_db: asyncpg.Pool,
    url_of: UrlOf,
) -> None:
    """The RLS dependency sends the pool's reset with its COMMIT; either way nothing survives."""
    app = FastAPI(
        lifespan=pgfast.create_lifespan(
            pgfast.DatabaseConfig(url=url_of(isolated_db), min_connections=1, max_connections=1)
        )
    )
    rls = pgfast.create_rls_dependency(lambda: {"app.tenant_id": "t"})

    @app.post("/leave/{how}")
    async def leave(how: str, rls_conn: Any = Depends(rls)) -> None:
        await rls_conn.execute("SELECT set_config('app.leftover', $1, false)", how)  # session-level

    @app.post("/leave-plain/{how}")
    async def leave_plain(how: str, conn: Any = Depends(pgfast.get_db_connection)) -> None:
        await conn.execute("SELECT set_config('app.leftover', $1, false)", how)

    @app.get("/look")
    async def look(conn: Any = Depends(pgfast.get_db_connection)) -> str:
        return str(await conn.fetchval("SELECT current_setting('app.leftover', true)"))

    async with serve(app) as client:
        assert (await client.post("/leave/rls")).status_code == 200
        assert (await client.get("/look")).json() == ""
        assert (await client.post("/leave-plain/plain")).status_code == 200
        assert (await client.get("/look")).json() == ""


async def test_handler_that_swallows_a_failed_statement_gets_a_500(
    isolated_db: asyncpg.Pool, as_tenant: Callable[[str], str], url_of: UrlOf
) -> None:
    app = FastAPI(lifespan=pgfast.create_lifespan(pgfast.DatabaseConfig(url=as_tenant(url_of(isolated_db)))))
    rls = pgfast.create_rls_dependency(lambda: {"app.tenant_id": "acme"})

    @app.post("/")
    async def swallow(conn: Any = Depends(rls)) -> str:
        await conn.execute("INSERT INTO notes (tenant_id, body) VALUES ('acme', 'lost')")
        with contextlib.suppress(asyncpg.DivisionByZeroError):  # the transaction is now failed:
            await conn.execute("SELECT 1/0")  # a plain COMMIT would silently roll back
        return "ok"

    async with serve(app) as client:
        assert (await client.post("/")).status_code == 500
    assert await isolated_db.fetchval("SELECT count(*) FROM notes") == 0


async def test_migrate_on_startup_applies_pending_and_refuses_to_serve_on_failure(
    blank_db: str, tmp_path: Any
) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "1_a_up.sql").write_text("CREATE TABLE a (id int);")
    config = pgfast.DatabaseConfig(url=blank_db, migrations_dirs=[folder], min_connections=1)
    app = FastAPI(lifespan=pgfast.create_lifespan(config, migrate=True))
    async with app.router.lifespan_context(app):
        assert await app.state.pgfast_pool.fetchval("SELECT to_regclass('a') IS NOT NULL")
    (folder / "2_bad_up.sql").write_text("SELEC 1;")
    with pytest.raises(pgfast.MigrationFailedError, match=r"applying 2_bad failed at .*2_bad_up.sql:1"):
        async with app.router.lifespan_context(app):
            raise AssertionError("the app must not serve")
    assert app.state.pgfast_pool is None


async def test_websocket_holds_one_connection_for_its_life_and_gives_it_back(
    isolated_db: asyncpg.Pool,
    url_of: UrlOf,
) -> None:
    from fastapi import WebSocket

    config = pgfast.DatabaseConfig(url=url_of(isolated_db), min_connections=1)
    app = FastAPI(lifespan=pgfast.create_lifespan(config))
    seen: list[tuple[int, int]] = []

    @app.websocket("/echo-pid")
    async def echo_pid(socket: WebSocket, conn: Any = Depends(pgfast.get_db_connection)) -> None:
        await socket.accept()
        async for text in socket.iter_text():
            pool = app.state.pgfast_pool
            seen.append((pool.get_size(), pool.get_idle_size()))
            await socket.send_text(f"{text} {await conn.fetchval('SELECT pg_backend_pid()')}")

    # An ASGI WebSocket client, as a server would drive the app: connect, two messages, close.
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in (
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "a"},
        {"type": "websocket.receive", "text": "b"},
    ):
        incoming.put_nowait(message)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len([m for m in sent if m["type"] == "websocket.send"]) == 2:
            incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})

    scope = {
        "type": "websocket",
        "path": "/echo-pid",
        "raw_path": b"/echo-pid",
        "query_string": b"",
        "headers": [],
        "scheme": "ws",
        "server": ("test", 80),
        "client": ("test", 1),
        "root_path": "",
        "subprotocols": [],
        "asgi": {"version": "3.0"},
    }
    async with app.router.lifespan_context(app):
        scope["app"] = app
        await app(scope, incoming.get, send)
        pool = app.state.pgfast_pool
        after = (pool.get_size(), pool.get_idle_size())
    replies = [m["text"].split() for m in sent if m["type"] == "websocket.send"]
    assert [r[0] for r in replies] == ["a", "b"] and replies[0][1] == replies[1][1]  # one backend
    assert seen == [(1, 0), (1, 0)]  # held while the socket is open
    assert after == (1, 1)  # and back in the pool once it closed


async def test_apps_mounted_in_the_app_find_its_pool_under_a_real_server(
    db_with_fixtures: asyncpg.Pool, as_tenant: Callable[[str], str], url_of: UrlOf
) -> None:
    import uvicorn

    # A mounted app's own lifespan never runs: the pool reaches it through the lifespan state
    # that the server (here uvicorn, over TCP) copies into every request's scope.
    app = FastAPI(
        lifespan=pgfast.create_lifespan(pgfast.DatabaseConfig(url=as_tenant(url_of(db_with_fixtures))))
    )
    app.mount("/v1", notes_app("postgresql://unused@127.0.0.1:1/never"))  # its lifespan would fail
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1") as client:
            notes = await client.get("/notes", headers={"x-tenant": "acme"})
            same = await client.get("/same-connection", headers={"x-tenant": "acme"})
    finally:
        server.should_exit = True
        await serving
    assert notes.status_code == 200, notes.text
    assert notes.json()["bodies"] == ["acme plans", "acme budget"]
    assert same.json() == {"same": True}
