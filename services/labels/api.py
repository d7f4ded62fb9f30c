"""HTTP routes of the labels service: labels, versions, diffs, reverts, trace, export,
import, projects, members, users, tokens and the audit log.

Every route passes through ``shared.auth`` before it touches data; every change
writes its audit entry in the same transaction as the change itself.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import select, update

from shared.auth import (
    ROLES,
    CurrentPrincipal,
    Principal,
    add_member,
    authorize,
    authorize_global,
    ensure_user,
    is_sensitive,
    issue_token,
    project_access,
    revoke_token,
)
from shared.bus import validation_reason
from shared.db import insert_ignoring_duplicates
from shared.events import PROJECT_PATTERN, LabelEvent
from shared.service import runtime_of
from shared.tables import api_tokens

from . import audit, export, store
from .audit import Actor
from .labelstudio import LabelStudioFormatError, parse_export
from .revert import RevertSelector
from .tables import import_refs, project_members, users
from .versions import unknown_labels

router = APIRouter(prefix="/v1", tags=["labels"])

Labeler = Annotated[Principal, Depends(project_access("labeler"))]
Reviewer = Annotated[Principal, Depends(project_access("reviewer"))]
Admin = Annotated[Principal, Depends(project_access("admin"))]
MAX_IMPORT_BYTES = 200 * 1024 * 1024


def _engine(request: Request):
    return runtime_of(request).engine


def _fail(exc: Exception) -> HTTPException:
    """Store errors become 4xx with the store's message."""
    if isinstance(exc, store.NotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))
    if isinstance(exc, store.Conflict):
        return HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc))


async def _view(conn, project: str, version: str | None, as_of: datetime | None) -> store.View:
    try:
        return await store.resolve_view(conn, project, version, as_of)
    except (store.NotFound, ValueError) as exc:
        raise _fail(exc) from exc


# --- labels ----------------------------------------------------------------------------------


@router.get("/projects/{project}/labels")
async def get_current_labels(
    project: str,
    request: Request,
    principal: Labeler,
    version: Annotated[str | None, Query(description="version number or name")] = None,
    as_of: Annotated[datetime | None, Query(description="the labels that counted then")] = None,
    include_auto: bool = True,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The current label of every item (or as of a version or moment), with its provenance."""
    async with _engine(request).connect() as conn:
        view = await _view(conn, project, version, as_of)
        rows = await store.current_labels(
            conn, project, include_auto=include_auto, limit=limit, offset=offset, view=view
        )
        counts = await store.count_events(conn, project)
    return {
        "project": project,
        "view": view.description,
        "version": view.version,
        "count": len(rows),
        "events_by_source": counts,
        "labels": rows,
    }


class LabelsIn(BaseModel):
    labels: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)


@router.post("/projects/{project}/labels", status_code=status.HTTP_201_CREATED)
async def submit_labels(
    project: str, body: LabelsIn, request: Request, principal: Reviewer
) -> dict[str, Any]:
    """Store labels given directly (corrections, adjudications); all or nothing."""
    events: list[LabelEvent] = []
    problems: list[str] = []
    for index, raw in enumerate(body.labels):
        raw = {"labeler_id": principal.user_id, **raw, "project": project}
        if raw["labeler_id"] != principal.user_id and principal.role != "service":
            problems.append(f"labels[{index}]: only a service may label as another user")
            continue
        try:
            events.append(LabelEvent.model_validate(raw))
        except ValidationError as exc:
            problems.append(f"labels[{index}]: {validation_reason(exc)}")
    async with _engine(request).begin() as conn:
        if not problems:
            problems = await _label_problems(conn, project, events)
        if problems:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=problems)
        inserted = await store.append_events(conn, events)
        await audit.record(
            conn, Actor.of(principal, request), "labels.submit", project=project,
            detail={"events": [str(e.event_id) for e in events], "inserted": inserted},
        )  # fmt: skip
    return {"inserted": inserted, "event_ids": [str(e.event_id) for e in events]}


async def _label_problems(conn, project: str, events: list[LabelEvent]) -> list[str]:
    options = (await store.label_options_of(conn, [project]))[project]
    problems = [
        f"label {label!r} is not in project {project!r}'s labels {options}"
        for label in unknown_labels(options, (e.label for e in events))
    ]
    for item in sorted({e.item_id for e in events}):
        if not await store.item_known(conn, project, item):
            problems.append(f"unknown item {item!r} in project {project!r}")
    return problems


# --- projects and members --------------------------------------------------------------------


class ProjectSettings(BaseModel):
    label_options: list[str] | None = Field(
        None, description="allowed labels; null accepts any label"
    )
    sensitive: bool = False
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("label_options")
    @classmethod
    def _distinct(cls, options: list[str] | None) -> list[str] | None:
        if options is not None:
            if not options or any(not o or len(o) > 256 for o in options):
                raise ValueError("label options must be 1-256 characters, at least one")
            if len(set(options)) != len(options):
                raise ValueError("label options must be distinct")
        return options


@router.get("/projects/{project}")
async def get_project(project: str, request: Request, principal: Labeler) -> dict[str, Any]:
    async with _engine(request).connect() as conn:
        row = await store.get_project(conn, project)
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"project {project!r} has no settings yet"
        )
    return row


@router.put("/projects/{project}")
async def put_project(
    project: str, body: ProjectSettings, request: Request, principal: Admin
) -> dict[str, Any]:
    """Create or change a project's label schema, sensitivity and settings."""
    if not re.fullmatch(PROJECT_PATTERN, project):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="invalid project name")
    async with _engine(request).begin() as conn:
        new, old = await store.put_project(conn, project, **body.model_dump())
        await audit.record(
            conn, Actor.of(principal, request), "project.settings", project=project,
            detail={"before": _jsonable(old), "after": body.model_dump()},
        )  # fmt: skip
    service = getattr(request.app.state, "service", None)
    if service is not None:
        service.forget_schema(project)
    return new


