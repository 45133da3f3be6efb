"""Testing an app the way FastAPI users do: as the app's role (so row-level security is really
tested), through an httpx AsyncClient or FastAPI's TestClient, on the test's own database."""

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import fetchval, run_pytest

ROLE = "pgfast_test_app_user"

MIGRATION = f"""
CREATE TABLE items (id serial PRIMARY KEY, tenant text NOT NULL, name text NOT NULL);
ALTER TABLE items ENABLE ROW LEVEL SECURITY;
ALTER TABLE items FORCE ROW LEVEL SECURITY;
CREATE POLICY by_tenant ON items
    USING (tenant = nullif(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant = nullif(current_setting('app.tenant_id', true), ''));
GRANT SELECT, INSERT ON items TO {ROLE};
GRANT USAGE ON SEQUENCE items_id_seq TO {ROLE};
"""
FIXTURE = "INSERT INTO items (tenant, name) VALUES ('a', 'a1'), ('a', 'a2'), ('b', 'b1');"

# The app-factory pattern: importing this module needs no DATABASE_URL.
APP = """
import contextlib

from fastapi import Depends, FastAPI, Header

import pgfast


async def tenant(x_tenant: str = Header(default="")) -> dict[str, str]:
    return {"app.tenant_id": x_tenant}


def create_app() -> FastAPI:
    database = pgfast.create_lifespan()  # DatabaseConfig.from_env() when the app starts

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with database(app) as state:
            # the app's own start-up work still runs in tests, database reads included
            rows = await app.state.pgfast_pool.fetchval("SELECT count(*) FROM items")
            app.state.cache = f"warm ({rows} rows visible)"
            yield state

    app = FastAPI(lifespan=lifespan)
    tenant_connection = pgfast.create_rls_dependency(tenant)

    @app.get("/items")
    async def items(conn=Depends(tenant_connection)) -> list[str]:
        return [r["name"] for r in await conn.fetch("SELECT name FROM items ORDER BY name")]

    @app.post("/items", status_code=201)
    async def add(name: str, conn=Depends(tenant_connection)) -> dict[str, str]:
        await conn.execute(
            "INSERT INTO items (tenant, name) VALUES (current_setting('app.tenant_id'), $1)", name
        )
        return {"who": await conn.fetchval("SELECT current_user")}

    @app.get("/cache")
    async def cache() -> str:
        return app.state.cache

    reports = FastAPI()  # a mounted app: its lifespan never runs, it finds the pool all the same

    @reports.get("/count")
    async def count(pool=Depends(pgfast.get_db_pool)) -> int:
        return await pool.fetchval("SELECT count(*) FROM items")

    app.mount("/reports", reports)
    return app
"""

CONFTEST = """
import pytest

from service.main import create_app


@pytest.fixture
def app():
    return create_app()
"""

