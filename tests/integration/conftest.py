import pytest


@pytest.fixture(autouse=True)
def _needs_postgres(postgres_server: str) -> None:
    """Every integration test needs the server: skipped locally without one, failed under CI."""
