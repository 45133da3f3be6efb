"""How long a test waits for its database: pgfast's fixtures against hand-rolled baselines.

    python benchmarks/bench_testdb.py [--tests 100] [--migrations 20] [--quick | --thousand]
                                      [--durable-url URL] [--pgfast08 WHEEL]

Generates a project with N migrations (a table and an index each) and a test file whose
tests each take one database fixture, runs it with pytest (sequentially and with -n 2), and
prints the whole-run wall time and the per-test set-up wait and teardown (median, p95):

- isolated_db on the embedded server (no TEST_DATABASE_URL) and on a durable server;
- db_with_fixtures on the embedded server (every table with 100 rows, from its own template);
- db_transaction (one shared database, rolled back after each test);
- baseline "migrate": a fresh empty database per test with the migrations applied to it;
- baseline "clone": CREATE DATABASE ... TEMPLATE per test, made and dropped in the test's
  own set-up and teardown (no pre-warming);
- pgfast 0.8's isolated_db on the durable server, from its wheel: --pgfast08 names one, else it
  is fetched with pip (0.8 declares Python >= 3.14 but runs on 3.11); --no-pgfast08 skips it;
- pytest-postgresql 10 (its postgresql_proc + postgresql fixtures, the schema loaded once into
  its template with load=, data on the same tmpfs with the same settings off), installed by pip
  into a folder of its own; --no-pytest-postgresql skips it;
- the floor: the same tests with no database, pytest and pytest-asyncio alone;
- isolated_db with tests that each do 20 ms of work, with 1 and 200 tables, and a 1,000-test run;
- the own-loop floor: a new event loop's asyncpg.connect to a fresh clone, and its first query.

"shared loop" runs the tests on one event loop (pytest-asyncio's asyncio_default_fixture_loop_scope
and asyncio_default_test_loop_scope = session): then pgfast connects the next test's pool while
the current test runs, and db_transaction keeps its connection. Otherwise each test has its own
loop (pytest-asyncio's default) and waits for its connection.

The durable server is --durable-url (default: the local postgres on 127.0.0.1:5432).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DURABLE = "postgresql://postgres@127.0.0.1:5432/postgres"

HOOKS = """
import json, os, time

import pytest

OUT = os.environ["BENCH_OUT"]


