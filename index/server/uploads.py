"""An uploaded query image: the multipart form field `image`, or the raw request body."""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

MAX_FORM_FIELDS = 16


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
        return data, name
    return str(upload).encode(), "upload"
