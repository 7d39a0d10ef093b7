"""The retrieval service: a FastAPI app over the store's newest generation, with a web page at /.

    GET  /api/health                      liveness and the generation being served
    GET  /api/stats                       the store: items, bits, labels, models, generation
    GET  /api/items?limit=&label=&seed=   a random sample of indexed items (the page's browse panel)
    GET  /api/items/{id}                  one item's metadata and code bits
    GET  /api/items/{id}/thumbnail        its picture as PNG, decoded from the catalogued file
    GET  /api/query?id=&k=&mode=&radius=  neighbours of an indexed item
    POST /api/query?k=&mode=&radius=      neighbours of an uploaded image (multipart field `image`,
                                          or the raw bytes as the body)
    GET  /openapi.json                    the API description

Query answers are one `hashae query --json` line plus `generation` and each result's `code` bits.
A radius query without k returns at most 1,000 items (the CLI returns every one).
Errors are JSON {"detail": "one line saying why"} with a 4xx status; an unknown id is a 404.

Serving while `hashae index` writes: a background thread looks at the catalogue every
`refresh_interval` seconds; when a newer generation is committed it builds a whole new QueryEngine
(loading the committed files; the writer's half-written work is invisible to it), warms it, and
swaps the reference. Every request takes the reference once and answers from that engine alone, so
an answer never mixes generations, and readers take no lock (SQLite WAL).

Safety (see ServerSettings): loopback by default, a bearer token required beyond loopback, the Host
header checked against the names the server answers to (DNS rebinding), request bodies capped
(413), thumbnails only of catalogued items, read from the indexed folder by their catalogued path.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import logging
import threading
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from hashae.data import decode_image
from hashae.errors import DataError, HashaeError
from hashae.index.backends.local.catalogue import StoreError
from hashae.index.query import DEFAULT_K, QueryEngine
from hashae.index.backends.local.store import QUERY_MODES, QueryError, Store

logger = logging.getLogger("hashae.server")

STATIC_DIR = Path(__file__).parent / "static"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_MAX_UPLOAD_BYTES = 16 * 1024 * 1024
MAX_K = 1000
MAX_SAMPLE = 200
THUMBNAIL_CACHE_SIZE = 4096
MIN_THUMBNAIL, MAX_THUMBNAIL = 8, 256
UNPROTECTED_PATHS = ("/api/health",)


class ServeError(HashaeError):
    """The server cannot start with these settings (a non-loopback host without a token, ...)."""


def is_loopback(host: str) -> bool:
    """Whether a bind address or host name stays on this machine."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSettings:
    """How the service guards itself.

    host: the address it is bound to. Beyond loopback a token is required.
    token: when set, every request but /api/health needs `Authorization: Bearer TOKEN` or ?token=.
    allowed_hosts: extra names accepted in the Host header besides localhost, 127.0.0.1, ::1 and
        the bound host; "*" accepts any (only with a token).
    max_upload_bytes: request bodies above this get 413.
    refresh_interval: seconds between looks for a newer generation.
    """

    host: str = "127.0.0.1"
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    refresh_interval: float = 1.0

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise ServeError(
                f"refusing to serve on {self.host} without a token: anyone who can reach it could query "
                "the store; pass --token SECRET (clients then send `Authorization: Bearer SECRET`), "
                "or bind to 127.0.0.1"
            )
        if "*" in self.allowed_hosts and not self.token:
            raise ServeError("--allow-host '*' accepts any Host header; it needs --token as well")
        if self.max_upload_bytes <= 0:
            raise ServeError(f"the upload limit must be positive, got {self.max_upload_bytes}")

    def host_names(self) -> frozenset[str]:
        """The lower-case names the Host header may carry (without port)."""
        names = {*LOOPBACK_NAMES, *(h.lower().strip("[]") for h in self.allowed_hosts)}
        if self.host not in ("0.0.0.0", "::", ""):
            names.add(self.host.lower().strip("[]"))
        else:  # bound to every interface: also the machine's own names
            import socket

            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        return frozenset(names)


