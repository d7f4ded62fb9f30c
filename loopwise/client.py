"""A typed Python client for loopwise: ``Client`` (sync) and ``AsyncClient`` (async).

Producers put items and predictions on the streams with the event models of
``shared.events`` (the one definition of each event; the client validates before it
sends, so a bad event fails here rather than as a dead letter later). Reviewers take,
submit, revise and skip tasks over the router's HTTP API; admins change a project's
settings (the routing policy among them), gold items, label-set versions, exports and
tokens. Every request is the same in both clients: each method builds a :class:`Call`
(what to send, how to read the answer) once, and the two clients only differ in how they
send it. A 4xx or 5xx raises an :class:`ApiError` subclass carrying the server's message.

    from loopwise.client import Client
    from shared.events import PredictionEvent

    with Client(token) as lw:
        lw.post_predictions([PredictionEvent(project="digits", item_id="a1",
                                             model_version="m1", probs={"3": 0.6, "8": 0.4})])
        task = lw.next_task("digits")
        if task:
            lw.submit(task.task_id, "3", duration_ms=2100)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Generic, Literal, Self, TypeVar

import httpx
import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, TypeAdapter

from services.router.api import AdjudicationTaskOut, SubmitOut, TaskOut
from services.router.gold import GoldItem
from shared import redisconn, sharding, streams
from shared.events import Event, ItemEvent, PredictionEvent
from shared.projects import ProjectSettings, SelectionSettings
from shared.settings import SERVICES, Settings, get_settings
from shared.wire import encode_event

__all__ = [
    "AdjudicationTaskOut", "ApiError", "AsyncClient", "Client", "Conflict", "Forbidden",
    "GoldItem", "Invalid", "LoopwiseError", "NotFound", "Paused", "ProjectSettings",
    "ServerError", "SubmitOut", "TaskOut", "Unauthorized", "Unavailable", "Unreachable",
]

T = TypeVar("T")
Json = dict[str, Any]
ExportFormat = Literal["jsonl", "csv", "labelstudio"]


# --- errors ------------------------------------------------------------------------------------


class LoopwiseError(Exception):
    """Anything the client could not do; the message says what and why."""


class Unreachable(LoopwiseError):
    """A service or Redis did not answer (down, wrong URL, timed out)."""


class ApiError(LoopwiseError):
    """A service answered 4xx or 5xx; ``detail`` is its reason, as it sent it."""

    def __init__(self, method: str, url: str, status: int, detail: Any) -> None:
        self.method, self.url, self.status, self.detail = method, url, status, detail
        super().__init__(f"{method} {url}: {status} {detail_text(detail)}")


class Invalid(ApiError):
    """400, 413 or 422: the request was refused as it is (the detail names the field)."""


class Unauthorized(ApiError):
    """401: no token, or a wrong, expired or revoked one."""


class Forbidden(ApiError):
    """403: the token's role or project does not allow this."""


class NotFound(ApiError):
    """404: no such project, task, version, item or token."""


class Conflict(ApiError):
    """409: the state forbids it (e.g. training with too few labels, a name in use)."""


class Paused(ApiError):
    """423: this labeler is paused until an admin clears the flag or lifts the pause."""


class ServerError(ApiError):
    """5xx: the service failed; retrying later may help."""


class Unavailable(ServerError):
    """503: a store or peer the service needs is down; retry later."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: Invalid, 413: Invalid, 422: Invalid, 401: Unauthorized, 403: Forbidden,
    404: NotFound, 409: Conflict, 423: Paused, 503: Unavailable,
}


def detail_text(detail: Any) -> str:
    """A server's ``detail`` as one readable line: FastAPI's validation errors (a list of
    ``{loc, msg}``) as ``field: message``; the labels service's ``{message, problems}``."""
    if isinstance(detail, list):
        parts = []
        for entry in detail:
            if isinstance(entry, dict) and "msg" in entry:
                where = ".".join(str(p) for p in entry.get("loc", ()) if p != "body")
                parts.append(f"{where}: {entry['msg']}" if where else str(entry["msg"]))
            else:
                parts.append(str(entry))
        return "; ".join(parts)
    if isinstance(detail, dict) and "message" in detail:
        problems = detail.get("problems")
        return detail["message"] + (f": {detail_text(problems)}" if problems else "")
    return str(detail)


