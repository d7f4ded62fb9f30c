"""HTTP routes of the quality service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from shared.auth import Principal, project_access
from shared.service import service_of

router = APIRouter(prefix="/v1", tags=["quality"])


@router.get("/projects/{project}/quality")
async def get_quality(
    project: str,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("labeler"))],
) -> dict[str, Any]:
    """Counts and running pairwise agreement among human labels."""
    return service_of(request).summary(project)
