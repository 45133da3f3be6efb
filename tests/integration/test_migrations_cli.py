"""`pgfast schema ...` against a real PostgreSQL, run as users run it: a separate process."""

import asyncio
import hashlib
import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from helpers import error_line, fetch, ledger, pgfast_cli, start_pgfast, write

import pgfast


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(
        tmp_path,
        "migrations/20250101000000_users_up.sql",
        "CREATE TABLE users (id int PRIMARY KEY, name text);",
    )
    write(tmp_path, "migrations/20250101000000_users_down.sql", "DROP TABLE users;")
    write(
        tmp_path,
        "migrations/posts/20250102000000_posts_up.sql",
        "-- depends_on: 20250101000000\nCREATE TABLE posts (id int PRIMARY KEY, user_id int REFERENCES users);",
    )
    write(tmp_path, "migrations/posts/20250102000000_posts_down.sql", "DROP TABLE posts;")
    write(tmp_path, "migrations/20250103000000_empty_up.sql", "-- nothing yet\n")
    write(tmp_path, "migrations/20250103000000_empty_down.sql", "-- nothing\n")
    return tmp_path


def test_up_applies_in_order_reports_progress_then_is_a_no_op(project: Path, blank_db: str) -> None:
    result = pgfast_cli(project, blank_db, "schema", "up")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(" (")[0] for line in lines[:3]] == [
        "applied 20250101000000_users",
        "applied 20250102000000_posts",
        "applied 20250103000000_empty",
    ]
    assert lines[3].startswith("applied 3 migration(s) in ")
    assert ledger(blank_db) == [
        (20250101000000, "users"),
        (20250102000000, "posts"),
        (20250103000000, "empty"),
    ]
    again = pgfast_cli(project, blank_db, "schema", "up")
    assert again.returncode == 0
    assert again.stdout.strip() == "nothing to apply: all 3 migration(s) are applied"


def test_status_json_lists_every_state(project: Path, blank_db: str) -> None:
    assert pgfast_cli(project, blank_db, "schema", "up", "--target", "20250101000000").returncode == 0
    (project / "migrations/20250101000000_users_up.sql").write_text("CREATE TABLE users (id bigint);")
    fetch(blank_db, "INSERT INTO _pgfast_migrations (version, name, checksum) VALUES (5, 'gone', 'x')")
    result = pgfast_cli(project, blank_db, "schema", "status", "--json")
    assert result.returncode == 1, result.stderr  # modified and missing are problems
    states = [
        (m["version"], m["name"], m["state"], m["applied_at"] is not None)
        for m in json.loads(result.stdout)["migrations"]
    ]
    assert states == [
        (5, "gone", "missing", True),
        (20250101000000, "users", "modified", True),
        (20250102000000, "posts", "pending", False),
        (20250103000000, "empty", "pending", False),
    ]
    text = pgfast_cli(project, blank_db, "schema", "status").stdout
    assert text.splitlines()[-1] == "0 applied, 2 pending, 1 modified, 1 missing"


