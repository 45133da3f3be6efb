"""Pure logic, without a database or a subprocess: configuration checks, template hashes, the
command line's argument checks."""

from pathlib import Path

import pytest

import pgfast


def migration(
    version: int, name: str = "m", sql: str = "SELECT 1", depends_on: tuple[int, ...] = ()
) -> pgfast.Migration:
    path = Path(f"/nowhere/migrations/{version}_{name}_up.sql")
    return pgfast.Migration(version, name, path, None, sql, f"checksum of {sql}", depends_on)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"min_connections": -1}, r"DatabaseConfig.min_connections=-1 is invalid; use 0 or more"),
        ({"max_connections": 0}, r"DatabaseConfig.max_connections=0 is invalid; use 1 or more"),
        ({"min_connections": 9, "max_connections": 3}, r"min_connections=9 is larger than max_connections=3"),
        ({"timeout": 0}, r"DatabaseConfig.timeout=0 is invalid; use a positive number of seconds"),
        ({"command_timeout": -2.0}, r"command_timeout=-2.0 is invalid; use None \(no limit\)"),
        ({"statement_cache_size": -1}, r"statement_cache_size=-1 is invalid; use 0 \(off\) or more"),
    ],
)
def test_config_names_the_bad_setting_and_the_fix(settings: dict[str, object], message: str) -> None:
    with pytest.raises(pgfast.ConfigError, match=message):
        pgfast.DatabaseConfig(url="postgresql://app@localhost/app", **settings)  # type: ignore[arg-type]


def test_config_takes_a_lone_directory_as_one_directory() -> None:
    config = pgfast.DatabaseConfig(url="postgresql://app@localhost/app", migrations_dirs="db/migrations")
    assert config.migrations_dirs == ("db/migrations",)


def test_pgbouncer_turns_the_statement_cache_off() -> None:
    config = pgfast.DatabaseConfig(url="postgresql://app@localhost/app", pgbouncer=True)
    assert config.pool_options()["statement_cache_size"] == 0


def test_template_hash_covers_every_migration_and_fixture() -> None:
    base = [migration(1), migration(2, sql="CREATE TABLE t ()")]
    fixture = pgfast.SqlFixture(1, "m", Path("/nowhere/fixtures/1_m_fixture.sql"), "INSERT 1")
    hashes = {
        pgfast.template_hash(base),
        pgfast.template_hash([migration(1), migration(2, sql="CREATE TABLE u ()")]),  # a checksum
        pgfast.template_hash([migration(1), migration(3, sql="CREATE TABLE t ()")]),  # a version
        pgfast.template_hash([migration(1), migration(2, "n", sql="CREATE TABLE t ()")]),  # a name
        pgfast.template_hash(base, [fixture]),
        pgfast.template_hash(base, [pgfast.SqlFixture(1, "m", fixture.path, "INSERT 2")]),
    }
    assert len(hashes) == 6
    assert pgfast.template_hash(list(reversed(base))) == pgfast.template_hash(
        base
    )  # apply order, not list order


def test_template_hash_frames_its_parts() -> None:
    # Unframed, the names "a_b" + "c" and "a" + "b_c" would feed the same bytes.
    one = [migration(1, "a_b"), migration(2, "c")]
    two = [migration(1, "a"), migration(2, "b_c")]
    assert pgfast.template_hash(one) != pgfast.template_hash(two)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["schema", "down", "--steps", "0"], "'0' is not a positive whole number"),
        (["schema", "up", "--target", "v2"], "'v2' is not a positive whole number"),
        (["schema", "up", "--timeout", "-1"], "'-1': use a positive number of seconds"),
        (["schema", "up", "--lock-timeout", "soon"], "'soon' is not a number of seconds"),
        (["test-db", "cleanup", "--older-than", "3x"], "'3x' is not an age; write e.g. 90s, 30m, 2h or 1d"),
        (["schema", "down", "--steps", "2", "--target", "1"], "not allowed with argument"),
    ],
)
def test_bad_arguments_are_usage_errors_naming_the_value(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        pgfast.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["schema"], ["test-db"]])
def test_a_command_group_without_a_command_prints_help(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert pgfast.main(argv) == 2
    assert "usage: pgfast" in capsys.readouterr().err


def test_deps_needs_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "1_users_up.sql").write_text("CREATE TABLE users ();")
    (folder / "2_orders_up.sql").write_text("-- depends_on: 1\nCREATE TABLE orders ();")
    monkeypatch.setenv("PGFAST_MIGRATIONS_DIRS", str(folder))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert pgfast.main(["schema", "deps"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["1_users", "2_orders  <- 1_users"]
