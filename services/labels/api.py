"""HTTP routes of the labels service: labels, versions, diffs, reverts, trace, export,
import, projects, members, users, tokens and the audit log.

Every route passes through ``shared.auth`` before it touches data; every change
writes its audit entry in the same transaction as the change itself.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from shared.auth import (
    ROLES,
    CurrentPrincipal,
    Principal,
    authorize,
    authorize_global,
    project_access,
)
from shared.limits import (
    FINITE,
    INT32_MAX,
    PROJECT_PATTERN,
    ItemId,
    Message,
    Name,
    Project,
    UserId,
    VersionName,
)
from shared.peers import PeerError
from shared.service import runtime_of
from shared.tables import project_members

from . import actions, audit, export, preferences, store
from .audit import Actor
from .labelstudio import ANNOTATOR_DOMAIN, LabelStudioFormatError
from .responses import (
    AuditOut,
    DiffOut,
    ImportOut,
    LabelsOut,
    LabelsStored,
    MemberOut,
    MemberRemoved,
    MembersOut,
    ProjectOut,
    RevertOut,
    TokenCreated,
    TokenRevoked,
    TokensOut,
    TraceOut,
    UserDisabled,
    UserOut,
    UsersOut,
    Version,
    VersionsOut,
)
from .revert import RevertSelector

router = APIRouter(prefix="/v1", tags=["labels"])

Labeler = Annotated[Principal, Depends(project_access("labeler"))]
Reviewer = Annotated[Principal, Depends(project_access("reviewer"))]
Admin = Annotated[Principal, Depends(project_access("admin"))]
# The routes that declare a project or bring it labels: no 404 for a project not known yet.
DeclaringAdmin = Annotated[Principal, Depends(project_access("admin", creates=True))]
ContributingReviewer = Annotated[Principal, Depends(project_access("reviewer", creates=True))]
# The routes that take a file: LOOPWISE_MAX_UPLOAD_BYTES at the door (shared.request_guard).
IMPORT_PATHS = (r"/v1/projects/[^/]+/imports/labelstudio",)


def _engine(request: Request):
    return runtime_of(request).engine


def _ctx(request: Request) -> actions.Context:
    """The use cases' view of this process: its engine, its bus, its caches."""
    runtime = runtime_of(request)
    service = getattr(request.app.state, "service", None)
    return actions.Context(
        engine=runtime.engine, publish=runtime.bus.publish, forget_auth=runtime.auth.forget,
        forget_schema=service.forget_schema if service is not None else lambda p: None,
        lookup_items=actions.scorer_lookup(runtime.peers))


def _fail(exc: Exception) -> HTTPException:
    """Use-case errors become 4xx (or a 503 when only publishing failed) with the message."""
    if isinstance(exc, store.NotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))
    if isinstance(exc, store.Conflict):
        return HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))
    if isinstance(exc, actions.Forbidden):
        return HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc))
    if isinstance(exc, actions.NotPublished | PeerError):
        return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc))
    if isinstance(exc, ValueError) and exc.args and isinstance(exc.args[0], list):
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=exc.args[0])
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc))


# The answers of a use case's errors (_fail) besides those every route has.
CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"description": "conflicts with what is stored (a version name in use)"},
    503: {"description": "stored, but publishing to the stream failed, or a peer service "
                         "is unreachable: retry (an event_id makes it harmless)"},
}

USE_CASE_ERRORS = (store.NotFound, store.Conflict, actions.Forbidden, actions.NotPublished,
                   PeerError, ValueError)

async def _view(conn, project: Project, version: str | None, as_of: datetime | None) -> store.View:
    try:
        return await store.resolve_view(conn, project, version, as_of)
    except (store.NotFound, ValueError) as exc:
        raise _fail(exc) from exc


# --- labels ----------------------------------------------------------------------------------


