"""Templates and test databases: building, reuse, a non-superuser role, cleanup, the CLI."""

import asyncio
import contextlib
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from helpers import databases_named, fetch, pgfast_cli, start_pgfast, wait_for

import pgfast


def write_migrations(root: Path, *bodies: str) -> list[pgfast.Migration]:
    folder = root / "migrations"
    folder.mkdir(parents=True, exist_ok=True)
    for i, body in enumerate(bodies, 1):
        (folder / f"{i}_m{i}_up.sql").write_text(body)
    return pgfast.discover_migrations([folder])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project of its own, so its templates are its own (conftest drops them afterwards)."""
    return tmp_path


def test_template_is_marked_complete_and_unconnectable(project: Path, postgres_server: str) -> None:
    migrations = write_migrations(project, "CREATE TABLE a (id int);")
    with pgfast.IsolatedDatabases(postgres_server, migrations) as databases:
        row = fetch(
            postgres_server,
            "SELECT datistemplate, datallowconn FROM pg_database WHERE datname = $1",
            databases.template,
        )
        assert [tuple(r) for r in row] == [(True, False)]
        name = asyncio.run(databases.create())
        assert fetch(databases.url(name), "SELECT count(*) AS n FROM a")[0]["n"] == 0
    assert databases_named(postgres_server, name) == []


def test_a_createdb_role_without_superuser_builds_clones_and_drops(
    project: Path, postgres_server: str
) -> None:
    fetch(
        postgres_server,
        "DO $$ BEGIN CREATE ROLE pgfast_creator LOGIN CREATEDB; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )
    assert not fetch(postgres_server, "SELECT rolsuper FROM pg_roles WHERE rolname = 'pgfast_creator'")[0][
        "rolsuper"
    ]
    scheme, rest = postgres_server.split("://", 1)
    creator = f"{scheme}://pgfast_creator@{rest.split('@', 1)[-1]}"
    migrations = write_migrations(project, "CREATE TABLE a (id int);", "CREATE INDEX ON a (id);")
    with pgfast.IsolatedDatabases(creator, migrations, prewarm=1) as databases:
        owner = fetch(
            postgres_server,
            "SELECT pg_get_userbyid(datdba) AS o, datistemplate FROM pg_database WHERE datname = $1",
            databases.template,
        )
        assert (owner[0]["o"], owner[0]["datistemplate"]) == ("pgfast_creator", True)
        names = [asyncio.run(databases.create()) for _ in range(3)]
        assert all(
            fetch(databases.url(n), "SELECT current_user AS u")[0]["u"] == "pgfast_creator" for n in names
        )
    assert [n for n in names if databases_named(postgres_server, n)] == []


def test_half_built_template_is_rebuilt(project: Path, postgres_server: str) -> None:
    migrations = write_migrations(project, "CREATE TABLE a (id int);")
    template = pgfast.IsolatedDatabases(postgres_server, migrations).template
    fetch(postgres_server, f'CREATE DATABASE "{template}"')  # as a run killed mid-build leaves it
    with pgfast.IsolatedDatabases(postgres_server, migrations) as databases:
        name = asyncio.run(databases.create())
        assert fetch(databases.url(name), "SELECT to_regclass('a') IS NOT NULL AS ok")[0]["ok"]


def test_unchanged_migrations_reuse_the_template_and_changed_ones_replace_it(
    project: Path, postgres_server: str
) -> None:
    migrations = write_migrations(project, "CREATE TABLE a (id int);")
    with pgfast.IsolatedDatabases(postgres_server, migrations) as first:
        oid = fetch(postgres_server, "SELECT oid FROM pg_database WHERE datname = $1", first.template)[0][
            "oid"
        ]
    with pgfast.IsolatedDatabases(postgres_server, migrations) as again:
        assert (
            fetch(postgres_server, "SELECT oid FROM pg_database WHERE datname = $1", again.template)[0]["oid"]
            == oid
        )
    changed = write_migrations(project, "CREATE TABLE a (id bigint);")
    with pgfast.IsolatedDatabases(postgres_server, changed) as newer:
        assert newer.template != first.template
        assert databases_named(postgres_server, first.template) == []
        assert databases_named(postgres_server, newer.template) == [newer.template]


def test_concurrent_starts_build_one_template(project: Path, postgres_server: str) -> None:
    migrations = write_migrations(
        project, "CREATE TABLE runs (n int); INSERT INTO runs VALUES (1); SELECT pg_sleep(0.3);"
    )
    results: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with pgfast.IsolatedDatabases(postgres_server, migrations) as databases:
                name = asyncio.run(databases.create())
                results.append(fetch(databases.url(name), "SELECT count(*) AS n FROM runs")[0]["n"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and results == [1, 1, 1, 1]


def test_failing_migration_fails_the_build_and_leaves_no_template(
    project: Path, postgres_server: str
) -> None:
    migrations = write_migrations(project, "CREATE TABLE a (id int);", "SELEC broken;")
    databases = pgfast.IsolatedDatabases(postgres_server, migrations)
    with pytest.raises(
        pgfast.MigrationFailedError, match=r"applying 2_m2 failed at .*2_m2_up.sql:1: PostgresSyntaxError"
    ):
        databases.start()
    assert databases_named(postgres_server, databases.template) == []


def test_fixture_files_are_validated(tmp_path: Path) -> None:
    migrations = write_migrations(tmp_path, "SELECT 1;")
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    stray = fixtures / "99_nobody_fixture.sql"
    stray.write_text("SELECT 1;")
    with pytest.raises(
        pgfast.MigrationFileError, match=r"99_nobody_fixture.sql: fixture version 99 matches no migration"
    ):
        pgfast.discover_fixtures(migrations, [fixtures])
    stray.unlink()
    (fixtures / "a").mkdir()
    (fixtures / "a/1_x_fixture.sql").write_text("")
    (fixtures / "1_y_fixture.sql").write_text("")
    with pytest.raises(pgfast.MigrationFileError, match="two fixtures have version 1"):
        pgfast.discover_fixtures(migrations, [fixtures])


def test_drop_refuses_databases_pgfast_did_not_create(postgres_server: str) -> None:
    async def attempt() -> None:
        conn = await asyncpg.connect(postgres_server)
        try:
            await pgfast._drop_database(conn, "postgres")
        finally:
            await conn.close()

    with pytest.raises(
        pgfast.PgfastError, match="refusing to drop database 'postgres': pgfast did not create it"
    ):
        asyncio.run(attempt())


def cli(
    project: Path, server: str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`pgfast test-db ARGS` on `server`."""
    return pgfast_cli(
        project, None, "test-db", *args, env={"TEST_DATABASE_URL": server, **(env or {})}, stdin=stdin
    )