def _jsonable(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


@router.get("/projects/{project}/members")
async def list_members(project: str, request: Request, principal: Admin) -> dict[str, Any]:
    async with _engine(request).connect() as conn:
        rows = await conn.execute(
            select(project_members).where(project_members.c.project == project)
        )
        return {"project": project, "members": [dict(r._mapping) for r in rows.all()]}


class MemberIn(BaseModel):
    role: Literal["labeler", "reviewer", "admin", "service"]


@router.put("/projects/{project}/members/{user_id}")
async def put_member(
    project: str, user_id: str, body: MemberIn, request: Request, principal: Admin
) -> dict[str, Any]:
    async with _engine(request).begin() as conn:
        added = await add_member(conn, project, user_id, body.role)
        if not added:
            await conn.execute(
                update(project_members)
                .where(project_members.c.project == project, project_members.c.user_id == user_id)
                .values(role=body.role)
            )
        await audit.record(
            conn, Actor.of(principal, request), "member.put", project=project, target=user_id,
            detail={"role": body.role, "added": added},
        )  # fmt: skip
    runtime_of(request).auth.forget()
    return {"project": project, "user_id": user_id, "role": body.role}


@router.delete("/projects/{project}/members/{user_id}")
async def delete_member(
    project: str, user_id: str, request: Request, principal: Admin
) -> dict[str, Any]:
    """Remove a member; their tokens for this project are revoked with it."""
    async with _engine(request).begin() as conn:
        removed = await conn.execute(
            project_members.delete().where(
                project_members.c.project == project, project_members.c.user_id == user_id
            )
        )
        if not removed.rowcount:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{user_id!r} is not a member")
        tokens = (
            (
                await conn.execute(
                    select(api_tokens.c.id).where(
                        api_tokens.c.user_id == user_id,
                        api_tokens.c.project == project,
                        api_tokens.c.revoked_at.is_(None),
                    )
                )
            )
            .scalars()
            .all()
        )
        for token_id in tokens:
            await revoke_token(conn, token_id)
        await audit.record(
            conn, Actor.of(principal, request), "member.remove", project=project,
            target=user_id, detail={"revoked_tokens": list(tokens)},
        )  # fmt: skip
    runtime_of(request).auth.forget()
    return {"project": project, "user_id": user_id, "removed": True, "revoked_tokens": tokens}


# --- versions, diff, revert, trace -----------------------------------------------------------


class VersionIn(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=128, pattern=r"^\D.*$")
    message: str = Field("", max_length=10_000)


@router.get("/projects/{project}/versions")
async def list_versions(project: str, request: Request, principal: Labeler) -> dict[str, Any]:
    async with _engine(request).connect() as conn:
        return {"project": project, "versions": await store.list_versions(conn, project)}


@router.post("/projects/{project}/versions", status_code=status.HTTP_201_CREATED)
async def create_version(
    project: str, body: VersionIn, request: Request, principal: Reviewer
) -> dict[str, Any]:
    """Freeze which label events count now as a named, immutable version."""
    async with _engine(request).begin() as conn:
        try:
            row = await store.create_snapshot(
                conn, project, author=principal.user_id, message=body.message, name=body.name
            )
        except store.Conflict as exc:
            raise _fail(exc) from exc
        await audit.record(
            conn, Actor.of(principal, request), "version.create", project=project,
            target=str(row["number"]), detail={"name": body.name, "message": body.message},
        )  # fmt: skip
    return row


@router.get("/projects/{project}/versions/{version}")
async def get_version(
    project: str, version: str, request: Request, principal: Labeler
) -> dict[str, Any]:
    async with _engine(request).connect() as conn:
        try:
            return await store.version_row(conn, project, version)
        except store.NotFound as exc:
            raise _fail(exc) from exc


@router.get("/projects/{project}/diff")
async def diff_versions(
    project: str,
    request: Request,
    principal: Labeler,
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
    message: str = Field("", max_length=10_000)
    name: str | None = Field(None, min_length=1, max_length=128, pattern=r"^\D.*$")
    dry_run: bool = False


def _selector_of(body: RevertIn) -> RevertSelector:
    fields = body.model_dump(exclude={"message", "name", "dry_run"})
    return RevertSelector.model_validate(fields)


@router.post("/projects/{project}/reverts")
async def revert_labels(
    project: str, body: RevertIn, request: Request, principal: Admin
) -> dict[str, Any]:
    """Revert by batch, labeler, guideline, time window or event ids; dry_run previews."""
    async with _engine(request).begin() as conn:
        try:
            result = await store.revert(
                conn, project, _selector_of(body), author=principal.user_id,
                message=body.message, name=body.name, dry_run=body.dry_run,
            )  # fmt: skip
        except (store.Conflict, ValueError) as exc:
            raise _fail(exc) from exc
        if not body.dry_run:
            await audit.record(
                conn, Actor.of(principal, request), "version.revert", project=project,
                target=str(result["version"]["number"]),
                detail={"selector": result["version"]["selector"], "events": result["events"],
                        "items": result["items"], "message": body.message},
            )  # fmt: skip
    return result


class UnrevertIn(BaseModel):
    message: str = Field("", max_length=10_000)
    name: str | None = Field(None, min_length=1, max_length=128, pattern=r"^\D.*$")
    dry_run: bool = False


@router.post("/projects/{project}/versions/{version}/revert")
async def revert_version(
    project: str, version: str, body: UnrevertIn, request: Request, principal: Admin
) -> dict[str, Any]:
    """Undo what a revert (or unrevert) version changed, as a new version."""
    async with _engine(request).begin() as conn:
        try:
            result = await store.unrevert(
                conn, project, version, author=principal.user_id, message=body.message,
                name=body.name, dry_run=body.dry_run,
            )  # fmt: skip
        except (store.NotFound, store.Conflict, ValueError) as exc:
            raise _fail(exc) from exc
        if not body.dry_run:
            await audit.record(
                conn, Actor.of(principal, request), "version.unrevert", project=project,
                target=str(result["version"]["number"]),
                detail={"reverts": result["version"]["reverts"], "events": result["events"]},
            )  # fmt: skip
    return result


@router.get("/projects/{project}/items/{item_id}/trace")
async def trace_item(
    project: str,
    item_id: str,
    request: Request,
    principal: Labeler,
    version: str | None = None,
    as_of: datetime | None = None,
) -> dict[str, Any]:
    """Which event, labeler, batch, guideline and model pre-label produced the item's label."""
    async with _engine(request).connect() as conn:
        view = await _view(conn, project, version, as_of)
        try:
            return {"project": project, **await store.trace(conn, project, item_id, view)}
        except store.NotFound as exc:
            raise _fail(exc) from exc


# --- export and import -----------------------------------------------------------------------


@router.get("/projects/{project}/export")
async def export_labels(
    project: str,
    request: Request,
    principal: Labeler,
    format: Literal["jsonl", "csv", "labelstudio"] = "jsonl",
    version: str | None = None,
    as_of: datetime | None = None,
    from_name: str = "label",
    to_name: str = "text",
) -> StreamingResponse:
    """Stream a version's labels: current labels as JSONL/CSV, counted events as Label Studio."""
    engine = _engine(request)
    async with engine.connect() as conn:
        view = await _view(conn, project, version, as_of)
        payloads_visible = principal.sees_payloads(project, await is_sensitive(conn, project))

    async def body() -> AsyncIterator[bytes]:
        async with engine.connect() as conn:
            if format == "labelstudio":
                side = await engine.connect()
                try:
                    chunks = export.labelstudio(
                        store.stream_counting_events(conn, project, view),
                        lambda ids: _payloads(side, project, ids, payloads_visible),
                        lambda ids: store.import_refs_of(side, ids),
                        from_name=from_name,
                        to_name=to_name,
                    )
                    async for chunk in chunks:
                        yield chunk
                finally:
                    await side.close()
                return
            writer = export.jsonl if format == "jsonl" else export.csv_rows
            async for chunk in writer(store.stream_current(conn, project, view)):
                yield chunk

    suffix = {"jsonl": "jsonl", "csv": "csv", "labelstudio": "json"}[format]
    name = f"{project}-{'v' + str(view.version) if version else 'head'}.{suffix}"
    return StreamingResponse(
        body(),
        media_type=export.MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def _payloads(conn, project: str, ids: list[str], visible: bool) -> dict[str, Any]:
    if not visible:
        return {}
    return await store.payloads_of(conn, project, ids)


async def import_labelstudio_export(
    conn,
    project: str,
    data: bytes,
    actor: Actor,
    *,
    label_key: str | None = None,
    item_key: str | None = None,
    batch_id: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Parse, check against the project's schema, then store all of it or nothing.

    Shared by the HTTP route and the CLI. Raises ValueError (incl.
    LabelStudioFormatError) with every problem before anything is written.
    """
    result = parse_export(
        data, project=project, label_key=label_key, item_key=item_key, batch_id=batch_id
    )
    options = (await store.label_options_of(conn, [project]))[project]
    unknown = unknown_labels(options, (e.label for e in result.events))
    if unknown:
        raise ValueError(f"labels not in project {project!r}'s labels {options}: {unknown}")
    summary = {
        "batch_id": result.batch_id,
        "tasks": len(result.items),
        "annotations": len(result.events),
        "skipped": [s.__dict__ for s in result.skipped],
        "ignored": len(result.ignored),
        "dry_run": dry_run,
    }
    if dry_run:
        return {**summary, "inserted": 0}
    inserted = await store.append_events(conn, result.events)
    await store.store_item_payloads(conn, project, result.items)
    await insert_ignoring_duplicates(
        conn,
        import_refs,
        [{"event_id": str(e), "ref": ref.__dict__} for e, ref in result.refs.items()],
    )
    await audit.record(
        conn, actor, "labels.import", project=project, target=result.batch_id,
        detail={"format": "labelstudio", "inserted": inserted, "annotations": len(result.events),
                "skipped": len(result.skipped)},
    )  # fmt: skip
    return {**summary, "inserted": inserted}


@router.post("/projects/{project}/imports/labelstudio")
async def import_labelstudio(
    project: str,
    request: Request,
    principal: Reviewer,
    label_key: str | None = None,
    item_key: str | None = None,
    batch_id: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Import a Label Studio JSON export (the request body); all annotations or none."""
    data = await request.body()
    if len(data) > MAX_IMPORT_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail="import file too large")
    async with _engine(request).begin() as conn:
        try:
            return await import_labelstudio_export(
                conn, project, data, Actor.of(principal, request), label_key=label_key,
                item_key=item_key, batch_id=batch_id, dry_run=dry_run,
            )  # fmt: skip
        except LabelStudioFormatError as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail={"message": "not a Label Studio JSON export", "problems": exc.problems},
            ) from exc
        except ValueError as exc:
            raise _fail(exc) from exc


# --- users, tokens, audit --------------------------------------------------------------------


class UserIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=256)
    display_name: str | None = Field(None, max_length=256)


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(body: UserIn, request: Request, principal: CurrentPrincipal) -> dict:
    authorize_global(principal)
    async with _engine(request).begin() as conn:
        await ensure_user(conn, body.user_id)
        if body.display_name is not None:
            await conn.execute(
                update(users).where(users.c.user_id == body.user_id)
                .values(display_name=body.display_name)
            )  # fmt: skip
        await audit.record(
            conn, Actor.of(principal, request), "user.create", target=body.user_id,
            detail=body.model_dump(),
        )  # fmt: skip
    return body.model_dump()


@router.get("/users")
async def list_users(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    authorize_global(principal)
    async with _engine(request).connect() as conn:
        rows = await conn.execute(select(users).order_by(users.c.user_id).limit(10_000))
        return {"users": [dict(r._mapping) for r in rows.all()]}


@router.post("/users/{user_id}/disable")
async def disable_user(user_id: str, request: Request, principal: CurrentPrincipal) -> dict:
    """A disabled user's tokens stop working (within the 2 s auth cache)."""
    authorize_global(principal)
    async with _engine(request).begin() as conn:
        result = await conn.execute(
            update(users).where(users.c.user_id == user_id, users.c.disabled_at.is_(None))
            .values(disabled_at=datetime.now().astimezone())
        )  # fmt: skip
        if not result.rowcount:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no active user {user_id!r}")
        await audit.record(conn, Actor.of(principal, request), "user.disable", target=user_id)
    runtime_of(request).auth.forget()
    return {"user_id": user_id, "disabled": True}


class TokenIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=256)
    role: Literal["labeler", "reviewer", "admin", "service"]
    project: str = Field(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
    ttl_days: float | None = Field(None, gt=0, le=3650)


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
async def create_api_token(body: TokenIn, request: Request, principal: CurrentPrincipal) -> dict:
    """A global admin may issue any token; a project admin tokens for its project, no service."""
    if body.project == "*" or body.role == "service":
        authorize_global(principal)
    else:
        authorize(principal, body.project, "admin")
    async with _engine(request).begin() as conn:
        token, token_id = await issue_token(
            conn, body.user_id, body.role, body.project, body.ttl_days
        )
        await audit.record(
            conn, Actor.of(principal, request), "token.create",
            project=_project_or_none(body.project), target=str(token_id),
            detail=body.model_dump(),
        )  # fmt: skip
    return {"token": token, "id": token_id, **body.model_dump()}


def _project_or_none(project: str) -> str | None:
    return None if project == "*" else project


@router.get("/tokens")
async def list_tokens(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    """A global admin sees every token; anyone else their own. Never the secret."""
    query = select(
        api_tokens.c.id, api_tokens.c.user_id, api_tokens.c.role, api_tokens.c.project,
        api_tokens.c.created_at, api_tokens.c.expires_at, api_tokens.c.revoked_at,
    ).order_by(api_tokens.c.id)  # fmt: skip
    if not principal.is_global:
        query = query.where(api_tokens.c.user_id == principal.user_id)
    async with _engine(request).connect() as conn:
        return {"tokens": [dict(r._mapping) for r in (await conn.execute(query)).all()]}


@router.post("/tokens/{token_id}/revoke")
async def revoke_api_token(
    token_id: int, request: Request, principal: CurrentPrincipal
) -> dict[str, Any]:
    """Revoke a token: its owner, a global admin, or an admin of the token's project."""
    async with _engine(request).begin() as conn:
        row = (await conn.execute(select(api_tokens).where(api_tokens.c.id == token_id))).first()
        allowed = row is not None and (
            principal.is_global
            or row.user_id == principal.user_id
            or (row.project != "*" and principal.covers(row.project) and principal.may("admin"))
        )
        if not allowed:
            # The same answer for a token that does not exist and one that is not yours.
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no token {token_id} of yours")
        revoked = await revoke_token(conn, token_id)
        await audit.record(
            conn, Actor.of(principal, request), "token.revoke",
            project=_project_or_none(row.project), target=str(token_id),
            detail={"user_id": row.user_id, "was_live": revoked},
        )  # fmt: skip
    runtime_of(request).auth.forget()
    return {"id": token_id, "revoked": True, "was_live": revoked}


@router.get("/audit")
async def read_audit(
    request: Request,
    principal: CurrentPrincipal,
    project: str | None = None,
    action: str | None = None,
    after_id: Annotated[int, Query(ge=0)] = 0,
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


__all__ = ["ROLES", "import_labelstudio_export", "router"]
