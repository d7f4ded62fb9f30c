"""HTTP routes of the router: pull a task, submit a label, skip; the routing policy."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from shared import metrics, streams
from shared.auth import CurrentPrincipal, Principal, authorize, project_access
from shared.events import LabelEvent, LabelSource, ReviewMode, stable_id
from shared.service import runtime_of, service_of

from .service import RouterService

router = APIRouter(prefix="/v1", tags=["review"])


class TaskOut(BaseModel):
    task_id: str
    project: str
    item_id: str
    mode: ReviewMode
    payload: dict[str, Any] | None
    options: list[str]
    lease_expires_at: datetime


class SubmitIn(BaseModel):
    label: str = Field(min_length=1, max_length=256)
    duration_ms: int | None = Field(None, ge=0)
    guideline_version: str | None = Field(None, max_length=64)


class Reveal(BaseModel):
    model_label: str | None
    confidence: float | None
    model_version: str


class SubmitOut(BaseModel):
    event_id: str
    status: str
    late: bool
    reveal: Reveal


class PolicyIn(BaseModel):
    auto_accept_threshold: float | None = Field(None, ge=0.0, le=1.0)
    overlap: int | None = Field(None, ge=1, le=5)


def _svc(request: Request) -> RouterService:
    return service_of(request)


@router.get(
    "/projects/{project}/tasks/next",
    response_model=TaskOut,
    responses={204: {"description": "no task is waiting for this labeler"}},
)
async def next_task(
    project: str,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("labeler"))],
) -> Any:
    """Lease the most uncertain waiting task; blind mode shows no model guess."""
    svc = _svc(request)
    leased = await svc.queue.next(project, principal.user_id, svc.settings.lease_seconds)
    metrics.QUEUE_DEPTH.labels(project).set(await svc.queue.depth(project))
    if leased is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    task_id, expires_ms = leased
    task = await svc.queue.task(task_id)
    assert task is not None
    return TaskOut(
        task_id=task_id,
        project=project,
        item_id=task["item_id"],
        mode=ReviewMode.blind,
        payload=json.loads(task["payload"]),
        options=await svc.options(project),
        lease_expires_at=datetime.fromtimestamp(expires_ms / 1000, UTC),
    )


async def _task_for(request: Request, task_id: str, principal: Principal) -> dict[str, str]:
    task = await _svc(request).queue.task(task_id)
    if task is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no task {task_id}")
    authorize(principal, task["project"], "labeler")
    return task


@router.post("/tasks/{task_id}/submit", response_model=SubmitOut)
async def submit(
    task_id: str, body: SubmitIn, request: Request, principal: CurrentPrincipal
) -> SubmitOut:
    """Record a human label with provenance; a repeat submit returns the first result."""
    svc = _svc(request)
    task = await _task_for(request, task_id, principal)
    project = task["project"]
    probs: dict[str, float] = json.loads(task["probs"])
    model_label = max(probs, key=probs.__getitem__) if probs else None
    reveal = Reveal(
        model_label=model_label,
        confidence=probs.get(model_label) if model_label else None,
        model_version=task["model_version"],
    )
    state, detail = await svc.queue.check_submit(task_id, principal.user_id)
    if state == "duplicate":
        return SubmitOut(event_id=detail or "", status="duplicate", late=False, reveal=reveal)
    if state == "not_handed":
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="this task was not handed to you; take one with tasks/next",
        )
    options = await svc.options(project)
    if options and body.label not in options:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"label {body.label!r} is not one of {options}",
        )
    event = LabelEvent(
        event_id=stable_id("submit", task_id, principal.user_id),
        project=project,
        item_id=task["item_id"],
        label=body.label,
        labeler_id=principal.user_id,
        source=LabelSource.human,
        mode=ReviewMode.blind,
        shown_prelabel=None,
        agreed_with_prelabel=None,
        revised_after_reveal=False,
        model_version=task["model_version"],
        guideline_version=body.guideline_version,
        task_id=task_id,
        batch_id=task.get("batch_id") or None,
        created_at=datetime.now(UTC),
        duration_ms=body.duration_ms,
    )
    # Publish first (the id is deterministic, so a retry after a crash is deduplicated
    # by the store), then record the submission.
    await runtime_of(request).bus.publish(streams.LABELS, [event])
    outcome, event_id = await svc.queue.commit_submit(
        project, task_id, principal.user_id, str(event.event_id)
    )
    metrics.QUEUE_DEPTH.labels(project).set(await svc.queue.depth(project))
    return SubmitOut(event_id=event_id, status=outcome, late=detail == "late", reveal=reveal)


@router.post("/tasks/{task_id}/skip")
async def skip(task_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, str]:
    """Give the task back; it will not be handed to this labeler again."""
    task = await _task_for(request, task_id, principal)
    outcome = await _svc(request).queue.skip(task["project"], task_id, principal.user_id)
    if outcome == "not_leased":
        raise HTTPException(status.HTTP_409_CONFLICT, detail="you hold no lease on this task")
    return {"task_id": task_id, "status": outcome}


@router.get("/projects/{project}/policy")
async def get_policy(
    project: str,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("labeler"))],
) -> dict:
    return await _svc(request).policy(project)


@router.put("/projects/{project}/policy")
async def put_policy(
    project: str,
    body: PolicyIn,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("admin"))],
) -> dict:
    """Change the project's routing policy (admin)."""
    return await _svc(request).set_policy(project, body.model_dump(exclude_none=True))


@router.get("/projects/{project}/queue")
async def queue_depth(
    project: str,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("labeler"))],
) -> dict:
    return {"project": project, "depth": await _svc(request).queue.depth(project)}
