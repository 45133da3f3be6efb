"""URLs without a database: masking passwords of any shape, Unix-socket and multi-host URLs."""

import asyncio
import logging
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import CHECKOUT, pgfast_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pgfast

# Markers at both ends: a leaked password, or a leaked head or tail of one, shows either.
HEAD, TAIL = "Xq9", "Zj7"
SPECIAL = list("@#?/%:'\" &=\\[]")
passwords = st.builds(
    lambda middle: HEAD + middle + TAIL,
    st.text(
        st.one_of(
            st.sampled_from(SPECIAL),
            st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")),
        ),
        min_size=1,
        max_size=12,
    ),
)


def kv_quoted(password: str) -> str:
    return "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"


def shapes(password: str) -> list[str]:
    """The ways a password reaches pgfast: raw and percent-encoded, in URLs and key=value form."""
    encoded = quote(password, safe="")
    return [
        f"postgresql://app:{password}@db.example:5432/shop",
        f"postgresql://app:{encoded}@db.example:5432/shop",
        f"postgres://app:{password}@/shop?host=/var/run/postgresql",
        f"postgresql://app@db.example/shop?password={password}",
        f"postgresql://app@db.example/shop?sslmode=disable&password={encoded}&application_name=x",
        f"postgresql://app:{encoded}@h1:5432,h2:5433/shop",
        # asyncpg percent-decodes query keys: these are passwords too
        f"postgresql://app@db.example/shop?pass%77ord={encoded}",
        f"postgresql://app@db.example/shop?sslmode=disable&%70assword={encoded}",
        f"postgresql://app@db.example/shop?sslpass%77ord={encoded}",
        f"host=127.0.0.1 password={kv_quoted(password)} user=postgres",
        f"host=127.0.0.1 user=postgres password={password}",
    ]


def assert_hidden(text: str, password: str) -> None:
    for secret in {password, quote(password, safe="")}:
        assert secret not in text
    assert HEAD not in text and TAIL not in text, text


def config_text(url: str) -> str:
    """What the user sees: the ConfigError's message, or the config's repr."""
    try:
        config = pgfast.DatabaseConfig(url=url)
    except pgfast.ConfigError as exc:
        return str(exc)
    return repr(config)


@settings(max_examples=300, deadline=None)
@given(passwords)
def test_no_password_in_config_errors_reprs_or_masked_urls(password: str) -> None:
    for url in shapes(password):
        assert_hidden(config_text(url), password)
        assert_hidden(pgfast.mask_url(url), password)


@settings(max_examples=200, deadline=None)
@given(passwords)
def test_errors_quoted_from_asyncpg_or_the_os_lose_the_password(password: str) -> None:
    decoded_and_raw = f"server said: password {password} (sent as {quote(password, safe='')}) rejected"
    for url in shapes(password):
        if url.startswith("host="):
            continue  # refused before any connection
        message = str(pgfast._unavailable(url, OSError(decoded_and_raw), "after 1s of retries"))
        assert_hidden(message, password)
        assert message.startswith("cannot connect to PostgreSQL at ")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=passwords)
