"""HTTP routes of the scorer: models, training, synchronous scoring, item registration."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from shared.auth import Principal, project_access
from shared.events import CANDIDATES_MAX, Candidate, ItemEvent
from shared.limits import FINITE, ItemId, JsonObject, Name, Project, Text
from shared.peers import PeerError
from shared.projects import SelectionSettings
from shared.service import runtime_of, service_of

from . import rewards, store
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


class TrainedOut(BaseModel):
    version: str = Field(description="the new model version, now serving")
    label_count: int
    metrics: dict[str, Any] = Field(description="accuracy figures, classes, label set")


class ModelRow(BaseModel):
    version: str
    created_at: datetime
    label_count: int
    metrics: dict[str, Any]


class ModelsOut(BaseModel):
    project: str
    models: list[ModelRow]


class PredictOut(BaseModel):
    model_version: str
    classes: list[str]
    probs: list[list[float]] = Field(description="one row per input, in the classes' order")


class RegisteredOut(BaseModel):
    project: str
    received: int
    new: int = Field(description="items not registered before")


class LookupOut(BaseModel):
    items: dict[str, dict[str, Any]] = Field(description="item_id -> what reviewers see")


class SelectedOut(BaseModel):
    project: str
    selected: list[str] = Field(description="the items queued for review, best first")
    model_version: str | None
    strategy: str
    diversity: str | None
    pool: int = Field(description="unlabelled items the choice was made from")
    priorities: list[float] = Field(default_factory=list)


def _svc(request: Request) -> ScorerService:
    return service_of(request)


@router.post("/projects/{project}/train", response_model=TrainedOut,
             responses={409: {"description": "too few labels to train on"}})
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


@router.get("/projects/{project}/models", response_model=ModelsOut)
async def models(
    project: Project,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("labeler"))],
) -> dict:
    async with runtime_of(request).engine.connect() as conn:
        return {"project": project, "models": await store.list_models(conn, project)}


@router.post("/projects/{project}/predict", response_model=PredictOut)
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


class ModelComparisonOut(BaseModel):
    """The loop's model against the baselines on held-out gold (``available`` false, with
    a ``reason``, when there is nothing to judge on)."""

    model_config = ConfigDict(extra="allow")
    project: str
    label_set_version: int | None = None  # the labels service's label-set version number
    label_events: int
    available: bool
    reason: str | None = None
    kind: str | None = Field(None, description="features or text")
    budget: int | None = Field(None, description="labeled items each arm trains on")
    gold_items: int | None = None
    arms: dict[str, Any] | None = Field(
        None, description="per arm: accuracy on gold with its interval, McNemar vs the loop")
    curves: dict[str, Any] | None = Field(None, description="accuracy per budget, per arm")


class RewardTrainedOut(BaseModel):
    version: str
    pair_count: int
    metrics: dict[str, Any] = Field(description="held-out pairwise accuracy and the split")


class RewardModelRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: str
    created_at: datetime
    pair_count: int
    metrics: dict[str, Any]


class RewardModelsOut(BaseModel):
    project: str
    models: list[RewardModelRow]


class RewardScoresOut(BaseModel):
    project: str
    version: str
    scores: list[float] = Field(description="one a text, higher is better")


class SelectedComparison(BaseModel):
    comparison_id: str
    priority: float | None


class ComparisonsSelectedOut(BaseModel):
    project: str
    strategy: str
    reward_model: str | None
    selected: list[SelectedComparison]
    pool_pairs: int


@router.get("/projects/{project}/comparison", response_model=ModelComparisonOut)
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


@router.post("/projects/{project}/items", response_model=RegisteredOut)
async def register_items(
    project: Project,
    body: RegisterIn,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("admin", creates=True))],
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


@router.post("/projects/{project}/items/lookup", response_model=LookupOut)
async def lookup_items(project: Project, body: LookupIn, request: Request,
                       principal: Annotated[Principal, Depends(project_access("service"))]
                       ) -> dict[str, Any]:
    """What reviewers are shown of each known item (other services ask; the scorer owns
    items): ``{"items": {item_id: payload}}``, unknown ids left out."""
    async with runtime_of(request).engine.connect() as conn:
        return {"items": await store.reviewer_payloads(conn, project, body.item_ids)}


@router.post("/projects/{project}/select", response_model=SelectedOut)
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


# --- the reward model (preferences) ------------------------------------------------------


class PromptIn(BaseModel):
    model_config = FINITE
    prompt_id: Annotated[str, Field(min_length=1, max_length=160, pattern=r"^[A-Za-z0-9_.-]+$")]
    prompt: Text
    candidates: list[Candidate] = Field(min_length=2, max_length=CANDIDATES_MAX)


class CompareSelectIn(BaseModel):
    model_config = FINITE
    prompts: list[PromptIn] = Field(min_length=1, max_length=10_000)
    budget: int = Field(ge=1, le=10_000)
    strategy: Literal["active", "random"] = "active"
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="for 'random'")
    exclude: list[ItemId] = Field(default_factory=list, max_length=100_000,
                                  description="comparison ids already compared")


@router.post("/projects/{project}/reward/train", response_model=RewardTrainedOut)
async def train_reward(
    project: Project, request: Request,
    principal: Annotated[Principal, Depends(project_access("admin"))],
) -> dict:
    """Train a new Bradley-Terry reward-model version on the project's counted preferences."""
    svc = _svc(request)
    try:
        return await rewards.train_reward(svc.runtime, svc.reward_locks[project], project)
    except rewards.NotEnoughPreferences as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc


@router.get("/projects/{project}/reward/models", response_model=RewardModelsOut)
async def reward_models(
    project: Project, request: Request,
    principal: Annotated[Principal, Depends(project_access("reviewer"))],
) -> dict:
    """The project's reward-model versions with their held-out pairwise accuracy."""
    async with runtime_of(request).engine.connect() as conn:
        return {"project": project, "models": await store.list_reward_models(conn, project)}


class ScoreIn(BaseModel):
    model_config = FINITE
    texts: list[Text] = Field(min_length=1, max_length=10_000)


@router.post("/projects/{project}/reward/score", response_model=RewardScoresOut)
async def score_texts(
    project: Project, body: ScoreIn, request: Request,
    principal: Annotated[Principal, Depends(project_access("reviewer"))],
) -> dict:
    """The newest reward model's score of each text (higher is better)."""
    async with runtime_of(request).engine.connect() as conn:
        model = await store.latest_reward_model(conn, project)
    if model is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"project {project!r} has no reward model yet")
    return {"project": project, "version": model.version,
            "scores": [round(float(x), 6) for x in model.score(body.texts)]}


@router.post("/projects/{project}/reward/select", status_code=202,
             response_model=ComparisonsSelectedOut)
async def select_comparisons(
    project: Project, body: CompareSelectIn, request: Request,
    principal: Annotated[Principal, Depends(project_access("admin"))],
) -> dict:
    """Queue the ``budget`` candidate pairs the reward model is least sure of (``active``,
    one pair a prompt, diverse) or random ones, as comparisons for review."""
    ids = [p.prompt_id for p in body.prompts]
    if len(set(ids)) != len(ids):
        raise HTTPException(422, detail="prompt ids must be distinct")
    pool = [rewards.PromptCandidates(p.prompt_id, p.prompt, p.candidates) for p in body.prompts]
    try:
        return await rewards.select_comparisons(runtime_of(request), project, pool,
                                                body.budget, body.strategy, body.seed,
                                                frozenset(body.exclude))
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
