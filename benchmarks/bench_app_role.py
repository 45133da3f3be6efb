"""What testing as the app's role costs: isolated_db with and without `pgfast_app_role`.

    python benchmarks/bench_app_role.py [--tests 100] [--rounds 3]

The same 20-migration project as bench_testdb.py (plus a GRANT to the role), 100 trivial tests on
the embedded server, in alternating rounds; prints each round and the medians per test.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_testdb

ROLE = "pgfast_bench_app"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="pgfast-bench-role-")) / "project"
    bench_testdb.make_project(project, 20)
    (project / "migrations" / "9999_grants_up.sql").write_text(  # each run has a server of its own
        f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN\n"
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ROLE}; END IF; END $$;\n"
    )
    ini = "[pytest]\nasyncio_default_fixture_loop_scope = function\nasyncio_default_test_loop_scope = function\n"
    results: dict[str, list[dict[str, float]]] = {f"app role {ROLE}": [], "admin (no role)": []}
    for _ in range(args.rounds):
        for label, extra in ((f"app role {ROLE}", f"pgfast_app_role = {ROLE}\n"), ("admin (no role)", "")):
            (project / "pytest.ini").write_text(ini + extra)
            results[label].append(bench_testdb.run(project, "isolated_db", args.tests, loop=None))
    print(
        f"{args.tests} trivial isolated_db tests, 20 migrations, embedded server, {args.rounds} alternating rounds:"
    )
    for label, rounds in results.items():
        per_test = [r["per_test"] for r in rounds]
        setup = [r["setup_median"] for r in rounds]
        print(
            f"  {label:<28} per test {statistics.median(per_test):5.1f} ms (rounds {', '.join(f'{v:.1f}' for v in per_test)}),"
            f" set-up median {statistics.median(setup):4.1f} ms"
        )


if __name__ == "__main__":
    main()
