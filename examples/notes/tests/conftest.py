"""The notes example's tests: its own schema, tested as the role the app connects as."""

from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

import pgfast
from examples.notes.app import APP_ROLE, FIXTURES, MIGRATIONS, create_app


@pytest.fixture(scope="session")
def pgfast_config(pgfast_server_url: str) -> pgfast.DatabaseConfig:
    """Point pgfast at the example's migrations and fixtures."""
    return pgfast.DatabaseConfig(url=pgfast_server_url, migrations_dirs=MIGRATIONS, fixtures_dirs=FIXTURES)


@pytest.fixture(scope="session")
def pgfast_app_role() -> str:
    """Test as the app's role (pgfast creates it on the test server): superusers bypass RLS.
    A project with a pytest.ini of its own would write `pgfast_app_role = notes_app` there."""
    return APP_ROLE


@pytest.fixture
def app() -> FastAPI:
    """The app for pgfast's `app_client`; no DATABASE_URL needed."""
    return create_app()


@pytest_asyncio.fixture
async def client(app_client: httpx.AsyncClient, fixture_loader: Any) -> httpx.AsyncClient:
    """The app, on the test's database with the notes fixture loaded, as its HTTP clients see it."""
    await fixture_loader(["notes"])
    return app_client