def test_dry_run_prints_plan_and_sql_and_creates_nothing(project: Path, blank_db: str) -> None:
    result = pgfast_cli(project, blank_db, "schema", "up", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run: 3 migration(s) would be applied, in this order:" in result.stdout
    assert result.stdout.index("20250101000000_users") < result.stdout.index("20250102000000_posts")
    assert "CREATE TABLE posts" in result.stdout
    assert fetch(blank_db, "SELECT to_regclass('_pgfast_migrations') AS t")[0]["t"] is None


def test_target_pulls_in_dependencies_with_higher_versions(tmp_path: Path, blank_db: str) -> None:
    write(tmp_path, "migrations/1_a_up.sql", "SELECT 1;")
    write(tmp_path, "migrations/2_needs_late_up.sql", "-- depends_on: 9\nSELECT 1;")
    write(tmp_path, "migrations/3_c_up.sql", "SELECT 1;")
    write(tmp_path, "migrations/9_late_up.sql", "SELECT 1;")
    result = pgfast_cli(tmp_path, blank_db, "schema", "up", "--target", "2")
    assert result.returncode == 0, result.stderr
    assert ledger(blank_db) == [(1, "a"), (9, "late"), (2, "needs_late")]


def test_failing_migration_rolls_back_names_file_and_line_and_keeps_earlier(
    tmp_path: Path, blank_db: str
) -> None:
    write(tmp_path, "migrations/1_ok_up.sql", "CREATE TABLE ok (id int);")
    bad = write(
        tmp_path,
        "migrations/2_bad_up.sql",
        "CREATE TABLE half (id int);\n\nINSERT INTO nowhere VALUES (1);\n",
    )
    write(tmp_path, "migrations/3_later_up.sql", "CREATE TABLE later (id int);")
    result = pgfast_cli(tmp_path, blank_db, "schema", "up")
    line = error_line(result)
    assert f'applying 2_bad failed at {bad}:3: UndefinedTableError: relation "nowhere" does not exist' in line
    assert "it was rolled back and not recorded. Already applied in this run: 1_ok" in line
    assert ledger(blank_db) == [(1, "ok")]
    tables = {r["relname"] for r in fetch(blank_db, "SELECT relname FROM pg_class WHERE relkind = 'r'")}
    assert {"ok", "half", "later"} & tables == {"ok"}


def test_no_transaction_migration_runs_create_index_concurrently(tmp_path: Path, blank_db: str) -> None:
    write(
        tmp_path,
        "migrations/1_table_up.sql",
        "CREATE TABLE big (id int); INSERT INTO big SELECT generate_series(1, 1000);",
    )
    write(
        tmp_path,
        "migrations/2_index_up.sql",
        "-- pgfast: no-transaction\nCREATE INDEX CONCURRENTLY big_id ON big (id);\n-- a comment; with a semicolon\n"
        "CREATE INDEX CONCURRENTLY big_id2 ON big ((id + 1));\n",
    )
    write(
        tmp_path,
        "migrations/2_index_down.sql",
        "-- pgfast: no-transaction\nDROP INDEX CONCURRENTLY big_id;\nDROP INDEX CONCURRENTLY big_id2;",
    )
    assert pgfast_cli(tmp_path, blank_db, "schema", "up").returncode == 0
    valid = fetch(
        blank_db,
        "SELECT indexrelid::regclass::text AS i, indisvalid FROM pg_index WHERE indrelid = 'big'::regclass",
    )
    assert sorted((r["i"], r["indisvalid"]) for r in valid) == [("big_id", True), ("big_id2", True)]
    down = pgfast_cli(tmp_path, blank_db, "schema", "down")
    assert down.returncode == 0, down.stderr
    assert fetch(blank_db, "SELECT count(*) AS n FROM pg_index WHERE indrelid = 'big'::regclass")[0]["n"] == 0


def test_no_transaction_migration_keeps_a_begin_atomic_function_body_whole(
    tmp_path: Path, blank_db: str
) -> None:
    # Without a transaction the file runs statement by statement: the body's semicolons are not ends.
    write(tmp_path, "migrations/1_table_up.sql", "CREATE TABLE t (x int);")
    write(
        tmp_path,
        "migrations/2_sign_up.sql",
        "-- pgfast: no-transaction\n"
        "CREATE FUNCTION sign_of(x int) RETURNS int LANGUAGE sql\n"
        "BEGIN ATOMIC\n  SELECT CASE WHEN x > 0 THEN 1 WHEN x < 0 THEN -1 ELSE 0 END;\nEND;\n"
        "CREATE INDEX CONCURRENTLY t_sign ON t (sign_of(x));\n",
    )
    result = pgfast_cli(tmp_path, blank_db, "schema", "up")
    assert result.returncode == 0, result.stderr
    assert fetch(blank_db, "SELECT sign_of(-5) AS s")[0]["s"] == -1
    assert fetch(blank_db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_sign'::regclass")[0][
        "indisvalid"
    ]


def test_concurrent_up_processes_apply_each_migration_once(tmp_path: Path, blank_db: str) -> None:
    write(tmp_path, "migrations/1_runs_up.sql", "CREATE TABLE runs (version int);")
    for v in range(2, 13):
        # pg_sleep widens the window in which the six processes overlap
        write(
            tmp_path,
            f"migrations/{v}_step{v}_up.sql",
            f"INSERT INTO runs VALUES ({v}); SELECT pg_sleep(0.05);",
        )
    write(
        tmp_path,
        "migrations/13_index_up.sql",
        "-- pgfast: no-transaction\nCREATE INDEX CONCURRENTLY runs_v ON runs (version);",
    )
    procs = [start_pgfast(tmp_path, blank_db, "schema", "up") for _ in range(6)]
    outputs = [p.communicate(timeout=120) for p in procs]
    results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]
    assert [code for code, _, _ in results] == [0] * 6, results
    applied_lines = sum(out.count("applied ") - out.count("migration(s) in") for _, out, _ in results)
    assert applied_lines == 13
    assert sorted(r["version"] for r in fetch(blank_db, "SELECT version FROM runs")) == list(range(2, 13))
    assert len(ledger(blank_db)) == 13
    assert fetch(blank_db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'runs_v'::regclass")[0][
        "indisvalid"
    ]