# ------------------------------------------------------------------------------------ engines
@dataclass
class Served:
    """One generation as the server serves it: the engine and what the page needs of its items."""

    engine: QueryEngine
    ids: np.ndarray  # int64 (n,), sorted: every item of the generation
    labels: np.ndarray  # object (n,): the label of each id (None where unlabelled)
    label_counts: dict[str, int]
    loaded_at: str = field(default_factory=lambda: _now())

    @property
    def gen(self) -> int:
        return self.engine.snapshot.gen

    def contains(self, item_id: int) -> bool:
        row = np.searchsorted(self.ids, item_id)
        return bool(row < len(self.ids) and self.ids[row] == item_id)


class EngineHolder:
    """The engine being served, swapped for a new one when a newer generation is committed."""

    def __init__(self, store: Store, *, refresh_interval: float = 1.0) -> None:
        self.store = store
        self.refresh_interval = refresh_interval
        self.refreshes = 0
        self.last_refresh_error: str | None = None
        self._build_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._served = self._build()

    @property
    def served(self) -> Served:
        """The current generation; take it once per request and use only it."""
        return self._served

    def start(self) -> None:
        """Look for newer generations in a background thread until stop()."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="hashae-refresh", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def refresh(self) -> bool:
        """Swap in the newest committed generation if it is newer; True when it moved."""
        with self._build_lock:
            if not self._served.engine.snapshot.is_stale():
                return False
            served = self._build()
            if served.gen <= self._served.gen:
                return False
            self._served = served  # one reference assignment: requests see the old or the new
            self.refreshes += 1
            logger.info("now serving generation %d (%d items)", served.gen, len(served.ids))
            return True

    def _watch(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            try:
                self.refresh()
                self.last_refresh_error = None
            except HashaeError as error:  # a store mid-change or damaged: keep serving the old one
                self.last_refresh_error = str(error)
                logger.warning("could not load the newer generation (still serving the old): %s", error)
            except Exception as error:  # the watcher must not die; say why and retry next tick
                self.last_refresh_error = f"{type(error).__name__}: {error}"
                logger.exception("unexpected error while loading a newer generation")

    def _build(self) -> Served:
        _one_faiss_thread()
        engine = QueryEngine(self.store)
        snapshot = engine.snapshot
        ids = np.sort(snapshot.latent.ids().astype(np.int64))
        items = snapshot.items(ids.tolist())
        labels = np.array([items[i].label if i in items else None for i in ids.tolist()], dtype=object)
        counts: dict[str, int] = {}
        for label in labels:
            key = "(none)" if label is None else str(label)
            counts[key] = counts.get(key, 0) + 1
        if len(ids):  # warm up: build the hash tables (and compile kernels) before serving
            engine.query_id(int(ids[0]), mode="hamming", k=min(10, len(ids)))
        return Served(engine, ids, labels, dict(sorted(counts.items())))


# ----------------------------------------------------------------------------------- the app
def create_app(store: Store, settings: ServerSettings | None = None, *, start_watcher: bool = True):
    """The ASGI app serving `store` (opened with check_same_thread=False); loads the engine now."""
    settings = settings or ServerSettings()
    holder = EngineHolder(store, refresh_interval=settings.refresh_interval)
    thumbnails = ThumbnailCache(THUMBNAIL_CACHE_SIZE)
    started_at = _now()

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
        docs_url=None,  # the Swagger page loads its assets from a CDN; /openapi.json is enough
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.settings = settings

    # -------------------------------------------------------------------------- errors
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        return JSONResponse({"detail": _validation_reason(error)}, status_code=400)

    def answer_or_error(work: Callable[[Served], Any]) -> Any:
        """Run work on the current generation; library errors -> 4xx with the library's reason.

        If the generation was purged under a long request (two commits since it was loaded), load
        the newest one and try once more.
        """
        _one_faiss_thread()
        for attempt in (1, 2):
            served = holder.served
            try:
                return work(served)
            except (DataError, QueryError) as error:
                raise HTTPException(status_code=400, detail=_one_line(error)) from None
            except StoreError as error:
                if attempt == 2:
                    raise HTTPException(status_code=503, detail=_one_line(error)) from None
                holder.refresh()

    # ------------------------------------------------------------------------ endpoints
    @app.get("/api/health", summary="Liveness and the generation being served")
    def health() -> dict[str, Any]:
        served = holder.served
        return {"status": "ok", "generation": served.gen, "items": len(served.ids)}

    @app.get("/api/stats", summary="The store being served")
    def stats() -> dict[str, Any]:
        served = holder.served
        snapshot = served.engine.snapshot
        models = {}
        for role, record in (("hashing", snapshot.hashing_model()), ("latent", snapshot.latent_model())):
            models[role] = None if record is None else {"id": record.id, "kind": record.kind, "created_at": record.created_at}
        conf = snapshot.settings
        return {
            "store": str(store.root),
            "generation": served.gen,
            "committed_at": snapshot.generation.created_at,
            "items": len(served.ids),
            "bits": conf.get("bits"),
            "latent_dim": conf.get("latent_dim"),
            "image_size": conf.get("image_size"),
            "channels": conf.get("channels"),
            "labels": served.label_counts,
            "models": models,
            "modes": list(QUERY_MODES),
            "served_since": started_at,
            "generation_loaded_at": served.loaded_at,
            "refreshes": holder.refreshes,
            "refresh_error": holder.last_refresh_error,
        }

    @app.get("/api/items", summary="A random sample of indexed items (optionally of one label)")
    def sample_items(
        limit: int = Query(24, ge=1, le=MAX_SAMPLE),
        label: str | None = Query(None, description="Only items with this label."),
        seed: int | None = Query(None, description="Repeatable sample."),
    ) -> dict[str, Any]:
        served = holder.served
        ids = served.ids if label is None else served.ids[served.labels == label]
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(ids, size=min(limit, len(ids)), replace=False)) if len(ids) else ids
        items = served.engine.snapshot.items(chosen.tolist())
        return {
            "generation": served.gen,
            "total": int(len(ids)),
            "items": [_item_summary(items[i]) for i in chosen.tolist() if i in items],
        }

    @app.get("/api/items/{item_id}", summary="One indexed item's metadata and code")
    def item(item_id: int) -> dict[str, Any]:
        def work(served: Served) -> dict[str, Any]:
            info = _visible_item(served, item_id)
            code = served.engine.snapshot.hamming.codes_of(np.array([item_id], dtype=np.int64))[0]
            return {**_item_summary(info), "size": info.size, "added_at": info.added_at, "generation": served.gen, "code": _bits(code)}

        return answer_or_error(work)

    @app.get(
        "/api/items/{item_id}/thumbnail",
        summary="An indexed item's picture (PNG)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def thumbnail(item_id: int, size: int | None = Query(None, ge=MIN_THUMBNAIL, le=MAX_THUMBNAIL)) -> Response:
        def work(served: Served) -> bytes:
            info = _visible_item(served, item_id)
            conf = served.engine.settings
            side = size or int(conf.get("image_size") or 64)
            key = (info.id, info.content_hash, side)
            png = thumbnails.get(key)
            if png is None:
                png = _thumbnail_png(served.engine, info.path, side=side)
                thumbnails.put(key, png)
            return png

        png = answer_or_error(work)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/query", summary="Neighbours of an indexed item")
    def query_by_id(
        id: int = Query(..., description="An indexed item's id."),
        k: int | None = Query(None, ge=1, le=MAX_K, description=f"Results (default {DEFAULT_K}; with a radius, every item within it up to {MAX_K})."),
        mode: str = Query("hamming", description="hamming, latent or hybrid."),
        radius: int | None = Query(None, ge=0, description="Every item within this many bit flips (hamming mode)."),
    ) -> dict[str, Any]:
        def work(served: Served) -> dict[str, Any]:
            if not served.contains(id):
                raise HTTPException(status_code=404, detail=f"no item with id {id} in the index (generation {served.gen})")
            answer = served.engine.query_id(id, mode=mode, k=_bounded(k, radius), radius=radius)
            return _answer_document(served, answer)

        return answer_or_error(work)

    @app.post(
        "/api/query",
        summary="Neighbours of an uploaded image",
        description=f"Send the image as the multipart form field `image`, or as the raw request body. At most {settings.max_upload_bytes} bytes.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}, "required": ["image"]}
                    },
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def query_by_image(
        request: Request,
        k: int | None = Query(None, ge=1, le=MAX_K),
        mode: str = Query("hamming"),
        radius: int | None = Query(None, ge=0),
    ) -> dict[str, Any]:
        data, name = await _uploaded_image(request)

        def work(served: Served) -> dict[str, Any]:
            answer = served.engine.query_image(data, label=name, mode=mode, k=_bounded(k, radius), radius=radius)
            return _answer_document(served, answer)

        return await run_in_threadpool(answer_or_error, work)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------------ guards
    # Added last = outermost: the Host check runs first, then the token, then the body cap.
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(TokenGuard, token=settings.token)
    if "*" not in settings.allowed_hosts:
        app.add_middleware(HostGuard, names=settings.host_names())
    return app


async def _uploaded_image(request: Request) -> tuple[bytes, str]:
    """The uploaded image's bytes and a name for it: multipart field `image`, else the raw body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=16)
        except HTTPException:
            raise
        except Exception as error:  # a malformed multipart body: the parser's reason
            raise HTTPException(status_code=400, detail=f"could not read the multipart form: {error}") from None
        upload = form.get("image")
        if upload is None:
            raise HTTPException(status_code=400, detail="send the image as the multipart form field 'image'")
        if isinstance(upload, UploadFile):
            data, name = await upload.read(), upload.filename or "upload"
            await upload.close()
        else:
            data, name = str(upload).encode(), "upload"
    else:  # any other body is the image itself (`curl --data-binary @photo.jpg`)
        data, name = await request.body(), "upload"
    if not data:
        raise HTTPException(status_code=400, detail="cannot read image: empty file")
    return data, name


