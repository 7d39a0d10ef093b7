"""The JSON API's endpoints. Every answer comes from one generation (holder.served, taken once per
request); searches go through its QueryEngine only."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from hashae.index.backends.base import ItemInfo
from hashae.index.calibration import duplicates_threshold
from hashae.index.duplicates import DuplicatesError
from hashae.index.query import DEFAULT_K, QUERY_MODES, TIE_ORDERS, Answer
from hashae.index.server.engines import EngineHolder, Served, now
from hashae.index.server.errors import answer_or_error, one_line
from hashae.index.server.settings import ServerSettings
from hashae.index.server.thumbnails import DEFAULT_SIDE, MAX_SIDE, MIN_SIDE, ThumbnailCache, original_media_type, original_path
from hashae.index.server.uploads import UploadDecoder, uploaded_image

MAX_K = 1000
MAX_SAMPLE = 200
DEFAULT_GROUPS = 100
MAX_GROUPS = 1000
DEFAULT_MEMBERS = 50  # per group: a loose threshold can put thousands of items in one group
MAX_MEMBERS = 1000
TIES_HELP = "Order within equal Hamming distance: latent (by VAE-mean distance, the default) or id."


def add_routes(app: FastAPI, holder: EngineHolder, settings: ServerSettings) -> None:
    """Register the /api endpoints on app."""
    thumbnails = ThumbnailCache()
    decoder = UploadDecoder(max_pixels=settings.max_upload_pixels, max_concurrent=settings.max_concurrent_decodes)
    started_at = now()

    @app.get("/api/health", summary="Liveness and the generation being served")
    def health() -> dict[str, Any]:
        served = holder.served
        return {"status": "ok", "generation": served.gen, "items": len(served.ids)}

    @app.get("/api/stats", summary="The store being served")
    def stats() -> dict[str, Any]:
        served = holder.served
        view = served.engine.view
        models = view.models()
        records = {"hashing": models.hashing, "latent": models.latent} if models else {"hashing": None, "latent": None}
        conf = view.settings
        return {
            "store": str(holder.store.root),
            "generation": served.gen,
            "committed_at": view.committed_at,
            "items": len(served.ids),
            "bits": conf.bits,
            "latent_dim": conf.latent_dim,
            "image_size": conf.image_size,
            "channels": conf.channels,
            "labels": served.label_counts,
            "models": {role: None if r is None else {"id": r.id, "kind": r.kind, "created_at": r.created_at} for role, r in records.items()},
            "modes": list(QUERY_MODES),
            "ties": list(TIE_ORDERS),
            "served_since": started_at,
            "generation_loaded_at": served.loaded_at,
            "refreshes": holder.refreshes,
            "refresh_error": holder.last_refresh_error,
        }

    @app.get("/api/items", summary="A random sample of indexed items (optionally of one label)")
    def sample_items(
        limit: int = Query(24, ge=1, le=MAX_SAMPLE),
        label: str | None = Query(None, description="Only items with this label."),
        seed: int | None = Query(None, ge=0, description="Repeatable sample (a non-negative integer)."),
    ) -> dict[str, Any]:
        served = holder.served
        ids = served.ids if label is None else served.ids[served.labels == label]
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(ids, size=min(limit, len(ids)), replace=False)) if len(ids) else ids
        items = served.engine.view.items(chosen.tolist())
        return {
            "generation": served.gen,
            "total": int(len(ids)),
            "items": [_item_summary(items[i]) for i in chosen.tolist() if i in items],
        }

    @app.get("/api/items/{item_id}", summary="One indexed item's metadata and code")
    def item(item_id: int) -> dict[str, Any]:
        def work(served: Served) -> dict[str, Any]:
            info = _visible_item(served, item_id)
            code = served.engine.codes_of([item_id])[0]
            return {**_item_summary(info), "size": info.size, "added_at": info.added_at, "generation": served.gen, "code": _bits(code)}

        return answer_or_error(holder, work)

    @app.api_route(
        "/api/items/{item_id}/thumbnail",
        methods=["GET", "HEAD"],
        summary="An indexed item's thumbnail, made from its original file",
        description=(
            f"The catalogued file shrunk to fit `size` x `size` (default {DEFAULT_SIDE}) with its proportions and "
            "colours kept, never enlarged; PNG, or JPEG for a JPEG original. 410 when the file is gone."
        ),
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
    )
    def thumbnail(item_id: int, size: int = Query(DEFAULT_SIDE, ge=MIN_SIDE, le=MAX_SIDE, description="Longest side in pixels.")) -> Response:
        def work(served: Served):
            return thumbnails.thumbnail(served.engine, _visible_item(served, item_id), side=size)

        picture = answer_or_error(holder, work)
        return Response(picture.data, media_type=picture.media_type, headers={"Cache-Control": "private, max-age=86400"})

    @app.api_route(
        "/api/items/{item_id}/original",
        methods=["GET", "HEAD"],
        summary="An indexed item's original file",
        description="The catalogued file as it lies in the indexed folder (only catalogued items, never a path outside it). 410 when it is gone.",
        response_class=FileResponse,
        responses={200: {"content": {"image/*": {}}}},
    )
    def original(item_id: int) -> FileResponse:
        path = answer_or_error(holder, lambda served: original_path(served.engine, _visible_item(served, item_id)))
        return FileResponse(path, media_type=original_media_type(path), content_disposition_type="inline", filename=path.name)

    @app.get("/api/query", summary="Neighbours of an indexed item")
    def query_by_id(
        id: int = Query(..., description="An indexed item's id."),
        k: int | None = Query(None, ge=1, le=MAX_K, description=f"Results (default {DEFAULT_K}; with a radius, every item within it up to {MAX_K})."),
        mode: str = Query("hamming", description="hamming, latent or hybrid."),
        radius: int | None = Query(None, ge=0, description="Every item within this many bit flips (hamming mode)."),
        ties: str = Query("latent", description=TIES_HELP),
    ) -> dict[str, Any]:
        def work(served: Served) -> dict[str, Any]:
            if not served.contains(id):
                raise HTTPException(status_code=404, detail=f"no item with id {id} in the index (generation {served.gen})")
            answer = served.engine.query_id(id, mode=mode, k=_bounded(k, radius), radius=radius, ties=ties)
            return _answer_document(served, answer)

        return answer_or_error(holder, work)

    @app.get(
        "/api/duplicates",
        summary="Groups of near-duplicate items (what `hashae duplicates` lists)",
        description=(
            "Every group of items that are copies of one another (exact copies, re-encoded, resized, retouched), each "
            "anchored on its earliest file, earliest anchor first; a member is within the threshold of its anchor: "
            "Hamming distance <= radius, confirmed by a squared distance between VAE means <= latent_max unless "
            "codes_only. The answer is `hashae duplicates --json`'s document (threshold, generation, items, "
            "grouped_items, groups with each member's id, path, hamming, latent, exact) with each member's label, "
            "the first `limit` groups (total_groups says how many there are) and of each the anchor and its nearest "
            "members up to `members` (size says how many it has). Computed once per generation and threshold."
        ),
    )
    def duplicates(
        radius: int | None = Query(None, ge=0, description="Hamming distance in bits within which two items are copies (default: the threshold calibrated for precision 99.9%)."),
        latent_max: float | None = Query(None, ge=0, description="Also require a squared distance between VAE means at most this (default: the store's own limit, measured on altered copies of its files when its models were trained and kept with them; threshold_source says which)."),
        codes_only: bool = Query(False, description="Group by Hamming distance alone, without the latent check (looser: look-alikes join)."),
        limit: int = Query(DEFAULT_GROUPS, ge=1, le=MAX_GROUPS, description="At most this many groups, earliest anchor first."),
        members: int = Query(DEFAULT_MEMBERS, ge=1, le=MAX_MEMBERS, description="At most this many members of a group: its anchor, then the nearest."),
    ) -> dict[str, Any]:
        def work(served: Served) -> dict[str, Any]:
            try:
                chosen = duplicates_threshold(served.engine, radius=radius, latent_max=latent_max, codes_only=codes_only)
            except DuplicatesError as error:
                raise HTTPException(status_code=400, detail=one_line(error)) from None
            document = {**served.duplicates(chosen.threshold), **chosen.as_dict()}
            groups = [
                {**group, "members": [{**member, "label": served.label_of(member["id"])} for member in group["members"][:members]]}
                for group in document["groups"][:limit]
            ]
            return {**document, "groups": groups, "total_groups": len(document["groups"])}

        return answer_or_error(holder, work)

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
        ties: str = Query("latent", description=TIES_HELP),
    ) -> dict[str, Any]:
        data, name = await uploaded_image(request)

        def work(served: Served) -> dict[str, Any]:
            conf = served.engine.settings
            pixels = decoder.decode(data, size=conf.image_size, channels=conf.channels)
            answer = served.engine.query_pixels(pixels[None], label=name, mode=mode, k=_bounded(k, radius), radius=radius, ties=ties)
            return _answer_document(served, answer)

        return await run_in_threadpool(answer_or_error, holder, work)


def _visible_item(served: Served, item_id: int) -> ItemInfo:
    """The metadata of an item of the served generation; 404 otherwise."""
    info = served.engine.view.items([item_id]).get(item_id) if served.contains(item_id) else None
    if info is None:
        raise HTTPException(status_code=404, detail=f"no item with id {item_id} in the index (generation {served.gen})")
    return info


def _bounded(k: int | None, radius: int | None) -> int | None:
    """k as asked; with a radius and no k, at most MAX_K items (the CLI's "all" could be the store)."""
    return MAX_K if k is None and radius is not None else k


def _answer_document(served: Served, answer: Answer) -> dict[str, Any]:
    """`hashae query --json`'s line, plus the generation and each result's code bits."""
    document = answer.as_dict()
    codes = served.engine.codes_of([hit.id for hit in answer.hits])
    for result, code in zip(document["results"], codes):
        result["code"] = _bits(code)
    document["generation"] = served.gen
    return document


def _item_summary(info: ItemInfo) -> dict[str, Any]:
    return {"id": info.id, "path": info.path, "label": info.label}


def _bits(code: np.ndarray) -> str:
    return "".join("1" if b else "0" for b in np.unpackbits(np.asarray(code, dtype=np.uint8)))
