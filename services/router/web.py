"""The reviewer web page: plain HTML, JavaScript and CSS, served without a build step.

The page talks only to this router's own ``/v1`` API (a Content-Security-Policy
keeps it to its own origin), so in blind mode the browser never receives the
model's guess before the labeler has answered: the API does not send it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The only files served under /static: no path from the URL ever reaches the file system.
ASSETS = {"app.js": "text/javascript", "style.css": "text/css",
          "compare.js": "text/javascript", "compare.css": "text/css"}
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(tags=["web"], include_in_schema=False)


@router.get("/")
async def reviewer_page() -> FileResponse:
    """The single page reviewers label on."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/static/{name}")
async def static_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no static file {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=HEADERS)
