"""`pgfast schema create` writes `-- depends_on:` naming the graph's heads (the migrations nothing
depends on), says what it chose, and `--no-depends` opts out."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import user_env, write

import pgfast


def create(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgfast", "schema", "create", *args],
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        check=True,
    )


def header(path: Path) -> str:
    return path.read_text().splitlines()[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("")
    write(tmp_path, "app/migrations/1_users_up.sql")
    write(tmp_path, "app/migrations/2_notes_up.sql", "-- depends_on: 1\nSELECT 1;")
    write(tmp_path, "billing/migrations/3_invoices_up.sql", "-- depends_on: 1\nSELECT 1;")
    return tmp_path


def test_create_depends_on_every_head_and_says_so(project: Path) -> None:
    result = create(project, "app", "add_tags")
    up = pgfast.discover_migrations(root=project)[-1]
    assert up.name == "add_tags" and up.depends_on == (2, 3)
    assert header(up.up_path) == "-- depends_on: 2, 3"
    assert result.stdout.splitlines()[-1] == (
        "depends_on: 2_notes, 3_invoices (the migrations nothing depends on yet)"
    )
    # The new one is now the only head, so the next one depends on it alone.
    create(project, "app", "add_more")
    newest = pgfast.discover_migrations(root=project)[-1]
    assert newest.name == "add_more" and newest.depends_on == (up.version,)


def test_no_depends_writes_no_header(project: Path) -> None:
    result = create(project, "app", "add_tags", "--no-depends")
    up = pgfast.discover_migrations(root=project)[-1]
    assert up.depends_on == () and "depends_on" not in result.stdout
    assert header(up.up_path) == f"-- {up.label}: up"


def test_first_migration_depends_on_nothing(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    result = create(tmp_path, "app", "first")
    assert result.stdout.splitlines()[-1] == "depends_on: none (no other migration found)"
    assert pgfast.discover_migrations(root=tmp_path)[0].depends_on == ()


def test_create_migration_writes_the_versions_given(tmp_path: Path) -> None:
    up, _ = pgfast.create_migration(tmp_path, "a", depends_on=[20, 3, 20])
    assert header(up) == "-- depends_on: 3, 20"