@router.get("/projects/{project}/labels", response_model=LabelsOut)
async def get_current_labels(
    project: Project,
    request: Request,
    principal: Labeler,
    version: Annotated[str | None, Query(description="version number or name")] = None,
    as_of: Annotated[datetime | None, Query(description="the labels that counted then")] = None,
    include_auto: bool = True,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The current label of every item (or as of a version or moment), with its provenance.

    Reviewers and admins read every item's deciding label with all of its provenance
    (the model's guess, gold answer, planted and audit marks). A labeler reads only
    their own labels, with no field that tells the model's guess or which tasks were
    gold or audits: what others answered, or the model, must not reach a labeler who
    may hold the same item blind."""
    async with _engine(request).connect() as conn:
        view = await _view(conn, project, version, as_of)
        if not principal.may_in(project, "reviewer"):
            rows = await store.own_labels(conn, project, principal.user_id, view,
                                          limit=limit, offset=offset)
            return {"project": project, "view": view.description, "version": view.version,
                    "count": len(rows), "labeler_id": principal.user_id, "labels": rows}
        rows = await store.current_labels(
            conn, project, include_auto=include_auto, limit=limit, offset=offset, view=view
        )
        counts = await store.count_events(conn, project)
        rows = preferences.visible(rows, principal.sees_payloads(
            project, await store.is_sensitive(conn, project)))
    return {
        "project": project,
        "view": view.description,
        "version": view.version,
        "count": len(rows),
        "events_by_source": counts,
        "labels": rows,
    }


class LabelHistoryOut(BaseModel):
    project: str
    view: str = Field(description="which labels count: current, a version, or as of a time")
    version: int | None = None
    count: int
    offset: int
    events: list[dict[str, Any]] = Field(
        description="label events that count, oldest first, with all their provenance")


@router.get("/projects/{project}/events", response_model=LabelHistoryOut)
async def get_label_history(
    project: Project,
    request: Request,
    principal: Reviewer,
    version: Annotated[str | None, Query(description="version number or name")] = None,
    as_of: Annotated[datetime | None, Query(description="the events that counted then")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The label history: every label event that counts (reverts respected), oldest first,
    with all its provenance; what a reader needs to replay the loop (each item's first
    answer before overlap, consensus and adjudication). Reviewers and admins only."""
    async with _engine(request).connect() as conn:
        view = await _view(conn, project, version, as_of)
        rows = await store.history(conn, project, view, limit=limit, offset=offset)
    return {"project": project, "view": view.description, "version": view.version,
            "count": len(rows), "offset": offset, "events": rows}


class LabelsIn(BaseModel):
    labels: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)


@router.post("/projects/{project}/labels", status_code=status.HTTP_201_CREATED,
             response_model=LabelsStored, responses=CHANGE_ERRORS)
async def submit_labels(
    project: Project, body: LabelsIn, request: Request, principal: ContributingReviewer
) -> dict[str, Any]:
    """Store labels given directly (corrections, adjudications); all or nothing. They are
    published on ``loopwise:labels`` like every other label, so every consumer sees them."""
    try:
        return await actions.submit_labels(_ctx(request), Actor.of(principal, request),
                                           principal, project, body.labels)
    except USE_CASE_ERRORS as exc:
        raise _fail(exc) from exc


# --- projects and members --------------------------------------------------------------------


@router.get("/projects/{project}", response_model=ProjectOut,
            responses={404: {"description": "unknown project, or no settings declared"}})
async def get_project(project: Project, request: Request, principal: Labeler) -> dict[str, Any]:
    """The project's settings: label schema, sensitivity, routing, selection, quality."""
    try:
        return await actions.project_settings(_ctx(request), project)
    except store.NotFound as exc:
        raise _fail(exc) from exc


@router.put("/projects/{project}", response_model=ProjectOut, responses=CHANGE_ERRORS)
async def put_project(
    project: Project, body: dict[str, Any], request: Request, principal: DeclaringAdmin
) -> dict[str, Any]:
    """Create a project or change its settings: the fields given are replaced, the sections
    (``routing``, ``selection``, ``quality``) updated field by field, the rest kept. The
    router, scorer and quality service learn the change from ``loopwise:projects``."""
    return await _change_project(project, body, request, principal)


@router.patch("/projects/{project}", response_model=ProjectOut, responses=CHANGE_ERRORS)
async def patch_project(
    project: Project, body: dict[str, Any], request: Request, principal: DeclaringAdmin
) -> dict[str, Any]:
    """The same as PUT: a partial change of the settings document."""
    return await _change_project(project, body, request, principal)


async def _change_project(project: Project, body: dict[str, Any], request: Request,
                          principal: Principal) -> dict[str, Any]:
    if not re.fullmatch(PROJECT_PATTERN, project):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="invalid project name")
    try:
        return await actions.change_project(_ctx(request), Actor.of(principal, request),
                                            project, body)
    except USE_CASE_ERRORS as exc:
        raise _fail(exc) from exc


