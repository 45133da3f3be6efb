"""Whole-process time of `pgfast schema up --dry-run --locks` on 20 pending migrations over a
20-table schema, against `up --dry-run` (the plan alone) in the same run.

    python benchmarks/bench_lock_report.py [--runs 3]

The target is a fresh database on TEST_DATABASE_URL (else the local default) with 20 tables
applied; the report's scratch copy goes on an embedded server (TEST_DATABASE_URL is not passed
to the command), as for a developer without a test server. Prints medians.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pgfast  # noqa: E402

URL = os.environ.get("TEST_DATABASE_URL") or pgfast.DEFAULT_URL_FOR_TESTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="pgfast-bench-"))
    (project / "pyproject.toml").write_text("")
    folder = project / "migrations"
    folder.mkdir()
    for i in range(1, 21):
        (folder / f"{i:04d}_t{i}_up.sql").write_text(f"CREATE TABLE t_{i} (id int PRIMARY KEY, v text);\n")
    for i in range(21, 41):
        (folder / f"{i:04d}_c{i}_up.sql").write_text(f"ALTER TABLE t_{i - 20} ADD COLUMN c int;\n")
    python = [sys.executable, "-m", "pgfast", "schema", "up"]
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONPATH"] = str(ROOT)
    times: dict[str, list[float]] = {"plan": [], "locks": []}
    with pgfast.IsolatedDatabases(URL, []) as databases:
        name = asyncio.run(databases.create())
        env["DATABASE_URL"] = databases.url(name)
        subprocess.run([*python, "--target", "20"], env=env, cwd=project, check=True, capture_output=True)
        for _ in range(args.runs):
            for kind, extra in (("plan", ["--dry-run"]), ("locks", ["--dry-run", "--locks"])):
                started = time.perf_counter()
                out = subprocess.run([*python, *extra], env=env, cwd=project, check=True, capture_output=True)
                times[kind].append(time.perf_counter() - started)
        asyncio.run(databases.drop(name))
    print(out.stdout.decode().splitlines()[0])
    print(f"20 pending migrations over 20 tables, {args.runs} runs, median wall time of the whole process:")
    for kind, label in (("plan", "up --dry-run (plan only)"), ("locks", "up --dry-run --locks")):
        runs = ", ".join(f"{t:.3f}" for t in times[kind])
        print(f"  {label:<26} {statistics.median(times[kind]):6.3f} s   (runs: {runs})")


if __name__ == "__main__":
    main()