def error_of(response: httpx.Response) -> ApiError:
    """The exception for a 4xx/5xx answer, with the server's own reason."""
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text.strip() or response.reason_phrase
    status = response.status_code
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return kind(response.request.method, str(response.request.url), status, detail)


# --- what each call sends and how its answer is read ---------------------------------------------


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and how to read its answer: built once, sent by either client."""

    method: str
    service: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    body: Any = None
    content: bytes | None = None
    empty: frozenset[int] = field(default_factory=frozenset)  # statuses that mean "none"


def _json(response: httpx.Response) -> Json:
    value = response.json()
    assert isinstance(value, dict), value
    return value


def _model(model: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    return lambda response: model.model_validate_json(response.content)


def _key(key: str, read: Callable[[Any], T] = lambda v: v) -> Callable[[httpx.Response], T]:
    return lambda response: read(response.json()[key])


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the unset ones; times as ISO 8601, booleans as JSON."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        out[name] = value
    return out


def _dumped(value: BaseModel | Mapping[str, Any]) -> Any:
    return value.model_dump(mode="json", exclude_unset=True) if isinstance(value, BaseModel) \
        else dict(value)


def _project_settings(response: httpx.Response) -> ProjectSettings:
    body = response.json()
    return ProjectSettings.model_validate({k: body[k] for k in ProjectSettings.model_fields
                                           if k in body})


_GOLD_LIST = TypeAdapter(list[GoldItem])


class Calls:
    """Every request of the client, as data (see :class:`Call`)."""

    # reviewers (router)
    @staticmethod
    def next_task(project: str) -> Call[TaskOut | None]:
        return Call("GET", "router", f"/v1/projects/{project}/tasks/next", _model(TaskOut),
                    empty=frozenset({204}))

    @staticmethod
    def next_adjudication(project: str) -> Call[AdjudicationTaskOut | None]:
        return Call("GET", "router", f"/v1/projects/{project}/adjudications/next",
                    _model(AdjudicationTaskOut), empty=frozenset({204}))

    @staticmethod
    def submit(task_id: str, label: str, duration_ms: int | None,
               guideline_version: str | None) -> Call[SubmitOut]:
        return Call("POST", "router", f"/v1/tasks/{task_id}/submit", _model(SubmitOut),
                    body={"label": label, "duration_ms": duration_ms,
                          "guideline_version": guideline_version})

    @staticmethod
    def revise(task_id: str, label: str, duration_ms: int | None,
               guideline_version: str | None) -> Call[Json]:
        return Call("POST", "router", f"/v1/tasks/{task_id}/revise", _json,
                    body={"label": label, "duration_ms": duration_ms,
                          "guideline_version": guideline_version})

    @staticmethod
    def skip(task_id: str) -> Call[str]:
        return Call("POST", "router", f"/v1/tasks/{task_id}/skip", _key("status"))

    # routing policy, gold, queue (router)
    @staticmethod
    def policy(project: str) -> Call[Json]:
        return Call("GET", "router", f"/v1/projects/{project}/policy", _json)

    @staticmethod
    def recalibrate(project: str) -> Call[Json]:
        return Call("POST", "router", f"/v1/projects/{project}/policy/recalibrate", _json)

    @staticmethod
    def add_gold(project: str, items: Sequence[GoldItem | Mapping[str, Any]]) -> Call[int]:
        body = {"items": [_dumped(GoldItem.model_validate(_dumped(i))) for i in items]}
        return Call("POST", "router", f"/v1/projects/{project}/gold", _key("stored", int),
                    body=body)

    @staticmethod
    def gold(project: str) -> Call[list[GoldItem]]:
        return Call("GET", "router", f"/v1/projects/{project}/gold",
                    _key("items", _GOLD_LIST.validate_python))

    @staticmethod
    def queue(project: str) -> Call[Json]:
        return Call("GET", "router", f"/v1/projects/{project}/queue", _json)

    @staticmethod
    def unpause(project: str, labeler: str) -> Call[bool]:
        return Call("DELETE", "router", f"/v1/projects/{project}/paused/{labeler}",
                    _key("unpaused", bool))

    # projects (labels)
    @staticmethod
    def project_settings(project: str) -> Call[ProjectSettings]:
        return Call("GET", "labels", f"/v1/projects/{project}", _project_settings)

    @staticmethod
    def update_project(project: str, changes: Mapping[str, Any]) -> Call[ProjectSettings]:
        return Call("PATCH", "labels", f"/v1/projects/{project}", _project_settings,
                    body=dict(changes))

    # labels, versions, reverts, trace, import (labels)
    @staticmethod
    def labels(project: str, version: str | int | None, as_of: datetime | None,
               include_auto: bool, limit: int | None, offset: int) -> Call[Json]:
        return Call("GET", "labels", f"/v1/projects/{project}/labels", _json,
                    params=_params(version=version, as_of=as_of, include_auto=include_auto,
                                   limit=limit, offset=offset or None))

    @staticmethod
    def post_labels(project: str, labels: Sequence[Mapping[str, Any]]) -> Call[Json]:
        return Call("POST", "labels", f"/v1/projects/{project}/labels", _json,
                    body={"labels": [dict(label) for label in labels]})

    @staticmethod
    def versions(project: str) -> Call[list[Json]]:
        return Call("GET", "labels", f"/v1/projects/{project}/versions", _key("versions"))

    @staticmethod
    def create_version(project: str, name: str | None, message: str) -> Call[Json]:
        return Call("POST", "labels", f"/v1/projects/{project}/versions", _json,
                    body={"name": name, "message": message})

    @staticmethod
    def version(project: str, version: str | int) -> Call[Json]:
        return Call("GET", "labels", f"/v1/projects/{project}/versions/{version}", _json)

    @staticmethod
    def diff(project: str, from_: str | int, to: str | int) -> Call[Json]:
        return Call("GET", "labels", f"/v1/projects/{project}/diff", _json,
                    params={"from": str(from_), "to": str(to)})

    @staticmethod
    def revert(project: str, selector: Mapping[str, Any], message: str, name: str | None,
               dry_run: bool) -> Call[Json]:
        body = {k: v for k, v in selector.items() if v is not None}
        return Call("POST", "labels", f"/v1/projects/{project}/reverts", _json,
                    body={**body, "message": message, "name": name, "dry_run": dry_run})

    @staticmethod
    def trace(project: str, item_id: str) -> Call[Json]:
        return Call("GET", "labels", f"/v1/projects/{project}/items/{item_id}/trace", _json)

    @staticmethod
    def import_labelstudio(project: str, data: bytes, label_key: str | None,
                           item_key: str | None, batch_id: str | None,
                           dry_run: bool) -> Call[Json]:
        return Call("POST", "labels", f"/v1/projects/{project}/imports/labelstudio", _json,
                    params=_params(label_key=label_key, item_key=item_key, batch_id=batch_id,
                                   dry_run=dry_run),
                    content=data)

    # users and tokens (labels)
    @staticmethod
    def create_user(user_id: str, display_name: str | None) -> Call[Json]:
        return Call("POST", "labels", "/v1/users", _json,
                    body={"user_id": user_id, "display_name": display_name})

    @staticmethod
    def users() -> Call[list[Json]]:
        return Call("GET", "labels", "/v1/users", _key("users"))

    @staticmethod
    def create_token(user_id: str, role: str, project: str,
                     ttl_days: float | None) -> Call[Json]:
        return Call("POST", "labels", "/v1/tokens", _json,
                    body={"user_id": user_id, "role": role, "project": project,
                          "ttl_days": ttl_days})

    @staticmethod
    def tokens() -> Call[list[Json]]:
        return Call("GET", "labels", "/v1/tokens", _key("tokens"))

    @staticmethod
    def revoke_token(token_id: int) -> Call[Json]:
        return Call("POST", "labels", f"/v1/tokens/{token_id}/revoke", _json)

    # models, items, selection (scorer)
    @staticmethod
    def register_items(project: str, items: Sequence[ItemEvent | Mapping[str, Any]]
                       ) -> Call[Json]:
        rows = []
        for item in items:
            event = item if isinstance(item, ItemEvent) else ItemEvent.model_validate(
                {**item, "project": project})
            rows.append(event.model_dump(mode="json", include={"item_id", "features", "text",
                                                               "payload"}))
        return Call("POST", "scorer", f"/v1/projects/{project}/items", _json,
                    body={"items": rows})

    @staticmethod
    def train(project: str) -> Call[Json]:
        return Call("POST", "scorer", f"/v1/projects/{project}/train", _json)

    @staticmethod
    def models(project: str) -> Call[list[Json]]:
        return Call("GET", "scorer", f"/v1/projects/{project}/models", _key("models"))

    @staticmethod
    def predict(project: str, features: Sequence[Sequence[float]] | None,
                texts: Sequence[str] | None) -> Call[Json]:
        return Call("POST", "scorer", f"/v1/projects/{project}/predict", _json,
                    body={"features": [list(map(float, row)) for row in features]
                          if features is not None else None,
                          "texts": list(texts) if texts is not None else None})

    @staticmethod
    def select(project: str, budget: int, strategy: str | None,
               diversity: str) -> Call[Json]:
        return Call("POST", "scorer", f"/v1/projects/{project}/select", _json,
                    body={"budget": budget, "strategy": strategy, "diversity": diversity})

    @staticmethod
    def selection_config(project: str) -> Call[SelectionSettings]:
        return Call("GET", "scorer", f"/v1/projects/{project}/config",
                    _model(SelectionSettings))

    # quality
    @staticmethod
    def quality(project: str) -> Call[Json]:
        return Call("GET", "quality", f"/v1/projects/{project}/quality", _json)

    @staticmethod
    def evaluation(project: str) -> Call[Json]:
        return Call("GET", "quality", f"/v1/projects/{project}/evaluation", _json)

    @staticmethod
    def clear_flag(project: str, labeler: str, note: str | None) -> Call[Json]:
        return Call("POST", "quality", f"/v1/projects/{project}/flags/{labeler}/clear", _json,
                    body={"note": note})

    # export (labels), streamed
    @staticmethod
    def export(project: str, format: ExportFormat, version: str | int | None,
               as_of: datetime | None) -> Call[None]:
        return Call("GET", "labels", f"/v1/projects/{project}/export", lambda r: None,
                    params=_params(format=format, version=version, as_of=as_of))


def _events(model: type[Event], events: Iterable[Event | Mapping[str, Any]], stream: str,
            shards: int) -> list[tuple[str, str]]:
    """Each event validated with its model (the one definition), encoded for the wire, and
    addressed to its project's shard of ``stream`` (:mod:`shared.sharding`)."""
    out = []
    for event in events:
        checked = event if isinstance(event, model) else model.model_validate(_dumped(event))
        project = str(getattr(checked, "project", ""))  # items and predictions have one
        out.append((sharding.project_stream(stream, project, shards), checked.to_json()))
    return out


