"""BEGIN and the RLS settings travel as one simple query, so values are quoted client-side.

This fuzzes names, values and encodings against the real server: whatever comes in, the
setting PostgreSQL sees is exactly the value given, and nothing else runs.
"""

import asyncio

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pgfast

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}(\.[A-Za-z_][A-Za-z0-9_]{0,10}){1,2}", fullmatch=True)
VALUES = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40
) | st.sampled_from(
    ["'", "''", "\\", "\\'", "$$", "'); DROP TABLE x; --", "E'\\x41'", "\u00e9\u4e2d\U0001f600"]
)


@pytest.fixture(scope="module")
def loop_and_conn(postgres_server: str):  # type: ignore[no-untyped-def]
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(postgres_server))
    yield loop, conn
    loop.run_until_complete(conn.close())
    loop.close()


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(settings_map=st.dictionaries(NAMES, VALUES, min_size=1, max_size=4), conforming=st.booleans())
def test_values_arrive_exactly_whatever_they_contain(
    loop_and_conn, settings_map: dict[str, str], conforming: bool
) -> None:  # type: ignore[no-untyped-def]
    loop, conn = loop_and_conn

    async def check() -> None:
        await conn.execute(f"SET standard_conforming_strings = {'on' if conforming else 'off'}")
        await conn.execute(pgfast._rls_begin_sql(settings_map, frozenset()))
        try:
            for name, value in settings_map.items():
                assert await conn.fetchval("SELECT current_setting($1)", name) == value
        finally:
            await conn.execute("ROLLBACK")

    loop.run_until_complete(check())


def test_nul_and_non_string_values_are_refused() -> None:
    with pytest.raises(pgfast.ConfigError, match="NUL character"):
        pgfast._rls_begin_sql({"app.a": "x\x00y"}, frozenset())
    with pytest.raises(pgfast.ConfigError, match="has value None; use a str"):
        pgfast._rls_begin_sql({"app.a": None}, frozenset())
    assert pgfast._rls_begin_sql({}, frozenset()) == "BEGIN"