def test_cli_create_list_cleanup(project: Path, own_server: str) -> None:
    # A server of its own: `cleanup --all` drops every kept database, other tests' included.
    postgres_server = own_server
    write_migrations(project, "CREATE TABLE a (id int);")
    other = "pgfast_user_data_not_ours"
    fetch(postgres_server, f'DROP DATABASE IF EXISTS "{other}"')
    fetch(postgres_server, f'CREATE DATABASE "{other}"')
    try:
        created = cli(project, postgres_server, "create")
        assert created.returncode == 0, created.stderr
        name = created.stdout.split()[1]
        assert f"url: postgresql://postgres@/{name}" in created.stdout or f"/{name}" in created.stdout
        assert fetch(pgfast.database_url(postgres_server, name), "SELECT count(*) AS n FROM a")[0]["n"] == 0
        listed = cli(project, postgres_server, "list")
        line = next(line for line in listed.stdout.splitlines() if line.startswith(name))
        assert " test " in line and "kept (no owner)" in line
        assert other not in listed.stdout
        refused = cli(project, postgres_server, "cleanup")
        assert refused.returncode == 1 and "pass --all to drop them without asking" in refused.stderr
        spared = cli(project, postgres_server, "cleanup", "--all", "--older-than", "1h")
        assert spared.returncode == 0 and databases_named(postgres_server, name) == [name]
        dropped = cli(project, postgres_server, "cleanup", "--all")
        assert dropped.returncode == 0 and dropped.stdout.startswith("dropped ")
        assert databases_named(postgres_server, name) == []
        assert databases_named(postgres_server, other) == [other]
    finally:
        fetch(postgres_server, f'DROP DATABASE IF EXISTS "{other}"')