def test_lock_timeout_names_the_holder(project: Path, blank_db: str) -> None:
    async def hold_lock_while(
        run: Callable[[], Awaitable[subprocess.CompletedProcess[str]]],
    ) -> subprocess.CompletedProcess[str]:
        conn = await asyncpg.connect(blank_db, server_settings={"application_name": "holder-app"})
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", pgfast.MIGRATION_LOCK_KEY)
            return await run()
        finally:
            await conn.close()

    async def cli() -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(pgfast_cli, project, blank_db, "schema", "up", "--lock-timeout", "0.5")

    result = asyncio.run(hold_lock_while(cli))
    line = error_line(result)
    assert "schema migration: waited 0.5s for pgfast's lock on database" in line
    assert "application_name 'holder-app'" in line and "pid " in line and "connected since" in line
    assert line.endswith("let it finish, stop it, or wait longer (--lock-timeout SECONDS)")

    async def library() -> subprocess.CompletedProcess[str]:
        conn = await asyncpg.connect(blank_db)
        try:
            with pytest.raises(
                pgfast.LockTimeoutError, match=r"wait longer \(lock_timeout=SECONDS\)$"
            ) as info:
                await pgfast.apply_migrations(
                    conn, pgfast.discover_migrations(root=project), lock_timeout=0.2
                )
            database = await conn.fetchval("SELECT current_database()")
        finally:
            await conn.close()
        error = info.value
        assert (error.application_name, error.waited, error.purpose) == (
            "holder-app",
            0.2,
            "schema migration",
        )
        assert isinstance(error.pid, int) and error.database == database
        return result

    asyncio.run(hold_lock_while(library))
    assert fetch(blank_db, "SELECT to_regclass('_pgfast_migrations') AS t")[0]["t"] is None


def test_timeout_cancels_a_slow_migration(tmp_path: Path, blank_db: str) -> None:
    write(tmp_path, "migrations/1_slow_up.sql", "CREATE TABLE t (id int);\nSELECT pg_sleep(5);")
    started = time.monotonic()
    result = pgfast_cli(tmp_path, blank_db, "schema", "up", "--timeout", "0.3")
    line = error_line(result)
    assert "QueryCanceledError: canceling statement due to statement timeout" in line
    assert time.monotonic() - started < 4.5
    assert ledger(blank_db) == []
    assert fetch(blank_db, "SELECT to_regclass('t') AS t")[0]["t"] is None


