"""Every code block of README.md runs here, so the README cannot rot.

A block preceded by `<!-- not run: reason -->` is skipped (the reason says why). Python blocks
holding `async def test_` run under pytest in a small project; other Python blocks run as
scripts, shell blocks with bash, each in a fresh project with a fresh empty DATABASE_URL.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_pytest, user_env

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"(<!-- not run[^>]*-->\n)?```(\w*)\n(.*?)```", re.S)
BLOCKS = [(m[2], m[3]) for m in FENCE.finditer((ROOT / "README.md").read_text()) if not m[1]]

MIGRATIONS = {
    "20250101090000_tenants_up.sql": "CREATE TABLE tenants (id text PRIMARY KEY);",
    "20250101090000_tenants_down.sql": "DROP TABLE tenants;",
    "20250102090000_notes_up.sql": "-- depends_on: 20250101090000\nCREATE TABLE notes (id serial, tenant_id text REFERENCES tenants);",
    "20250102090000_notes_down.sql": "DROP TABLE notes;",
}
FOR_TESTS = {
    "app/migrations/20250101000000_users_up.sql": "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);",
    "app/fixtures/20250101000000_users_fixture.sql": "INSERT INTO users (name) VALUES ('ada'), ('grace');",
    "app/__init__.py": "",
    "app/main.py": next(
        code for kind, code in BLOCKS if kind == "python" and "/users" in code and "def users" in code
    ),
    "pytest.ini": "[pytest]\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n",
}


def project(root: Path, *, for_tests: bool) -> Path:
    for name, text in MIGRATIONS.items():
        path = root / "app" / "migrations" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name, text in FOR_TESTS.items() if for_tests else ():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_readme_has_blocks_to_run() -> None:
    kinds = [kind for kind, _ in BLOCKS]
    assert kinds.count("python") >= 8 and kinds.count("bash") >= 2, kinds


@pytest.mark.parametrize(("kind", "code"), BLOCKS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BLOCKS)])
def test_readme_block_runs(kind: str, code: str, tmp_path: Path, blank_db: str, postgres_server: str) -> None:
    if kind == "python" and "async def test_" in code:
        root = project(tmp_path, for_tests=True)
        (root / "test_readme_block.py").write_text(code)
        result = run_pytest(
            root, "test_readme_block.py", env={"TEST_DATABASE_URL": postgres_server}, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return
    root = project(tmp_path, for_tests=False)
    if kind == "python":
        command = [sys.executable, "-c", code]
    elif kind == "bash":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        pytest.fail(f"a README block of kind {kind!r} is neither run nor marked <!-- not run: why -->")
    result = subprocess.run(
        command,
        cwd=root,
        env=user_env(DATABASE_URL=blank_db, TEST_DATABASE_URL=postgres_server),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
