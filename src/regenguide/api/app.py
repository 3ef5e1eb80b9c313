"""The FastAPI application: `/api/v1` resources, CDS Hooks at `/cds-services`, OpenAPI at `/openapi.json`."""

from __future__ import annotations

import gc
from importlib import import_module
from typing import Any

import anyio
from fastapi import FastAPI
from sqlalchemy import Engine

from regenguide import __version__
from regenguide.api import problems
from regenguide.config import Settings, get_settings
from regenguide.kb import knowledge_base
from regenguide.simulate.parameters import load_graft_knowledge
from regenguide.store.audit import GroupCommit
from regenguide.store.db import make_engine, session_factory

API_PREFIX = "/api/v1"

# Router modules under regenguide.api.routers, each with its prefix: each module exposes `router` (an
# APIRouter) or `routers` (a list). Routes are matched in this order, so CDS Hooks, whose calls an EHR
# makes on order signing and which must answer fast, come first (matching costs grow along the list).
ROUTERS: list[tuple[str, str]] = [
    ("cds_hooks", ""),
    *((name, API_PREFIX) for name in (
        "auth", "records", "resources", "products", "plans", "kb", "analytics", "questionnaires", "simulation",
        "imaging",
    )),
    ("web", ""),
]


def _routers_of(module_name: str) -> list[Any]:
    module = import_module(f"regenguide.api.routers.{module_name}")
    if hasattr(module, "routers"):
        return list(module.routers)
    return [module.router]


def create_app(engine: Engine | None = None, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="RegenGuide API",
        version=__version__,
        summary="Image-guided regenerative medicine: plans, decision support, biologics, follow-up, evidence.",
        description=(
            "Authenticate with `POST /api/v1/auth/token` (OAuth2 password flow) and send "
            "`Authorization: Bearer <token>`. Errors are RFC 9457 `application/problem+json` naming the "
            "offending field. Updates need `If-Match` with the ETag of the version you read."
        ),
    )
    app.state.settings = settings
    app.state.engine = engine or make_engine(settings.resolved_database_url())
    app.state.sessions = session_factory(app.state.engine)
    # Reads (GET) use their own engine on SQLite: deferred transactions on WAL snapshots, in parallel; their
    # audit entries are appended in a short write transaction (see api.deps.audit).
    engine_url = app.state.engine.url.render_as_string(hide_password=False)
    app.state.read_engine = (
        make_engine(engine_url, read_only=True) if app.state.engine.dialect.name == "sqlite" else app.state.engine
    )
    app.state.read_sessions = session_factory(app.state.read_engine)
    app.state.audit_commit = GroupCommit(app.state.engine)
    # CDS Hooks order-sign reads and checks run one at a time per worker process (routers.cds_hooks.plan_check).
    app.state.check_limiter = anyio.CapacityLimiter(1)
    # Load and validate the knowledge bases now, in every worker process, rather than in the first clinical
    # request (a few hundred ms, which would otherwise fall on whoever is first after each start).
    knowledge_base()
    load_graft_knowledge()
    app.state.secret_key = settings.resolved_secret_key()
    problems.install(app)

    @app.get("/health", tags=["meta"], summary="Liveness")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    for name, prefix in ROUTERS:
        for router in _routers_of(name):
            app.include_router(router, prefix=prefix)
    from fastapi.staticfiles import StaticFiles

    from regenguide.api.routers.web import STATIC

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def freeze_startup_heap() -> None:
    """Move everything alive after start-up (modules, the app, the knowledge bases, …) out of the cyclic
    garbage collector's reach (`gc.freeze`). They live as long as the process; without this, every full
    (generation 2) collection traverses all of them while holding the GIL, a pause of about 100 ms every
    few hundred plan checks that every request queued on that worker waits through (the CDS Hooks p99).
    Memory is still freed by reference counting; only cycles made before the freeze are never collected."""
    gc.collect()
    gc.freeze()


def create_server_app() -> FastAPI:
    """The application as a server process runs it (`regenguide serve`, one per worker): `create_app` from
    the environment's settings, then the start-up heap frozen."""
    app = create_app()
    freeze_startup_heap()
    return app
