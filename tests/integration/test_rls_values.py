"""RLS setting values: quoted safely whatever the connection's encoding, rendered as PostgreSQL
prints them, refused (400 or ConfigError) when they cannot be held.

asyncpg sends query text as UTF-8 whatever client_encoding says, so the fused
`BEGIN; SELECT set_config(E'...')` is sent only on a UTF8 connection; any other encoding gets
bind parameters. The property tests drive a real FastAPI app through every client encoding the
server offers, with standard_conforming_strings and backslash_quote on and off.
"""

import asyncio
import decimal
import json
import logging
import math
import re
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import Body, Depends, FastAPI, Request
from helpers import UrlOf, serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pgfast

NAMES = ("app.a", "app.b", "app.c")
# Strings that broke client-side quoting under SJIS, GBK and BIG5 (issue #11): a multibyte
# character whose UTF-8 bytes, read as the client encoding, swallow the backslash after them.
ATTACKS = [
    "ぁ\\', true); DROP TABLE canary; --",
    "ぁ\\\\', true); DROP TABLE canary; --",
    "ソ\\'; DROP TABLE canary; --",
    "表'||(SELECT 1)||'",
    "縗\\' OR 1=1; DROP TABLE canary; --",
    "功\\'); DROP TABLE canary; --",
    "\\\\\\'''\\",
]
VALUES = (
    st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=30)  # surrogates included
    | st.text(alphabet="\\'ぁソ表縗功é ;", max_size=30)  # runs of backslashes and quotes
    | st.sampled_from(ATTACKS)
)
EXAMPLES = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """Hypothesis drives these tests synchronously; each example runs on this loop."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def canary_db(loop: asyncio.AbstractEventLoop, blank_databases: pgfast.IsolatedDatabases) -> Iterator[str]:
    """A database with a `canary` table that no request may drop."""
    name = loop.run_until_complete(blank_databases.create())
    url = blank_databases.url(name)

    async def create() -> None:
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE TABLE canary (id int)")
        await conn.close()

    loop.run_until_complete(create())
    yield url
    loop.run_until_complete(blank_databases.drop(name))


def knobs_app(url: str) -> FastAPI:
    """RLS settings from the JSON body, after a dependency that switches the connection's
    client_encoding, standard_conforming_strings and backslash_quote (from a fixed list)."""
    config = pgfast.DatabaseConfig(url=url, min_connections=1, max_connections=1)
    app = FastAPI(lifespan=pgfast.create_lifespan(config))

    async def knobs(request: Request, conn: Any = Depends(pgfast.get_db_connection)) -> None:
        encoding, conforming, backslash_quote = request.headers["x-knobs"].split(",")
        assert re.fullmatch(r"[A-Z0-9_]+", encoding) and {conforming, backslash_quote} <= {"on", "off"}
        await conn.execute(
            f"SET client_encoding = '{encoding}'; SET standard_conforming_strings = {conforming}; "
            f"SET backslash_quote = {backslash_quote}"
        )

    def from_body(values: dict[str, str] = Body()) -> dict[str, str]:
        return values

    rls = pgfast.create_rls_dependency(from_body)

    @app.post("/")
    async def echo(_: None = Depends(knobs), conn: Any = Depends(rls)) -> dict[str, Any]:
        return {
            "encoding": conn.get_settings().client_encoding,
            "values": {
                n: await conn.fetchval("SELECT coalesce(current_setting($1, true), '')", n) for n in NAMES
            },
        }

    return app


def client_encodings(url: str, loop: asyncio.AbstractEventLoop) -> list[str]:
    """Every client encoding the server converts to from the database's, and asyncpg can
    encode (Python has no codec for EUC_TW; the server converts nothing to MULE_INTERNAL)."""

    async def probe() -> list[str]:
        conn = await asyncpg.connect(url)
        usable = []
        for (name,) in await conn.fetch(
            "SELECT pg_encoding_to_char(i) FROM generate_series(0, 100) i WHERE pg_encoding_to_char(i) <> ''"
        ):
            try:
                await conn.execute(f"SET client_encoding = '{name}'")
                await conn.fetchval("SELECT $1::text", "a")
            except (asyncpg.PostgresError, LookupError):
                continue
            usable.append(name)
        await conn.close()
        return usable

    return loop.run_until_complete(probe())


def test_every_value_round_trips_exactly_or_is_refused_in_every_client_encoding(
    loop: asyncio.AbstractEventLoop, canary_db: str
) -> None:
    encodings = client_encodings(canary_db, loop)
    assert {"UTF8", "SJIS", "GBK", "BIG5", "LATIN1", "SQL_ASCII"} <= set(encodings), encodings
    app = knobs_app(canary_db)
    context = serve(app)
    client = loop.run_until_complete(context.__aenter__())
    outcomes: dict[str, int] = {"round-trip": 0, "refused": 0}

    @EXAMPLES
    @given(
        values=st.dictionaries(st.sampled_from(NAMES), VALUES, min_size=1, max_size=3),
        encoding=st.sampled_from(encodings),
        conforming=st.sampled_from(["on", "off"]),
        backslash_quote=st.sampled_from(["on", "off"]),
    )
    def check(values: dict[str, str], encoding: str, conforming: str, backslash_quote: str) -> None:
        async def request() -> httpx.Response:
            # JSON keeps lone surrogates as \ud800 escapes (json.dumps writes ASCII; httpx's
            # own encoding, in recent versions, cannot carry them)
            return await client.post(
                "/",
                content=json.dumps(values),
                headers={
                    "content-type": "application/json",
                    "x-knobs": f"{encoding},{conforming},{backslash_quote}",
                },
            )

        response = loop.run_until_complete(request())
        if response.status_code == 200:
            body = response.json()
            assert body["encoding"] == encoding
            assert body["values"] == {n: values.get(n, "") for n in NAMES}
            outcomes["round-trip"] += 1
        else:
            assert response.status_code == 400, response.text
            detail = response.json()["detail"]
            match = re.fullmatch(
                r"RLS setting '(app\.[abc])' has (a lone surrogate, which PostgreSQL text cannot hold|"
                rf"a character that client_encoding {encoding} cannot represent)",
                detail,
            )
            assert match, detail
            assert match[1] in values
            outcomes["refused"] += 1
        assert loop.run_until_complete(
            app.state.pgfast_pool.fetchval("SELECT to_regclass('canary') IS NOT NULL")
        )

    try:
        check()
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))
    assert outcomes["round-trip"] > 50 and outcomes["refused"] > 5, outcomes


@pytest.mark.parametrize("encoding", ["SJIS", "GBK", "BIG5"])
def test_the_reported_injection_set_by_init_round_trips_and_drops_nothing(
    loop: asyncio.AbstractEventLoop, canary_db: str, encoding: str
) -> None:
    """The issue's attack, on a connection the app's `init` switched: the RLS dependency
    acquires it itself and must see the encoding on the connection."""
    attack = "ぁ\\', true); DROP TABLE canary; --"

    async def init(conn: Any) -> None:
        await conn.execute(f"SET client_encoding = '{encoding}'; SET backslash_quote = on")

    config = pgfast.DatabaseConfig(url=canary_db, min_connections=1, max_connections=1, init=init)
    app = FastAPI(lifespan=pgfast.create_lifespan(config))
    rls = pgfast.create_rls_dependency(lambda: {"app.tenant_id": attack, "app.katakana": "ソ"})

    @app.get("/")
    async def endpoint(conn: Any = Depends(rls)) -> list[str]:
        return [
            await conn.fetchval("SELECT current_setting('app.tenant_id')"),
            await conn.fetchval("SELECT current_setting('app.katakana')"),
        ]

    async def run() -> tuple[httpx.Response, bool]:
        async with serve(app) as client:
            response = await client.get("/")
            alive = await app.state.pgfast_pool.fetchval("SELECT to_regclass('canary') IS NOT NULL")
        return response, alive

    response, alive = loop.run_until_complete(run())
    assert response.status_code == 200 and response.json() == [attack, "ソ"]
    assert alive


@pytest.mark.parametrize("spelling", ["SJIS", "latin1", "EUC_JP", "sql_ascii"])
def test_config_refuses_a_client_encoding_other_than_utf8(spelling: str) -> None:
    with pytest.raises(
        pgfast.ConfigError,
        match=rf"DatabaseConfig.server_settings\['client_encoding'\]='{spelling}' is refused: asyncpg "
        r"sends query text as UTF-8 .*; remove the setting \(or set it to 'UTF8'\)",
    ):
        pgfast.DatabaseConfig(url="postgresql://u@h/db", server_settings={"client_encoding": spelling})


def test_config_refuses_another_client_encoding_in_the_url_too() -> None:
    # (adversarial review: the URL's query was not looked at; the per-connection check held)
    with pytest.raises(pgfast.ConfigError, match=r"DatabaseConfig.url's 'client_encoding'='sjis' is refused"):
        pgfast.DatabaseConfig(url="postgresql://u@h/db?application_name=x&client%5Fencoding=sjis")


@pytest.mark.parametrize("spelling", ["UTF8", "utf8", "UTF-8", "utf_8", "unicode"])
def test_config_accepts_utf8_in_any_spelling(spelling: str) -> None:
    pgfast.DatabaseConfig(url="postgresql://u@h/db", server_settings={"client_encoding": spelling})


# PostgreSQL's own text output of each type, to compare the rendering with.
CASTS = {float: "float8", decimal.Decimal: "numeric", int: "numeric", uuid.UUID: "uuid", bool: "bool"}
TYPED_VALUES = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([2.0**-24, 2.0**-1017, 1.1269267840225261e17])  # where Python's repr and Ryu differ
    | st.sampled_from([0.0, -0.0, 1.5, 1e20, 123.0, 1e15, 1e14, 1e-4, 1e-5, 5e-324, 1.7976931348623157e308])
    | st.decimals(allow_nan=False, places=None, min_value=-(10**30), max_value=10**30)
    | st.sampled_from([decimal.Decimal(d) for d in ("1E+3", "-0.00", "1.50", "NaN", "Infinity", "-Infinity")])
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.uuids()
    | st.booleans()
)


def test_typed_values_are_rendered_as_postgresql_prints_them(
    loop: asyncio.AbstractEventLoop, canary_db: str, postgres_server: str
) -> None:
    holder: list[Any] = [None]
    app = FastAPI(lifespan=pgfast.create_lifespan(pgfast.DatabaseConfig(url=canary_db, min_connections=1)))
    rls = pgfast.create_rls_dependency(lambda: {"app.v": holder[0]})

    @app.get("/")
    async def endpoint(conn: Any = Depends(rls)) -> str:
        return str(await conn.fetchval("SELECT current_setting('app.v')"))

    async def setting(value: Any) -> str:
        holder[0] = value
        response = await client.get("/")
        assert response.status_code == 200, response.text
        return str(response.json())

    conn = loop.run_until_complete(asyncpg.connect(postgres_server))
    context = serve(app)
    client = loop.run_until_complete(context.__aenter__())

    @EXAMPLES
    @given(value=TYPED_VALUES)
    def check(value: Any) -> None:
        cast = CASTS[type(value)]
        expected = loop.run_until_complete(conn.fetchval(f"SELECT $1::{cast}::text", value))
        assert loop.run_until_complete(setting(value)) == expected

    try:
        check()
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.run_until_complete(conn.close())


@pytest.mark.asyncio
async def test_typed_values_arrive_through_the_rls_dependency(
    isolated_db: asyncpg.Pool, url_of: UrlOf
) -> None:
    values = {
        "app.text": "acme",
        "app.yes": True,
        "app.no": False,
        "app.int": 42,
        "app.float": 1e20,
        "app.nan": math.nan,
        "app.decimal": decimal.Decimal("1.50"),
        "app.uuid": uuid.UUID("12345678-1234-5678-1234-56781234ABCD"),
    }
    app = FastAPI(lifespan=pgfast.create_lifespan(pgfast.DatabaseConfig(url=url_of(isolated_db))))
    rls = pgfast.create_rls_dependency(lambda: values)

    @app.get("/")
    async def endpoint(conn: Any = Depends(rls)) -> dict[str, str]:
        return {n: await conn.fetchval("SELECT current_setting($1)", n) for n in values}

    async with serve(app) as client:
        seen = (await client.get("/")).json()
    assert seen == {
        "app.text": "acme",
        "app.yes": "true",
        "app.no": "false",
        "app.int": "42",
        "app.float": "1e+20",
        "app.nan": "NaN",
        "app.decimal": "1.50",
        "app.uuid": "12345678-1234-5678-1234-56781234abcd",
    }


@pytest.mark.parametrize(
    "value, message",
    [
        (decimal.Decimal("sNaN"), r"has Decimal\('sNaN'\), which PostgreSQL's numeric cannot hold"),
        (
            decimal.Decimal("1e1000000"),
            r"has Decimal\('1E\+1000000'\), which PostgreSQL's numeric cannot hold",
        ),
        (decimal.Decimal("1e-20000"), r"has Decimal\('1E-20000'\), which PostgreSQL's numeric cannot hold"),
        (10**5000, "has an int of over 4,000 digits; pass a shorter value"),
    ],
    ids=["snan", "huge-decimal", "tiny-decimal", "huge-int"],
)
def test_values_of_accepted_types_that_postgresql_cannot_hold_are_a_config_error(
    value: Any, message: str
) -> None:
    # Found by an adversarial pass: these were 500s from the server (or Python) mid-request.
    with pytest.raises(pgfast.ConfigError, match=rf"RLS setting 'app.v' {message}"):
        pgfast._rls_values({"app.v": value}, frozenset())


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "value, type_name",
    [(None, "NoneType"), (b"acme", "bytes"), (["a", "b"], "list"), ({"k": 1}, "dict"), (object(), "object")],
)
async def test_other_value_types_are_a_config_error_naming_setting_and_type(
    isolated_db: asyncpg.Pool, value: Any, type_name: str, url_of: UrlOf
) -> None:
    app = FastAPI(lifespan=pgfast.create_lifespan(pgfast.DatabaseConfig(url=url_of(isolated_db))))
    rls = pgfast.create_rls_dependency(lambda: {"app.tenant_id": value})

    @app.get("/")
    async def endpoint(conn: Any = Depends(rls)) -> None:
        raise AssertionError("not reached")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        with pytest.raises(
            pgfast.ConfigError,
            match=rf"RLS setting 'app.tenant_id' has a value of type {type_name}; the settings provider "
            r"must return str, int, float, decimal.Decimal, uuid.UUID or bool values",
        ):
            await client.get("/")
        assert app.state.pgfast_pool.get_idle_size() == app.state.pgfast_pool.get_size()  # none taken


@pytest.mark.asyncio
async def test_nul_or_lone_surrogate_from_the_client_is_a_400_naming_the_setting(
    isolated_db: asyncpg.Pool, caplog: pytest.LogCaptureFixture, url_of: UrlOf
) -> None:
    app = FastAPI(lifespan=pgfast.create_lifespan(pgfast.DatabaseConfig(url=url_of(isolated_db))))
    rls = pgfast.create_rls_dependency(lambda tenant="": {"app.tenant_id": tenant})
    from_body = pgfast.create_rls_dependency(lambda tenant=Body(embed=True): {"app.tenant_id": tenant})

    @app.get("/")
    async def endpoint(conn: Any = Depends(rls)) -> str:
        return str(await conn.fetchval("SELECT current_setting('app.tenant_id')"))

    @app.post("/")
    async def post(conn: Any = Depends(from_body)) -> str:
        return str(await conn.fetchval("SELECT current_setting('app.tenant_id')"))

    with caplog.at_level(logging.INFO):
        async with serve(app) as client:
            nul = await client.get("/?tenant=%00")
            surrogate = await client.post(
                "/", content=b'{"tenant": "a\\ud800"}', headers={"content-type": "application/json"}
            )
            fine = await client.get("/?tenant=acme")
    assert nul.status_code == 400
    assert nul.json() == {
        "detail": "RLS setting 'app.tenant_id' contains a NUL character, which PostgreSQL text cannot hold"
    }
    assert surrogate.status_code == 400
    assert surrogate.json() == {
        "detail": "RLS setting 'app.tenant_id' has a lone surrogate, which PostgreSQL text cannot hold"
    }
    assert fine.json() == "acme"  # and the connection is fine afterwards
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