def _selector(batch_id: str | None, labeler_id: str | None, guideline_version: str | None,
              created_from: datetime | None, created_to: datetime | None,
              event_ids: Sequence[str] | None) -> dict[str, Any]:
    return {"batch_id": batch_id, "labeler_id": labeler_id,
            "guideline_version": guideline_version,
            "created_from": created_from.isoformat() if created_from else None,
            "created_to": created_to.isoformat() if created_to else None,
            "event_ids": list(event_ids) if event_ids is not None else None}


class _Base:
    """What both clients hold: where the services and Redis are, and the token."""

    def __init__(self, token: str | None = None, *, settings: Settings | None = None,
                 urls: Mapping[str, str] | None = None, redis_url: str | None = None,
                 timeout: float = 30.0) -> None:
        settings = settings or get_settings()
        unknown = set(urls or ()) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown service(s) {sorted(unknown)}; the services are "
                             f"{', '.join(SERVICES)}")
        self.urls = {s: (urls or {}).get(s, settings.url_of(s)).rstrip("/") for s in SERVICES}
        self.redis_url = redis_url or settings.redis_url
        self.redis_cluster = settings.cluster
        self.shards = settings.shards
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _request(self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]
                 ) -> httpx.Request:
        """The request, with the client's token (``send`` alone would not add it)."""
        url = self.urls[call.service] + call.path
        content = call.content if call.content is not None else (
            json.dumps(call.body).encode() if call.body is not None else None)
        headers = {"content-type": "application/json"} if call.body is not None else {}
        return http.build_request(call.method, url, params=call.params, content=content,
                                  headers=headers)

    @staticmethod
    def _read(call: Call[T], response: httpx.Response) -> T | None:
        if response.status_code in call.empty:
            return None
        if response.status_code >= 400:
            raise error_of(response)
        return call.read(response)

    @staticmethod
    def _unreachable(request: httpx.Request, exc: Exception) -> Unreachable:
        return Unreachable(f"{request.method} {request.url}: {type(exc).__name__}: {exc}"
                           if str(exc) else f"{request.method} {request.url}: "
                           f"{type(exc).__name__}")

    def _redis_unreachable(self, exc: Exception) -> Unreachable:
        return Unreachable(f"Redis at {self.redis_url.split('@')[-1]}: {exc}")