def test_unreachable_server_names_no_password_in_errors_or_logs(
    password: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql://app:{quote(password, safe='')}@127.0.0.1:1/shop"
    caplog.clear()
    with caplog.at_level(logging.DEBUG), pytest.raises(pgfast.DatabaseUnavailableError) as info:
        asyncio.run(pgfast.create_pool(pgfast.DatabaseConfig(url=url, timeout=0.1)))
    message = str(info.value)
    assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:1/shop after 0.1s of retries: ")
    assert "(url postgresql://app:***@127.0.0.1:1/shop;" in message
    assert_hidden(message, password)
    for record in caplog.records:
        assert_hidden(record.getMessage(), password)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "migrations").mkdir()
    (root / "migrations" / "1_first_up.sql").write_text("SELECT 1;\n")
    return root


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=passwords, shape=st.sampled_from(["raw", "encoded", "query"]))
def test_cli_prints_no_password_for_an_unreachable_server(project: Path, password: str, shape: str) -> None:
    encoded = quote(password, safe="")
    url = {
        "raw": f"postgresql://app:{password}@127.0.0.1:1/shop",
        "encoded": f"postgresql://app:{encoded}@127.0.0.1:1/shop",
        "query": f"postgresql://app@127.0.0.1:1/shop?password={encoded}",
    }[shape]
    result = pgfast_cli(project, url, "schema", "status", env={"PYTHONPATH": str(CHECKOUT)})
    assert result.returncode == 1, result.stderr
    # (after the line saying where the migrations were found)
    assert result.stderr.splitlines()[-1].startswith("pgfast: error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert_hidden(result.stdout + result.stderr, password)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pa#ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:1234/secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p?ss@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_raw_separator_in_password_is_refused_with_the_fix(url: str, shown: str) -> None:
    with pytest.raises(pgfast.ConfigError) as info:
        pgfast.DatabaseConfig(url=url)
    assert str(info.value) == (
        f"DatabaseConfig.url={shown!r} has a raw '@', '/', '?' or '#' in its user name or password, "
        "or an '@' after its host; percent-encode the password with "
        "urllib.parse.quote(password, safe='') (and write '@' elsewhere as %40)"
    )


def test_percent_encoded_password_is_accepted_and_masked() -> None:
    config = pgfast.DatabaseConfig(url="postgresql://u:" + quote("pa#s/s@?", safe="") + "@h/db")
    assert repr(config).startswith("DatabaseConfig(url='postgresql://u:***@h/db', ")


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("host=127.0.0.1 password=s3cret user=postgres", "host=127.0.0.1 password=***"),
        ("host=h password='a b\\' c' user=x", "host=h password=*** user=x"),
        ("dbname = app password = 'x y z", "dbname = app password = ***"),
    ],
)
def test_key_value_dsn_is_refused_with_its_password_masked(dsn: str, shown: str) -> None:
    with pytest.raises(pgfast.ConfigError) as info:
        pgfast.DatabaseConfig(url=dsn)
    assert str(info.value) == (
        f"DatabaseConfig.url={shown!r} is a key=value connection string; pgfast takes URLs: "
        "postgresql://USER:PASSWORD@HOST:PORT/DBNAME (percent-encode the password with "
        "urllib.parse.quote(password, safe=''))"
    )


def test_query_password_masks_the_rest_of_the_url() -> None:
    assert (
        pgfast.mask_url("postgresql://u@h/db?sslmode=disable&password=a&b#c")
        == "postgresql://u@h/db?sslmode=disable&password=***"
    )


def test_unparsable_host_part_is_refused_without_echoing_it() -> None:
    with pytest.raises(pgfast.ConfigError) as info:
        pgfast.DatabaseConfig(url="postgresql://u:pa[ss3cret@h/db")
    assert "s3cret" not in str(info.value)
    assert str(info.value).startswith(
        "DatabaseConfig.url='postgresql://u:***@h/db' cannot be parsed as a URL: a '[' or ']' "
    )


@pytest.mark.parametrize(
    ("url", "target", "other"),
    [
        (
            "postgresql:///postgres?host=/var/run/postgresql",
            "/var/run/postgresql:5432/postgres",
            "postgresql:///pgfast_x?host=/var/run/postgresql",
        ),
        ("postgresql://%2Fvar%2Frun%2Fpostgresql/app", "/var/run/postgresql:5432/app", None),
        (
            "postgresql://postgres@/postgres?host=/tmp/sock&port=5433",
            "/tmp/sock:5433/postgres",
            "postgresql://postgres@/pgfast_x?host=/tmp/sock&port=5433",
        ),
        ("postgresql://u:pw@h1:5432,h2:5433/app", "h1:5432,h2:5433/app", None),
        ("postgresql://u@/app?password=pw&host=/tmp/sock&port=5433", "/tmp/sock:5433/app", None),
        (
            "postgres://[::1]:6000/app?dbname=app",
            "[::1]:6000/app",
            "postgres://[::1]:6000/pgfast_x?dbname=pgfast_x",
        ),
    ],
)
def test_socket_and_multi_host_urls_are_accepted_described_and_repointed(
    url: str, target: str, other: str | None
) -> None:
    pgfast.DatabaseConfig(url=url)
    assert pgfast._describe_target(url) == target
    repointed = pgfast.database_url(url, "pgfast_x")
    if other is not None:
        assert repointed == other
    assert pgfast._describe_target(repointed) == target.rsplit("/", 1)[0] + "/pgfast_x"


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("postgresql://h1:5432,h2:54x3/app", "54x3"),
        ("postgresql://h:0/app", "0"),
        ("postgresql://h:70000/app", "70000"),
        ("postgresql:///app?host=/tmp&port=abc", "abc"),
    ],
)
def test_bad_port_is_named(url: str, port: str) -> None:
    with pytest.raises(pgfast.ConfigError) as info:
        pgfast.DatabaseConfig(url=url)
    assert str(info.value) == (
        f"DatabaseConfig.url={url!r} has an invalid port {port!r}; use a number from 1 to 65535"
    )
