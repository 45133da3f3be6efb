"""Session state a request leaves on its connection never reaches the next request.

The RLS dependency sends the pool's reset with its COMMIT when it gives the connection back
right there. When get_db_connection shares that connection, a StreamingResponse body, a
BackgroundTasks task or a dependency's teardown may use it after the COMMIT: then the
connection must stay until the request ends and go through the pool's own reset. Each test
runs on a pool of one connection, so the next request gets the very same backend.
"""

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI
from fastapi.responses import StreamingResponse
from helpers import UrlOf, serve

import pgfast

pytestmark = pytest.mark.asyncio


async def leave_state_behind(conn: Any) -> None:
    """A session setting, a session advisory lock and an open transaction."""
    await conn.execute("SET app.sticky = 'x'")
    await conn.execute("SELECT pg_advisory_lock(42)")
    await conn.execute("BEGIN")


def leaky_app(url: str, ran: list[str]) -> FastAPI:
    config = pgfast.DatabaseConfig(url=url, min_connections=1, max_connections=1, timeout=5)
    app = FastAPI(lifespan=pgfast.create_lifespan(config))
    rls = pgfast.create_rls_dependency(lambda: {"app.tenant_id": "acme"})

    async def leave(conn: Any, where: str) -> None:
        await leave_state_behind(conn)
        ran.append(where)

    def stream(conn: Any) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"start "
            await leave(conn, "stream")
            yield b"done"

        return StreamingResponse(body())

    @app.get("/stream/rls-first")
    async def stream_rls_first(
        secured: Any = Depends(rls), conn: Any = Depends(pgfast.get_db_connection)
    ) -> StreamingResponse:
        return stream(conn)

    @app.get("/stream/plain-first")
    async def stream_plain_first(
        conn: Any = Depends(pgfast.get_db_connection), secured: Any = Depends(rls)
    ) -> StreamingResponse:
        return stream(conn)

    @app.get("/background/rls-first")
    async def background_rls_first(
        tasks: BackgroundTasks, secured: Any = Depends(rls), conn: Any = Depends(pgfast.get_db_connection)
    ) -> str:
        tasks.add_task(leave, conn, "background")
        return "done"

    @app.get("/background/plain-first")
    async def background_plain_first(
        tasks: BackgroundTasks, conn: Any = Depends(pgfast.get_db_connection), secured: Any = Depends(rls)
    ) -> str:
        tasks.add_task(leave, conn, "background")
        return "done"

    async def teardown_leaves_state(conn: Any = Depends(pgfast.get_db_connection)) -> AsyncIterator[None]:
        yield
        await leave(conn, "teardown")

    @app.get("/teardown/rls-first")
    async def teardown_rls_first(
        secured: Any = Depends(rls), _: None = Depends(teardown_leaves_state)
    ) -> str:
        return "done"

    @app.get("/teardown/plain-first")
    async def teardown_plain_first(
        _: None = Depends(teardown_leaves_state), secured: Any = Depends(rls)
    ) -> str:
        return "done"

    @app.get("/look")
    async def look(conn: Any = Depends(pgfast.get_db_connection)) -> dict[str, Any]:
        return {
            "pid": await conn.fetchval("SELECT pg_backend_pid()"),
            "sticky": await conn.fetchval("SELECT current_setting('app.sticky', true)"),
            # this backend's own: pg_locks lists every session on the server, where other
            # tests (on other databases, in the other xdist worker) take lock 42 too
            "advisory_locks": await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 42 "
                "AND pid = pg_backend_pid()"
            ),
            # what the server said in its last ReadyForQuery
            "in_transaction": conn.is_in_transaction(),
        }

    @app.get("/pid")
    async def pid(secured: Any = Depends(rls)) -> int:
        return int(await secured.fetchval("SELECT pg_backend_pid()"))

    @app.get("/temp/plain")
    async def temp_plain(conn: Any = Depends(pgfast.get_db_connection)) -> None:
        await conn.execute("CREATE TEMP TABLE left_behind AS SELECT 'tenant a secret' AS v")

    @app.get("/temp/rls")
    async def temp_rls(secured: Any = Depends(rls)) -> None:
        await secured.execute("CREATE TEMP TABLE left_behind AS SELECT 'tenant a secret' AS v")

    @app.get("/temp/look")
    async def temp_look(secured: Any = Depends(rls)) -> dict[str, Any]:
        return {
            "pid": await secured.fetchval("SELECT pg_backend_pid()"),
            "table": await secured.fetchval("SELECT to_regclass('pg_temp.left_behind')::text"),
        }

    return app


@pytest.mark.parametrize("order", ["rls-first", "plain-first"])
@pytest.mark.parametrize("where", ["stream", "background", "teardown"])
async def test_state_left_after_the_rls_commit_does_not_reach_the_next_request(
    isolated_db: asyncpg.Pool, where: str, order: str, url_of: UrlOf
) -> None:
    ran: list[str] = []
    app = leaky_app(url_of(isolated_db), ran)
    async with serve(app) as client:
        before = (await client.get("/pid")).json()
        response = await client.get(f"/{where}/{order}")
        after = (await client.get("/look")).json()
        # the app's one connection is idle in its pool now
        idle_in_transaction = await isolated_db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%'"
        )
    assert response.status_code == 200, response.text
    assert ran == [where]  # the state was really left behind, on the connection the RLS used
    assert after == {"pid": before, "sticky": "", "advisory_locks": 0, "in_transaction": False}
    assert idle_in_transaction == 0


async def test_rls_alone_still_sends_the_reset_with_its_commit(
    isolated_db: asyncpg.Pool, url_of: UrlOf
) -> None:
    """The shortcut is kept where it is safe: one round trip for COMMIT and reset, none at release."""
    app = leaky_app(url_of(isolated_db), [])
    async with serve(app) as client:
        pid = (await client.get("/pid")).json()
        queries = []
        for _ in range(2):
            await client.get("/pid")
            queries.append(
                await isolated_db.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
            )
    # the last statement the backend ran is the fused COMMIT and reset, not a separate reset
    assert all(q.startswith("SELECT 1; COMMIT; SELECT pg_advisory_unlock_all();") for q in queries), queries


@pytest.mark.parametrize("path", ["/temp/plain", "/temp/rls"])
async def test_a_temporary_table_does_not_reach_the_next_request(
    isolated_db: asyncpg.Pool, path: str, url_of: UrlOf
) -> None:
    # Found by an adversarial pass: asyncpg's reset query leaves temporary tables (and their rows).
    app = leaky_app(url_of(isolated_db), [])
    async with serve(app) as client:
        before = (await client.get("/pid")).json()
        assert (await client.get(path)).status_code == 200
        after = (await client.get("/temp/look")).json()
    assert after == {"pid": before, "table": None}
