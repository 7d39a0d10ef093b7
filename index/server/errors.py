"""Library errors as HTTP answers: {"detail": "one line saying why"} with a 4xx or 503 status."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from hashae.errors import DataError
from hashae.index.backends.base import StoreError
from hashae.index.search import QueryError


def answer_or_error(holder, work: Callable[[Any], Any]) -> Any:
    """Run work on the holder's current generation; library errors -> 4xx with the library's reason.

    If the generation was purged under a long request (two commits since it was loaded), load the
    newest one and try once more; a second failure is a 503.
    """
    from hashae.index.server.engines import one_faiss_thread_here

    one_faiss_thread_here()
    for attempt in (1, 2):
        served = holder.served
        try:
            return work(served)
        except (DataError, QueryError) as error:
            raise HTTPException(status_code=400, detail=one_line(error)) from None
        except StoreError as error:
            if attempt == 2:
                raise HTTPException(status_code=503, detail=one_line(error)) from None
            holder.refresh()


async def invalid_request(request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's validation errors as a 400 with one line naming each bad parameter."""
    return JSONResponse({"detail": validation_reason(error)}, status_code=400)


def validation_reason(error: RequestValidationError) -> str:
    parts = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {problem.get('msg', 'invalid')}" if where else problem.get("msg", "invalid"))
    return "; ".join(parts) or "invalid request"


def one_line(error: Exception) -> str:
    """An error's message, first line only (its type name when it has none)."""
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__
