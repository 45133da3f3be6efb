"""How long `schema dump`, `schema diff` and `schema check` take on the embedded server.

    python benchmarks/bench_schema.py [--migrations 20] [--rounds 5]

The project is bench_testdb.py's (N migrations, a table and an index each) with a down file per
migration (DROP TABLE). One embedded server serves every round; each figure is the median of the
rounds, next to its baselines from the same run:

- dump_schema: scratch database, N migrations applied, pg_dump, drop; baselines: applying the N
  migrations to a fresh database, and one bare `pg_dump --schema-only` of a migrated database;
- diff_schema against a migrated database (two pg_dumps and a scratch build);
- check_migrations: per migration two pg_dumps, up, down and up again; baseline: (2N + 1) bare
  pg_dumps, what the dumps alone cost;
- the whole `pgfast schema check` / `schema dump` process, embedded server start included.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_testdb import make_project  # noqa: E402

import pgfast  # noqa: E402


def timed(rounds: int, fn: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        asyncio.run(fn())  # type: ignore[arg-type]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--migrations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n, rounds = args.migrations, args.rounds
    with (
        tempfile.TemporaryDirectory() as tmp,
        pgfast.EmbeddedPostgres(f"bench-schema-{os.getpid()}") as server,
    ):
        folder = Path(tmp) / "project"
        make_project(folder, n)
        for i in range(1, n + 1):
            (folder / "migrations" / f"{i:04d}_t{i}_down.sql").write_text(f"DROP TABLE t{i};\n")
        (folder / ".git").mkdir()
        migrations = pgfast.discover_migrations([folder / "migrations"])
        pg_dump = pgfast._find_pg_dump(15, pgfast._find_pg_bindir()[0])

        async def migrated() -> str:
            async with pgfast._scratch_database((server, None)) as (url, _):
                await pgfast._apply_quietly(url, migrations)
            return url

        async def keep_migrated() -> str:
            admin = await pgfast._connect(server)
            await admin.execute("CREATE DATABASE bench_live")
            await admin.close()
            url = pgfast.database_url(server, "bench_live")
            await pgfast._apply_quietly(url, migrations)
            return url

        live = asyncio.run(keep_migrated())

        async def bare_dumps(count: int) -> None:
            for _ in range(count):
                await pgfast._dump(pg_dump, live)

        figures = {
            "baseline: apply N migrations (fresh database)": timed(rounds, migrated),
            "baseline: one bare pg_dump": timed(rounds, lambda: bare_dumps(1)),
            "dump_schema": timed(rounds, lambda: pgfast.dump_schema(migrations, server_url=server)),
            "diff_schema": timed(rounds, lambda: pgfast.diff_schema(live, migrations, server_url=server)),
            f"baseline: {2 * n + 1} bare pg_dumps": timed(rounds, lambda: bare_dumps(2 * n + 1)),
            "check_migrations": timed(rounds, lambda: pgfast.check_migrations(migrations, server_url=server)),
        }
        env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "DATABASE_URL")}
        env["PYTHONPATH"] = str(ROOT)
        for command in ("dump", "check"):
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "pgfast", "schema", command],
                    cwd=folder,
                    env=env,
                    check=True,
                    capture_output=True,
                )
                times.append(time.perf_counter() - started)
            figures[f"process: pgfast schema {command} (embedded server started)"] = statistics.median(times)
    print(f"{n} migrations, median of {rounds} rounds, embedded server")
    for name, seconds in figures.items():
        print(f"  {name:<60} {seconds * 1000:8.0f} ms")


if __name__ == "__main__":
    main()
