"""No-transaction migrations that stop part way: killed, interrupted or failed.

The kills run `pgfast schema up` as a separate process against a throwaway server this module
starts itself (never the shared one), so that nothing else is disturbed when a backend is left
behind. Every step after a stop is what a user would type: status, up, up --resume, mark.
"""

import json
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import error_line, fetch, pgfast_cli, start_pgfast, wait_for, write

import pgfast

# Statement 2 sleeps while the database says so (set by the test, reset before resuming), so
# that the process can be stopped in the middle of it and the resume is quick.
SLOW = (
    "-- pgfast: no-transaction\n"
    "CREATE TABLE a (id int);\n"
    "SELECT pg_sleep(coalesce(nullif(current_setting('test.sleep', true), ''), '0')::float);\n"
    "CREATE INDEX CONCURRENTLY a_id ON a (id);\n"
)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with pgfast.EmbeddedPostgres(f"nt-{uuid.uuid4().hex[:12]}") as url:
        yield url


@pytest.fixture
def db(server: str) -> str:
    name = f"nt_{uuid.uuid4().hex[:12]}"
    fetch(server, f"CREATE DATABASE {name}")
    # A backend whose client was SIGKILLed notices within 100 ms, even inside pg_sleep.
    fetch(server, f"ALTER DATABASE {name} SET client_connection_check_interval = '100ms'")
    return pgfast.database_url(server, name)


def ledger(url: str) -> list[int]:
    return [r["version"] for r in fetch(url, "SELECT version FROM _pgfast_migrations ORDER BY apply_order")]


def wait_until(url: str, sql: str, *, present: bool) -> None:
    """Until a backend runs (or no longer runs) `sql`."""
    running = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND query LIKE $1"
    )
    wait_for(
        lambda: bool(fetch(url, running, f"%{sql}%")) == present,
        f"no backend {'started' if present else 'stopped'} running {sql!r}",
    )


def stop_up_in_statement_2(project: Path, url: str, sig: signal.Signals) -> subprocess.CompletedProcess[str]:
    """Run `schema up`, stop it with `sig` while statement 2 of 2_slow sleeps; return what it printed."""
    database = fetch(url, "SELECT current_database() AS d")[0]["d"]
    fetch(url, f"ALTER DATABASE {database} SET test.sleep = '30'")
    process = start_pgfast(project, url, "schema", "up")
    try:
        wait_until(url, "pg_sleep(coalesce", present=True)
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    wait_until(url, "pg_sleep(coalesce", present=False)  # the server noticed, the lock is free
    fetch(url, f"ALTER DATABASE {database} RESET test.sleep")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path, "migrations/1_base_up.sql", "CREATE TABLE base (id int);")
    write(tmp_path, "migrations/2_slow_up.sql", SLOW)
    write(tmp_path, "migrations/3_later_up.sql", "CREATE TABLE later (id int);")
    return tmp_path


