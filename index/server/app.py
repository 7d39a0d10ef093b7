"""create_app: the FastAPI app, its page, its error handling and its guards, put together."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse

from hashae.index.backends.base import StoreBackend
from hashae.index.server.engines import EngineHolder
from hashae.index.server.docs import add_docs_page
from hashae.index.server.errors import invalid_request
from hashae.index.server.guards import BodyLimit, HostGuard, TokenGuard, redact_tokens_in_access_log
from hashae.index.server.routes import add_routes
from hashae.index.server.settings import ServerSettings

STATIC_DIR = Path(__file__).parent / "static"


def create_app(store: StoreBackend, settings: ServerSettings | None = None, *, start_watcher: bool = True) -> FastAPI:
    """The ASGI app serving `store` (opened for reading from several threads); loads the engine now."""
    settings = settings or ServerSettings()
    redact_tokens_in_access_log()  # a --access-log must not keep the ?token= a client sent
    holder = EngineHolder(store, refresh_interval=settings.refresh_interval)

    @asynccontextmanager
    async def lifespan(app):
        if start_watcher:
            holder.start()
        yield
        holder.stop()

    app = FastAPI(
        title="hashae",
        summary="Semantic-hashing image retrieval: neighbours by bit flips of learned binary codes.",
        version=_version(),
        docs_url=None,  # the Swagger page loads its assets from a CDN: /docs is index/server/docs.py's page
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.settings = settings
    app.add_exception_handler(RequestValidationError, invalid_request)
    add_routes(app, holder, settings)
    add_docs_page(app)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    # Added last = outermost: the Host check runs first, then the token, then the body cap.
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(TokenGuard, token=settings.token)
    if "*" not in settings.allowed_hosts:
        app.add_middleware(HostGuard, names=settings.host_names())
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hashae")
    except Exception:
        return "0"