def test_cli_creates_started_together_get_distinct_names(project: Path, postgres_server: str) -> None:
    # 0.9.0 named kept databases by pid 0, the second and a per-process counter: two processes
    # creating in one second both chose ..._0_<second>_1 and the second failed with a traceback.
    write_migrations(project, "CREATE TABLE a (id int);")
    first = cli(project, postgres_server, "create")  # builds the template: the rest race on names only
    assert first.returncode == 0, first.stderr
    racers = [
        start_pgfast(project, None, "test-db", "create", env={"TEST_DATABASE_URL": postgres_server})
        for _ in range(4)
    ]
    outputs = [racer.communicate(timeout=120) for racer in racers]
    names = [first.stdout.split()[1]] + [out.split()[1] for out, _err in outputs if out]
    try:
        assert [racer.returncode for racer in racers] == [0] * 4, [err for _out, err in outputs]
        assert len(set(names)) == 5 and all(databases_named(postgres_server, n) == [n] for n in names)
    finally:
        for name in names:
            fetch(postgres_server, f'DROP DATABASE IF EXISTS "{name}"')


def test_cli_cleanup_keeps_the_templates_the_plugin_uses_here(project: Path, own_server: str) -> None:
    postgres_server = own_server  # `cleanup --all` must not meet other tests' kept databases
    # (Other templates are dropped only while no run on this host goes on: see the next test.)
    migrations = write_migrations(project / "app", "CREATE TABLE a (id int);")
    (project / "app" / "fixtures").mkdir()
    (project / "app" / "fixtures" / "1_a_fixture.sql").write_text("INSERT INTO a VALUES (1);")
    fixtures = pgfast.discover_fixtures(migrations, root=project)
    # as the plugin builds them: the pytest root directory is the project
    with pgfast.IsolatedDatabases(postgres_server, migrations, fixtures) as current:
        asyncio.run(current.create(fixtures=True))
    made = [current.template, current.fixtures_template]
    assert [databases_named(postgres_server, name) for name in made] == [[name] for name in made]
    result = cli(project, postgres_server, "cleanup", "--all")
    assert result.returncode == 0, result.stderr
    assert [databases_named(postgres_server, name) for name in made] == [[name] for name in made]


