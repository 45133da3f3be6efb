"""Whole-process time of `python -m pgfast schema ...` on 200 trivial migrations.

    python benchmarks/bench_migrations.py [--runs 5] [--migrations 200]

Each run applies `CREATE TABLE t_i (id int primary key)` x 200 to a fresh empty database, then
times a no-op `up`, `status` and `--help`. The baselines, in the same run, are a bare asyncpg
script applying the same files with one commit each (waiting for the disk, and not: the server's
own floor for this work), `up --ddl-lock-timeout 0` (no lock
timeout, so what the default one costs shows), and dbmate (`npm install -g dbmate`) applying the
same tables from its own files when it is on PATH. Prints medians. Server: TEST_DATABASE_URL.
"""

import argparse
import asyncio
import os
import shutil
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
BARE = """
import asyncio, pathlib, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1])
    for path in sorted(pathlib.Path(sys.argv[2]).glob("*_up.sql")):
        async with conn.transaction():
            if sys.argv[3:]:
                await conn.execute("SET LOCAL synchronous_commit = off")
            await conn.execute(path.read_text())
    await conn.close()
asyncio.run(main())
"""


def timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--migrations", type=int, default=200)
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="pgfast-bench-"))
    folder = project / "migrations"
    folder.mkdir()
    dbmate = shutil.which("dbmate")
    dbmate_dir = project / "dbmate"
    dbmate_dir.mkdir()
    for i in range(1, args.migrations + 1):
        (folder / f"{i:04d}_t{i}_up.sql").write_text(f"CREATE TABLE t_{i} (id int PRIMARY KEY);\n")
        (dbmate_dir / f"{i:04d}_t{i}.sql").write_text(
            f"-- migrate:up\nCREATE TABLE t_{i} (id int PRIMARY KEY);\n\n-- migrate:down\n"
        )
    python = [sys.executable, "-m", "pgfast"]
    # A pip-installed module is byte-compiled; let this one be too, whatever the environment says.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPATH": str(ROOT)}
    times: dict[str, list[float]] = {
        k: [] for k in ("bare", "bare_async", "up", "up_off", "dbmate", "noop", "status", "help")
    }
    kinds = ("bare", "bare_async", "up", "up_off", "dbmate")[: None if dbmate else -1]
    subprocess.run([*python, "--help"], env=env, cwd=project, check=True, capture_output=True)  # compile once
    with pgfast.IsolatedDatabases(URL, []) as databases:
        for run in range(args.runs):
            # A durable server slows down as tables come and go: each run starts with another kind.
            for kind in kinds[run % len(kinds) :] + kinds[: run % len(kinds)]:
                name = asyncio.run(databases.create())
                url = databases.url(name)
                if kind.startswith("bare"):
                    async_commits = ["async"] if kind == "bare_async" else []
                    command = [sys.executable, "-c", BARE, url, str(folder), *async_commits]
                    times[kind].append(timed(command, env, project))
                elif kind == "dbmate":
                    assert dbmate is not None
                    command = [dbmate, "--url", _plain_tcp(url), "--migrations-dir", str(dbmate_dir)]
                    times["dbmate"].append(timed([*command, "--no-dump-schema", "up"], env, project))
                elif kind == "up_off":
                    off = ["schema", "up", "--ddl-lock-timeout", "0"]
                    times["up_off"].append(timed([*python, *off], env | {"DATABASE_URL": url}, project))
                else:
                    run_env = env | {"DATABASE_URL": url}
                    times["up"].append(timed([*python, "schema", "up"], run_env, project))
                    times["noop"].append(timed([*python, "schema", "up"], run_env, project))
                    times["status"].append(timed([*python, "schema", "status"], run_env, project))
                    times["help"].append(timed([*python, "--help"], run_env, project))
                asyncio.run(databases.drop(name))
    base = timed([sys.executable, "-c", "pass"], env, project)
    print(f"{args.migrations} migrations, {args.runs} runs, median wall time of the whole process:")
    labels = {
        "bare": "bare asyncpg loop (baseline)",
        "bare_async": "the same, commits not waiting",
        "up": "pgfast schema up",
        "up_off": "up --ddl-lock-timeout 0",
        "dbmate": "dbmate up (same tables)",
        "noop": "pgfast schema up (no-op)",
        "status": "pgfast schema status",
        "help": "pgfast --help",
    }
    for key, label in labels.items():
        if not times[key]:
            print(f"  {label:<30} not run (dbmate is not on PATH)")
            continue
        print(
            f"  {label:<30} {statistics.median(times[key]):6.3f} s   (runs: {', '.join(f'{t:.3f}' for t in times[key])})"
        )
    print(f"  {'python -c pass (interpreter)':<30} {base:6.3f} s")
    up = statistics.median(times["up"])
    print(f"  pgfast up / bare loop: {up / statistics.median(times['bare']):.2f}x")
    print(f"  pgfast up / up without lock timeout: {up / statistics.median(times['up_off']):.2f}x")
    if times["dbmate"]:
        print(f"  pgfast up / dbmate up: {up / statistics.median(times['dbmate']):.2f}x")


def _plain_tcp(url: str) -> str:
    """dbmate wants sslmode said; pgfast's URLs need not say it."""
    return url + ("&" if "?" in url else "?") + "sslmode=disable"


if __name__ == "__main__":
    main()
