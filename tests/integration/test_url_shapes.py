"""URLs of every shape against a real server: Unix sockets (in ?host= or percent-encoded in the
host part) and several hosts, through DatabaseConfig, the CLI and the pytest plugin."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest

import pgfast


async def socket_of(url: str) -> tuple[str, str]:
    """The Unix-socket directory and port of the server behind `url`."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT split_part(current_setting('unix_socket_directories'), ',', 1) AS dir, "
            "current_setting('port') AS port"
        )
    finally:
        await conn.close()
    folder, port = row["dir"], row["port"]
    if not folder:
        pytest.skip("the server listens on no Unix socket")
    return folder, port


async def database_of(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        name: str = await conn.fetchval("SELECT current_database()")
        return name
    finally:
        await conn.close()


async def socket_urls(server: str, database: str) -> list[str]:
    folder, port = await socket_of(server)
    return [
        f"postgresql:///{database}?host={folder}&port={port}&user=postgres",
        f"postgresql://postgres@{quote(folder, safe='')}:{port}/{database}",
        f"postgresql://postgres@/{database}?host={folder}&port={port}",
    ]


@pytest.mark.asyncio
async def test_socket_urls_connect_and_repoint(postgres_server: str, blank_db: str) -> None:
    database = await database_of(blank_db)
    for url in await socket_urls(postgres_server, "postgres"):
        # What the plugin and test-db do with TEST_DATABASE_URL: the same server, another database.
        config = pgfast.DatabaseConfig(url=pgfast.database_url(url, database), min_connections=1)
        pool = await pgfast.create_pool(config)
        try:
            assert await pool.fetchval("SELECT current_database()") == database, url
            assert await pool.fetchval("SELECT inet_server_addr()") is None, url  # a socket, not TCP
        finally:
            await pgfast.close_pool(pool)


@pytest.mark.asyncio
async def test_socket_url_errors_name_the_socket_and_database(postgres_server: str) -> None:
    folder, port = await socket_of(postgres_server)
    url = f"postgresql://postgres@/pgfast_no_such_db?host={folder}&port={port}"
    with pytest.raises(pgfast.DatabaseUnavailableError) as info:
        await pgfast.create_pool(pgfast.DatabaseConfig(url=url, timeout=5))
    assert str(info.value).startswith(
        f"cannot connect to PostgreSQL at {folder}:{port}/pgfast_no_such_db: "
        'database "pgfast_no_such_db" does not exist'
    )


@pytest.mark.asyncio
async def test_multi_host_url_reaches_the_host_that_answers(postgres_server: str) -> None:
    folder, port = await socket_of(postgres_server)
    # The first host refuses (port 1 on localhost); asyncpg then tries the second.
    url = f"postgresql://postgres@127.0.0.1:1,{quote(folder, safe='')}:{port}/postgres"
    pool = await pgfast.create_pool(pgfast.DatabaseConfig(url=url, min_connections=1, timeout=10))
    try:
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pgfast.close_pool(pool)


def test_cli_migrates_through_each_socket_url(tmp_path: Path, postgres_server: str, blank_db: str) -> None:
    database = asyncio.run(database_of(blank_db))
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "1_users_up.sql").write_text("CREATE TABLE users (id int);\n")
    (tmp_path / "migrations" / "1_users_down.sql").write_text("DROP TABLE users;\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFAST_")}
    for url in asyncio.run(socket_urls(postgres_server, database)):
        for command, expected in (
            ("up", "applied 1_users"),
            ("status", "1 applied"),
            ("down", "rolled back"),
        ):
            result = subprocess.run(
                [sys.executable, "-m", "pgfast", "schema", command],
                cwd=tmp_path,
                env=env | {"DATABASE_URL": url},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, (url, result.stderr)
            assert expected in result.stdout, (url, result.stdout)


PLUGIN_TESTS = """
import pytest

pytestmark = pytest.mark.asyncio


async def test_isolated_db_has_the_schema(isolated_db):
    assert await isolated_db.fetchval("SELECT count(*) FROM users") == 0


async def test_db_transaction_has_the_schema(db_transaction):
    assert await db_transaction.fetchval("SELECT count(*) FROM users") == 0
"""


def test_plugin_runs_on_a_socket_test_database_url(tmp_path: Path, postgres_server: str) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "1_users_up.sql").write_text("CREATE TABLE users (id int);\n")
    (tmp_path / "test_app.py").write_text(PLUGIN_TESTS)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFAST_")}
    for url in asyncio.run(socket_urls(postgres_server, "postgres")):
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark"],
            cwd=tmp_path,
            env=env | {"TEST_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, (url, result.stdout + result.stderr)
        assert "2 passed" in result.stdout, (url, result.stdout)
