"""Requests per second of a `SELECT 1` endpoint through each pgfast request dependency.

    python benchmarks/bench_http.py [--seconds 5] [--connections 32] [--rounds 5]

Serves one app with uvicorn (1 worker) and loads it with wrk, endpoint by endpoint, in rounds
so that machine noise spreads over all of them; prints the median of each and its ratio to the
plain pool endpoint. Raw asyncpg without HTTP (the same query from 32 tasks) is the ceiling.
The database is TEST_DATABASE_URL (default: the local `postgres` database); nothing is written.
"""

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pgfast

URL = os.environ.get("TEST_DATABASE_URL") or pgfast.DEFAULT_URL_FOR_TESTS
ENDPOINTS = {
    "no database": "/nodb",
    "get_db_pool + acquire": "/pool",
    "get_db_connection": "/conn",
    "RLS dependency, 3 settings": "/rls",
}


def build_app() -> Any:
    from fastapi import Depends, FastAPI, Request

    config = pgfast.DatabaseConfig(url=URL, min_connections=10, max_connections=10)
    app = FastAPI(lifespan=pgfast.create_lifespan(config))

    async def settings(request: Request) -> dict[str, str]:
        return {"app.tenant_id": "tenant-42", "app.user_id": "user-7", "app.role": "reader"}

    rls = pgfast.create_rls_dependency(settings)

    @app.get("/nodb")
    async def nodb() -> int:
        return 1

    @app.get("/pool")
    async def pool(pool: Any = Depends(pgfast.get_db_pool)) -> int:
        async with pool.acquire() as conn:
            return int(await conn.fetchval("SELECT 1"))

    @app.get("/conn")
    async def conn(conn: Any = Depends(pgfast.get_db_connection)) -> int:
        return int(await conn.fetchval("SELECT 1"))

    @app.get("/rls")
    async def secured(conn: Any = Depends(rls)) -> int:
        return int(await conn.fetchval("SELECT 1"))

    return app


def serve(port: int) -> None:
    import logging

    import uvicorn

    logging.getLogger("pgfast").setLevel(logging.ERROR)  # the superuser bypass warning
    uvicorn.run(build_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wrk(port: int, path: str, seconds: float, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{path}: {errors[1]} failed responses\n{out}")
    return float(re.search(r"Requests/sec:\s+([0-9.]+)", out)[1])  # type: ignore[index]


async def raw_asyncpg(seconds: float, tasks: int) -> float:
    pool = await pgfast.create_pool(pgfast.DatabaseConfig(url=URL, min_connections=10, max_connections=10))
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    await pgfast.close_pool(pool)
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        for path in ENDPOINTS.values():  # warm up
            wrk(port, path, 1, args.connections)
        results: dict[str, list[float]] = {name: [] for name in ENDPOINTS}
        for _ in range(args.rounds):
            for name, path in ENDPOINTS.items():
                results[name].append(wrk(port, path, args.seconds, args.connections))
    finally:
        server.terminate()
        server.wait()
    ceiling = asyncio.run(raw_asyncpg(args.seconds, args.connections))
    pool = results["get_db_pool + acquire"]
    base = statistics.median(pool)
    print(
        f"uvicorn 1 worker, wrk -c{args.connections}, {args.rounds} rounds of {args.seconds:g}s; median req/s, "
        "and the median over rounds of the ratio to the pool endpoint in the same round:"
    )
    for name, values in results.items():
        ratio = statistics.median(v / p for v, p in zip(values, pool, strict=True))
        print(
            f"  {name:<28} {statistics.median(values):9.0f}   {ratio:5.2f}x of pool   (rounds: {', '.join(f'{v:.0f}' for v in values)})"
        )
    print(f"  {'raw asyncpg, no HTTP':<28} {ceiling:9.0f}   {ceiling / base:5.2f}x of pool   (ceiling)")


if __name__ == "__main__":
    main()
