"""The labels service's use cases: what an admin, a reviewer or a pipeline asks it to do.

The HTTP routes (``api.py``) and the CLI (``commands.py``) both call these, so that an
action exists once: the same checks, the same stored effect, the same audit entry and
the same events whichever door it came through (only the audit ``client`` differs:
``http:<ip> <agent>`` or ``cli@<host>``). Each raises :class:`store.NotFound`,
:class:`store.Conflict`, :class:`Forbidden` or ``ValueError``; the doors turn those into
a 404/409/403/422 or an exit status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import auth, streams
from shared.bus import validation_reason
from shared.db import insert_ignoring_duplicates
from shared.events import Event, LabelEvent, session_batch_id
from shared.peers import Peers
from shared.projects import ProjectSettings, ProjectSettingsChanged, label_problems
from shared.tables import api_tokens, project_members, users

from . import audit, export, store
from .audit import Actor
from .labelstudio import ANNOTATOR_DOMAIN, parse_export
from .revert import RevertSelector
from .tables import import_refs

Publish = Callable[[str, Sequence[Event]], Awaitable[list[str]]]
PUBLISH_CHUNK = 5_000  # events a round trip
# (project, item ids) -> the scorer's known items among them, with their payloads.
LookupItems = Callable[[str, list[str]], Awaitable[dict[str, dict[str, Any]]]]


async def _no_items(project: str, item_ids: list[str]) -> dict[str, dict[str, Any]]:
    return {}


class Forbidden(Exception):
    """The actor may not do this (the message says so without telling what exists)."""


class NotPublished(Exception):
    """The change is stored, but its events did not reach the stream; a retry is safe."""


@dataclass
class Context:
    """What a use case needs of the process it runs in."""

    engine: AsyncEngine
    publish: Publish
    forget_auth: Callable[[], None] = field(default=lambda: None)
    forget_schema: Callable[[str], None] = field(default=lambda project: None)
    lookup_items: LookupItems = _no_items


def scorer_lookup(peers: Peers) -> LookupItems:
    """Items are the scorer's: asked of its API, never read from its tables."""
    async def lookup(project: str, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(item_ids), 10_000):
            body = await peers.post("scorer", f"/v1/projects/{project}/items/lookup",
                                    {"item_ids": item_ids[start:start + 10_000]})
            found.update(body["items"])
        return found

    return lookup


async def _published(ctx: Context, stream: str, events: Sequence[Event]) -> None:
    """After the commit: every consumer of ``stream`` sees what was stored. The ids are
    stable, so a retry after a failure here stores and counts nothing twice."""
    try:
        for start in range(0, len(events), PUBLISH_CHUNK):  # a large import: in pieces
            await ctx.publish(stream, events[start:start + PUBLISH_CHUNK])
    except Exception as exc:
        raise NotPublished(
            f"stored, but not yet published to {stream} ({type(exc).__name__}: {exc}); "
            "send the same request again") from exc


# --- labels --------------------------------------------------------------------------------


async def _label_problems(conn: AsyncConnection, project: str, events: Sequence[LabelEvent],
                          lookup: LookupItems) -> list[str]:
    options = (await store.label_options_of(conn, [project]))[project]
    problems = label_problems(project, options, (e.label for e in events))
    unknown = [item for item in sorted({e.item_id for e in events})
               if not await store.item_known(conn, project, item)]
    if unknown:
        known = await lookup(project, unknown)
        problems += [f"unknown item {item!r} in project {project!r}"
                     for item in unknown if item not in known]
    return problems


