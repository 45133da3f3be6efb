"""A fixture file that fails names its file and line, like a migration does."""

import asyncio
from pathlib import Path

import asyncpg
import pytest

import pgfast

FIXTURE = """-- two users, the second one twice
INSERT INTO users (name) VALUES ('ada');

INSERT INTO users (name) VALUES ('grace'),
                                ('grace');
"""


@pytest.mark.parametrize(
    ("sql", "line", "error"),
    [
        (FIXTURE, 4, "UniqueViolationError"),  # no position from the server: found by replaying
        (
            "INSERT INTO users (name) VALUES ('a');\nINSERT INTO users (nom) VALUES ('b');\n",
            2,
            "UndefinedColumnError",
        ),
    ],
    ids=["constraint", "syntax-position"],
)
def test_a_failing_fixture_names_file_and_line_and_loads_nothing(
    blank_db: str, tmp_path: Path, sql: str, line: int, error: str
) -> None:
    path = tmp_path / "fixtures" / "1_users_fixture.sql"

    async def run() -> pgfast.FixtureError:
        conn = await asyncpg.connect(blank_db)
        try:
            await conn.execute("CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL UNIQUE)")
            with pytest.raises(pgfast.FixtureError) as info:
                await pgfast.load_fixtures(conn, [pgfast.SqlFixture(1, "users", path, sql)])
            assert await conn.fetchval("SELECT count(*) FROM users") == 0  # all rolled back
            assert not conn.is_in_transaction()
            return info.value
        finally:
            await conn.close()

    failure = asyncio.run(run())
    assert str(failure).startswith(f"loading fixture {path}:{line} failed: {error}: ")
    assert (failure.path, failure.line) == (path, line)
