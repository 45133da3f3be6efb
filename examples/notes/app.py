"""A small multi-tenant notes service on pgfast: a pool, row-level security, migrations."""

from pathlib import Path
from typing import Any

import asyncpg
from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel

import pgfast

HERE = Path(__file__).parent
MIGRATIONS = [HERE / "accounts" / "migrations", HERE / "notes" / "migrations"]
FIXTURES = [HERE / "fixtures"]
APP_ROLE = "notes_app"  # an ordinary role: no superuser, no BYPASSRLS


class NewNote(BaseModel):
    body: str


async def tenant_settings(x_tenant: str = Header(default="")) -> dict[str, str]:
    """The RLS settings of a request; a real app would take the tenant from its auth token."""
    return {"app.tenant_id": x_tenant}


def create_app(url: str | None = None, *, migrate: bool = True) -> FastAPI:
    """The app; its database is `url`, else DATABASE_URL, read when the app starts (so tests can
    import and build it with no database configured: pgfast's test clients give it theirs)."""
    config = pgfast.DatabaseConfig(url=url, migrations_dirs=MIGRATIONS, min_connections=1) if url else None
    app = FastAPI(title="notes", lifespan=pgfast.create_lifespan(config, migrate=migrate))
    tenant_connection = pgfast.create_rls_dependency(tenant_settings)

    @app.get("/health")
    async def health(status: dict[str, Any] = Depends(pgfast.get_db_health)) -> dict[str, Any]:
        return status

    @app.get("/tenants")
    async def tenants(pool: asyncpg.Pool = Depends(pgfast.get_db_pool)) -> list[dict[str, str]]:
        return [dict(r) for r in await pool.fetch("SELECT id, name FROM tenants ORDER BY id")]

    @app.get("/notes")
    async def list_notes(conn: Any = Depends(tenant_connection)) -> list[str]:
        return [r["body"] for r in await conn.fetch("SELECT body FROM notes ORDER BY id")]

    @app.post("/notes", status_code=201)
    async def add_note(note: NewNote, conn: Any = Depends(tenant_connection)) -> dict[str, int]:
        tenant = await conn.fetchval("SELECT nullif(current_setting('app.tenant_id'), '')")
        if tenant is None:
            raise HTTPException(status_code=400, detail="send the X-Tenant header")
        try:
            note_id = await conn.fetchval(
                "INSERT INTO notes (tenant_id, body) VALUES ($1, $2) RETURNING id", tenant, note.body
            )
        except asyncpg.ForeignKeyViolationError:
            raise HTTPException(status_code=404, detail=f"no tenant {tenant!r}") from None
        return {"id": note_id}

    return app