def test_killed_up_is_partial_refused_then_resumed_to_applied(project: Path, db: str) -> None:
    killed = stop_up_in_statement_2(project, db, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert ledger(db) == [1]  # what any reader of the ledger (pgfast 0.8 too) sees: not applied

    status = pgfast_cli(project, db, "schema", "status")
    assert status.returncode == 1, status
    lines = status.stdout.splitlines()
    assert lines[1].split() == ["2", "partial", "slow", "1", "of", "3", "statements", "done"]
    assert lines[-1] == "1 applied, 1 pending, 0 modified, 0 missing, 1 partial"
    as_json = pgfast_cli(project, db, "schema", "status", "--json")
    assert as_json.returncode == 1
    entry = json.loads(as_json.stdout)["migrations"][1]
    assert entry == {
        "version": 2,
        "name": "slow",
        "state": "partial",
        "applied_at": None,
        "statements_done": 1,
        "statements_total": 3,
        "direction": "up",
    }

    refused = error_line(pgfast_cli(project, db, "schema", "up"))
    assert refused == (
        "pgfast: error: refusing to migrate: 2_slow stopped part way while it was applied without a "
        "transaction: statement 1 of 3 ran and is recorded as done; statement 2 "
        f"({project / 'migrations/2_slow_up.sql'}:3) may or may not have run. To go on: "
        "'pgfast schema up --resume' runs statements 2-3 (with the file as it was), or repair it by "
        "hand and record the result with 'pgfast schema mark 2 --applied' (or --pending)"
    )
    assert "rolled back" not in refused
    assert fetch(db, "SELECT to_regclass('later') AS t")[0]["t"] is None  # nothing ran

    resumed = pgfast_cli(project, db, "schema", "up", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [line.split(" (")[0] for line in resumed.stdout.splitlines()[:2]] == [
        "applied 2_slow",
        "applied 3_later",
    ]
    assert ledger(db) == [1, 2, 3]
    assert fetch(db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'a_id'::regclass")[0]["indisvalid"]
    assert fetch(db, "SELECT count(*) AS n FROM _pgfast_migration_progress")[0]["n"] == 0
    final = pgfast_cli(project, db, "schema", "status")
    assert final.returncode == 0
    assert final.stdout.splitlines()[-1] == "3 applied, 0 pending, 0 modified, 0 missing"


def test_ctrl_c_says_what_is_recorded_and_mark_records_a_hand_repair(project: Path, db: str) -> None:
    interrupted = stop_up_in_statement_2(project, db, signal.SIGINT)
    line = error_line(interrupted, code=130)
    assert line.startswith(
        "pgfast: interrupted: now 1 migration(s) applied and recorded, 1 pending; 2_slow stopped part "
        "way while it was applied without a transaction: statement 1 of 3 ran and is recorded as done; "
        "statement 2 ("
    )
    assert "'pgfast schema up --resume' runs statements 2-3" in line
    assert "rolled back" not in line
    assert pgfast_cli(project, db, "schema", "status").stdout.splitlines()[1].split()[1] == "partial"

    # Repair by hand: run the rest, then record it.
    fetch(db, "CREATE INDEX a_id ON a (id)")
    marked = pgfast_cli(project, db, "schema", "mark", "2", "--applied")
    assert marked.returncode == 0, marked.stderr
    assert marked.stdout.strip() == (
        "recorded 2_slow as applied (it was partial, 1 of 3 statements done); no migration SQL was run"
    )
    assert ledger(db) == [1, 2]
    assert pgfast_cli(project, db, "schema", "up").returncode == 0
    assert ledger(db) == [1, 2, 3]

    forgotten = pgfast_cli(project, db, "schema", "mark", "3", "--pending")
    assert forgotten.returncode == 0, forgotten.stderr
    assert forgotten.stdout.startswith("recorded 3_later as pending (it was applied)")
    assert ledger(db) == [1, 2]


def test_failed_statement_is_not_called_rolled_back_and_its_cic_hint_works(tmp_path: Path, db: str) -> None:
    write(tmp_path, "migrations/1_t_up.sql", "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (1);")
    path = write(
        tmp_path,
        "migrations/2_unique_up.sql",
        "-- pgfast: no-transaction\nCREATE TABLE side (id int);\n\n"
        "CREATE UNIQUE INDEX CONCURRENTLY t_uniq ON t (id);\n",
    )
    line = error_line(pgfast_cli(tmp_path, db, "schema", "up"))
    assert line.startswith(f"pgfast: error: applying 2_unique failed at {path}")
    assert line.endswith(
        "it runs without a transaction and stopped part way: statement 1 of 2 ran and is recorded as "
        f"done; statement 2 ({path}:4) failed (a CREATE INDEX CONCURRENTLY that did not finish leaves "
        "an INVALID index t_uniq: drop it with DROP INDEX CONCURRENTLY IF EXISTS t_uniq first). "
        "Already applied in this run: 1_t. To go on: 'pgfast schema up --resume' runs statement 2 (with the file as it was), or repair "
        "it by hand and record the result with 'pgfast schema mark 2 --applied' (or --pending)"
    )
    assert "rolled back" not in line
    assert (
        fetch(db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_uniq'::regclass")[0]["indisvalid"]
        is False
    )

    fetch(db, "DROP INDEX CONCURRENTLY IF EXISTS t_uniq")  # what the message says
    fetch(db, "DELETE FROM t")
    resumed = pgfast_cli(tmp_path, db, "schema", "up", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert ledger(db) == [1, 2]
    assert fetch(db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_uniq'::regclass")[0]["indisvalid"]


def test_resume_refuses_a_changed_file(tmp_path: Path, db: str) -> None:
    path = write(
        tmp_path,
        "migrations/1_two_up.sql",
        "-- pgfast: no-transaction\nCREATE TABLE x (id int);\nSELECT 1/0;\n",
    )
    assert pgfast_cli(tmp_path, db, "schema", "up").returncode == 1
    path.write_text("-- pgfast: no-transaction\nCREATE TABLE x (id int);\nSELECT 1;\n")
    line = error_line(pgfast_cli(tmp_path, db, "schema", "up", "--resume"))
    assert line.startswith(
        f"pgfast: error: cannot resume 1_two: {path} changed since it stopped part way (statement 1 of 2 "
        "ran and is recorded as done; "
    )
    assert "pgfast schema mark 1 --applied" in line
    assert ledger(db) == []


def test_interrupted_down_is_partial_never_rolled_back_and_resumes(tmp_path: Path, db: str) -> None:
    write(tmp_path, "migrations/1_pair_up.sql", "CREATE TABLE p (id int); CREATE TABLE q (id int);")
    down = write(
        tmp_path, "migrations/1_pair_down.sql", "-- pgfast: no-transaction\nDROP TABLE p;\nDROP TABLE q;\n"
    )
    assert pgfast_cli(tmp_path, db, "schema", "up").returncode == 0
    fetch(db, "ALTER TABLE q RENAME TO q_moved")  # so statement 2 of the down file fails
    line = error_line(pgfast_cli(tmp_path, db, "schema", "down"))
    assert line == (
        f'pgfast: error: rolling back 1_pair failed at {down}: UndefinedTableError: table "q" does not '
        "exist; it runs without a transaction and stopped part way: statement 1 of 2 ran and is recorded "
        f"as done; statement 2 ({down}:3) failed. To go on: 'pgfast schema down --resume' runs statement 2 "
        "(with the file as it was), or repair it by hand and record the result with "
        "'pgfast schema mark 1 --applied' (or --pending)"
    )
    status = pgfast_cli(tmp_path, db, "schema", "status")
    assert status.returncode == 1
    assert "1 of 2 statements done while rolling back" in status.stdout
    assert "refusing to migrate: 1_pair stopped part way while it was rolled back" in error_line(
        pgfast_cli(tmp_path, db, "schema", "up")
    )
    fetch(db, "ALTER TABLE q_moved RENAME TO q")
    resumed = pgfast_cli(tmp_path, db, "schema", "down", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert ledger(db) == []
    assert fetch(db, "SELECT to_regclass('q') AS t")[0]["t"] is None


def test_library_words_and_known_facts_in_the_messages() -> None:
    m = pgfast.Migration(7, "idx", Path("m/7_idx_up.sql"), None, "x", "c", no_transaction=True)
    done_all = pgfast.MigrationStatus(7, "idx", "partial", None, m, 3, 3, "up")
    assert pgfast._describe_partial(done_all) == (
        "all 3 of its statements ran and are recorded as done, but it is not yet recorded as applied"
    )
    assert pgfast._ways_forward(done_all) == (
        "To go on: apply_migrations(..., resume=True) only records it (with the file as it was), or "
        "repair it by hand and record the result with mark_migration(conn, migrations, 7, applied=True) "
        "(or applied=False)"
    )
    none_done = pgfast.MigrationStatus(7, "idx", "partial", None, None, 0, 2, "up")
    assert pgfast._describe_partial(none_done) == (
        "none of its 2 statements is recorded as done; statement 1 may or may not have run"
    )
    assert pgfast._concurrent_index_hint("-- why\ncreate index concurrently if not exists i2 on t (x)") == (
        " (a CREATE INDEX CONCURRENTLY that did not finish leaves an INVALID index i2: drop it with "
        "DROP INDEX CONCURRENTLY IF EXISTS i2 first)"
    )
    assert pgfast._concurrent_index_hint("CREATE INDEX t_x ON t (x)") == ""


def test_status_while_a_run_is_still_applying_says_so_instead_of_stopped(project: Path, db: str) -> None:
    # Found by an adversarial pass: status called a migration still being applied by a live run
    # "partial" (stopped part way) and exited 1.
    database = fetch(db, "SELECT current_database() AS d")[0]["d"]
    fetch(db, f"ALTER DATABASE {database} SET test.sleep = '30'")
    process = start_pgfast(project, db, "schema", "up")
    try:
        wait_until(db, "pg_sleep(coalesce", present=True)
        status = pgfast_cli(project, db, "schema", "status")
    finally:
        process.kill()
        process.communicate(timeout=60)
        wait_until(db, "pg_sleep(coalesce", present=False)
        fetch(db, f"ALTER DATABASE {database} RESET test.sleep")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "a migration run holds the lock now (pid " in status.stderr
    line = status.stdout.splitlines()[1]
    assert line.startswith("2") and "partial" in line and "(a run holds the lock: pid " in line