def _sink(dest: str | Path | BinaryIO) -> tuple[BinaryIO, bool]:
    if isinstance(dest, str | Path):
        return open(dest, "wb"), True  # closed by the caller
    return dest, False


class Client(_Base):
    """The synchronous client. ``token`` is a bearer token (``loopwise token create``);
    service URLs and the Redis URL default to the ``LOOPWISE_*`` settings."""

    def __init__(self, token: str | None = None, *, settings: Settings | None = None,
                 urls: Mapping[str, str] | None = None, redis_url: str | None = None,
                 timeout: float = 30.0) -> None:
        super().__init__(token, settings=settings, urls=urls, redis_url=redis_url,
                         timeout=timeout)
        self._http = httpx.Client(headers=self.headers, timeout=timeout)
        self._redis: redis.Redis | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        if self._redis is not None:
            self._redis.close()

    def call(self, call: Call[T]) -> T:
        """Send one :class:`Call` and read its answer (raises ApiError on 4xx/5xx)."""
        request = self._request(self._http, call)
        try:
            response = self._http.send(request)
        except httpx.TransportError as exc:
            raise self._unreachable(request, exc) from exc
        return self._read(call, response)  # type: ignore[return-value]

    def _xadd(self, entries: list[tuple[str, str]]) -> list[str]:
        if self._redis is None:
            self._redis = redisconn.connect_sync(self.redis_url, self.redis_cluster)
        pipe = self._redis.pipeline(transaction=False)
        for stream, body in entries:
            pipe.xadd(stream, encode_event(body))
        try:
            return [i.decode() if isinstance(i, bytes) else str(i) for i in pipe.execute()]
        except redis.RedisError as exc:
            raise self._redis_unreachable(exc) from exc

    # producers: the streams
    def post_items(self, items: Iterable[ItemEvent | Mapping[str, Any]]) -> list[str]:
        """Put items on ``loopwise:items`` (each on its project's shard) to be scored; returns
        the stream entry ids."""
        return self._xadd(_events(ItemEvent, items, streams.ITEMS, self.shards))

    def post_predictions(self, predictions: Iterable[PredictionEvent | Mapping[str, Any]]
                         ) -> list[str]:
        """Put predictions on ``loopwise:predictions`` (each on its project's shard) to be
        routed; the entry ids."""
        return self._xadd(_events(PredictionEvent, predictions, streams.PREDICTIONS,
                                  self.shards))

    # reviewers
    def next_task(self, project: str) -> TaskOut | None:
        """Lease the next task for this token's labeler; None when nothing waits."""
        return self.call(Calls.next_task(project))

    def next_adjudication(self, project: str) -> AdjudicationTaskOut | None:
        return self.call(Calls.next_adjudication(project))

    def submit(self, task_id: str, label: str, *, duration_ms: int | None = None,
               guideline_version: str | None = None) -> SubmitOut:
        return self.call(Calls.submit(task_id, label, duration_ms, guideline_version))

    def revise(self, task_id: str, label: str, *, duration_ms: int | None = None,
               guideline_version: str | None = None) -> Json:
        return self.call(Calls.revise(task_id, label, duration_ms, guideline_version))

    def skip(self, task_id: str) -> str:
        return self.call(Calls.skip(task_id))

    # admins: settings and policy
    def project_settings(self, project: str) -> ProjectSettings:
        return self.call(Calls.project_settings(project))

    def update_project(self, project: str, changes: Mapping[str, Any]) -> ProjectSettings:
        """Change settings: top-level fields replaced, sections updated field by field."""
        return self.call(Calls.update_project(project, changes))

    def set_policy(self, project: str, **routing: Any) -> ProjectSettings:
        """Change the routing policy (``auto_accept_threshold=0.95``, ``mode="prelabel"``)."""
        return self.call(Calls.update_project(project, {"routing": routing}))

    def policy(self, project: str) -> Json:
        return self.call(Calls.policy(project))

    def recalibrate(self, project: str) -> Json:
        return self.call(Calls.recalibrate(project))

    def add_gold(self, project: str, items: Sequence[GoldItem | Mapping[str, Any]]) -> int:
        return self.call(Calls.add_gold(project, items))

    def gold(self, project: str) -> list[GoldItem]:
        return self.call(Calls.gold(project))

    def queue(self, project: str) -> Json:
        return self.call(Calls.queue(project))

    def unpause(self, project: str, labeler: str) -> bool:
        return self.call(Calls.unpause(project, labeler))

    # labels and versions
    def labels(self, project: str, *, version: str | int | None = None,
               as_of: datetime | None = None, include_auto: bool = True,
               limit: int | None = None, offset: int = 0) -> Json:
        return self.call(Calls.labels(project, version, as_of, include_auto, limit, offset))

    def post_labels(self, project: str, labels: Sequence[Mapping[str, Any]]) -> Json:
        """Store labels given directly (all or nothing); each a LabelEvent's fields."""
        return self.call(Calls.post_labels(project, labels))

    def versions(self, project: str) -> list[Json]:
        return self.call(Calls.versions(project))

    def create_version(self, project: str, *, name: str | None = None,
                       message: str = "") -> Json:
        return self.call(Calls.create_version(project, name, message))

    def version(self, project: str, version: str | int) -> Json:
        return self.call(Calls.version(project, version))

    def diff(self, project: str, from_: str | int, to: str | int = "head") -> Json:
        return self.call(Calls.diff(project, from_, to))

    def revert(self, project: str, *, batch_id: str | None = None,
               labeler_id: str | None = None, guideline_version: str | None = None,
               created_from: datetime | None = None, created_to: datetime | None = None,
               event_ids: Sequence[str] | None = None, message: str = "",
               name: str | None = None, dry_run: bool = False) -> Json:
        selector = _selector(batch_id, labeler_id, guideline_version, created_from,
                             created_to, event_ids)
        return self.call(Calls.revert(project, selector, message, name, dry_run))

    def trace(self, project: str, item_id: str) -> Json:
        return self.call(Calls.trace(project, item_id))

    def import_labelstudio(self, project: str, data: bytes, *, label_key: str | None = None,
                           item_key: str | None = None, batch_id: str | None = None,
                           dry_run: bool = False) -> Json:
        return self.call(Calls.import_labelstudio(project, data, label_key, item_key,
                                                  batch_id, dry_run))

    def export(self, project: str, dest: str | Path | BinaryIO, *,
               format: ExportFormat = "jsonl", version: str | int | None = None,
               as_of: datetime | None = None) -> int:
        """Stream an export into a file (a path or a binary file object); bytes written."""
        request = self._request(self._http, Calls.export(project, format, version, as_of))
        sink, owned = _sink(dest)
        written = 0
        try:
            response = self._http.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    response.read()
                    raise error_of(response)
                for chunk in response.iter_bytes():
                    written += sink.write(chunk)
            finally:
                response.close()
        except httpx.TransportError as exc:
            raise self._unreachable(request, exc) from exc
        finally:
            if owned:
                sink.close()
        return written

    # users and tokens
    def create_user(self, user_id: str, *, display_name: str | None = None) -> Json:
        return self.call(Calls.create_user(user_id, display_name))

    def users(self) -> list[Json]:
        return self.call(Calls.users())

    def create_token(self, user_id: str, role: str, project: str, *,
                     ttl_days: float | None = None) -> Json:
        """A new token (``{"token", "id", ...}``); the secret is shown only here."""
        return self.call(Calls.create_token(user_id, role, project, ttl_days))

    def tokens(self) -> list[Json]:
        return self.call(Calls.tokens())

    def revoke_token(self, token_id: int) -> Json:
        return self.call(Calls.revoke_token(token_id))

    # scorer
    def register_items(self, project: str, items: Sequence[ItemEvent | Mapping[str, Any]]
                       ) -> Json:
        """Store items at the scorer without scoring them (a seed set, a pool)."""
        return self.call(Calls.register_items(project, items))

    def train(self, project: str) -> Json:
        return self.call(Calls.train(project))

    def models(self, project: str) -> list[Json]:
        return self.call(Calls.models(project))

    def predict(self, project: str, *, features: Sequence[Sequence[float]] | None = None,
                texts: Sequence[str] | None = None) -> Json:
        return self.call(Calls.predict(project, features, texts))

    def select(self, project: str, budget: int, *, strategy: str | None = None,
               diversity: str = "default") -> Json:
        return self.call(Calls.select(project, budget, strategy, diversity))

    def selection_config(self, project: str) -> SelectionSettings:
        return self.call(Calls.selection_config(project))

    # quality
    def quality(self, project: str) -> Json:
        return self.call(Calls.quality(project))

    def evaluation(self, project: str) -> Json:
        return self.call(Calls.evaluation(project))

    def clear_flag(self, project: str, labeler: str, *, note: str | None = None) -> Json:
        return self.call(Calls.clear_flag(project, labeler, note))