def _record(kind, seconds):
    with open(OUT, "a") as f:
        f.write(json.dumps({"kind": kind, "s": seconds}) + "\\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        _record("setup", time.perf_counter() - started)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        _record("teardown", time.perf_counter() - started)
"""
TIMING = (
    """
import asyncio

import asyncpg
import pytest_asyncio

import pgfast
"""
    + HOOKS
)

# pytest-postgresql 10 as its documentation recommends for speed: the schema loaded once into
# the template its process fixture makes (load=), each test's `postgresql` a clone of it. Same
# tmpfs and the same three durability settings off as pgfast's embedded server.
PPG_CONFTEST = """
from pathlib import Path

from pytest_postgresql import factories

postgresql_proc = factories.postgresql_proc(
    executable=os.environ["BENCH_PG_CTL"],
    load=[Path(__file__).parent / "schema.sql"],
    postgres_options="-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
)
postgresql = factories.postgresql("postgresql_proc")
"""

# PostgreSQL refuses to run as root and pytest-postgresql runs pg_ctl as the user running pytest:
# as root, the benchmark hands it this wrapper (pgfast's embedded server does the same inside).
PG_CTL_AS_POSTGRES = """#!/bin/sh
find "$BENCH_PPG_BASETEMP" -maxdepth 1 -user root -exec chown postgres: {} +
exec runuser -u postgres -- "$BENCH_PG_BIN/pg_ctl" "$@"
"""

BASELINES = '''
MIGRATIONS = sorted(pgfast.discover_migrations(["migrations"]), key=lambda m: m.version)
_n = iter(range(1, 10**9))


def _name(kind):
    return f"pgfast_test_bench_{kind}_{os.getpid()}_{next(_n)}"


@pytest_asyncio.fixture
async def migrate(pgfast_server_url):
    """Baseline: an empty database per test, migrated by the test's own set-up."""
    name = _name("m")
    admin = await asyncpg.connect(pgfast_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = pgfast.database_url(pgfast_server_url, name)
    conn = await asyncpg.connect(url)
    for m in MIGRATIONS:
        async with conn.transaction():
            await conn.execute(m.sql)
    await conn.close()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=5)
    yield pool
    await pool.close()
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="session")
def _bench_template(pgfast_server_url):
    name = f"pgfast_tpl_bench_{os.getpid()}"

    async def build():
        admin = await asyncpg.connect(pgfast_server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(pgfast.database_url(pgfast_server_url, name))
        for m in MIGRATIONS:
            await conn.execute(m.sql)
        await conn.close()
        await admin.close()

    async def drop():
        admin = await asyncpg.connect(pgfast_server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    asyncio.run(build())
    yield name
    asyncio.run(drop())


@pytest_asyncio.fixture
async def clone(pgfast_server_url, _bench_template):
    """Baseline: CREATE DATABASE ... TEMPLATE in the test's set-up, DROP in its teardown."""
    name = _name("c")
    admin = await asyncpg.connect(pgfast_server_url)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_bench_template}"')
    pool = await asyncpg.create_pool(pgfast.database_url(pgfast_server_url, name), min_size=1, max_size=5)
    yield pool
    await pool.close()
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()
'''

TEST = """
import asyncio, pytest

WORK = float({work_ms}) / 1000

@pytest.mark.asyncio
@pytest.mark.parametrize("n", range({tests}))
async def test_generated({fixture}, n):
    {query}
    if WORK:
        await asyncio.sleep(WORK)
"""


def make_project(folder: Path, migrations: int) -> None:
    (folder / "migrations").mkdir(parents=True)
    for i in range(1, migrations + 1):
        (folder / "migrations" / f"{i:04d}_t{i}_up.sql").write_text(
            f"CREATE TABLE t{i} (id serial PRIMARY KEY, name text NOT NULL, created timestamptz DEFAULT now());\n"
            f"CREATE INDEX t{i}_name ON t{i} (name);\n"
        )
    (folder / "fixtures").mkdir()
    for i in range(1, migrations + 1):  # 100 rows a table, for db_with_fixtures
        (folder / "fixtures" / f"{i:04d}_t{i}_fixture.sql").write_text(
            f"INSERT INTO t{i} (name) SELECT 'row ' || g FROM generate_series(1, 100) AS g;\n"
        )
    (folder / "conftest.py").write_text(TIMING + BASELINES)
    (folder / "pytest.ini").write_text(INI.format(scope="function"))


INI = "[pytest]\nasyncio_default_fixture_loop_scope = {scope}\nasyncio_default_test_loop_scope = {scope}\n"


def run(
    folder: Path,
    fixture: str,
    tests: int,
    *,
    workers: int = 0,
    work_ms: int = 0,
    url: str | None = None,
    env_extra: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    loop: str | None = "function",  # None: keep the project's pytest.ini
) -> dict[str, float]:
    query = {
        "request": "pass",  # no database: the floor
        "postgresql": "postgresql.execute('SELECT count(*) FROM t1').fetchone()",
    }.get(fixture, f"await {fixture}.fetchval('SELECT count(*) FROM t1')")
    (folder / "test_gen.py").write_text(
        TEST.format(tests=tests, fixture=fixture, work_ms=work_ms, query=query)
    )
    if loop:
        (folder / "pytest.ini").write_text(INI.format(scope=loop))
    out = folder / "timings.jsonl"
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "PYTHONDONTWRITEBYTECODE")}
    env |= {"BENCH_OUT": str(out), "PYTHONPATH": str(ROOT)} | (env_extra or {})
    if url:
        env["TEST_DATABASE_URL"] = url
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark", *args]
    if workers:
        command += ["-n", str(workers)]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{fixture} run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    in_order = [r["s"] * 1000 for r in rows if r["kind"] == "setup"]
    setup = sorted(in_order)
    teardown = sorted(r["s"] * 1000 for r in rows if r["kind"] == "teardown")
    return {
        "wall": wall,
        "setup_median": statistics.median(setup),
        "setup_p95": setup[int(len(setup) * 0.95) - 1],
        "teardown_median": statistics.median(teardown),
        "per_test": wall * 1000 / tests,
        "setup_first": statistics.median(in_order[: max(1, tests // 10)]),
        "setup_last": statistics.median(in_order[-max(1, tests // 10) :]),
    }


def line(label: str, r: dict[str, float]) -> str:
    return (
        f"  {label:<46} wall {r['wall']:6.2f} s  ({r['per_test']:6.1f} ms/test)  "
        f"set-up median {r['setup_median']:6.1f} p95 {r['setup_p95']:6.1f} ms  teardown median {r['teardown_median']:5.1f} ms"
    )


def fetch_pgfast08(folder: Path) -> str | None:
    """pgfast 0.8.0's wheel from the package index, or None (said) when it cannot be had."""
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.14", "pgfast==0.8.0", "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("pgfast-0.8.0-*.whl"))
    if result.returncode != 0 or not wheels:
        print(f"(pgfast 0.8 not compared: pip could not fetch it: {result.stderr.strip()[-300:]})")
        return None
    return str(wheels[0])


def fetch_pytest_postgresql(folder: Path) -> str | None:
    """pytest-postgresql 10 and what it needs besides pytest, in a folder of their own (not on
    the path of the other runs), or None (said) when pip cannot fetch them."""
    target = folder / "pytest-postgresql"
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    command += ["pytest-postgresql==10.0.0", "mirakuru", "port-for", "psycopg", "psycopg-binary", "psutil"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"(pytest-postgresql not compared: pip could not install it: {result.stderr.strip()[-300:]})")
        return None
    return str(target)


def ppg_project(base: Path, migrations: int, site: str) -> tuple[Path, dict[str, str], tuple[str, ...]]:
    """The same project for pytest-postgresql: its migrations as one schema file, and the
    environment and arguments its run needs (pg_ctl of the binaries pgfast's server uses)."""
    sys.path.insert(0, str(ROOT))
    import pgfast

    folder = base / "ppg"
    make_project(folder, migrations)
    (folder / "schema.sql").write_text(
        "".join(m.sql for m in pgfast.order_migrations(pgfast.discover_migrations([folder / "migrations"])))
    )
    (folder / "conftest.py").write_text(HOOKS + PPG_CONFTEST)
    bindir = pgfast.EmbeddedPostgres().bindir
    basetemp = Path(tempfile.mkdtemp(prefix="pgfast-bench-ppg-", dir=pgfast.EmbeddedPostgres().base))
    env = {
        "PYTHONPATH": os.pathsep.join([site, str(ROOT)]),
        "BENCH_PG_CTL": str(bindir / "pg_ctl"),
        "BENCH_PG_BIN": str(bindir),
        "BENCH_PPG_BASETEMP": str(basetemp),
    }
    if os.geteuid() == 0:
        wrapper = folder / "pg_ctl"
        wrapper.write_text(PG_CTL_AS_POSTGRES)
        wrapper.chmod(0o755)
        env["BENCH_PG_CTL"] = str(wrapper)
    return folder, env, ("-p", "no:pgfast_pytest", f"--basetemp={basetemp}")


def drop_templates(url: str, project: Path) -> None:
    """The durable server keeps a project's templates for its next run; this one has none."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    import pgfast

    migrations = pgfast.discover_migrations(root=project)

    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await pgfast.drop_templates(conn, migrations)
        finally:
            await conn.close()

    asyncio.run(drop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--migrations", type=int, default=20)
    parser.add_argument("--durable-url", default=DURABLE)
    parser.add_argument(
        "--pgfast08", help="path to pgfast-0.8.0-py3-none-any.whl (default: fetched with pip)"
    )
    parser.add_argument("--no-pgfast08", action="store_true", help="skip the pgfast 0.8 comparison")
    parser.add_argument(
        "--no-pytest-postgresql", action="store_true", help="skip the pytest-postgresql 10 comparison"
    )
    parser.add_argument("--quick", action="store_true", help="skip the scaling and 1,000-test runs")
    parser.add_argument("--thousand", action="store_true", help="only the 1,000-test run")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pgfast-bench-testdb-"))
    project = base / "project"
    make_project(project, args.migrations)
    try:
        if args.thousand:
            thousand(project)
        else:
            measure(args, base, project)
    finally:
        drop_templates(args.durable_url, project)


def thousand(project: Path) -> None:
    """1,000 isolated_db tests on the embedded server: the first and last 100 tests' set-up, and
    what the run left in the server's directory (tmpfs) after it."""
    sys.path.insert(0, str(ROOT))
    import pgfast

    shm = pgfast.EmbeddedPostgres().base
    before = set(shm.iterdir())
    print("\n1,000 tests (isolated_db, embedded, sequential): set-up median of the first and last 100")
    r = run(project, "isolated_db", 1000)
    print(line("1,000 tests", r))
    print(f"  first 100: {r['setup_first']:.1f} ms   last 100: {r['setup_last']:.1f} ms")
    left = sorted(str(p) for p in set(shm.iterdir()) - before)
    print(f"  left in {shm} afterwards: {', '.join(left) if left else 'nothing'}")


def connect_floor(project: Path, rounds: int = 30) -> tuple[float, float]:
    """Median ms of a new event loop's first connection to a fresh clone, and of its first query
    there: what a test on its own loop (pytest-asyncio's default) waits for at the least, since
    an asyncpg connection belongs to the loop that made it."""
    import asyncio

    import asyncpg

    import pgfast

    connects, queries = [], []
    with pgfast.EmbeddedPostgres(f"floor-{os.getpid()}") as url:
        migrations = pgfast.discover_migrations(root=project)
        with pgfast.IsolatedDatabases(url, migrations) as databases:
            for _ in range(rounds):
                name = asyncio.run(databases.create())

                async def connect(target: str) -> None:
                    started = time.perf_counter()
                    conn = await asyncpg.connect(target)
                    connected = time.perf_counter()
                    await conn.fetchval("SELECT count(*) FROM t1")
                    connects.append((connected - started) * 1000)
                    queries.append((time.perf_counter() - connected) * 1000)
                    await conn.close()

                asyncio.run(connect(databases.url(name)))
                asyncio.run(databases.drop(name))
    return statistics.median(connects), statistics.median(queries)


def measure(args: argparse.Namespace, base: Path, project: Path) -> None:
    n = args.tests
    results: dict[str, dict[str, float]] = {}
    wheel = None if args.no_pgfast08 else (args.pgfast08 or fetch_pgfast08(base))
    ppg_site = None if args.no_pytest_postgresql else fetch_pytest_postgresql(base)
    print(f"{n} tests, {args.migrations} migrations (a table and an index each); times in ms unless said")
    sys.path.insert(0, str(ROOT))
    import pgfast

    server = pgfast.EmbeddedPostgres()
    print(f"embedded server: PostgreSQL {server.version()} from {server.bindir} ({server.bin_source})")
    for workers in (0, 2):
        mode = "sequential" if not workers else f"-n {workers}"
        print(f"\n{mode}:")
        shared = "session"
        plan = [
            ("isolated_db, embedded server", "isolated_db", None, 0, "function"),
            ("isolated_db, embedded, shared loop", "isolated_db", None, 0, shared),
            ("isolated_db, embedded, tests doing 20 ms", "isolated_db", None, 20, "function"),
            ("isolated_db, embedded, 20 ms, shared loop", "isolated_db", None, 20, shared),
            ("db_with_fixtures, embedded (100 rows a table)", "db_with_fixtures", None, 0, "function"),
            ("db_transaction, embedded", "db_transaction", None, 0, "function"),
            ("db_transaction, embedded, shared loop", "db_transaction", None, 0, shared),
            ("baseline migrate-per-test, embedded", "migrate", None, 0, "function"),
            ("baseline clone-per-test, embedded", "clone", None, 0, "function"),
            ("isolated_db, durable server", "isolated_db", args.durable_url, 0, "function"),
            ("isolated_db, durable, shared loop", "isolated_db", args.durable_url, 0, shared),
            ("isolated_db, durable, tests doing 20 ms", "isolated_db", args.durable_url, 20, "function"),
            ("baseline migrate-per-test, durable", "migrate", args.durable_url, 0, "function"),
            ("baseline clone-per-test, durable", "clone", args.durable_url, 0, "function"),
        ]
        for label, fixture, url, work, loop in plan:
            r = run(project, fixture, n, workers=workers, work_ms=work, url=url, loop=loop)
            results[f"{mode}/{label}"] = r
            print(line(label, r), flush=True)
        if not workers:
            connect, query = connect_floor(project)
            print(
                f"  a new loop's asyncpg.connect to a fresh clone, embedded: median {connect:.1f} ms, "
                f"its first query {query:.1f} ms (the own-loop set-up floor)",
                flush=True,
            )
        if not workers:
            # The floor: pytest and pytest-asyncio alone, the same tests without a database.
            floor = base / "floor"
            floor.mkdir(exist_ok=True)
            (floor / "conftest.py").write_text(HOOKS)
            r = run(floor, "request", n, args=("-p", "no:pgfast_pytest"))
            results["floor"] = r
            print(line("no database (pytest alone: the floor)", r), flush=True)
        if ppg_site and not workers:
            folder, env, extra = ppg_project(base, args.migrations, ppg_site)
            try:
                r = run(folder, "postgresql", n, env_extra=env, args=extra)
            finally:
                shutil.rmtree(env["BENCH_PPG_BASETEMP"], ignore_errors=True)
            results["pytest-postgresql"] = r
            print(line("pytest-postgresql 10, template (load=), tmpfs", r), flush=True)
        if wheel and not workers:
            extracted = base / "pgfast08"
            subprocess.run([sys.executable, "-m", "zipfile", "-e", wheel, str(extracted)], check=True)
            old = base / "old"
            make_project(old, args.migrations)
            (old / "conftest.py").write_text("from pgfast.pytest import *  # noqa\n" + TIMING)
            (old / "pytest.ini").write_text(
                "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = session\n"
                "asyncio_default_test_loop_scope = session\n"
            )
            r = run(
                old,
                "isolated_db",
                n,
                url=args.durable_url,
                env_extra={"PYTHONPATH": str(extracted)},
                args=("-p", "no:pgfast_pytest"),
                loop=None,
            )
            results["pgfast 0.8"] = r
            print(line("pgfast 0.8 isolated_db, durable server", r), flush=True)
    # A durable server slows down as databases come and go (ext4 allocating and freeing
    # inodes), so a run's figure depends on what ran before it: compare in alternating rounds.
    print("\ndurable server, isolated_db and clone-per-test alternating, 3 rounds (sequential):")
    alternating: dict[str, list[float]] = {"isolated_db": [], "clone": []}
    for _ in range(3):
        for fixture in alternating:
            alternating[fixture].append(run(project, fixture, n, url=args.durable_url)["per_test"])
    for fixture, values in alternating.items():
        print(f"  {fixture:<14} per test: {', '.join(f'{v:.0f}' for v in values)} ms")
    seq = "sequential"
    emb = results[f"{seq}/isolated_db, embedded server"]
    dur = results[f"{seq}/isolated_db, durable server"]
    print("\nratios (sequential, per test, whole run):")
    print(
        f"  embedded isolated_db vs migrate-per-test (embedded): {results[f'{seq}/baseline migrate-per-test, embedded']['per_test'] / emb['per_test']:.1f}x faster"
    )
    print(
        f"  embedded isolated_db vs clone-per-test (embedded):   {results[f'{seq}/baseline clone-per-test, embedded']['per_test'] / emb['per_test']:.1f}x faster"
    )
    print(
        f"  durable isolated_db vs clone-per-test (durable):     {results[f'{seq}/baseline clone-per-test, durable']['per_test'] / dur['per_test']:.1f}x faster"
        f" (alternating rounds, medians: {statistics.median(alternating['clone']) / statistics.median(alternating['isolated_db']):.1f}x)"
    )
    floor = results["floor"]["wall"]
    print(
        f"  embedded isolated_db whole run vs the floor:          {emb['wall'] / floor:.1f}x the floor's {floor:.2f} s"
    )
    if "pytest-postgresql" in results:
        print(
            f"  embedded isolated_db vs pytest-postgresql 10:        {results['pytest-postgresql']['wall'] / emb['wall']:.1f}x faster"
        )
    if "pgfast 0.8" in results:
        print(
            f"  embedded isolated_db vs pgfast 0.8 (durable):        {results['pgfast 0.8']['per_test'] / emb['per_test']:.1f}x faster"
        )
    if args.quick:
        return
    print("\nschema size (isolated_db, embedded, sequential):")
    for tables in (1, args.migrations, 200):
        folder = base / f"size{tables}"
        make_project(folder, tables)
        r = run(folder, "isolated_db", n)
        print(line(f"{tables} tables", r), flush=True)
    thousand(project)


if __name__ == "__main__":
    main()