def test_changed_or_vanished_files_stop_up_unless_forced(project: Path, blank_db: str) -> None:
    assert pgfast_cli(project, blank_db, "schema", "up", "--target", "20250102000000").returncode == 0
    users = project / "migrations/20250101000000_users_up.sql"
    users.write_text(users.read_text() + "\n-- edited")
    (project / "migrations/posts/20250102000000_posts_up.sql").unlink()
    (project / "migrations/posts/20250102000000_posts_down.sql").unlink()
    result = pgfast_cli(project, blank_db, "schema", "up")
    line = error_line(result)
    assert (
        f"refusing to migrate: {users} changed after it was applied; 20250102000000_posts was applied but its file is gone"
        in line
    )
    verify = pgfast_cli(project, blank_db, "schema", "verify")
    assert verify.returncode == 1 and "2 problem(s)" in verify.stderr
    forced = pgfast_cli(project, blank_db, "schema", "up", "--force")
    assert forced.returncode == 0, forced.stderr
    assert [v for v, _ in ledger(blank_db)][-1] == 20250103000000


def test_verify_passes_when_files_match(project: Path, blank_db: str) -> None:
    assert pgfast_cli(project, blank_db, "schema", "up").returncode == 0
    result = pgfast_cli(project, blank_db, "schema", "verify")
    assert (result.returncode, result.stdout.strip()) == (0, "ok: 3 applied migration(s) match their files")


