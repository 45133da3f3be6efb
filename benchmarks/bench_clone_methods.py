"""How to clone a test database fastest: CREATE DATABASE strategies and PostgreSQL 18's
`file_copy_method`, on the filesystems you name, with fsync off (the embedded server) and on.

    python benchmarks/bench_clone_methods.py DIR [DIR ...] [--clones 10] [--rounds 3]

Each DIR gets a cluster of its own (initdb of the binaries the embedded server would use:
PGFAST_PG_BIN, the system's, or the wheel's; run as the `postgres` OS user when you are root)
and a 20-table template. Then, in alternating rounds, `--clones` databases are made from it
with `STRATEGY FILE_COPY` under `file_copy_method = copy` and `= clone` (PostgreSQL 18+), and
with `STRATEGY WAL_LOG`, each connected to and queried once, then dropped. Prints the median
create, drop and connect+query times, and whether DIR's filesystem makes reflinks (`cp
--reflink=always`), which is what `clone` needs to be more than a copy.

To try a filesystem with reflinks as root: `truncate -s 3G /var/tmp/xfs.img && mkfs.xfs -m
reflink=1 /var/tmp/xfs.img && mount -o loop /var/tmp/xfs.img /mnt/xfs`.
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

EMBEDDED = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c wal_level=minimal -c max_wal_senders=0"
)


def reflinks(folder: Path) -> bool:
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        (Path(scratch) / "a").write_bytes(b"x" * 8192)
        result = subprocess.run(
            ["cp", "--reflink=always", f"{scratch}/a", f"{scratch}/b"], capture_output=True, check=False
        )
        return result.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--clones", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bindir, source = pgfast._find_pg_bindir()
    user = "postgres" if os.geteuid() == 0 else None
    version = subprocess.run([bindir / "postgres", "--version"], capture_output=True, text=True).stdout
    print(f"{version.strip()} from {bindir} ({source}); {args.clones} clones x {args.rounds} rounds, medians")
    for number, folder in enumerate(args.dirs):
        work = Path(tempfile.mkdtemp(prefix="pgfast-bench-clone-", dir=folder))
        try:
            if user:
                shutil.chown(work, user, user)
            data = work / "data"
            subprocess.run(
                [bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"],
                user=user,
                check=True,
                capture_output=True,
            )
            print(f"\n{folder} (reflinks: {'yes' if reflinks(folder) else 'no'})")
            for durable in (False, True):
                port = 55400 + number
                options = f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={work}"
                options += "" if durable else f" {EMBEDDED}"
                pg_ctl = [bindir / "pg_ctl", "-D", data, "-w", "-l", work / "log"]
                subprocess.run([*pg_ctl, "-o", options, "start"], user=user, check=True, capture_output=True)
                try:
                    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
                    results = asyncio.run(measure(url, args.clones, args.rounds))
                finally:
                    subprocess.run(
                        [*pg_ctl, "-m", "fast", "stop"], user=user, check=False, capture_output=True
                    )
                kind = "fsync on " if durable else "fsync off"
                for label, (created, dropped, connected) in results.items():
                    print(
                        f"  {kind}  {label:<22} create {statistics.median(created):6.1f} ms   drop "
                        f"{statistics.median(dropped):5.1f} ms   connect+query {statistics.median(connected):5.1f} ms"
                    )
        finally:
            shutil.rmtree(work, ignore_errors=True)


async def measure(
    url: str, clones: int, rounds: int
) -> dict[str, tuple[list[float], list[float], list[float]]]:
    import asyncpg

    admin = await asyncpg.connect(url)
    try:
        await admin.execute("DROP DATABASE IF EXISTS tpl")
        await admin.execute("CREATE DATABASE tpl")
        conn = await asyncpg.connect(pgfast.database_url(url, "tpl"))
        for i in range(20):
            await conn.execute(
                f"CREATE TABLE t{i} (id serial PRIMARY KEY, name text NOT NULL, created timestamptz DEFAULT now());"
                f"CREATE INDEX ON t{i} (name)"
            )
        await conn.close()
        methods = [("FILE_COPY", "copy"), ("FILE_COPY", "clone"), ("WAL_LOG", None)]
        if int(await admin.fetchval("SHOW server_version_num")) < 180000:
            methods = [m for m in methods if m[1] is None or m[1] == "copy"]
        results: dict[str, tuple[list[float], list[float], list[float]]] = {}
        for _ in range(rounds):
            for strategy, method in methods:
                label = f"{strategy}" + (f", {method}" if method and len(methods) == 3 else "")
                created, dropped, connected = results.setdefault(label, ([], [], []))
                if method and len(methods) == 3:
                    await admin.execute(f"SET file_copy_method = {method}")
                for i in range(clones):
                    started = time.perf_counter()
                    await admin.execute(f"CREATE DATABASE c{i} TEMPLATE tpl STRATEGY {strategy}")
                    created.append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    clone = await asyncpg.connect(pgfast.database_url(url, f"c{i}"))
                    await clone.fetchval("SELECT count(*) FROM t1")
                    await clone.close()
                    connected.append((time.perf_counter() - started) * 1000)
                for i in range(clones):
                    started = time.perf_counter()
                    await admin.execute(f"DROP DATABASE c{i}")
                    dropped.append((time.perf_counter() - started) * 1000)
        return results
    finally:
        await admin.close()


if __name__ == "__main__":
    main()