async def submit_labels(ctx: Context, actor: Actor, principal: auth.Principal, project: str,
                        raw_labels: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Labels given directly (corrections, adjudications, a pipeline's): all or nothing,
    stored, audited, then published on ``loopwise:labels`` like every other label."""
    events: list[LabelEvent] = []
    problems: list[str] = []
    batch = session_batch_id("direct", principal.user_id)
    for index, given in enumerate(raw_labels):
        raw = {"labeler_id": principal.user_id, "batch_id": batch, **given, "project": project}
        if raw["labeler_id"] != principal.user_id and principal.role != "service":
            problems.append(f"labels[{index}]: only a service may label as another user")
            continue
        try:
            events.append(LabelEvent.model_validate(raw))
        except ValidationError as exc:
            problems.append(f"labels[{index}]: {validation_reason(exc)}")
    async with ctx.engine.begin() as conn:
        if not problems:
            problems = await _label_problems(conn, project, events, ctx.lookup_items)
        if problems:
            raise ValueError(problems)
        inserted = await store.append_events(conn, events)
        await audit.record(
            conn, actor, "labels.submit", project=project,
            detail={"events": [str(e.event_id) for e in events], "inserted": inserted},
        )  # fmt: skip
    await _published(ctx, streams.LABELS, events)
    return {"inserted": inserted, "event_ids": [str(e.event_id) for e in events]}


async def import_labelstudio(ctx: Context, actor: Actor, project: str, data: bytes, *,
                             label_key: str | None = None, item_key: str | None = None,
                             batch_id: str | None = None, dry_run: bool = False,
                             users: dict[int, str] | None = None,
                             annotator_domain: str = ANNOTATOR_DOMAIN) -> dict[str, Any]:
    """Parse (full JSON or JSON-MIN; the project's labels find JSON-MIN's label column),
    check against the project's schema, then store all of it or nothing, and publish the
    labels. Raises ValueError (incl. LabelStudioFormatError) with every
    problem before anything is written. ``users`` and ``annotator_domain``: who each
    annotation is by (``labelstudio.Annotators``)."""
    async with ctx.engine.connect() as conn:
        options = (await store.label_options_of(conn, [project]))[project]
    result = parse_export(data, project=project, label_key=label_key, item_key=item_key,
                          batch_id=batch_id, label_options=options, users=users,
                          annotator_domain=annotator_domain)
    async with ctx.engine.begin() as conn:
        problems = label_problems(project, options, (e.label for e in result.events))
        if problems:
            raise ValueError("; ".join(problems))
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
            [{"project": project, "event_id": str(e), "ref": ref.__dict__}
             for e, ref in result.refs.items()],
        )
        await audit.record(
            conn, actor, "labels.import", project=project, target=result.batch_id,
            detail={"format": "labelstudio", "inserted": inserted,
                    "annotations": len(result.events), "skipped": len(result.skipped)},
        )  # fmt: skip
    await _published(ctx, streams.LABELS, result.events)
    return {**summary, "inserted": inserted}


# --- projects --------------------------------------------------------------------------------


def _settings_of(row: dict[str, Any] | None) -> ProjectSettings:
    """The stored row as the settings document (sections live in its ``settings`` JSON)."""
    if row is None:
        return ProjectSettings()
    stored = dict(row.get("settings") or {})
    stored.pop("revision", None)
    sections = {k: stored.pop(k) for k in ("routing", "selection", "quality") if k in stored}
    return ProjectSettings.model_validate({"label_options": row["label_options"],
                                           "sensitive": row["sensitive"], **sections,
                                           "settings": stored.pop("notes", stored)})


def settings_view(row: dict[str, Any]) -> dict[str, Any]:
    """A project as the API shows it: its settings document and when it changed."""
    return {"name": row["name"], **_settings_of(row).model_dump(mode="json"),
            "revision": int((row.get("settings") or {}).get("revision", 0)),
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


async def project_settings(ctx: Context, project: str) -> dict[str, Any]:
    async with ctx.engine.connect() as conn:
        row = await store.get_project(conn, project)
    if row is None:
        raise store.NotFound(f"project {project!r} has no settings yet")
    return settings_view(row)


async def change_project(ctx: Context, actor: Actor, project: str,
                         changes: dict[str, Any]) -> dict[str, Any]:
    """Create a project or change its settings (the sections field by field), audit the
    change, and publish the whole new document on ``loopwise:projects``."""
    async with ctx.engine.begin() as conn:
        old = await store.get_project(conn, project)
        try:
            new = _settings_of(old).merged(changes)
        except ValidationError as exc:
            raise ValueError(validation_reason(exc)) from exc
        dumped = new.model_dump(mode="json")
        # A counter, not a clock: consumers keep the highest revision, and a clock that
        # steps back must not make them ignore a newer change.
        revision = int((old or {}).get("settings", {}).get("revision", 0)) + 1
        stored_settings = {"notes": dumped["settings"], "revision": revision,
                           **{k: dumped[k] for k in ("routing", "selection", "quality")}}
        row, _ = await store.put_project(conn, project, label_options=new.label_options,
                                         sensitive=new.sensitive, settings=stored_settings)
        await audit.record(
            conn, actor, "project.settings", project=project,
            detail={"before": _settings_of(old).model_dump(mode="json") if old else None,
                    "after": dumped, "changes": changes},
        )  # fmt: skip
    ctx.forget_schema(project)
    await _published(ctx, streams.PROJECTS, [ProjectSettingsChanged(
        project=project, settings=new, revision=revision,
        changed_by=actor.user_id)])
    return settings_view(row)


async def republish_settings(ctx: Context) -> int:
    """Publish every declared project's settings as they are stored, with their stored
    revisions: the copies the router, scorer and quality service keep in Redis are
    rebuilt after that Redis lost them (a new, flushed or failed-over Redis). Consumers
    keep the newest revision, so a copy that was not lost changes nothing."""
    async with ctx.engine.connect() as conn:
        rows = await store.all_projects(conn)
    await _published(ctx, streams.PROJECTS, [ProjectSettingsChanged(
        project=row["name"], settings=_settings_of(row),
        revision=int((row.get("settings") or {}).get("revision", 0))) for row in rows])
    return len(rows)


# --- versions ----------------------------------------------------------------------------------


async def revert(ctx: Context, actor: Actor, project: str, selector: RevertSelector, *,
                 message: str = "", name: str | None = None, dry_run: bool = False
                 ) -> dict[str, Any]:
    """A version in which the selected labels no longer count (or its preview)."""
    return await _version_change(
        ctx, actor, "version.revert", project, message, dry_run,
        lambda conn: store.revert(conn, project, selector, author=actor.user_id,
                                  message=message, name=name, dry_run=dry_run))


async def unrevert(ctx: Context, actor: Actor, project: str, version: str, *,
                   message: str = "", name: str | None = None, dry_run: bool = False
                   ) -> dict[str, Any]:
    """Undo what a revert (or unrevert) version changed, as a new version."""
    return await _version_change(
        ctx, actor, "version.unrevert", project, message, dry_run,
        lambda conn: store.unrevert(conn, project, version, author=actor.user_id,
                                    message=message, name=name, dry_run=dry_run))


async def _version_change(
    ctx: Context, actor: Actor, action: str, project: str, message: str, dry_run: bool,
    change: Callable[[AsyncConnection], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """Make (or preview) a version that changes which labels count, audited with it."""
    async with ctx.engine.begin() as conn:
        result = await change(conn)
        if not dry_run:
            version = result["version"]
            await audit.record(
                conn, actor, action, project=project, target=str(version["number"]),
                detail={"selector": version["selector"], "reverts": version.get("reverts"),
                        "events": result["events"], "items": result["items"],
                        "message": message},
            )  # fmt: skip
    return result


async def create_version(ctx: Context, actor: Actor, project: str, *, message: str = "",
                         name: str | None = None) -> dict[str, Any]:
    async with ctx.engine.begin() as conn:
        row = await store.create_snapshot(conn, project, author=actor.user_id,
                                          message=message, name=name)
        await audit.record(
            conn, actor, "version.create", project=project, target=str(row["number"]),
            detail={"name": name, "message": message},
        )  # fmt: skip
    return row


# --- users and tokens ---------------------------------------------------------------------------


async def create_user(ctx: Context, actor: Actor, principal: auth.Principal, user_id: str,
                      display_name: str | None = None) -> dict[str, Any]:
    _global_admin(principal)
    async with ctx.engine.begin() as conn:
        await auth.ensure_user(conn, user_id)
        if display_name is not None:
            await conn.execute(update(users).where(users.c.user_id == user_id)
                               .values(display_name=display_name))
        detail = {"user_id": user_id, "display_name": display_name}
        await audit.record(conn, actor, "user.create", target=user_id, detail=detail)
    return detail


async def list_users(ctx: Context, principal: auth.Principal) -> list[dict[str, Any]]:
    _global_admin(principal)
    async with ctx.engine.connect() as conn:
        rows = await conn.execute(select(users).order_by(users.c.user_id).limit(10_000))
        return [dict(r._mapping) for r in rows.all()]


async def list_tokens(ctx: Context, principal: auth.Principal, *, user: str | None = None,
                      project: str | None = None) -> list[dict[str, Any]]:
    """Tokens without their secrets: every token for a global admin, else the caller's own."""
    query = select(
        api_tokens.c.id, api_tokens.c.user_id, api_tokens.c.role, api_tokens.c.project,
        api_tokens.c.created_at, api_tokens.c.expires_at, api_tokens.c.revoked_at,
    ).order_by(api_tokens.c.id)  # fmt: skip
    if not principal.is_global:
        query = query.where(api_tokens.c.user_id == principal.user_id)
    if user is not None:
        query = query.where(api_tokens.c.user_id == user)
    if project is not None:
        query = query.where(api_tokens.c.project == project)
    async with ctx.engine.connect() as conn:
        return [dict(r._mapping) for r in (await conn.execute(query)).all()]


async def project_exists(ctx: Context, project: str) -> bool:
    """A project is known once it has settings or a stored label event."""
    async with ctx.engine.connect() as conn:
        return await store.has_project(conn, project)


def undeclared_project(project: str) -> str:
    return (f"unknown project {project!r}: declare it first (PUT /v1/projects/{project} at "
            "the labels service, with a '*' admin token: `loopwise token create --user U "
            "--role admin --project '*'`), or send it data; then create its tokens")


async def create_token(ctx: Context, actor: Actor, principal: auth.Principal, user_id: str,
                       role: str, project: str, ttl_days: float | None = None
                       ) -> dict[str, Any]:
    """Issue a token (shown once) and audit it: a global admin any token, a project's admin
    tokens for that project except ``service`` ones.

    Only for a project that exists (declared, or holding labels) or for ``*``: a token for a
    typo would make every route answer 404 to its holder, and declaring a project on the
    side would let a typo create one. Asked after the caller's rights, so that a caller who
    may not make tokens there does not learn whether the project exists.
    """
    if project == auth.ALL_PROJECTS or role == "service":
        _global_admin(principal)
    elif not principal.may_in(project, "admin"):
        raise Forbidden(auth.NOT_YOUR_PROJECT)
    async with ctx.engine.begin() as conn:
        if project != auth.ALL_PROJECTS and not await store.has_project(conn, project):
            raise store.NotFound(undeclared_project(project))
        token, token_id = await auth.issue_token(conn, user_id, role, project, ttl_days)
        detail = {"user_id": user_id, "role": role, "project": project, "ttl_days": ttl_days}
        await audit.record(conn, actor, "token.create", project=_project_or_none(project),
                           target=str(token_id), detail=detail)
    return {"token": token, "id": token_id, **detail}


async def disable_user(ctx: Context, actor: Actor, principal: auth.Principal,
                       user_id: str) -> dict[str, Any]:
    """A disabled user's tokens stop working (at once here, within 2 s elsewhere)."""
    _global_admin(principal)
    async with ctx.engine.begin() as conn:
        result = await conn.execute(
            update(users).where(users.c.user_id == user_id, users.c.disabled_at.is_(None))
            .values(disabled_at=datetime.now(UTC)))
        if not result.rowcount:
            raise store.NotFound(f"no active user {user_id!r}")
        await audit.record(conn, actor, "user.disable", target=user_id,
                           detail={"user_id": user_id})
    ctx.forget_auth()
    return {"user_id": user_id, "disabled": True}


async def revoke_token(ctx: Context, actor: Actor, principal: auth.Principal,
                       token_id: int) -> dict[str, Any]:
    """Revoke a token: its owner, a global admin, or an admin of the token's project."""
    async with ctx.engine.begin() as conn:
        row = (await conn.execute(select(api_tokens).where(api_tokens.c.id == token_id))).first()
        allowed = row is not None and (
            principal.is_global
            or row.user_id == principal.user_id
            or (row.project != auth.ALL_PROJECTS and principal.may_in(row.project, "admin"))
        )
        if row is None or not allowed:
            # The same answer for a token that does not exist and one that is not yours.
            raise store.NotFound(f"no token {token_id} of yours")
        was_live = await auth.revoke_token(conn, token_id)
        await audit.record(
            conn, actor, "token.revoke", project=_project_or_none(row.project),
            target=str(token_id), detail={"user_id": row.user_id, "was_live": was_live},
        )  # fmt: skip
    ctx.forget_auth()
    return {"id": token_id, "revoked": True, "was_live": was_live}


async def remove_member(ctx: Context, actor: Actor, project: str,
                        user_id: str) -> dict[str, Any]:
    """Remove a member; their tokens for this project are revoked with it."""
    async with ctx.engine.begin() as conn:
        removed = await conn.execute(project_members.delete().where(
            project_members.c.project == project, project_members.c.user_id == user_id))
        if not removed.rowcount:
            raise store.NotFound(f"{user_id!r} is not a member")
        tokens = list((await conn.execute(select(api_tokens.c.id).where(
            api_tokens.c.user_id == user_id, api_tokens.c.project == project,
            api_tokens.c.revoked_at.is_(None)))).scalars().all())
        for token_id in tokens:
            await auth.revoke_token(conn, token_id)
        await audit.record(conn, actor, "member.remove", project=project, target=user_id,
                           detail={"revoked_tokens": tokens})
    ctx.forget_auth()
    return {"project": project, "user_id": user_id, "removed": True, "revoked_tokens": tokens}


async def put_member(ctx: Context, actor: Actor, project: str, user_id: str,
                     role: str) -> dict[str, Any]:
    async with ctx.engine.begin() as conn:
        added = await auth.add_member(conn, project, user_id, role)
        if not added:
            await conn.execute(update(project_members).where(
                project_members.c.project == project, project_members.c.user_id == user_id)
                .values(role=role))
        await audit.record(conn, actor, "member.put", project=project, target=user_id,
                           detail={"role": role, "added": added})
    ctx.forget_auth()
    return {"project": project, "user_id": user_id, "role": role}


def _global_admin(principal: auth.Principal) -> None:
    if not principal.is_global:
        raise Forbidden("this needs a 'admin' token for every project ('*')")


def _project_or_none(project: str) -> str | None:
    return None if project == auth.ALL_PROJECTS else project


# --- export ------------------------------------------------------------------------------------


async def export_chunks(
    ctx: Context, project: str, view: store.View, fmt: str, *,
    payloads_visible: bool = True, from_name: str = "label", to_name: str = "text",
    item_key: str | None = None, annotator_domain: str = ANNOTATOR_DOMAIN,
    rows: Callable[[AsyncIterator[dict[str, Any]]], AsyncIterator[dict[str, Any]]] = lambda r: r,
) -> AsyncIterator[bytes]:
    """A version's labels as the bytes of an export: current labels as JSONL or CSV, the
    counted events as Label Studio JSON (with payloads only where the reader may see
    them; ``item_key`` and ``annotator_domain`` as in :func:`labelstudio.to_export`).
    ``rows`` wraps the row stream (the CLI counts it for its progress bar)."""
    async with ctx.engine.connect() as conn, ctx.engine.connect() as side:
        if fmt == "labelstudio":

            async def payloads(ids: list[str]) -> dict[str, Any]:
                """The scorer's payload of each item, or the one its import brought."""
                if not payloads_visible:
                    return {}
                return {**await ctx.lookup_items(project, ids),
                        **await store.payloads_of(side, project, ids)}

            chunks = export.labelstudio(
                rows(store.stream_counting_events(conn, project, view)), payloads,
                lambda ids: store.import_refs_of(side, project, ids), from_name=from_name,
                to_name=to_name, item_key=item_key, annotator_domain=annotator_domain)
        elif fmt == "trl":
            chunks = export.trl(rows(store.stream_counting_events(conn, project, view)))
        else:
            writer = export.jsonl if fmt == "jsonl" else export.csv_rows
            chunks = writer(rows(store.stream_current(conn, project, view)))
        async for chunk in chunks:
            yield chunk
