"""Migrations commit without waiting for the disk except the run's last commit: nothing is lost.

A crash is an immediate stop (`pg_ctl -m immediate`) of a throwaway cluster this module starts
itself, made durable for the purpose: synchronous_commit on, wal_level replica, and a WAL writer
that waits 10 s between flushes, so that a commit that did not wait for the disk is still in
shared memory when the server is stopped, and is lost with it. Each test checks what survived
the crash against what `up` reported.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import error_line, fetch, fetchval, free_port, pgfast_cli, start_pgfast, wait_for, write

import pgfast


@pytest.fixture(scope="module")
def server() -> Iterator[pgfast.EmbeddedPostgres]:
    server = pgfast.EmbeddedPostgres(run_id=f"durable-{uuid.uuid4().hex[:8]}", port=free_port())
    with server:
        for setting in (
            "synchronous_commit = on",
            "fsync = on",
            "wal_level = replica",
            "max_wal_senders = 2",
            "wal_writer_delay = '10s'",
            "bgwriter_lru_maxpages = 0",  # its page writes would flush the WAL before them
        ):
            fetch(server.url, f"ALTER SYSTEM SET {setting}")
        pg_ctl(server, "-m", "fast", "restart")
        assert fetchval(server.url, "SHOW wal_writer_delay") == "10s"
        yield server


def pg_ctl(server: pgfast.EmbeddedPostgres, *args: str) -> None:
    log = str(server.root / "server.log")
    result = server._run("pg_ctl", "-D", str(server.root / "data"), "-l", log, "-w", *args)
    assert result.returncode == 0, result.stderr


def crash_and_restart(server: pgfast.EmbeddedPostgres) -> None:
    pg_ctl(server, "-m", "immediate", "stop")
    pg_ctl(server, "start")


@pytest.fixture
def db(server: pgfast.EmbeddedPostgres) -> str:
    name = f"d_{uuid.uuid4().hex[:12]}"
    fetch(server.url, f"CREATE DATABASE {name}")
    return pgfast.database_url(server.url, name)


def project(root: Path, count: int, failing: int | None = None) -> Path:
    for i in range(1, count + 1):
        sql = "SELECT 1/0;\n" if i == failing else f"CREATE TABLE t_{i} (id int PRIMARY KEY);\n"
        write(root, f"migrations/{i:04d}_t{i}_up.sql", sql)
    return root


def survivors(url: str) -> tuple[list[int], list[int]]:
    """The versions in the ledger and the tables t_N, after a crash."""
    ledger = [r["version"] for r in fetch(url, "SELECT version FROM _pgfast_migrations ORDER BY version")]
    tables = fetch(url, "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ '^t_[0-9]+$'")
    return ledger, sorted(int(r["relname"][2:]) for r in tables)


def test_a_finished_run_survives_a_crash_right_after_it(
    server: pgfast.EmbeddedPostgres, db: str, tmp_path: Path
) -> None:
    result = pgfast_cli(project(tmp_path, 30), db, "schema", "up")
    assert result.returncode == 0, result.stderr
    assert "applied 30 migration(s)" in result.stdout
    crash_and_restart(server)
    assert survivors(db) == (list(range(1, 31)), list(range(1, 31)))


def test_what_a_failed_run_reports_as_applied_survives_a_crash(
    server: pgfast.EmbeddedPostgres, db: str, tmp_path: Path
) -> None:
    result = pgfast_cli(project(tmp_path, 30, failing=20), db, "schema", "up")
    assert result.returncode == 1
    line = error_line(result)
    assert "applying 20_t20 failed at" in line and "division by zero" in line
    assert "it was rolled back and not recorded" in line
    assert "Already applied in this run: 1_t1, 2_t2, " in line and line.endswith("18_t18, 19_t19")
    assert "without waiting for the disk" not in line  # the connection stayed: they were flushed
    crash_and_restart(server)
    assert survivors(db) == (list(range(1, 20)), list(range(1, 20)))


def test_a_crash_in_the_middle_keeps_each_migration_with_its_ledger_row(
    server: pgfast.EmbeddedPostgres, db: str, tmp_path: Path
) -> None:
    root = project(tmp_path, 300)
    run = start_pgfast(root, db, "schema", "up")
    try:
        wait_for(lambda: fetchval(db, "SELECT count(*) FROM pg_class WHERE relname = 't_40'"), "t_40")
        pg_ctl(server, "-m", "immediate", "stop")
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 1
    message = stderr.strip().splitlines()[-1]
    # The server went away mid-statement: whether that migration committed is not known.
    assert "ConnectionDoesNotExistError" in message and "rolled back" not in message, message
    assert "the connection broke, so whether it committed is unknown" in message
    assert "committed without waiting for the disk: if the server itself went down" in message
    pg_ctl(server, "start")
    ledger, tables = survivors(db)
    assert ledger == tables  # each migration with its ledger row, or neither
    assert ledger == list(range(1, len(ledger) + 1))  # in order: no gap
    status = pgfast_cli(root, db, "schema", "status")
    assert status.returncode == 0, status.stderr
    again = pgfast_cli(root, db, "schema", "up")
    assert again.returncode == 0, again.stderr
    assert survivors(db) == (list(range(1, 301)), list(range(1, 301)))