def test_cli_cleanup_from_elsewhere_keeps_the_templates_of_the_migrations_it_is_given(
    project: Path, own_server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # 0.9.0 keyed the CLI's templates by the current directory, the plugin's by pytest's root:
    # run from another directory, cleanup took the plugin's current template for a stale one.
    migrations = write_migrations(project / "app", "CREATE TABLE a (id int);")
    with pgfast.IsolatedDatabases(own_server, migrations) as current:
        pass
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    migrations_dir = str(project / "app" / "migrations")
    result = cli(elsewhere, own_server, "cleanup", "--all", env={"PGFAST_MIGRATIONS_DIRS": migrations_dir})
    assert result.returncode == 0, result.stderr
    assert databases_named(own_server, current.template) == [current.template]


def test_cli_cleanup_drops_exactly_the_databases_the_user_confirmed(project: Path, own_server: str) -> None:
    import pty

    write_migrations(project, "CREATE TABLE a (id int);")
    confirmed = cli(project, own_server, "create").stdout.split()[1]
    primary, secondary = pty.openpty()  # cleanup asks only on a terminal
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGFAST_", "DATABASE_URL"))}
    env["TEST_DATABASE_URL"] = own_server
    asking = subprocess.Popen(
        [sys.executable, "-m", "pgfast", "test-db", "cleanup"],
        cwd=project,
        env=env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    shown = b""
    while b"[y/N]" not in shown:
        assert select.select([primary], [], [], 60)[0], f"no prompt: {shown!r}"
        shown += os.read(primary, 4096)
    assert confirmed.encode() in shown
    host = confirmed.split("_")[2]
    arrived_meanwhile = f"pgfast_test_{host}_0_{int(time.time())}_999999"  # as `test-db create` names
    fetch(own_server, f'CREATE DATABASE "{arrived_meanwhile}"')
    os.write(primary, b"y\n")
    assert asking.wait(timeout=120) == 0
    with contextlib.suppress(OSError):
        shown += os.read(primary, 4096)
    os.close(primary)
    assert b"dropped 1 database(s)" in shown
    assert databases_named(own_server, confirmed) == []
    assert databases_named(own_server, arrived_meanwhile) == [arrived_meanwhile]


def test_cleanup_spares_running_runs_databases_and_every_template_meanwhile(
    project: Path, postgres_server: str
) -> None:
    migrations = write_migrations(project, "CREATE TABLE a (id int);")

    async def chosen() -> list[str]:
        conn = await asyncpg.connect(postgres_server)
        try:
            return await pgfast.cleanup_test_databases(conn, dry_run=True)
        finally:
            await conn.close()

    with pgfast.IsolatedDatabases(postgres_server, migrations) as databases:
        name = asyncio.run(databases.create())  # this process is alive: its run is going on
        during = asyncio.run(chosen())
        assert name not in during and databases.template not in during
        assert not [n for n in during if n.startswith("pgfast_tpl_")]


def test_cli_without_server_url_says_what_to_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "DATABASE_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "pgfast", "test-db", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        "set TEST_DATABASE_URL (or DATABASE_URL) to a server where pgfast may create databases"
        in result.stderr
    )


def test_two_suites_of_one_project_with_other_migrations_both_keep_working(
    project: Path, postgres_server: str
) -> None:
    first = write_migrations(project / "a", "CREATE TABLE a (id int);")
    second = write_migrations(project / "b", "CREATE TABLE b (id int);")
    with (
        pgfast.IsolatedDatabases(postgres_server, first) as one,
        pgfast.IsolatedDatabases(postgres_server, second) as two,
    ):
        # templates are per project root and migration directories: neither is the other's stale one
        assert one.template != two.template
        assert databases_named(postgres_server, one.template) == [one.template]
        for databases, table in ((one, "a"), (two, "b"), (one, "a")):
            name = asyncio.run(databases.create())
            assert fetch(databases.url(name), f"SELECT to_regclass('{table}') IS NOT NULL AS ok")[0]["ok"]


def test_db_with_fixtures_survives_a_run_of_other_migrations_dropping_the_templates(
    project: Path, postgres_server: str
) -> None:
    first = write_migrations(project, "CREATE TABLE a (id int);")
    (project / "fixtures").mkdir()
    (project / "fixtures" / "1_a_fixture.sql").write_text("INSERT INTO a VALUES (1);")
    fixtures = pgfast.discover_fixtures(first, [project / "fixtures"])
    with pgfast.IsolatedDatabases(postgres_server, first, fixtures) as one:
        asyncio.run(one.create(fixtures=True))  # both templates built
        # A run started after a migration was added: this run's templates are stale to it.
        second = write_migrations(project, "CREATE TABLE a (id int);", "CREATE TABLE b (id int);")
        with pgfast.IsolatedDatabases(postgres_server, second):
            pass
        assert databases_named(postgres_server, one.template) == []
        assert databases_named(postgres_server, one.fixtures_template) == []
        # Both are built again: the template with fixtures is filled from a copy of the other.
        name = asyncio.run(one.create(fixtures=True))
        assert fetch(one.url(name), "SELECT count(*) AS n FROM a")[0]["n"] == 1


@contextlib.contextmanager
def template_being_built(project: Path, server: str) -> Iterator[None]:
    """`pgfast test-db create` in `project`, inside the block while it builds the template (a
    slow migration keeps it there); it must succeed after the block."""
    half_built = "SELECT datname FROM pg_database WHERE datname LIKE 'pgfast\\_tpl\\_%' AND NOT datistemplate"
    creating = start_pgfast(project, server, "test-db", "create")
    try:
        wait_for(lambda: fetch(server, half_built), "the template build started")
        yield
        _, err = creating.communicate(timeout=120)
    finally:
        if creating.poll() is None:
            creating.kill()
            creating.wait()
    assert creating.returncode == 0, err


def test_cli_cleanup_leaves_a_template_being_built(project: Path, own_server: str) -> None:
    # A server of its own: `cleanup --all` drops every template no run is using.
    app, elsewhere = project / "app", project / "elsewhere"
    elsewhere.mkdir()  # no migrations here: the cleanup keeps no template by name
    write_migrations(app, "CREATE TABLE a (id int);", "SELECT pg_sleep(3);")
    with template_being_built(app, own_server):
        # The build's run has no test database yet, so no running run says the template is used.
        cleanup = pgfast_cli(elsewhere, own_server, "test-db", "cleanup", "--all")
        assert cleanup.returncode == 0, cleanup.stderr


def test_runs_whose_admin_urls_name_other_databases_build_one_at_a_time(
    project: Path, own_server: str
) -> None:
    # Advisory locks are per database: the build lock taken in `postgres` did not stop a run
    # connected to another database from dropping the template being built as half-built.
    migrations = write_migrations(project, "CREATE TABLE a (id int);", "SELECT pg_sleep(2);")
    fetch(own_server, "CREATE DATABASE other_admin")
    other_admin = pgfast.database_url(own_server, "other_admin")
    with (
        template_being_built(project, own_server),
        pgfast.IsolatedDatabases(other_admin, migrations) as other,
    ):
        name = asyncio.run(other.create())
        assert fetch(other.url(name), "SELECT to_regclass('a') IS NOT NULL AS ok")[0]["ok"]


def test_a_clone_marked_a_template_is_dropped_like_any_other(project: Path, postgres_server: str) -> None:
    # The drop unmarks a template on one connection; IsolatedDatabases hands it its admin pool.
    migrations = write_migrations(project, "CREATE TABLE a (id int);")
    with pgfast.IsolatedDatabases(postgres_server, migrations) as databases:
        name = asyncio.run(databases.create())
        fetch(postgres_server, f'ALTER DATABASE "{name}" IS_TEMPLATE true')
        asyncio.run(databases.drop(name))
        assert databases_named(postgres_server, name) == []


def test_a_clean_up_cancelled_in_an_anyio_scope_lets_go_of_the_build_lock(own_server: str) -> None:
    # anyio cancels every await in a cancelled scope again: an unlock awaited plainly in the
    # clean-up's `finally` never ran, and the build lock stayed with the caller's connection,
    # holding up every template build on the server.
    anyio = pytest.importorskip("anyio")
    victim = f"pgfast_test_00beef_0_{int(time.time())}_1"
    fetch(own_server, f'CREATE DATABASE "{victim}"')

    async def check() -> None:
        blocker = await asyncpg.connect(own_server)
        conn = await asyncpg.connect(own_server)
        try:
            # A row lock on the database's catalog row holds its DROP up.
            await blocker.execute("BEGIN")
            await blocker.execute("SELECT 1 FROM pg_database WHERE datname = $1 FOR UPDATE", victim)
            with anyio.move_on_after(1.0) as scope:
                await pgfast.cleanup_test_databases(conn, only=[victim])
            assert scope.cancelled_caught
            await blocker.execute("ROLLBACK")
            assert not conn.is_closed()
            held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            assert await conn.fetchval(held) == 0
        finally:
            await blocker.close()
            await conn.close()

    anyio.run(check)
    fetch(own_server, f'DROP DATABASE IF EXISTS "{victim}"')