def test_down_steps_and_target_follow_apply_order(tmp_path: Path, blank_db: str) -> None:
    for v in (1, 2, 3):
        write(tmp_path, f"migrations/{v}_t{v}_up.sql", f"CREATE TABLE t{v} (id int);")
        write(tmp_path, f"migrations/{v}_t{v}_down.sql", f"DROP TABLE t{v};")
    assert pgfast_cli(tmp_path, blank_db, "schema", "up", "--target", "1").returncode == 0
    assert pgfast_cli(tmp_path, blank_db, "schema", "up").returncode == 0
    dry = pgfast_cli(tmp_path, blank_db, "schema", "down", "--steps", "2", "--dry-run")
    assert dry.returncode == 0 and "DROP TABLE t3;" in dry.stdout
    assert "dry run: 2 migration(s) would be rolled back, in this order:" in dry.stdout
    assert dry.stdout.index("3_t3") < dry.stdout.index("2_t2")
    assert len(ledger(blank_db)) == 3
    result = pgfast_cli(tmp_path, blank_db, "schema", "down", "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert [line.split(" (")[0] for line in result.stdout.splitlines()[:2]] == [
        "rolled back 3_t3",
        "rolled back 2_t2",
    ]
    assert ledger(blank_db) == [(1, "t1")]
    assert pgfast_cli(tmp_path, blank_db, "schema", "up").returncode == 0
    assert pgfast_cli(tmp_path, blank_db, "schema", "down", "--target", "0").returncode == 0
    assert ledger(blank_db) == []


def test_down_refuses_without_down_files_and_changes_nothing(tmp_path: Path, blank_db: str) -> None:
    write(tmp_path, "migrations/1_a_up.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "migrations/1_a_down.sql", "DROP TABLE a;")
    no_down = write(tmp_path, "migrations/2_b_up.sql", "CREATE TABLE b (id int);")
    assert pgfast_cli(tmp_path, blank_db, "schema", "up").returncode == 0
    line = error_line(pgfast_cli(tmp_path, blank_db, "schema", "down", "--target", "0"))
    assert f"cannot roll back: no down file for {no_down}" in line
    assert len(ledger(blank_db)) == 2


def test_down_refuses_to_strand_a_migration_that_needs_it(tmp_path: Path, blank_db: str) -> None:
    write(tmp_path, "migrations/1_a_up.sql", "SELECT 1;")
    write(tmp_path, "migrations/1_a_down.sql", "SELECT 1;")
    write(tmp_path, "migrations/2_b_up.sql", "SELECT 1;")
    assert pgfast_cli(tmp_path, blank_db, "schema", "up", "--target", "1").returncode == 0
    assert pgfast_cli(tmp_path, blank_db, "schema", "up").returncode == 0
    # 2_b now declares that it needs 1_a; rolling back 1_a alone would strand it.
    write(tmp_path, "migrations/2_b_up.sql", "-- depends_on: 1\nSELECT 1;")
    fetch(blank_db, "UPDATE _pgfast_migrations SET apply_order = 0 WHERE version = 2")
    line = error_line(pgfast_cli(tmp_path, blank_db, "schema", "down", "--steps", "1"))
    assert "cannot roll back 1_a: applied migration 2_b depends on it" in line
    assert len(ledger(blank_db)) == 2


def test_pgfast_08_ledger_is_recognised_and_upgraded(project: Path, blank_db: str) -> None:
    users_up = project / "migrations/20250101000000_users_up.sql"
    users_down = project / "migrations/20250101000000_users_down.sql"
    legacy = hashlib.sha256(users_up.read_bytes() + users_down.read_bytes()).hexdigest()
    fetch(
        blank_db,
        "CREATE TABLE _pgfast_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at TIMESTAMP DEFAULT NOW(), checksum TEXT)",
    )
    fetch(blank_db, "CREATE TABLE users (id int PRIMARY KEY, name text)")
    fetch(
        blank_db,
        "INSERT INTO _pgfast_migrations (version, name, checksum) VALUES ($1, 'users', $2)",
        20250101000000,
        legacy,
    )
    status = json.loads(pgfast_cli(project, blank_db, "schema", "status", "--json").stdout)["migrations"]
    assert [m["state"] for m in status] == ["applied", "pending", "pending"]
    assert pgfast_cli(project, blank_db, "schema", "verify").returncode == 0
    result = pgfast_cli(project, blank_db, "schema", "up")
    assert result.returncode == 0, result.stderr
    assert ledger(blank_db)[0] == (20250101000000, "users")
    assert len(ledger(blank_db)) == 3
    stored = fetch(blank_db, "SELECT checksum FROM _pgfast_migrations WHERE version = 20250101000000")[0][
        "checksum"
    ]
    assert stored == pgfast.discover_migrations(root=project)[0].checksum


def test_missing_or_unreachable_database_is_one_line_without_password(project: Path) -> None:
    line = error_line(pgfast_cli(project, None, "schema", "up"))
    assert (
        line == "pgfast: error: no database configured: none of DATABASE_URL, POSTGRES_HOST, POSTGRES_PORT, "
        "POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB is set; export "
        "DATABASE_URL=postgresql://USER@HOST:5432/DBNAME (or POSTGRES_HOST, POSTGRES_USER, "
        "POSTGRES_PASSWORD and POSTGRES_DB)"
    )
    started = time.monotonic()
    line = error_line(pgfast_cli(project, "postgresql://bob:s3cret@127.0.0.1:1/app", "schema", "status"))
    assert time.monotonic() - started < 10
    assert "cannot connect to PostgreSQL at 127.0.0.1:1/app" in line
    assert "bob:***@" in line and "s3cret" not in line
    line = error_line(pgfast_cli(project, "mysql://x@h/db", "schema", "status"))
    assert "is not a PostgreSQL URL" in line


def test_deps_prints_graph_and_fails_on_cycles(tmp_path: Path) -> None:
    write(tmp_path, "migrations/1_a_up.sql", "SELECT 1;")
    write(tmp_path, "migrations/2_b_up.sql", "-- depends_on: 1\nSELECT 1;")
    result = pgfast_cli(tmp_path, None, "schema", "deps")
    assert (result.returncode, result.stdout) == (0, "1_a\n2_b  <- 1_a\n")
    write(tmp_path, "migrations/1_a_up.sql", "-- depends_on: 2\nSELECT 1;")
    line = error_line(pgfast_cli(tmp_path, None, "schema", "deps"))
    assert "cycle: 1_a -> 2_b -> 1_a" in line or "cycle: 2_b -> 1_a -> 2_b" in line
