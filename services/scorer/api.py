"""HTTP routes of the scorer: models, training, synchronous scoring, item registration."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from shared.auth import Principal, project_access
from shared.events import ItemEvent
from shared.limits import FINITE, ItemId, JsonObject, Name, Project, Text
from shared.peers import PeerError
from shared.projects import SelectionSettings
from shared.service import runtime_of, service_of

from . import store
from .service import ScorerService

router = APIRouter(prefix="/v1", tags=["scorer"])


class PredictIn(BaseModel):
    model_config = FINITE
    features: list[list[float]] | None = None
    texts: list[Text] | None = None


class ItemIn(BaseModel):
    """An item as the scorer stores it (shared.limits, the same as ItemEvent's)."""

    model_config = FINITE
    item_id: ItemId
    features: list[float] | None = None
    text: Text | None = None
    payload: JsonObject | None = None


class SelectIn(BaseModel):
    budget: int = Field(ge=1, le=10_000)
    strategy: Name | None = Field(None, description="default: the project's configured strategy")
    diversity: Literal["kmeanspp", "coreset", "none", "default"] = "default"


class RegisterIn(BaseModel):
    items: list[ItemIn] = Field(min_length=1, max_length=100_000)


def _svc(request: Request) -> ScorerService:
    return service_of(request)


@router.post("/projects/{project}/train")
async def train(
    project: Project,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("admin"))],
) -> dict:
    """Train a new model version on the project's current labels now."""
    try:
        return await _svc(request).train(project)
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc


@router.get("/projects/{project}/models")
async def models(
    project: Project,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("labeler"))],
) -> dict:
    async with runtime_of(request).engine.connect() as conn:
        return {"project": project, "models": await store.list_models(conn, project)}


@router.post("/projects/{project}/predict")
async def predict(
    project: Project,
    body: PredictIn,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("reviewer"))],
) -> dict:
    """Score inputs with the project's current model, synchronously (for evaluation).
    Reviewers and admins only: a labeler could ask the model about a task held blind."""
    inputs = body.features if body.features is not None else body.texts
    if not inputs:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="send 'features' (list of rows) or 'texts'",
        )
    try:
        return await _svc(request).predict(project, inputs)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc


@router.get("/projects/{project}/comparison")
async def comparison(
    project: Project,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("reviewer"))],
    points: Annotated[int, Query(ge=2, le=20, description="budgets on the learning curve")] = 6,
    seeds: Annotated[int, Query(ge=2, le=20, description="random orders")] = 3,
) -> dict[str, Any]:
    """The model trained on the loop's labels against baselines refitted from the same
    stored data and labeling budget (random order, auto labels only, single unreviewed
    labels), with learning curves, on the project's held-out gold. Reviewers and admins:
    it reads gold answers."""
    try:
        return await _svc(request).comparison(project, points=points, seeds=seeds)
    except PeerError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc


@router.post("/projects/{project}/items")
async def register_items(
    project: Project,
    body: RegisterIn,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("admin"))],
) -> dict:
    """Register items without scoring them (a seed set, or a pool to select from later)."""
    try:
        events = [ItemEvent(project=project, **i.model_dump()) for i in body.items]
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    async with runtime_of(request).engine.begin() as conn:
        inserted = await store.save_items(conn, events)
    return {"project": project, "received": len(events), "new": inserted}


class LookupIn(BaseModel):
    item_ids: list[ItemId] = Field(max_length=10_000)


@router.post("/projects/{project}/items/lookup")
async def lookup_items(project: Project, body: LookupIn, request: Request,
                       principal: Annotated[Principal, Depends(project_access("service"))]
                       ) -> dict[str, Any]:
    """What reviewers are shown of each known item (other services ask; the scorer owns
    items): ``{"items": {item_id: payload}}``, unknown ids left out."""
    async with runtime_of(request).engine.connect() as conn:
        return {"items": await store.reviewer_payloads(conn, project, body.item_ids)}


@router.post("/projects/{project}/select")
async def select(project: Project, body: SelectIn, request: Request,
                 principal: Annotated[Principal, Depends(project_access("admin"))]) -> dict:
    """Pick the pool items that would teach the model most and queue them for review."""
    diversity = None if body.diversity == "none" else body.diversity
    try:
        return await _svc(request).select(project, body.budget, body.strategy, diversity)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc


@router.get("/projects/{project}/config", response_model=SelectionSettings)
async def get_config(project: Project, request: Request,
                     principal: Annotated[Principal, Depends(project_access("labeler"))]) -> Any:
    """The project's selection settings in force here (changed at the labels service:
    ``PATCH :8003/v1/projects/{project}`` with a ``selection`` section)."""
    return await _svc(request).config(project)
