"""The notes example, tested the way pgfast suggests: a fresh database per test."""

import asyncpg
import httpx
import pytest

pytestmark = pytest.mark.asyncio


async def test_each_tenant_sees_only_its_notes(client: httpx.AsyncClient) -> None:
    acme = await client.get("/notes", headers={"X-Tenant": "acme"})
    globex = await client.get("/notes", headers={"X-Tenant": "globex"})
    nobody = await client.get("/notes")
    assert acme.json() == ["Order more anvils", "Test the rocket skates"]
    assert globex.json() == ["Hire a new villain"]
    assert nobody.json() == []


async def test_a_note_is_stored_for_its_tenant_only(
    client: httpx.AsyncClient, isolated_db: asyncpg.Pool
) -> None:
    created = await client.post("/notes", json={"body": "Call Wile E."}, headers={"X-Tenant": "acme"})
    assert created.status_code == 201
    # isolated_db is the app's database, used as its role: the policy applies here too.
    async with isolated_db.acquire() as conn, conn.transaction():
        note = "SELECT tenant_id FROM notes WHERE id = $1"
        assert await conn.fetchval(note, created.json()["id"]) is None  # no tenant set: no rows
        await conn.execute("SELECT set_config('app.tenant_id', 'acme', true)")
        assert await conn.fetchval(note, created.json()["id"]) == "acme"
    assert "Call Wile E." not in (await client.get("/notes", headers={"X-Tenant": "globex"})).json()


async def test_unknown_tenant_and_missing_header_are_refused(client: httpx.AsyncClient) -> None:
    unknown = await client.post("/notes", json={"body": "x"}, headers={"X-Tenant": "initech"})
    missing = await client.post("/notes", json={"body": "x"})
    assert (unknown.status_code, unknown.json()["detail"]) == (404, "no tenant 'initech'")
    assert (missing.status_code, missing.json()["detail"]) == (400, "send the X-Tenant header")


async def test_schema_without_fixture_data(isolated_db: asyncpg.Pool) -> None:
    assert await isolated_db.fetchval("SELECT count(*) FROM notes") == 0
    assert await isolated_db.fetchval("SELECT count(*) FROM tenants") == 2  # reference data
    forced = await isolated_db.fetchval("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'notes'")
    assert forced


async def test_tenants_and_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/tenants")).json() == [
        {"id": "acme", "name": "Acme Corp"},
        {"id": "globex", "name": "Globex"},
    ]
    assert (await client.get("/health")).json()["status"] == "ok"