# ------------------------------------------------------------------------------- middleware
class HostGuard:
    """Refuse requests whose Host header names another site (DNS rebinding): 421 with a reason."""

    def __init__(self, app, *, names: frozenset[str]) -> None:
        self.app, self.names = app, names

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            host = _header(scope, b"host")
            name = _host_name(host) if host is not None else None
            if name not in self.names:
                detail = (
                    f"Host {host!r} is not one this server answers to ({', '.join(sorted(self.names))}); "
                    "start it with --allow-host NAME to add one"
                )
                await _send_json(send, 421, {"detail": detail})
                return
        await self.app(scope, receive, send)


class TokenGuard:
    """With a token set, every request but /api/health needs it (Bearer header or ?token=): 401."""

    def __init__(self, app, *, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.token and scope["path"] not in UNPROTECTED_PATHS:
            if not self._authorised(scope):
                await _send_json(
                    send, 401, {"detail": "this server needs a token: send `Authorization: Bearer TOKEN` or add ?token=TOKEN"},
                    headers=[(b"www-authenticate", b"Bearer")],
                )
                return
        await self.app(scope, receive, send)

    def _authorised(self, scope) -> bool:
        from urllib.parse import parse_qs

        header = _header(scope, b"authorization") or ""
        given = header[7:].strip() if header[:7].lower() == "bearer " else None
        if given is None:
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            given = values[0] if values else None
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """413 for request bodies over max_bytes: by Content-Length up front, and while streaming."""

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _send_json(send, 400, {"detail": f"bad Content-Length {declared!r}"})
                return
            if int(declared) > self.max_bytes:
                await self._refuse(send, declared=int(declared))
                return
        received, started = 0, False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def watched_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send, declared=None)

    async def _refuse(self, send, *, declared: int | None) -> None:
        size = f"{declared} bytes" if declared is not None else f"more than {self.max_bytes} bytes"
        detail = f"request body too large ({size}); the limit is {self.max_bytes} bytes (serve --max-upload-mb)"
        await _send_json(send, 413, {"detail": detail}, headers=[(b"connection", b"close")])


