"""Discovering Python migration files: names, headers, and malformed files as one-line errors,
without running them (no database)."""

from pathlib import Path

import pytest
from helpers import write

import pgfast

MIGRATE = "async def migrate(conn):\n    pass\n"


def discover(root: Path) -> list[pgfast.Migration]:
    return pgfast.discover_migrations([root / "migrations"])


def error_of(root: Path) -> pgfast.MigrationFileError:
    with pytest.raises(pgfast.MigrationFileError) as info:
        discover(root)
    return info.value


def test_python_pair_is_found_with_its_headers_and_source(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql", "CREATE TABLE a (id int);")
    source = "#!/usr/bin/env python\n# depends_on: 1\n# pgfast: lock_timeout=30s\n\n" + MIGRATE
    up = write(tmp_path, "migrations/2_fill_up.py", source)
    down = write(tmp_path, "migrations/2_fill_down.py", "# pgfast: no-transaction\n" + MIGRATE)
    m = discover(tmp_path)[1]
    assert (m.version, m.name, m.up_path, m.down_path) == (2, "fill", up, down)
    assert (m.depends_on, m.no_transaction, m.ddl_lock_timeout, m.down_no_transaction) == (
        (1,),
        False,
        30.0,
        True,
    )
    assert m.sql == source
    assert m.read_down() == "# pgfast: no-transaction\n" + MIGRATE


def test_discovery_does_not_run_the_file(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.py", "raise SystemExit('ran at discovery')\n" + MIGRATE)
    assert [m.version for m in discover(tmp_path)] == [1]


def test_an_up_file_may_pair_with_a_down_file_of_the_other_kind(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.py", MIGRATE)
    down = write(tmp_path, "migrations/1_a_down.sql", "SELECT 1;")
    assert discover(tmp_path)[0].down_path == down


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("async def migrate(conn)\n    pass\n", "{path}:1: SyntaxError: expected ':'; fix the Python", 1),
        (
            "import asyncpg\n",
            "{path}: a Python migration must define 'async def migrate(conn)' at its top level, "
            "and this file does not",
            None,
        ),
        (
            "class M:\n    async def migrate(self, conn):\n        pass\n",
            "{path}: a Python migration must define 'async def migrate(conn)' at its top level, "
            "and this file does not",
            None,
        ),
        (
            "import asyncpg\n\ndef migrate(conn):\n    pass\n",
            "{path}:3: migrate is not async; write 'async def migrate(conn)' (pgfast awaits it on the "
            "migration's asyncpg connection)",
            3,
        ),
        (
            "# depends on: 1\n" + MIGRATE,
            "{path}:1: cannot parse the directive '# depends on: 1'; write '# depends_on: VERSION, ...'",
            1,
        ),
        (
            "# depends_on: one\n" + MIGRATE,
            "{path}:1: depends_on lists 'one', which is not a version number; write e.g. "
            "'# depends_on: 20250101000000, 20250102000000'",
            1,
        ),
        (
            "# pgfast: lock_timeout=soon\n" + MIGRATE,
            "{path}:1: lock_timeout='soon' is not a duration; write e.g. '# pgfast: lock_timeout=30s' "
            "(or 500ms, 2min; 0 or off for no limit)",
            1,
        ),
        (
            '"""Docstring."""\n# pgfast: no-transaction\n' + MIGRATE,
            "{path}:2: '# pgfast: no-transaction' comes after the first statement, where pgfast does not "
            "read it; move it into the header at the top of the file",
            2,
        ),
        (
            MIGRATE + "    # depends_on: 1\n",
            "{path}:3: '# depends_on: 1' comes after the first statement, where pgfast does not read it; "
            "move it into the header at the top of the file",
            3,
        ),
    ],
)
def test_malformed_python_files_are_one_line_errors_naming_file_and_line(
    tmp_path: Path, text: str, message: str, line: int | None
) -> None:
    path = write(tmp_path, "migrations/1_a_up.py", text)
    error = error_of(tmp_path)
    assert str(error) == message.format(path=path)
    assert "\n" not in str(error)
    assert (error.paths, error.line) == ((path,), line)


def test_sql_headers_still_read_only_dash_dash_comments(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql", "# depends_on: 7\nSELECT 1;")  # not a SQL comment
    assert discover(tmp_path)[0].depends_on == ()


def test_misnamed_python_migrations_get_the_python_name(tmp_path: Path) -> None:
    path = write(tmp_path, "migrations/3_Seed-Users_up.py", MIGRATE)
    assert str(error_of(tmp_path)).startswith(
        f"{path}: cannot parse this migration file name; rename it to 3_seed_users_up.py ("
    )


def test_python_fixtures_are_still_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "fixtures/3_seed_fixture.py", "")
    with pytest.raises(pgfast.MigrationFileError) as info:
        pgfast.discover_fixtures([], [tmp_path / "fixtures"])
    assert (
        str(info.value)
        == f"{path}: Python fixtures are not supported yet; write it as SQL in 3_seed_fixture.sql"
    )


def test_create_migration_python_writes_a_pair_that_discovery_accepts(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql")
    up, down = pgfast.create_migration(tmp_path, "fill_a", depends_on=[1], python=True)
    assert (up.name.endswith("_fill_a_up.py"), down.name.endswith("_fill_a_down.py")) == (True, True)
    assert up.read_text().startswith("# depends_on: 1\n# ")
    m = discover(tmp_path)[1]
    assert (m.up_path, m.down_path, m.depends_on) == (up, down, (1,))
    moment = pgfast.dt.datetime(2030, 1, 1, tzinfo=pgfast.dt.UTC)
    first, _ = pgfast.create_migration(tmp_path, "b", python=True, now=moment)
    second, _ = pgfast.create_migration(tmp_path, "c", now=moment)  # a .py file's version is taken too
    assert (first.name, second.name) == ("20300101000000_b_up.py", "20300101000001_c_up.sql")
