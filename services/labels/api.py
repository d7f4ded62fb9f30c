"""HTTP routes of the labels service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from shared.auth import Principal, project_access
from shared.service import runtime_of

from .store import count_events, current_labels

router = APIRouter(prefix="/v1", tags=["labels"])


@router.get("/projects/{project}/labels")
async def get_current_labels(
    project: str,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("labeler"))],
    include_auto: bool = True,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The current label of every item of the project, with the provenance that decided it."""
    async with runtime_of(request).engine.connect() as conn:
        rows = await current_labels(
            conn, project, include_auto=include_auto, limit=limit, offset=offset
        )
        counts = await count_events(conn, project)
    return {"project": project, "count": len(rows), "events_by_source": counts, "labels": rows}
