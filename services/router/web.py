"""The reviewer web page: plain HTML, JavaScript and CSS, served without a build step.

The page talks only to this router's own ``/v1`` API (a Content-Security-Policy
keeps its requests to its own origin), so in blind mode the browser never receives the
model's guess before the labeler has answered: the API does not send it. Images are
the one exception to "own origin": an item's image may be a URL on the producer's
host, so ``img-src`` admits any http(s) origin (an image cannot run code or read the page).

The page is ES modules without a build step (``static/*.js``): ``api.js`` the requests
and their errors, ``example.js`` how an item is drawn, ``panel.js`` the guideline and
progress beside the task, ``app.js`` the labeling flow and its keys. A new view (e.g. a
comparison of two outputs) is a module of its own, added to ``ASSETS``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import FileResponse

from shared.auth import Principal, project_access
from shared.limits import Project
from shared.service import service_of

from .progress import ReviewContext
from .service import RouterService

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The only files served under /static: no path from the URL ever reaches the file system.
ASSETS = {"app.js": "text/javascript", "api.js": "text/javascript",
          "example.js": "text/javascript", "panel.js": "text/javascript",
          "style.css": "text/css", "compare.js": "text/javascript",
          "compare.css": "text/css"}
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data: blob: https: http:; "
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


api = APIRouter(prefix="/v1", tags=["review"])


@api.get("/projects/{project}/review", response_model=ReviewContext,
         responses={503: {"description": "Redis is unavailable: try again (Retry-After)"}})
async def review_context(
    project: Project, request: Request,
    principal: Annotated[Principal, Depends(project_access("labeler"))],
    since: Annotated[datetime | None, Query(
        description="the start of the labeler's day (their local midnight); counted from "
                    "at most 26 hours back; default the UTC midnight")] = None,
) -> ReviewContext:
    """What the reviewer page shows beside a task: the guideline text and version, how
    items are drawn, the labeler's submits today and the tasks waiting. No model output.
    401, then 403 (the token does not reach the project), then 404 (unknown project)."""
    svc: RouterService = service_of(request)
    return await svc.review_context(project, principal, since)
