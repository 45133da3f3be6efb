"""The notes example: its own test-suite passes, and `python -m examples.notes` serves."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import pgfast

ROOT = Path(__file__).resolve().parents[2]


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PGFAST_", "PYTEST_XDIST")) and k != "DATABASE_URL"
    }


def test_example_test_suite_passes(postgres_server: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/notes"],
        cwd=ROOT,
        env=clean_env() | {"TEST_DATABASE_URL": postgres_server},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout


def test_running_the_example_serves_notes_on_an_embedded_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in clean_env().items() if k != "TEST_DATABASE_URL"}
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.notes", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    try:
        printed = [process.stdout.readline() for _ in range(4)]
        assert printed[1].startswith(f"notes example at http://127.0.0.1:{port}"), printed
        assert "curl -H 'X-Tenant: acme'" in printed[3]
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{base}/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "the example never served"
                time.sleep(0.1)
        assert health.json()["status"] == "ok"
        created = httpx.post(f"{base}/notes", json={"body": "hi"}, headers={"X-Tenant": "acme"})
        assert created.status_code == 201, created.text
        assert httpx.get(f"{base}/notes", headers={"X-Tenant": "acme"}).json() == ["hi"]
        assert httpx.get(f"{base}/notes", headers={"X-Tenant": "globex"}).json() == []
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        process.stdout.close()
    assert not list(pgfast._tmpfs_dir().glob(f"pgfast-pg-notes-{process.pid}*"))
