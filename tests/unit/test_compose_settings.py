"""DatabaseConfig.from_env() and the CLI without DATABASE_URL: the URL built from docker-compose's
POSTGRES_* variables, another variable named by database_url_var=, and the error naming every
variable looked at."""

import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from helpers import user_env, write

import pgfast

COMPOSE = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "MY_DB_URL", *COMPOSE):
        monkeypatch.delenv(name, raising=False)


def compose(monkeypatch: pytest.MonkeyPatch, **values: str) -> str:
    for name, value in values.items():
        monkeypatch.setenv(f"POSTGRES_{name.upper()}", value)
    return pgfast.DatabaseConfig.from_env().url


def test_url_is_built_from_the_compose_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    url = compose(monkeypatch, host="db", port="6543", user="app", password="secret", db="notes")
    assert url == "postgresql://app:secret@db:6543/notes"


@pytest.mark.parametrize("password", ["p@ss:w/rd", "#?%&=+ ", "ünï'cödé\"\\", "a%20b", "[::1]"])
def test_any_password_survives_percent_encoding(monkeypatch: pytest.MonkeyPatch, password: str) -> None:
    url = compose(monkeypatch, host="db", user="app", password=password, db="notes")
    parts = urlsplit(url)
    assert (unquote(parts.password or ""), parts.hostname, parts.path) == (password, "db", "/notes")
    assert password not in repr(pgfast.DatabaseConfig.from_env())


def test_unset_parts_default_as_libpq_does(monkeypatch: pytest.MonkeyPatch) -> None:
    assert compose(monkeypatch, db="notes") == "postgresql://postgres@localhost:5432/notes"
    monkeypatch.delenv("POSTGRES_DB")
    assert compose(monkeypatch, user="app") == "postgresql://app@localhost:5432/app"


def test_ipv6_host_and_socket_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    assert compose(monkeypatch, host="::1", db="x") == "postgresql://postgres@[::1]:5432/x"
    url = compose(monkeypatch, host="/var/run/postgresql", db="x")
    assert url == "postgresql://postgres@/x?host=%2Fvar%2Frun%2Fpostgresql&port=5432"


def test_database_url_wins_over_the_compose_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "db")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@elsewhere/app")
    assert pgfast.DatabaseConfig.from_env().url == "postgresql://u@elsewhere/app"


def test_database_url_var_names_another_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@ignored/app")
    monkeypatch.setenv("MY_DB_URL", "postgresql://u@mine/app")
    assert pgfast.DatabaseConfig.from_env(database_url_var="MY_DB_URL").url == "postgresql://u@mine/app"


def test_bad_port_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        pgfast.ConfigError, match=r"^POSTGRES_PORT='54x2' is not a port number; set it"
    ) as info:
        compose(monkeypatch, port="54x2")
    assert info.value.setting == "POSTGRES_PORT"


def test_nothing_set_lists_every_variable_looked_at() -> None:
    with pytest.raises(pgfast.ConfigError) as info:
        pgfast.DatabaseConfig.from_env(database_url_var="MY_DB_URL")
    assert str(info.value) == (
        "no database configured: none of MY_DB_URL, POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, "
        "POSTGRES_PASSWORD, POSTGRES_DB is set; export MY_DB_URL=postgresql://USER@HOST:5432/DBNAME "
        "(or POSTGRES_HOST, POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB)"
    )
    assert info.value.setting == "MY_DB_URL"


def test_cli_connects_where_the_compose_variables_say(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    env = user_env(
        POSTGRES_HOST="127.0.0.1",
        POSTGRES_PORT="1",
        POSTGRES_USER="app",
        POSTGRES_PASSWORD="s3cr#t!",
        POSTGRES_DB="notes",
    )
    result = subprocess.run(
        [sys.executable, "-m", "pgfast", "schema", "status"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pgfast: error: cannot connect to PostgreSQL at 127.0.0.1:1/notes: ")
    assert "(url postgresql://app:***@127.0.0.1:1/notes;" in last and "s3cr" not in result.stderr
