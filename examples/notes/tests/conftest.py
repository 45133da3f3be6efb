"""The notes example's tests: its own schema, and the app role its tests connect as."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

import pgfast
from examples.notes.app import APP_ROLE, FIXTURES, MIGRATIONS, create_app


@pytest.fixture(scope="session")
def pgfast_config(pgfast_server_url: str) -> pgfast.DatabaseConfig:
    """Point pgfast at the example's migrations and fixtures; make the role its grants name."""

    async def create_role() -> None:
        conn = await asyncpg.connect(pgfast_server_url)
        try:
            await conn.execute(
                f"DO $$ BEGIN CREATE ROLE {APP_ROLE} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            )
        finally:
            await conn.close()

    asyncio.run(create_role())
    return pgfast.DatabaseConfig(url=pgfast_server_url, migrations_dirs=MIGRATIONS, fixtures_dirs=FIXTURES)


def as_app_role(url: str) -> str:
    """`url` for the app role instead of its user (superusers would bypass RLS)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{APP_ROLE}@{rest.split('@', 1)[1]}"


@pytest_asyncio.fixture
async def client(db_with_fixtures: asyncpg.Pool, db_pool_factory: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app, on a database with every fixture loaded, as its HTTP clients see it."""
    app = create_app(as_app_role(db_pool_factory.url(db_with_fixtures)), migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notes") as http:
            yield http
