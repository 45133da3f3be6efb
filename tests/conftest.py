"""Shared fixtures: the test schema under tests/schema, and a check that PostgreSQL is there."""

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

import pgfast

SCHEMA = Path(__file__).parent / "schema"
ADMIN_URL = os.environ.get("TEST_DATABASE_URL") or pgfast.DEFAULT_URL_FOR_TESTS


@pytest.fixture(scope="session")
def pgfast_config() -> pgfast.DatabaseConfig:
    """The project's own tests run against the small multi-tenant schema in tests/schema."""
    return pgfast.DatabaseConfig(
        url=ADMIN_URL, migrations_dirs=[SCHEMA / "migrations"], fixtures_dirs=[SCHEMA / "fixtures"]
    )


def _server_reachable() -> str | None:
    async def probe() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {pgfast.mask_url(ADMIN_URL)} is not reachable ({exc}); set TEST_DATABASE_URL"
    return None


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL; integration tests skip without a server locally, and fail under CI."""
    problem = _server_reachable()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return ADMIN_URL


@pytest.fixture(scope="session")
def blank_databases(postgres_server: str) -> Iterator[pgfast.IsolatedDatabases]:
    """Databases with nothing in them, for the migration tests (cloned, dropped after)."""
    with pgfast.IsolatedDatabases(postgres_server, [], project="pgfast-tests-blank") as databases:
        yield databases


@pytest_asyncio.fixture
async def blank_db(blank_databases: pgfast.IsolatedDatabases) -> AsyncIterator[str]:
    """The URL of an empty database, dropped after the test."""
    name = await blank_databases.create()
    try:
        yield blank_databases.url(name)
    finally:
        await blank_databases.drop(name)


@pytest.fixture
def as_tenant() -> Callable[[str], str]:
    """Turns a URL into the same URL for the non-superuser role the test schema creates."""

    def switch(url: str) -> str:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://pgfast_tenant@{rest.split('@', 1)[-1]}"

    return switch
