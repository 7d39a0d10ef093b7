"""An uploaded query image: the multipart form field `image`, or the raw request body."""

from __future__ import annotations

import threading

import numpy as np
from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

from hashae.decode import ImageDecodeError, decode_image
from hashae.index.server.guards import BodyTooLarge

MAX_FORM_FIELDS = 16
DECODE_WAIT_SECONDS = 2.0


async def uploaded_image(request: Request) -> tuple[bytes, str]:
    """The uploaded image's bytes and a name for it; 400 with the reason when there is none."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        data, name = await _form_image(request)
    else:  # any other body is the image itself (`curl --data-binary @photo.jpg`)
        data, name = await request.body(), "upload"
    if not data:
        raise HTTPException(status_code=400, detail="cannot read image: empty file")
    return data, name


async def _form_image(request: Request) -> tuple[bytes, str]:
    try:
        form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
    except (HTTPException, BodyTooLarge):  # BodyTooLarge: the body cap's 413, answered by BodyLimit
        raise
    except Exception as error:  # a malformed multipart body: the parser's reason
        raise HTTPException(status_code=400, detail=f"could not read the multipart form: {error}") from None
    upload = form.get("image")
    if upload is None:
        raise HTTPException(status_code=400, detail="send the image as the multipart form field 'image'")
    if isinstance(upload, UploadFile):
        data, name = await upload.read(), upload.filename or "upload"
        await upload.close()
        return data, name
    return str(upload).encode(), "upload"


class UploadDecoder:
    """Decodes uploads with bounded cost: images declaring more than max_pixels are refused (413)
    from their header, before decoding; at most max_concurrent decode at once, a request finding
    them all busy waits DECODE_WAIT_SECONDS and then gets 429."""

    def __init__(self, *, max_pixels: int, max_concurrent: int) -> None:
        self.max_pixels, self.max_concurrent = max_pixels, max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def decode(self, data: bytes, *, size: int, channels: int) -> np.ndarray:
        """The upload as model input float32 (C, H, W); HTTPException 413/429, or DataError (400)."""
        if not self._slots.acquire(timeout=DECODE_WAIT_SECONDS):
            raise HTTPException(
                status_code=429,
                detail=f"the server is decoding {self.max_concurrent} images already; try again in a moment",
                headers={"Retry-After": "1"},
            )
        try:
            return decode_image(data, size=size, channels=channels, max_pixels=self.max_pixels)
        except ImageDecodeError as error:
            if "too large" in str(error):
                raise HTTPException(
                    status_code=413,
                    detail=f"{error}; this server decodes images of at most {self.max_pixels:,} pixels (resize it first)",
                ) from None
            raise
        finally:
            self._slots.release()
