"""Run the notes example: `python -m examples.notes [--port 8000]`.

With DATABASE_URL unset it starts pgfast's embedded throwaway PostgreSQL, creates the app role
and its database, and lets the app apply its migrations on startup; with DATABASE_URL set it
uses that database (connect as an ordinary role, not a superuser, or RLS isolates nothing).
"""

import argparse
import asyncio
import contextlib
import os

import asyncpg
import uvicorn

import pgfast
from examples.notes.app import APP_ROLE, create_app


async def prepare(admin_url: str) -> str:
    """Create the app role and a database it owns; return the app's URL."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
        await conn.execute(f"CREATE DATABASE notes OWNER {APP_ROLE}")
    finally:
        await conn.close()
    scheme, rest = pgfast.database_url(admin_url, "notes").split("://", 1)
    return f"{scheme}://{APP_ROLE}@{rest.split('@', 1)[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = os.environ.get("DATABASE_URL")
        if not url:
            server = pgfast.EmbeddedPostgres(f"notes-{os.getpid()}")
            url = asyncio.run(prepare(stack.enter_context(server)))
            print("using an embedded throwaway PostgreSQL (deleted on exit)")
        base = f"http://127.0.0.1:{args.port}"
        print(f"notes example at {base}  (database {pgfast.mask_url(url)})")
        body = """-d '{"body": "hi"}'"""
        print(
            f"try: curl -X POST -H 'X-Tenant: acme' -H 'Content-Type: application/json' {body} {base}/notes"
        )
        print(f"     curl -H 'X-Tenant: acme' {base}/notes", flush=True)
        uvicorn.run(create_app(url), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
