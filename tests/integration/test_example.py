"""The notes example: its own test-suite passes, and `python -m examples.notes` serves."""

import signal
import subprocess
import sys
import time

import httpx
from helpers import CHECKOUT, free_port, run_pytest, user_env

import pgfast


def test_example_test_suite_passes(postgres_server: str) -> None:
    result = run_pytest(CHECKOUT, "examples/notes", env={"TEST_DATABASE_URL": postgres_server}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout


def test_running_the_example_serves_notes_on_an_embedded_server() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.notes", "--port", str(port)],
        cwd=CHECKOUT,
        env=user_env(),
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
    assert not list(pgfast.EmbeddedPostgres().base.glob(f"pgfast-pg-notes-{process.pid}*"))
