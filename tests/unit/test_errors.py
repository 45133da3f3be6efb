"""The error classes: one root, builtin bases, data as attributes, the API's words in the library
and the CLI's flags from main()."""

import re
from pathlib import Path

import pytest

import pgfast

ERRORS = [getattr(pgfast, name) for name in pgfast.__all__ if name.endswith("Error")]


def test_every_error_is_a_pgfast_error_listed_in_the_readme_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme.split("## Errors", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| `?([\w, ]+?)`? \|", table, re.MULTILINE))
    assert set(rows) == {e.__name__ for e in ERRORS}
    for error in ERRORS:
        assert issubclass(error, pgfast.PgfastError)
        bases = ", ".join(b.__name__ for b in error.__bases__)
        assert rows[error.__name__].replace("`", "") == bases, error


def test_message_is_facts_then_fix() -> None:
    error = pgfast.UnknownVersionError(
        "target=3: no migration has that version", version=3, fix="see migration_status"
    )
    assert str(error) == "target=3: no migration has that version; see migration_status"
    assert (error.facts, error.fix, error.version) == (
        "target=3: no migration has that version",
        "see migration_status",
        3,
    )
    sentence = pgfast.PgfastError("it stopped", fix="To go on: resume it")
    assert str(sentence) == "it stopped. To go on: resume it"


@pytest.mark.parametrize(
    "error, cli",
    [
        (
            pgfast.LockTimeoutError(
                "schema migration: waited 1s for pgfast's lock (lock_timeout=1 was asked)",
                pid=42,
                application_name="deploy",
                waited=1.0,
                database="app",
                purpose="schema migration",
                fix="let it finish, stop it, or wait longer (lock_timeout=SECONDS)",
            ),
            "pgfast: error: schema migration: waited 1s for pgfast's lock (lock_timeout=1 was asked); "
            "let it finish, stop it, or wait longer (--lock-timeout SECONDS)",
        ),
        (
            pgfast.ChecksumError(
                "refusing to migrate: /srv/force=True/1_a_up.sql changed after it was applied",
                problems=(),
                fix="Restore the applied files, or pass force=True to apply anyway",
            ),
            "pgfast: error: refusing to migrate: /srv/force=True/1_a_up.sql changed after it was applied. "
            "Restore the applied files, or pass --force to apply anyway",
        ),
        (
            pgfast.DependencyError(
                "cannot roll back 1_a: applied migration 2_b depends on it",
                migration="2_b",
                version=1,
                fix="roll that back too (larger steps=N or lower target=VERSION)",
            ),
            "pgfast: error: cannot roll back 1_a: applied migration 2_b depends on it; "
            "roll that back too (larger --steps N or lower --target VERSION)",
        ),
        (
            pgfast.PgfastError(
                "2_slow stopped part way",
                fix="To go on: apply_migrations(..., resume=True) runs statement 2, or record it with "
                "mark_migration(conn, migrations, 2, applied=True) (or applied=False)",
            ),
            "pgfast: error: 2_slow stopped part way. To go on: 'pgfast schema up --resume' runs statement 2, "
            "or record it with 'pgfast schema mark 2 --applied' (or --pending)",
        ),
        (
            pgfast.UnknownVersionError(
                "target=7: no migration has that version", version=7, fix="see migration_status"
            ),
            "pgfast: error: target=7: no migration has that version; see 'pgfast schema status'",
        ),
    ],
)
def test_main_says_only_the_fix_in_flags_and_keeps_the_facts(
    error: pgfast.PgfastError, cli: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(_args: object) -> int:
        raise error

    monkeypatch.setattr(pgfast, "_cmd_deps", fail)
    assert pgfast.main(["schema", "deps"]) == 1
    assert capsys.readouterr().err.strip() == cli


def test_a_misplaced_argument_names_the_setting() -> None:
    with pytest.raises(pgfast.ConfigError, match=r"DatabaseConfig.max_connections=0 is invalid") as info:
        pgfast.DatabaseConfig(url="postgresql://app@localhost/app", max_connections=0)
    assert info.value.setting == "DatabaseConfig.max_connections"
    with pytest.raises(pgfast.ConfigError, match=r"migration name 'Add Users' must use only") as info:
        pgfast.create_migration("/nowhere", "Add Users")
    assert info.value.setting == "name"


def test_a_missing_dependency_carries_the_migration_and_the_version(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "1_a_up.sql").write_text("-- depends_on: 9\nSELECT 1;")
    migrations = pgfast.discover_migrations([folder])
    with pytest.raises(pgfast.DependencyError, match=r"no migration has version 9; fix the version") as info:
        pgfast.order_migrations(migrations)
    assert (info.value.migration, info.value.version) == ("1_a", 9)


def test_a_library_fix_reaches_the_command_line_in_its_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "1_a_up.sql").write_text("SELECT 1;")
    (folder / "a").mkdir()
    (folder / "a" / "1_b_up.sql").write_text("SELECT 1;")
    with pytest.raises(pgfast.MigrationFileError, match=r"\(create_migration makes unique ones\)$") as info:
        pgfast.discover_migrations([folder])
    assert len(info.value.paths) == 2
    assert pgfast.main(["schema", "deps", "--root", str(tmp_path)]) == 1
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("pgfast: error: two migrations have version 1: ")
    assert error.endswith("; give one of them a new version ('pgfast schema create' makes unique ones)")
