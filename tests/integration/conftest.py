import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

import pgfast


@pytest.fixture
def own_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """A throwaway server of the test's own, for what must not meet the other tests' databases
    (orphans left on purpose, a server-wide cleanup)."""
    with pgfast.EmbeddedPostgres(f"own-{os.getpid()}-{request.node.name[:40]}") as url:
        yield url


@pytest.fixture(autouse=True)
def _needs_postgres(postgres_server: str) -> None:
    """Every integration test needs the server: skipped locally without one, failed under CI."""


@pytest.fixture(autouse=True)
def _drop_templates_of_temporary_projects(
    request: pytest.FixtureRequest, postgres_server: str
) -> Iterator[None]:
    """A project made under tmp_path is never run again, so its templates would only pile up on
    the server: drop them after the test (a project's template is otherwise kept on purpose)."""
    if "tmp_path" not in request.fixturenames:
        yield
        return
    tmp_path: Path = request.getfixturevalue("tmp_path")  # now, so that it outlives this fixture
    yield
    # Whose templates: the migrations a test may have built from, all of them or one directory.
    folders = [d for d in tmp_path.rglob("migrations") if d.is_dir()]
    projects = []
    for root, dirs in [(tmp_path, None), *((tmp_path, [d]) for d in folders)]:
        try:
            projects.append(pgfast.discover_migrations(dirs, root=root))
        except pgfast.PgfastError:  # a test's deliberately broken migrations
            continue

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_server)
        try:
            for migrations in projects:
                if migrations:
                    await pgfast.drop_templates(conn, migrations)
        finally:
            await conn.close()

    asyncio.run(drop())