TESTS = f'''
import pytest


@pytest.mark.asyncio
async def test_tenant_a_cannot_read_tenant_b_through_isolated_db(isolated_db, fixture_loader):
    await fixture_loader(["items"])
    async with isolated_db.acquire() as conn:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', 'a', true)")
            names = [r["name"] for r in await conn.fetch("SELECT name FROM items ORDER BY name")]
    assert names == ["a1", "a2"]


@pytest.mark.asyncio
async def test_app_client_serves_the_tests_database_as_the_app_role(app_client, fixture_loader):
    await fixture_loader(["items"])
    assert (await app_client.get("/items", headers={{"x-tenant": "b"}})).json() == ["b1"]
    added = await app_client.post("/items", params={{"name": "a3"}}, headers={{"x-tenant": "a"}})
    assert added.status_code == 201 and added.json() == {{"who": "{ROLE}"}}
    assert (await app_client.get("/items", headers={{"x-tenant": "a"}})).json() == ["a1", "a2", "a3"]
    assert (await app_client.get("/cache")).json() == "warm (0 rows visible)"
    assert (await app_client.get("/reports/count")).json() == 0  # no tenant set: RLS shows none


def test_sync_test_client_works_on_a_database_of_its_own(sync_app_client):
    added = sync_app_client.post("/items", params={{"name": "x1"}}, headers={{"x-tenant": "x"}})
    assert added.status_code == 201, added.text
    assert added.json() == {{"who": "{ROLE}"}}
    assert sync_app_client.get("/items", headers={{"x-tenant": "x"}}).json() == ["x1"]
    assert sync_app_client.get("/items", headers={{"x-tenant": "a"}}).json() == []
    assert sync_app_client.get("/cache").json() == "warm (0 rows visible)"
    assert sync_app_client.get("/reports/count").json() == 0
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "service" / "migrations").mkdir(parents=True)
    (tmp_path / "service" / "__init__.py").write_text("")
    (tmp_path / "service" / "main.py").write_text(APP)
    (tmp_path / "service" / "migrations" / "1_items_up.sql").write_text(MIGRATION)
    (tmp_path / "service" / "fixtures").mkdir()
    (tmp_path / "service" / "fixtures" / "1_items_fixture.sql").write_text(FIXTURE)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text(CONFTEST)
    (tmp_path / "tests" / "test_service.py").write_text(TESTS)
    return tmp_path


SERVER = ""


@pytest.fixture(autouse=True)
def _server(postgres_server: str) -> Iterator[None]:
    global SERVER
    SERVER = postgres_server
    yield


def run(project: Path, ini: str, *args: str) -> subprocess.CompletedProcess[str]:
    (project / "pytest.ini").write_text(
        f"[pytest]\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\npythonpath = .\n{ini}"
    )
    # The app's own URL points nowhere: pgfast's lifespan must not connect to it in tests.
    env = {"TEST_DATABASE_URL": SERVER, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing"}
    return run_pytest(project, *args, env=env, timeout=300)


def test_as_the_app_role_rls_holds_and_both_clients_work(project: Path) -> None:
    result = run(project, f"pgfast_app_role = {ROLE}\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    assert "superuser or BYPASSRLS" not in result.stdout + result.stderr  # no bypass warning


def test_as_the_superuser_the_same_rls_test_sees_every_tenant(project: Path) -> None:
    # The setting is what makes the RLS test mean anything: without it, it fails.
    result = run(project, "")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "assert ['a1', 'a2', 'b1'] == ['a1', 'a2']" in result.stdout


def test_app_client_without_an_app_fixture_says_what_to_define(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "test_it.py").write_text(
        "import pytest\n\n@pytest.mark.asyncio\nasync def test_it(app_client):\n    pass\n"
    )
    result = run(tmp_path, "")
    assert result.returncode == 1
    assert "pgfast's app clients need your app: define a fixture named 'app'" in result.stdout


def test_an_app_fixture_returning_the_factory_itself_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "test_it.py").write_text(
        "import pytest\nfrom fastapi import FastAPI\n\n@pytest.fixture\ndef app():\n    return FastAPI\n\n"
        "def test_it(sync_app_client):\n    pass\n"
    )
    result = run(tmp_path, "")
    assert result.returncode == 1
    assert (
        "the 'app' fixture must return your FastAPI app; it returned a function: return create_app(), "
        "not create_app" in result.stdout
    )


def test_a_role_that_bypasses_rls_stops_the_run_once(project: Path) -> None:
    # (adversarial review: the refusal was a traceback per test)
    result = run(project, "pgfast_app_role = postgres\n")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert output.count("app role 'postgres' is a superuser or has BYPASSRLS on this server") == 1, output
    assert "Traceback" not in output


def test_a_failed_sync_client_test_keeps_its_database(project: Path) -> None:
    (project / "tests" / "test_service.py").write_text(
        "def test_fails(sync_app_client):\n"
        "    sync_app_client.post('/items', params={'name': 'evidence'}, headers={'x-tenant': 'k'})\n"
        "    assert False\n"
    )
    result = run(project, f"pgfast_app_role = {ROLE}\n", "--pgfast-keep-failed")
    assert result.returncode == 1
    assert "tests/test_service.py::test_fails:\n    psql '" in result.stdout, result.stdout
    kept = result.stdout.split("tests/test_service.py::test_fails:\n    psql '", 1)[1].split("'", 1)[0]
    name = re.search(r"/(pgfast_test_\w+)", kept)[1]  # type: ignore[index]
    assert fetchval(SERVER, "SELECT count(*) FROM pg_database WHERE datname = $1", name) == 1
    fetchval(SERVER, f'DROP DATABASE "{name}" WITH (FORCE)')
