"""Public seams: the plugin and the example use only public pgfast names, type checkers see the
request dependencies' real signatures without FastAPI being imported at start-up, and each
`pgfast test-db` command is one library function."""

import ast
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

import pgfast

REPO = Path(pgfast.__file__).parent


def private_pgfast_names(path: Path) -> list[str]:
    """`pgfast._x` attributes and `from pgfast import _x` names used in `path`."""
    tree = ast.parse(path.read_text())
    found = [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pgfast"
    ]
    found += [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "pgfast"
        for alias in node.names
    ]
    return sorted({name for name in found if name.startswith("_") and not name.startswith("__")})


@pytest.mark.parametrize(
    "path", [REPO / "pgfast_pytest.py", *sorted((REPO / "examples").rglob("*.py"))], ids=lambda p: p.name
)
def test_plugin_and_example_use_only_public_pgfast_names(path: Path) -> None:
    assert private_pgfast_names(path) == []
    assert "._connect_args" not in path.read_text()


def test_importing_pgfast_leaves_fastapi_and_asyncpg_unimported() -> None:
    code = "import sys, pgfast; print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'asyncpg')))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_type_checkers_see_the_request_dependencies_signatures(tmp_path: Path) -> None:
    user = tmp_path / "user_app.py"
    user.write_text(
        "import pgfast\n"
        "from fastapi import Request\n"
        "\n"
        "async def handler(request: Request) -> None:\n"
        "    reveal_type(pgfast.get_db_pool)\n"
        "    health = await pgfast.get_db_health(request)\n"
        "    reveal_type(health)\n"
        "    count: int = await pgfast.get_db_pool(request)\n"
    )
    env = {**os.environ, "MYPYPATH": str(REPO)}  # as a vendored pgfast.py is seen
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(user)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = out.stdout.splitlines()
    assert any(
        'Revealed type is "def (request: starlette.requests.HTTPConnection' in line
        and "Coroutine[Any, Any, asyncpg.pool.Pool" in line
        for line in lines
    ), out.stdout
    assert any(line.endswith('Revealed type is "dict[str, Any]"') for line in lines), out.stdout
    assert any(
        'user_app.py:8: error: Incompatible types in assignment (expression has type "Pool[Record]", '
        'variable has type "int")' in line
        for line in lines
    ), out.stdout
    assert out.returncode == 1 and "Found 1 error in 1 file" in out.stdout


def test_create_test_database_clones_a_kept_migrated_database(tmp_path: Path, postgres_server: str) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "1_notes_up.sql").write_text("CREATE TABLE notes (body text);")
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "1_notes_fixture.sql").write_text("INSERT INTO notes VALUES ('hello');")
    config = pgfast.DatabaseConfig.for_tests(tmp_path, url=postgres_server)
    plain = pgfast.create_test_database(config)
    loaded = pgfast.create_test_database(config, fixtures=True)

    async def check() -> None:
        for name, rows in ((plain, 0), (loaded, 1)):
            conn = await asyncpg.connect(pgfast.database_url(config.url, name))
            try:
                assert await conn.fetchval("SELECT count(*) FROM notes") == rows
            finally:
                await conn.close()
        admin = await asyncpg.connect(config.url)
        try:
            found = {db.name: db for db in await pgfast.list_test_databases(admin)}
            assert found[plain].creator == found[loaded].creator == "kept (no owner)"
            dropped = await pgfast.cleanup_test_databases(admin, only=[plain, loaded])
            assert sorted(dropped) == sorted([plain, loaded])
        finally:
            await admin.close()

    asyncio.run(check())


def test_listing_survives_databases_dropped_while_it_runs(postgres_server: str) -> None:
    # Other runs create and drop databases all the time; one dropped between the scan of
    # pg_database and the size lookup failed the whole listing (and so `test-db cleanup`).
    async def check() -> None:
        churn = await asyncpg.connect(postgres_server)
        lister = await asyncpg.connect(postgres_server)
        listings = 0
        stop = asyncio.Event()

        async def list_until_stopped() -> None:
            nonlocal listings
            while not stop.is_set():
                found = await pgfast.list_test_databases(lister)
                assert [db for db in found if not (isinstance(db.size, int) and db.size > 0)] == []
                listings += 1

        task = asyncio.create_task(list_until_stopped())
        try:
            for n in range(30):
                name = f"pgfast_test_00beef_0_{int(time.time())}_{n:x}"
                await churn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
                await churn.execute(f'DROP DATABASE "{name}"')
                if task.done():
                    break
        finally:
            stop.set()
            await task  # re-raises what a listing raised
            await churn.close()
            await lister.close()
        assert listings >= 5  # the listings ran while databases came and went

    asyncio.run(check())


def test_two_clean_ups_dropping_the_same_template_both_succeed(postgres_server: str) -> None:
    # Unmarking a template races: the second ALTER DATABASE failed ("tuple concurrently
    # updated"), or met the first's DROP under way and lost its session.
    async def check() -> None:
        first, second = await asyncpg.connect(postgres_server), await asyncpg.connect(postgres_server)
        try:
            for n in range(10):
                name = f"pgfast_test_00beef_0_{int(time.time())}_{n:x}"
                await first.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 IS_TEMPLATE true')
                dropped = await asyncio.gather(
                    pgfast.cleanup_test_databases(first, only=[name]),
                    pgfast.cleanup_test_databases(second, only=[name]),
                    return_exceptions=True,
                )
                assert dropped == [[name], [name]]
                assert await first.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
        finally:
            await first.close()
            await second.close()

    asyncio.run(check())


def test_the_plugin_discovers_what_a_config_leaves_open_under_the_pytest_root(
    tmp_path: Path, postgres_server: str
) -> None:
    # The repository (.git) holds another project's migrations: from the pytest root, only ours.
    (tmp_path / ".git").mkdir()
    (tmp_path / "other" / "migrations").mkdir(parents=True)
    (tmp_path / "other" / "migrations" / "1_other_up.sql").write_text("CREATE TABLE other (id int);")
    root = tmp_path / "service"
    (root / "app" / "migrations").mkdir(parents=True)
    (root / "app" / "migrations" / "1_mine_up.sql").write_text("CREATE TABLE mine (id int);")
    (root / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (root / "conftest.py").write_text(
        "import pytest\nimport pgfast\n\n\n"
        "@pytest.fixture(scope='session')\n"
        "def pgfast_config(pgfast_server_url):\n"
        "    return pgfast.DatabaseConfig(url=pgfast_server_url)  # directories left to discovery\n"
    )
    (root / "test_mine.py").write_text(
        "import pytest\n\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_only_this_projects_schema(isolated_db):\n"
        "    tables = await isolated_db.fetch(\"SELECT tablename FROM pg_tables WHERE schemaname = 'public'\")\n"
        "    assert sorted(t['tablename'] for t in tables) == ['_pgfast_migrations', 'mine']\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGFAST_", "PYTEST_XDIST"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark"],
        cwd=root,
        env=env | {"TEST_DATABASE_URL": postgres_server, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
