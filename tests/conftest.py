"""Shared fixtures: the test schema under tests/schema, and the server the tests run on.

The server is TEST_DATABASE_URL, else the embedded throwaway PostgreSQL that pgfast_pytest
starts for the run: the same fixture (`pgfast_server_url`) users get.
"""

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

import pgfast

SCHEMA = Path(__file__).parent / "schema"

# A run started in the background (nohup, `&` in a script) has SIGINT ignored, and the processes
# the Ctrl-C tests interrupt would inherit that; a handler of ours becomes the default at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def pgfast_config(pgfast_server_url: str) -> pgfast.DatabaseConfig:
    """The project's own tests run against the small multi-tenant schema in tests/schema."""
    return pgfast.DatabaseConfig(
        url=pgfast_server_url, migrations_dirs=[SCHEMA / "migrations"], fixtures_dirs=[SCHEMA / "fixtures"]
    )


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> str:
    """The admin URL; integration tests skip without a server locally, and fail under CI."""
    try:
        url: str = request.getfixturevalue("pgfast_server_url")
        asyncio.run(_probe(url))
    except (OSError, asyncpg.PostgresError, TimeoutError, pgfast.PgfastError) as exc:
        problem = f"no PostgreSQL for the integration tests: {exc}"
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return url


async def _probe(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    await conn.close()


@pytest.fixture(scope="session")
def blank_databases(postgres_server: str) -> Iterator[pgfast.IsolatedDatabases]:
    """Databases with nothing in them, for the migration tests (cloned, dropped after)."""
    with pgfast.IsolatedDatabases(postgres_server, []) as databases:
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
def url_of(pgfast_config: pgfast.DatabaseConfig, db_pool_factory: Any) -> Callable[[asyncpg.Pool], str]:
    """The URL of a pool that `isolated_db`, `db_with_fixtures` or `db_pool_factory` gave."""
    return lambda pool: pgfast.database_url(pgfast_config.url, db_pool_factory.name(pool))


@pytest.fixture
def as_tenant() -> Callable[[str], str]:
    """Turns a URL into the same URL for the non-superuser role the test schema creates."""

    def switch(url: str) -> str:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://pgfast_tenant@{rest.split('@', 1)[-1]}"

    return switch