async def _send_json(send, status: int, document: dict[str, Any], *, headers: list[tuple[bytes, bytes]] = ()) -> None:
    import json

    body = json.dumps(document).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _host_name(host: str) -> str:
    """The name part of a Host header, lower case: 'LocalHost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


# ---------------------------------------------------------------------------------- helpers
class ThumbnailCache:
    """A small thread-safe LRU of PNG bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[Any, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key, value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)


_thread_state = threading.local()


def _one_faiss_thread() -> None:
    """Let FAISS use one OpenMP thread in the calling thread (the setting is per thread).

    One query is far too small to split, and requests already run on a thread pool: an OpenMP team
    per query only adds barrier waits, which cost 40-300 ms per query on a busy machine.
    """
    if not getattr(_thread_state, "faiss_single", False):
        import faiss

        faiss.omp_set_num_threads(1)
        _thread_state.faiss_single = True


def _visible_item(served: Served, item_id: int):
    """The catalogue row of an item of the served generation; 404 otherwise."""
    info = served.engine.snapshot.items([item_id]).get(item_id) if served.contains(item_id) else None
    if info is None:
        raise HTTPException(status_code=404, detail=f"no item with id {item_id} in the index (generation {served.gen})")
    return info


def _thumbnail_png(engine: QueryEngine, relative: str, *, side: int) -> bytes:
    """The catalogued file decoded (hardened) to side x side, as PNG bytes. Only catalogued paths
    come here; one that would leave the indexed folder is refused all the same."""
    from hashae.images import to_pil

    root = Path(engine.settings.get("source_root", ".")).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise HTTPException(status_code=404, detail="the item's file lies outside the indexed folder")
    channels = int(engine.settings.get("channels") or 3)
    try:
        pixels = decode_image(path, size=side, channels=channels)
    except DataError as error:
        raise HTTPException(status_code=410, detail=f"the item's file can no longer be read ({_one_line(error)}); re-run `hashae index`") from None
    buffer = io.BytesIO()
    to_pil(pixels).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _bounded(k: int | None, radius: int | None) -> int | None:
    """k as asked; with a radius and no k, at most MAX_K items (the CLI's "all" could be the store)."""
    return MAX_K if k is None and radius is not None else k


def _answer_document(served: Served, answer) -> dict[str, Any]:
    """`hashae query --json`'s line, plus the generation and each result's code bits."""
    document = answer.as_dict()
    ids = np.array([hit.id for hit in answer.hits], dtype=np.int64)
    codes = served.engine.snapshot.hamming.codes_of(ids) if len(ids) else np.empty((0, 0), np.uint8)
    for result, code in zip(document["results"], codes):
        result["code"] = _bits(code)
    document["generation"] = served.gen
    return document


def _item_summary(info) -> dict[str, Any]:
    return {"id": info.id, "path": info.path, "label": info.label}


def _bits(code: np.ndarray) -> str:
    return "".join("1" if b else "0" for b in np.unpackbits(np.asarray(code, dtype=np.uint8)))


def _one_line(error: Exception) -> str:
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def _validation_reason(error) -> str:
    parts = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {problem.get('msg', 'invalid')}" if where else problem.get("msg", "invalid"))
    return "; ".join(parts) or "invalid request"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hashae")
    except Exception:
        return "0"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
