"""`pgfast test-db create --name/--template`: a migrated database for manual work."""

from pathlib import Path

from helpers import fetchval, pgfast_cli, write

import pgfast


def test_create_with_a_name_and_as_a_template_then_a_taken_name_is_one_line(
    tmp_path: Path, own_server: str
) -> None:
    write(tmp_path, "migrations/1_users_up.sql", "CREATE TABLE users (id int);")
    made = pgfast_cli(
        tmp_path, None, "test-db", "create", "--name", "scratch_work", env={"TEST_DATABASE_URL": own_server}
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[0] == "created scratch_work"
    assert 'it is yours: drop it with DROP DATABASE "scratch_work" when done' in made.stdout
    url = pgfast.database_url(own_server, "scratch_work")
    assert fetchval(url, "SELECT count(*) FROM users") == 0

    template = pgfast_cli(
        tmp_path,
        None,
        "test-db",
        "create",
        "--name",
        "my_template",
        "--template",
        env={"TEST_DATABASE_URL": own_server},
    )
    assert template.returncode == 0, template.stderr
    assert fetchval(own_server, "SELECT datistemplate FROM pg_database WHERE datname = 'my_template'")

    taken = pgfast_cli(
        tmp_path, None, "test-db", "create", "--name", "scratch_work", env={"TEST_DATABASE_URL": own_server}
    )
    assert taken.returncode == 1 and taken.stdout == ""
    assert taken.stderr == (
        "pgfast: error: a database named 'scratch_work' already exists on that server; choose another "
        "name, or drop that database first\n"
    )
    # Yours, not pgfast's: cleanup leaves both.
    cleaned = pgfast_cli(tmp_path, None, "test-db", "cleanup", "--all", env={"TEST_DATABASE_URL": own_server})
    assert cleaned.returncode == 0, cleaned.stderr
    names = fetchval(own_server, "SELECT array_agg(datname ORDER BY datname) FROM pg_database")
    assert {"scratch_work", "my_template"} <= set(names)


def test_a_pgfast_named_template_is_dropped_by_cleanup_and_a_long_name_is_one_line(
    tmp_path: Path, own_server: str
) -> None:
    # (adversarial review: cleanup crashed with a traceback on "cannot drop a template database",
    # and a 64-byte name was asyncpg's NameTooLongError traceback)
    write(tmp_path, "migrations/1_users_up.sql", "CREATE TABLE users (id int);")
    env = {"TEST_DATABASE_URL": own_server}
    made = pgfast_cli(tmp_path, None, "test-db", "create", "--template", env=env)
    assert made.returncode == 0, made.stderr
    name = made.stdout.split()[1]
    cleaned = pgfast_cli(tmp_path, None, "test-db", "cleanup", "--all", env=env)
    assert cleaned.returncode == 0, cleaned.stderr
    assert fetchval(own_server, "SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
    long = pgfast_cli(tmp_path, None, "test-db", "create", "--name", "x" * 64, env=env)
    assert (long.returncode, long.stderr) == (
        1,
        f"pgfast: error: database name {'x' * 64!r} is 64 bytes long; use 1 to 63 bytes, PostgreSQL's "
        "limit for names\n",
    )
