"""The FastAPI app: `create_app(settings)`, or `hive_app.main:app` built from the environment.

Routes (collection = /api/v1/sessions for genie, /api/v1/deployments for agent):
  GET  /api/v1/health          200 {"status":"ok","database":"ok"} when SELECT 1 answers within 1 s, else 503
  GET  /api/v1/live            200 while the process serves requests (no database: for liveness probes)
  POST {collection}            201 with the new row
  GET  {collection}/{id}       the row; 404 when missing, 422 for a malformed UUID
  GET  {collection}?limit=&offset=   newest first
  POST {collection}/search     {"embedding": [...], "limit": n} → nearest rows by L2 distance (<->)
Any connection-level database failure is answered 503 {"detail": "database unavailable"}.
"""

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import asyncpg
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from hive_app import __version__
from hive_app.db import Database, DatabaseUnavailable
from hive_app.logs import install_redaction, log
from hive_app.resources import RESOURCES, Resource, SearchIn
from hive_app.settings import Settings, from_env

HEALTH_TIMEOUT = 0.8  # the whole health answer stays under 1 s, even with the database away


def create_app(settings: Settings) -> FastAPI:
    resource = RESOURCES[settings.service]
    install_redaction(settings.secrets)
    if not log.handlers and not logging.getLogger().handlers:
        # run by the uvicorn command rather than `python -m hive_app` (whose log config replaces this)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(settings.log_level.upper())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url, resource, settings.database_password)
        app.state.db = db
        log.info("%s API %s starting; database %s", settings.service, __version__, settings.safe_url)
        db.start()
        try:
            yield
        finally:
            await db.close()

    app = FastAPI(title=f"hive {settings.service}", version=__version__, lifespan=lifespan)
    app.state.settings = settings

    @app.exception_handler(DatabaseUnavailable)
    async def database_unavailable(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        log.warning("%s %s: database unavailable (%s)", request.method, request.url.path, exc)
        return JSONResponse({"detail": "database unavailable"}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(asyncpg.DataError)
    async def data_error(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        # what validation cannot see but PostgreSQL refuses, e.g. a NUL character in text or JSON
        return JSONResponse({"detail": f"invalid data: {exc}"}, status_code=422)

    @app.get("/api/v1/health")
    async def health(request: Request) -> JSONResponse:
        problem = await request.app.state.db.ping(HEALTH_TIMEOUT)
        if problem is None:
            return JSONResponse({"status": "ok", "database": "ok"})
        return JSONResponse({"status": "unavailable", "database": "unavailable", "reason": problem},
                            status_code=503)

    @app.get("/api/v1/live")
    async def live() -> dict[str, str]:
        return {"status": "ok", "service": settings.service}

    app.include_router(_router(resource))
    return app


def _router(res: Resource) -> APIRouter:
    router = APIRouter(prefix=res.path, tags=[res.service])
    create_model, row_model, match_model = res.create_model, res.row_model, res.match_model

    def db(request: Request) -> Database:
        return request.app.state.db

    async def create(request: Request, body: create_model) -> dict[str, Any]:  # type: ignore[valid-type]
        async with db(request).connection() as conn:
            row = await conn.fetchrow(res.insert_sql, uuid.uuid4(), *res.insert_args(body))
        return dict(row)

    async def search(request: Request, body: SearchIn) -> list[dict[str, Any]]:
        async with db(request).connection() as conn:
            rows = await conn.fetch(res.search_sql, body.embedding, body.limit)
        return [dict(r) for r in rows]

    async def get_one(request: Request, item_id: UUID) -> dict[str, Any]:
        async with db(request).connection() as conn:
            row = await conn.fetchrow(res.get_sql, item_id)
        if row is None:
            raise HTTPException(404, f"{res.noun} {item_id} not found")
        return dict(row)

    async def list_all(request: Request, limit: int = Query(50, ge=1, le=500),
                       offset: int = Query(0, ge=0)) -> list[dict[str, Any]]:
        async with db(request).connection() as conn:
            rows = await conn.fetch(res.list_sql, limit, offset)
        return [dict(r) for r in rows]

    router.add_api_route("", create, methods=["POST"], status_code=201, response_model=row_model)
    router.add_api_route("", list_all, methods=["GET"], response_model=list[row_model])
    # declared before /{item_id} so that "search" is never read as an id
    router.add_api_route("/search", search, methods=["POST"], response_model=list[match_model])
    router.add_api_route("/{item_id}", get_one, methods=["GET"], response_model=row_model)
    return router


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    """`hive_app.main:app` for uvicorn, built from the environment on first use."""
    global _app
    if name == "app":
        if _app is None:
            _app = create_app(from_env())
        return _app
    raise AttributeError(name)