@router.get("/projects/{project}/members", response_model=MembersOut)
async def list_members(project: Project, request: Request, principal: Admin) -> dict[str, Any]:
    async with _engine(request).connect() as conn:
        rows = await conn.execute(
            select(project_members).where(project_members.c.project == project)
        )
        return {"project": project, "members": [dict(r._mapping) for r in rows.all()]}


class MemberIn(BaseModel):
    role: Literal["labeler", "reviewer", "admin", "service"]


@router.put("/projects/{project}/members/{user_id}", response_model=MemberOut)
async def put_member(
    project: Project, user_id: UserId, body: MemberIn, request: Request, principal: Admin
) -> dict[str, Any]:
    return await actions.put_member(_ctx(request), Actor.of(principal, request), project,
                                    user_id, body.role)


@router.delete("/projects/{project}/members/{user_id}", response_model=MemberRemoved,
               responses=CHANGE_ERRORS)
async def delete_member(
    project: Project, user_id: UserId, request: Request, principal: Admin
) -> dict[str, Any]:
    """Remove a member; their tokens for this project are revoked with it."""
    try:
        return await actions.remove_member(_ctx(request), Actor.of(principal, request),
                                           project, user_id)
    except USE_CASE_ERRORS as exc:
        raise _fail(exc) from exc


# --- versions, diff, revert, trace -----------------------------------------------------------


# A version's name: never a number (a number names a version by its position).
NewVersionName = Annotated[VersionName, Field(pattern=r"^\D.*$")]


class VersionIn(BaseModel):
    name: NewVersionName | None = None
    message: Message = ""


@router.get("/projects/{project}/versions", response_model=VersionsOut)
async def list_versions(project: Project, request: Request, principal: Reviewer) -> dict[str, Any]:
    async with _engine(request).connect() as conn:
        return {"project": project, "versions": await store.list_versions(conn, project)}


@router.post("/projects/{project}/versions", status_code=status.HTTP_201_CREATED,
             response_model=Version, responses=CHANGE_ERRORS)
async def create_version(
    project: Project, body: VersionIn, request: Request, principal: Reviewer
) -> dict[str, Any]:
    """Freeze which label events count now as a named, immutable version."""
    try:
        return await actions.create_version(_ctx(request), Actor.of(principal, request),
                                            project, message=body.message, name=body.name)
    except USE_CASE_ERRORS as exc:
        raise _fail(exc) from exc


@router.get("/projects/{project}/versions/{version}", response_model=Version)
async def get_version(
    project: Project, version: VersionName, request: Request, principal: Reviewer
) -> dict[str, Any]:
    async with _engine(request).connect() as conn:
        try:
            return await store.version_row(conn, project, version)
        except store.NotFound as exc:
            raise _fail(exc) from exc


@router.get("/projects/{project}/diff", response_model=DiffOut)
async def diff_versions(
    project: Project,
    request: Request,
    principal: Reviewer,
    from_: Annotated[str, Query(alias="from", description="version number, name or 'head'")],
    to: Annotated[str, Query(description="version number, name or 'head'")] = "head",
) -> dict[str, Any]:
    """Labels added, removed and changed, by item, between two versions."""
    async with _engine(request).connect() as conn:
        views = [
            await store.head_view(conn, project)
            if ref == "head"
            else await _view(conn, project, ref, None)
            for ref in (from_, to)
        ]
        return {"project": project, **await store.diff(conn, project, *views)}


class RevertIn(RevertSelector):
    message: Message = ""
    name: NewVersionName | None = None
    dry_run: bool = False


def _selector_of(body: RevertIn) -> RevertSelector:
    fields = body.model_dump(exclude={"message", "name", "dry_run"})
    return RevertSelector.model_validate(fields)


@router.post("/projects/{project}/reverts", response_model=RevertOut, responses=CHANGE_ERRORS)
async def revert_labels(
    project: Project, body: RevertIn, request: Request, principal: Admin
) -> dict[str, Any]:
    """Revert by batch, labeler, guideline, time window or event ids; dry_run previews."""
    try:
        return await actions.revert(
            _ctx(request), Actor.of(principal, request), project, _selector_of(body),
            message=body.message, name=body.name, dry_run=body.dry_run)
    except USE_CASE_ERRORS as exc:
        raise _fail(exc) from exc


