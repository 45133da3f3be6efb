"""Where configuration comes from: one resolver for the test server, the app's URL and the
directories, read the same way by DatabaseConfig, discovery, the CLI and the plugin."""

import os
from pathlib import Path

import pytest

import pgfast

TEST_URL = "postgresql://tester@testhost:5433/postgres"
APP_URL = "postgresql://app@apphost/app"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("DATABASE_URL", "TEST_DATABASE_URL", "PGFAST_MIGRATIONS_DIRS", "PGFAST_FIXTURES_DIRS"):
        monkeypatch.delenv(variable, raising=False)


def project(root: Path) -> Path:
    """A project (pyproject.toml) with a migrations and a fixtures directory in its app/."""
    (root / "pyproject.toml").write_text("")
    for name in ("migrations", "fixtures"):
        (root / "app" / name).mkdir(parents=True)
    return root


def test_test_server_url_is_none_when_unset_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pgfast.test_server_url() is None
    monkeypatch.setenv("TEST_DATABASE_URL", "")
    assert pgfast.test_server_url() is None
    monkeypatch.setenv("TEST_DATABASE_URL", TEST_URL)
    assert pgfast.test_server_url() == TEST_URL


def test_a_malformed_test_server_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DATABASE_URL", "mysql://u:secret@h/db")
    with pytest.raises(
        pgfast.ConfigError, match=r"^TEST_DATABASE_URL='mysql://u:\*\*\*@h/db' is not a PostgreSQL"
    ):
        pgfast.test_server_url()
    with pytest.raises(pgfast.ConfigError, match=r"^TEST_DATABASE_URL="):
        pgfast.DatabaseConfig.for_tests(migrations_dirs=(), fixtures_dirs=())


def test_for_tests_takes_the_test_server_then_the_app_database(monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = {"migrations_dirs": (), "fixtures_dirs": ()}
    with pytest.raises(
        pgfast.ConfigError,
        match=r"^set TEST_DATABASE_URL \(or DATABASE_URL\) to a server where pgfast may create databases, "
        r"e\.g\. postgresql://postgres@127\.0\.0\.1:5432/postgres$",
    ):
        pgfast.DatabaseConfig.for_tests(**dirs)
    monkeypatch.setenv("DATABASE_URL", APP_URL)
    assert pgfast.DatabaseConfig.for_tests(**dirs).url == APP_URL
    monkeypatch.setenv("TEST_DATABASE_URL", TEST_URL)
    assert pgfast.DatabaseConfig.for_tests(**dirs).url == TEST_URL
    assert (
        pgfast.DatabaseConfig.for_tests(url="postgresql://given@h/x", **dirs).url == "postgresql://given@h/x"
    )


def test_from_env_needs_database_url_and_reads_only_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DATABASE_URL", TEST_URL)
    with pytest.raises(
        pgfast.ConfigError,
        match=r"^no database configured: none of DATABASE_URL, POSTGRES_HOST, .* is set; export "
        r"DATABASE_URL=postgresql://USER@HOST:5432/DBNAME \(or POSTGRES_HOST,",
    ):
        pgfast.DatabaseConfig.from_env()
    monkeypatch.setenv("DATABASE_URL", APP_URL)
    config = pgfast.DatabaseConfig.from_env(max_connections=30)
    assert (config.url, config.max_connections) == (APP_URL, 30)
    assert (config.migrations_dirs, config.fixtures_dirs) == (None, None)  # discovered where used


def test_directory_variables_are_read_alike_by_both_configs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", APP_URL)
    monkeypatch.setenv("PGFAST_MIGRATIONS_DIRS", f"{tmp_path / 'a'}{os.pathsep}{os.pathsep}{tmp_path / 'b'}")
    monkeypatch.setenv("PGFAST_FIXTURES_DIRS", str(tmp_path / "f"))
    expected = ((tmp_path / "a", tmp_path / "b"), (tmp_path / "f",))
    for config in (pgfast.DatabaseConfig.from_env(), pgfast.DatabaseConfig.for_tests(project(tmp_path))):
        assert (config.migrations_dirs, config.fixtures_dirs) == expected


def test_for_tests_discovers_under_root_defaulting_to_the_project_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = project(tmp_path)
    monkeypatch.setenv("TEST_DATABASE_URL", TEST_URL)
    expected = ((root / "app" / "migrations",), (root / "app" / "fixtures",))
    config = pgfast.DatabaseConfig.for_tests(root)
    assert (config.migrations_dirs, config.fixtures_dirs) == expected
    monkeypatch.chdir(root / "app" / "migrations")  # from anywhere inside the project, as the CLI
    config = pgfast.DatabaseConfig.for_tests()
    assert (config.migrations_dirs, config.fixtures_dirs) == expected
    config = pgfast.DatabaseConfig.for_tests(migrations_dirs=["elsewhere"])
    assert (config.migrations_dirs, config.fixtures_dirs) == (("elsewhere",), (root / "app" / "fixtures",))


def test_a_missing_directory_names_the_setting_it_came_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nowhere")
    with pytest.raises(
        pgfast.ConfigError, match=r"^migrations_dirs names '.*nowhere', which is not a directory"
    ):
        pgfast.discover_migrations([missing])
    monkeypatch.setenv("PGFAST_MIGRATIONS_DIRS", missing)
    with pytest.raises(
        pgfast.ConfigError, match=r"^PGFAST_MIGRATIONS_DIRS names '.*nowhere', which is not a directory"
    ):
        pgfast.discover_migrations()
    monkeypatch.setenv("PGFAST_FIXTURES_DIRS", missing)
    with pytest.raises(
        pgfast.ConfigError, match=r"^PGFAST_FIXTURES_DIRS names '.*nowhere', which is not a directory"
    ):
        pgfast.discover_fixtures([])


def test_only_the_resolver_spells_the_environment_variables() -> None:
    # grep finds every reader: no f-string builds a variable's name.
    source = Path(pgfast.__file__).read_text()
    assert 'f"PGFAST_{' not in source
    for variable in ("PGFAST_MIGRATIONS_DIRS", "PGFAST_FIXTURES_DIRS"):
        code = [line for line in source.splitlines() if f'"{variable}"' in line]
        assert len(code) == 1 and "_DIRS_VARIABLES" in code[0], code
    for variable in ("TEST_DATABASE_URL", "DATABASE_URL"):
        assert source.count(f'_env_url("{variable}")') >= 1
        assert f'environ.get("{variable}")' not in source
