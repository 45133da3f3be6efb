"""What the plugin says while the first test waits: a slow template build is announced."""

import os
import subprocess
import sys
from pathlib import Path


def test_a_template_build_over_a_second_says_what_it_builds_and_how_long_it_took(
    tmp_path: Path, postgres_server: str
) -> None:
    # (Under xdist the workers' terminals are not shown, so this is for one process.)
    # 0.9.0 held the first test for the whole build without a word.
    (tmp_path / "migrations").mkdir()
    for n in (1, 2, 3):
        (tmp_path / "migrations" / f"{n}_slow{n}_up.sql").write_text(
            f"CREATE TABLE t{n} (id int);\nSELECT pg_sleep(0.5);\n"
        )
    (tmp_path / "test_it.py").write_text(
        "import pytest\n\n\n@pytest.mark.asyncio\nasync def test_it(isolated_db):\n"
        "    assert await isolated_db.fetchval('SELECT count(*) FROM t3') == 0\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFAST_")}
    env["TEST_DATABASE_URL"] = postgres_server
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("pgfast: built")]
    started = [line for line in result.stdout.splitlines() if line.startswith("pgfast: building")]
    assert len(started) == 1 and started[0].endswith("(3 migrations)..."), result.stdout
    assert len(lines) == 1 and float(lines[0].rsplit(" in ", 1)[1].rstrip("s")) >= 1.5, result.stdout