class UnrevertIn(BaseModel):
    message: Message = ""
    name: NewVersionName | None = None
    dry_run: bool = False


@router.post("/projects/{project}/versions/{version}/revert", response_model=RevertOut,
             responses=CHANGE_ERRORS)
async def revert_version(
    project: Project, version: VersionName, body: UnrevertIn, request: Request, principal: Admin
) -> dict[str, Any]:
    """Undo what a revert (or unrevert) version changed, as a new version."""
    try:
        return await actions.unrevert(
            _ctx(request), Actor.of(principal, request), project, version,
            message=body.message, name=body.name, dry_run=body.dry_run)
    except USE_CASE_ERRORS as exc:
        raise _fail(exc) from exc


@router.get("/projects/{project}/items/{item_id}/trace", response_model=TraceOut)
async def trace_item(
    project: Project,
    item_id: ItemId,
    request: Request,
    principal: Reviewer,
    version: VersionName | None = None,
    as_of: datetime | None = None,
) -> dict[str, Any]:
    """Which event, labeler, batch, guideline and model pre-label produced the item's label."""
    async with _engine(request).connect() as conn:
        view = await _view(conn, project, version, as_of)
        try:
            found = await store.trace(conn, project, item_id, view)
        except store.NotFound as exc:
            raise _fail(exc) from exc
        if not principal.sees_payloads(project, await store.is_sensitive(conn, project)):
            if found.get("decided_by"):
                found["decided_by"] = preferences.visible([found["decided_by"]], False)[0]
            found["history"] = preferences.visible(found["history"], False)
        return {"project": project, **found}


# --- export and import -----------------------------------------------------------------------


@router.get("/projects/{project}/export", response_class=StreamingResponse,
            responses={200: {"description": "the labels as a file (Content-Disposition)",
                             "content": {media: {"schema": {"type": "string"}}
                                         for media in export.MEDIA_TYPES.values()}}})
async def export_labels(
    project: Project,
    request: Request,
    principal: Reviewer,
    format: Literal["jsonl", "csv", "labelstudio", "trl"] = "jsonl",
    version: VersionName | None = None,
    as_of: datetime | None = None,
    from_name: str = "label",
    to_name: str = "text",
    item_key: Annotated[str | None, Query(
        max_length=256, description="Label Studio: a data field to write the item id into")
    ] = None,
    annotator_domain: Annotated[str, Query(
        max_length=253, pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$",
        description="Label Studio: the email domain given to loopwise labelers")
    ] = ANNOTATOR_DOMAIN,
) -> StreamingResponse:
    """Stream a version's labels: current labels as JSONL/CSV, counted events as Label Studio,
    counted preferences as TRL reward-trainer pairs (``trl``: prompt, chosen, rejected)."""
    engine = _engine(request)
    async with engine.connect() as conn:
        view = await _view(conn, project, version, as_of)
        payloads_visible = principal.sees_payloads(project, await store.is_sensitive(conn, project))
    if format == "trl" and not payloads_visible:  # the pairs are the candidates' texts
        raise HTTPException(403, detail="this project is sensitive: only its members "
                                        "export its preferences")

    body = actions.export_chunks(_ctx(request), project, view, format,
                                 payloads_visible=payloads_visible, from_name=from_name,
                                 to_name=to_name, item_key=item_key,
                                 annotator_domain=annotator_domain)
    suffix = {"jsonl": "jsonl", "csv": "csv", "labelstudio": "json", "trl": "jsonl"}[format]
    name = f"{project}-{'v' + str(view.version) if version else 'head'}.{suffix}"
    return StreamingResponse(
        body,
        media_type=export.MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post("/projects/{project}/imports/labelstudio", response_model=ImportOut,
             responses=CHANGE_ERRORS)
async def import_labelstudio(
    project: Project,
    request: Request,
    principal: ContributingReviewer,
    label_key: str | None = None,
    item_key: str | None = None,
    batch_id: Annotated[str | None, Query(max_length=64)] = None,
    dry_run: bool = False,
    annotator_domain: Annotated[str, Query(
        max_length=253, pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$",
        description="an annotator email of this domain is that loopwise labeler (the "
                    "export's annotator_domain)")
    ] = ANNOTATOR_DOMAIN,
) -> dict[str, Any]:
    """Import a Label Studio JSON export (the request body); all annotations or none.
    The body may also be ``{"tasks": <export>, "users": <Label Studio's GET /api/users/>}``
    so that annotators named by id alone are known by their email."""
    data = await request.body()  # its size was checked at the door
    try:
        return await actions.import_labelstudio(
            _ctx(request), Actor.of(principal, request), project, data, label_key=label_key,
            item_key=item_key, batch_id=batch_id, dry_run=dry_run,
            annotator_domain=annotator_domain,
        )  # fmt: skip
    except LabelStudioFormatError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail={"message": "not a Label Studio JSON export", "problems": exc.problems},
        ) from exc
    except USE_CASE_ERRORS as exc:
        raise _fail(exc) from exc


