"""Where `pgfast schema ...` looks for migrations, and what it exits with: a separate process each."""

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import CHECKOUT, fetchval, pgfast_cli, user_env, write

import pgfast

OTHER_PYTHON = "/usr/bin/python3"


def cli_as_postgres(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pgfast ARGS` as the OS user `postgres` when run as root (root reads every directory), with
    a Python that user may run: `deps` needs nothing beyond the standard library."""
    root = os.geteuid() == 0
    return subprocess.run(
        [OTHER_PYTHON if root else sys.executable, "-m", "pgfast", *args],
        cwd=cwd,
        env=user_env(PYTHONPATH=str(CHECKOUT)),
        capture_output=True,
        text=True,
        timeout=120,
        user="postgres" if root else None,
    )


def test_no_migrations_directory_fails_saying_where_and_how_without_force(
    tmp_path: Path, blank_db: str
) -> None:
    write(tmp_path, "elsewhere/migrations/1_a_up.sql", "CREATE TABLE a ();")
    assert (
        pgfast_cli(tmp_path / "elsewhere", blank_db, "schema", "up").returncode == 0
    )  # the database has a ledger
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in (["up"], ["down"], ["status"], ["verify"], ["deps"], ["up", "--force"]):
        result = pgfast_cli(empty, blank_db, "schema", *command)
        assert (result.returncode, result.stdout) == (1, ""), (command, result)
        assert result.stderr == (
            f"pgfast: error: no directory named 'migrations' under {empty}; run pgfast from your project "
            "root (a directory holding pyproject.toml, setup.py, setup.cfg or .git), pass --root DIR, "
            "or set PGFAST_MIGRATIONS_DIRS\n"
        ), command
    assert fetchval(blank_db, "SELECT count(*) FROM _pgfast_migrations") == 1


def test_several_projects_are_not_collected_and_root_picks_one(tmp_path: Path, blank_db: str) -> None:
    for name in ("a", "b", "c", "d"):
        write(tmp_path, f"{name}/pyproject.toml", "")
        write(tmp_path, f"{name}/migrations/1_{name}_up.sql", f"CREATE TABLE {name} ();")
    result = pgfast_cli(tmp_path, blank_db, "schema", "up")
    assert result.returncode == 1
    assert (
        f"under {tmp_path} (projects of their own below it are not searched: a, b, c, d; pick one with --root)"
        in result.stderr
    )
    assert fetchval(blank_db, "SELECT to_regclass('_pgfast_migrations')::text") is None
    result = pgfast_cli(tmp_path, blank_db, "schema", "up", "--root", "c")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "pgfast: looked under c: migrations in migrations\n"
    assert fetchval(blank_db, "SELECT string_agg(name, ',') FROM _pgfast_migrations") == "c"


def test_every_command_says_where_it_looked(tmp_path: Path, blank_db: str) -> None:
    write(tmp_path, "pyproject.toml", "")
    write(tmp_path, "app/migrations/1_a_up.sql", "CREATE TABLE a ();")
    write(tmp_path, "app/migrations/1_a_down.sql", "DROP TABLE a;")
    write(tmp_path, "build/lib/app/migrations/1_a_up.sql", "CREATE TABLE a ();")  # pruned
    where = f"pgfast: looked under {tmp_path}: migrations in app/migrations\n"
    for command in (["up"], ["status"], ["verify"], ["deps"], ["down"]):
        # from a subdirectory: the project root
        result = pgfast_cli(tmp_path / "app", blank_db, "schema", *command)
        assert (result.returncode, result.stderr) == (0, where), (command, result)
    dirs = {"PGFAST_MIGRATIONS_DIRS": str(tmp_path / "app/migrations")}
    result = pgfast_cli(tmp_path, blank_db, "schema", "status", env=dirs)
    assert result.stderr == f"pgfast: migrations from PGFAST_MIGRATIONS_DIRS: {tmp_path / 'app/migrations'}\n"


def test_status_exits_1_on_each_kind_of_problem(tmp_path: Path, blank_db: str) -> None:
    write(tmp_path, "migrations/1_a_up.sql", "CREATE TABLE a ();")
    write(tmp_path, "migrations/2_b_up.sql", "CREATE TABLE b ();")
    assert pgfast_cli(tmp_path, blank_db, "schema", "up", "--target", "1").returncode == 0
    assert pgfast_cli(tmp_path, blank_db, "schema", "status").returncode == 0  # applied and pending: all good

    def problem(*args: str) -> str:
        result = pgfast_cli(tmp_path, blank_db, "schema", "status", *args)
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr
        return result.stderr.splitlines()[-1]

    write(tmp_path, "migrations/2_b_up.sql", "-- depends_on: 7\nCREATE TABLE b ();")
    assert problem().startswith("pgfast: problem: ") and " 7" in problem()
    write(tmp_path, "migrations/2_b_up.sql", "-- depends_on: 3\nCREATE TABLE b ();")
    write(tmp_path, "migrations/3_c_up.sql", "-- depends_on: 2\nCREATE TABLE c ();")
    assert "cycle: 2_b -> 3_c -> 2_b" in problem("--json")
    (tmp_path / "migrations/3_c_up.sql").unlink()
    write(tmp_path, "migrations/2_b_up.sql", "CREATE TABLE b ();")
    write(tmp_path, "migrations/1_a_up.sql", "CREATE TABLE a (id int);")
    assert problem().endswith("1_a_up.sql changed after it was applied")
    (tmp_path / "migrations/1_a_up.sql").unlink()
    assert problem() == "pgfast: problem: 1_a was applied but its file is gone"
    assert "Exit codes: 0 all good" in pgfast_cli(tmp_path, None, "schema", "status", "--help").stdout


def test_misnamed_file_stops_up_before_anything_is_applied(tmp_path: Path, blank_db: str) -> None:
    write(tmp_path, "migrations/1_a_up.sql", "CREATE TABLE a ();")
    bad = write(tmp_path, "migrations/2_b_Up.sql", "CREATE TABLE b ();")
    result = pgfast_cli(tmp_path, blank_db, "schema", "up")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        f"pgfast: error: {bad}: cannot parse this migration file name; rename it to 2_b_up.sql ("
    )
    assert "Traceback" not in result.stderr
    assert fetchval(blank_db, "SELECT to_regclass('_pgfast_migrations')::text") is None


def test_version_above_bigint_fails_deps_and_status_not_up(tmp_path: Path) -> None:
    write(tmp_path, "migrations/99999999999999999999_big_up.sql")
    for command in ("deps", "status"):
        result = pgfast_cli(tmp_path, "postgresql://postgres@127.0.0.1:1/x", "schema", command)
        assert result.returncode == 1
        assert "version 99999999999999999999 is out of range: use 1 to 9223372036854775807" in result.stderr


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another OS user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="pgfast-discovery-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for folder, subdirs, _files in os.walk(path):
            for name in subdirs:
                os.chmod(os.path.join(folder, name), 0o755)
        shutil.rmtree(path)


def test_unreadable_directory_is_one_warning_line_and_inside_migrations_an_error(shared_dir: Path) -> None:
    if os.geteuid() == 0 and not (_user_exists("postgres") and os.access(OTHER_PYTHON, os.X_OK)):
        pytest.skip(f"running as root without a `postgres` user or {OTHER_PYTHON} to run the CLI as")
    write(shared_dir, "pyproject.toml", "")
    write(shared_dir, "migrations/1_a_up.sql")
    (shared_dir / "private").mkdir(mode=0)
    for folder, subdirs, files in os.walk(shared_dir):
        for name in subdirs + files:
            if name != "private":
                os.chmod(os.path.join(folder, name), 0o755)
    result = cli_as_postgres(shared_dir, "schema", "deps")
    assert (result.returncode, result.stdout) == (0, "1_a\n"), result
    assert result.stderr.splitlines() == [
        f"pgfast: skipped 1 unreadable directory while looking for 'migrations' directories under {shared_dir}: "
        f"{shared_dir / 'private'}",
        f"pgfast: looked under {shared_dir}: migrations in migrations",
    ]
    os.rename(shared_dir / "private", shared_dir / "migrations" / "private")
    result = cli_as_postgres(shared_dir, "schema", "deps")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"pgfast: error: {shared_dir / 'migrations/private'}: cannot read this directory (Permission denied); "
        "fix its permissions"
    )


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_library_discovery_of_the_repo_layouts_still_works() -> None:
    notes = pgfast.discover_migrations(
        [CHECKOUT / "examples/notes/accounts/migrations", CHECKOUT / "examples/notes/notes/migrations"]
    )
    assert [m.name for m in notes] == ["tenants", "notes"]
    assert pgfast.discover_migrations([CHECKOUT / "tests/schema/migrations"])


def test_migrations_directories_with_no_migration_in_them_are_an_error(tmp_path: Path, blank_db: str) -> None:
    # Found by an adversarial pass: from /usr, another tool's migrations/ (an __init__.py and
    # yaml files) made `up` say "all 0 migration(s) are applied" and exit 0.
    write(tmp_path, "pyproject.toml", "")
    write(tmp_path, "tool/migrations/__init__.py", "")
    write(tmp_path, "tool/migrations/services.yaml", "x: 1")
    for command in ("up", "status", "verify", "down"):
        result = pgfast_cli(tmp_path, blank_db, "schema", command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert last == (
            "pgfast: error: no migration files in tool/migrations; write one with 'pgfast schema "
            "create', or point pgfast at your migrations with --root DIR or PGFAST_MIGRATIONS_DIRS"
        ), result.stderr


def test_outside_any_project_migrations_in_several_places_are_an_error(tmp_path: Path, blank_db: str) -> None:
    # Found by an adversarial pass: from /, 144 directories named migrations under /tmp (none in
    # a project) were collected, and `up` would have applied them all.
    write(tmp_path, "checkout-a/migrations/1_a_up.sql")
    write(tmp_path, "checkout-b/db/migrations/2_b_up.sql")
    result = pgfast_cli(tmp_path, blank_db, "schema", "up")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"pgfast: error: directories named 'migrations' in 2 places under {tmp_path} (checkout-a, "
        "checkout-b), which holds no pyproject.toml, setup.py, setup.cfg or .git to say they are one "
        "project's; run pgfast from your project's directory, pass --root DIR or set PGFAST_MIGRATIONS_DIRS"
    )
    assert fetchval(blank_db, "SELECT to_regclass('_pgfast_migrations') IS NULL")  # nothing ran
    one = pgfast_cli(tmp_path / "checkout-a", blank_db, "schema", "status")  # from one of them: fine
    assert one.returncode == 0, one.stderr