class AsyncClient(_Base):
    """The asynchronous client: the same methods as :class:`Client`, awaited."""

    def __init__(self, token: str | None = None, *, settings: Settings | None = None,
                 urls: Mapping[str, str] | None = None, redis_url: str | None = None,
                 timeout: float = 30.0) -> None:
        super().__init__(token, settings=settings, urls=urls, redis_url=redis_url,
                         timeout=timeout)
        self._http = httpx.AsyncClient(headers=self.headers, timeout=timeout)
        self._redis: aioredis.Redis | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()
        if self._redis is not None:
            await self._redis.aclose()

    async def call(self, call: Call[T]) -> T:
        """Send one :class:`Call` and read its answer (raises ApiError on 4xx/5xx)."""
        request = self._request(self._http, call)
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise self._unreachable(request, exc) from exc
        return self._read(call, response)  # type: ignore[return-value]

    async def _xadd(self, entries: list[tuple[str, str]]) -> list[str]:
        if self._redis is None:
            self._redis = redisconn.connect(self.redis_url, self.redis_cluster)
        pipe = self._redis.pipeline(transaction=False)
        for stream, body in entries:
            pipe.xadd(stream, encode_event(body))
        try:
            ids = await pipe.execute()
        except redis.RedisError as exc:
            raise self._redis_unreachable(exc) from exc
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def post_items(self, items: Iterable[ItemEvent | Mapping[str, Any]]) -> list[str]:
        """Put items on ``loopwise:items`` (each on its project's shard) to be scored; returns
        the stream entry ids."""
        return await self._xadd(_events(ItemEvent, items, streams.ITEMS, self.shards))

    async def post_predictions(self, predictions: Iterable[PredictionEvent | Mapping[str, Any]]
                               ) -> list[str]:
        """Put predictions on ``loopwise:predictions`` (each on its project's shard) to be
        routed; the entry ids."""
        return await self._xadd(_events(PredictionEvent, predictions, streams.PREDICTIONS,
                                        self.shards))

    async def next_task(self, project: str) -> TaskOut | None:
        """Lease the next task for this token's labeler; None when nothing waits."""
        return await self.call(Calls.next_task(project))

    async def next_adjudication(self, project: str) -> AdjudicationTaskOut | None:
        return await self.call(Calls.next_adjudication(project))

    async def submit(self, task_id: str, label: str, *, duration_ms: int | None = None,
                     guideline_version: str | None = None) -> SubmitOut:
        return await self.call(Calls.submit(task_id, label, duration_ms, guideline_version))

    async def revise(self, task_id: str, label: str, *, duration_ms: int | None = None,
                     guideline_version: str | None = None) -> Json:
        return await self.call(Calls.revise(task_id, label, duration_ms, guideline_version))

    async def skip(self, task_id: str) -> str:
        return await self.call(Calls.skip(task_id))

    async def project_settings(self, project: str) -> ProjectSettings:
        return await self.call(Calls.project_settings(project))

    async def update_project(self, project: str, changes: Mapping[str, Any]
                             ) -> ProjectSettings:
        """Change settings: top-level fields replaced, sections updated field by field."""
        return await self.call(Calls.update_project(project, changes))

    async def set_policy(self, project: str, **routing: Any) -> ProjectSettings:
        """Change the routing policy (``auto_accept_threshold=0.95``, ``mode="prelabel"``)."""
        return await self.call(Calls.update_project(project, {"routing": routing}))

    async def policy(self, project: str) -> Json:
        return await self.call(Calls.policy(project))

    async def recalibrate(self, project: str) -> Json:
        return await self.call(Calls.recalibrate(project))

    async def add_gold(self, project: str, items: Sequence[GoldItem | Mapping[str, Any]]
                       ) -> int:
        return await self.call(Calls.add_gold(project, items))

    async def gold(self, project: str) -> list[GoldItem]:
        return await self.call(Calls.gold(project))

    async def queue(self, project: str) -> Json:
        return await self.call(Calls.queue(project))

    async def unpause(self, project: str, labeler: str) -> bool:
        return await self.call(Calls.unpause(project, labeler))

    async def labels(self, project: str, *, version: str | int | None = None,
                     as_of: datetime | None = None, include_auto: bool = True,
                     limit: int | None = None, offset: int = 0) -> Json:
        return await self.call(Calls.labels(project, version, as_of, include_auto, limit,
                                            offset))

    async def post_labels(self, project: str, labels: Sequence[Mapping[str, Any]]) -> Json:
        """Store labels given directly (all or nothing); each a LabelEvent's fields."""
        return await self.call(Calls.post_labels(project, labels))

    async def versions(self, project: str) -> list[Json]:
        return await self.call(Calls.versions(project))

    async def create_version(self, project: str, *, name: str | None = None,
                             message: str = "") -> Json:
        return await self.call(Calls.create_version(project, name, message))

    async def version(self, project: str, version: str | int) -> Json:
        return await self.call(Calls.version(project, version))

    async def diff(self, project: str, from_: str | int, to: str | int = "head") -> Json:
        return await self.call(Calls.diff(project, from_, to))

    async def revert(self, project: str, *, batch_id: str | None = None,
                     labeler_id: str | None = None, guideline_version: str | None = None,
                     created_from: datetime | None = None, created_to: datetime | None = None,
                     event_ids: Sequence[str] | None = None, message: str = "",
                     name: str | None = None, dry_run: bool = False) -> Json:
        selector = _selector(batch_id, labeler_id, guideline_version, created_from,
                             created_to, event_ids)
        return await self.call(Calls.revert(project, selector, message, name, dry_run))

    async def trace(self, project: str, item_id: str) -> Json:
        return await self.call(Calls.trace(project, item_id))

    async def import_labelstudio(self, project: str, data: bytes, *,
                                 label_key: str | None = None, item_key: str | None = None,
                                 batch_id: str | None = None, dry_run: bool = False) -> Json:
        return await self.call(Calls.import_labelstudio(project, data, label_key, item_key,
                                                        batch_id, dry_run))

    async def export(self, project: str, dest: str | Path | BinaryIO, *,
                     format: ExportFormat = "jsonl", version: str | int | None = None,
                     as_of: datetime | None = None) -> int:
        """Stream an export into a file (a path or a binary file object); bytes written."""
        request = self._request(self._http, Calls.export(project, format, version, as_of))
        sink, owned = _sink(dest)
        written = 0
        try:
            response = await self._http.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_of(response)
                async for chunk in response.aiter_bytes():
                    written += sink.write(chunk)
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            raise self._unreachable(request, exc) from exc
        finally:
            if owned:
                sink.close()
        return written

    async def create_user(self, user_id: str, *, display_name: str | None = None) -> Json:
        return await self.call(Calls.create_user(user_id, display_name))

    async def users(self) -> list[Json]:
        return await self.call(Calls.users())

    async def create_token(self, user_id: str, role: str, project: str, *,
                           ttl_days: float | None = None) -> Json:
        """A new token (``{"token", "id", ...}``); the secret is shown only here."""
        return await self.call(Calls.create_token(user_id, role, project, ttl_days))

    async def tokens(self) -> list[Json]:
        return await self.call(Calls.tokens())

    async def revoke_token(self, token_id: int) -> Json:
        return await self.call(Calls.revoke_token(token_id))

    async def register_items(self, project: str,
                             items: Sequence[ItemEvent | Mapping[str, Any]]) -> Json:
        """Store items at the scorer without scoring them (a seed set, a pool)."""
        return await self.call(Calls.register_items(project, items))

    async def train(self, project: str) -> Json:
        return await self.call(Calls.train(project))

    async def models(self, project: str) -> list[Json]:
        return await self.call(Calls.models(project))

    async def predict(self, project: str, *, features: Sequence[Sequence[float]] | None = None,
                      texts: Sequence[str] | None = None) -> Json:
        return await self.call(Calls.predict(project, features, texts))

    async def select(self, project: str, budget: int, *, strategy: str | None = None,
                     diversity: str = "default") -> Json:
        return await self.call(Calls.select(project, budget, strategy, diversity))

    async def selection_config(self, project: str) -> SelectionSettings:
        return await self.call(Calls.selection_config(project))

    async def quality(self, project: str) -> Json:
        return await self.call(Calls.quality(project))

    async def evaluation(self, project: str) -> Json:
        return await self.call(Calls.evaluation(project))

    async def clear_flag(self, project: str, labeler: str, *, note: str | None = None) -> Json:
        return await self.call(Calls.clear_flag(project, labeler, note))