# --- users, tokens, audit --------------------------------------------------------------------


class UserIn(BaseModel):
    user_id: UserId
    display_name: Name | None = None


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserOut,
             responses=CHANGE_ERRORS)
async def create_user(body: UserIn, request: Request, principal: CurrentPrincipal) -> dict:
    try:
        return await actions.create_user(_ctx(request), Actor.of(principal, request),
                                         principal, body.user_id, body.display_name)
    except USE_CASE_ERRORS as exc:
        raise _fail(exc) from exc


@router.get("/users", response_model=UsersOut)
async def list_users(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    try:
        return {"users": await actions.list_users(_ctx(request), principal)}
    except USE_CASE_ERRORS as exc:
        raise _fail(exc) from exc


@router.post("/users/{user_id}/disable", response_model=UserDisabled, responses=CHANGE_ERRORS)
async def disable_user(user_id: UserId, request: Request, principal: CurrentPrincipal) -> dict:
    """A disabled user's tokens stop working (within the 2 s auth cache)."""
    try:
        return await actions.disable_user(_ctx(request), Actor.of(principal, request),
                                          principal, user_id)
    except USE_CASE_ERRORS as exc:
        raise _fail(exc) from exc


class TokenIn(BaseModel):
    model_config = FINITE
    user_id: UserId
    role: Literal["labeler", "reviewer", "admin", "service"]
    project: str = Field(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
    ttl_days: float | None = Field(None, gt=0, le=3650)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated,
             responses={404: {"description": "unknown project: declare it first "
                                             "(PUT /v1/projects/{p})"}})
async def create_api_token(body: TokenIn, request: Request, principal: CurrentPrincipal) -> dict:
    """A global admin may issue any token; a project admin tokens for its project, no service.
    A project must exist (declared, or holding labels) before its tokens do: 404 otherwise,
    asked after the 403, so a denial says nothing of which projects exist."""
    try:
        return await actions.create_token(
            _ctx(request), Actor.of(principal, request), principal, body.user_id, body.role,
            body.project, body.ttl_days)
    except USE_CASE_ERRORS as exc:
        raise _fail(exc) from exc


@router.get("/tokens", response_model=TokensOut)
async def list_tokens(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    """A global admin sees every token; anyone else their own. Never the secret."""
    return {"tokens": await actions.list_tokens(_ctx(request), principal)}


@router.post("/tokens/{token_id}/revoke", response_model=TokenRevoked,
             responses={**CHANGE_ERRORS, 404: {"description": "no such token"}})
async def revoke_api_token(
    token_id: Annotated[int, Path(ge=1, le=INT32_MAX)], request: Request,
    principal: CurrentPrincipal
) -> dict[str, Any]:
    """Revoke a token: its owner, a global admin, or an admin of the token's project."""
    try:
        return await actions.revoke_token(_ctx(request), Actor.of(principal, request),
                                          principal, token_id)
    except USE_CASE_ERRORS as exc:
        raise _fail(exc) from exc


@router.get("/audit", response_model=AuditOut)
async def read_audit(
    request: Request,
    principal: CurrentPrincipal,
    project: Project | None = None,
    action: Name | None = None,
    after_id: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    """The audit log: every entry for a global admin; a project's entries for its admins."""
    if project is None:
        authorize_global(principal)
        scope = None
    else:
        authorize(principal, project, "admin")
        scope = [project]
    async with _engine(request).connect() as conn:
        rows = await audit.entries(
            conn, projects=scope, action=action, after_id=after_id, limit=limit
        )
    return {"entries": rows, "next_after_id": rows[-1]["id"] if rows else after_id}


__all__ = ["ROLES", "router"]
