"""Label Studio JSON exports in and out of loopwise label events.

Teams arrive with labels made in Label Studio and may keep labeling there, so
the labels service reads the tool's exports (its full "JSON", with predictions
as objects or, as Label Studio 1.23's export API writes them, as a list of ids;
and "JSON-MIN", one flat row per annotation) into label events with full
provenance, and writes label events back as a JSON list of tasks that Label
Studio's import API takes. Only single-choice classification (the ``choices``
result type) maps to a loopwise label; every annotation that does not map is
reported with its reason, and an annotation is imported whole or not at all.

Annotators, written out: Label Studio's import attributes an annotation to
``completed_by``, either a member's user id or ``{"email": ...}`` of a member of
the importing organization (it refuses any other). :func:`annotator_email` is
the mapping: a labeler imported from Label Studio gets back what it came with
(``ls:7`` the id 7, ``ls:ann@x.org`` that email), a labeler id that is an email
stays one, and any other labeler ``alice`` becomes ``alice@loopwise.local``
(the domain is a parameter). Those users must exist in Label Studio before the
import (``POST /api/users/`` or an invite).

Pure functions: the only input is the export passed in (bytes, text, a parsed
list or a readable stream), the only output the returned values.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from pydantic import ValidationError

from shared.events import (
    LabelEvent,
    LabelSource,
    ReviewMode,
    stable_id,
)
from shared.limits import PROJECT_PATTERN

CHOICES = "choices"
ORIGIN_MANUAL = "manual"
ORIGIN_PREDICTION = "prediction"  # the labeler kept the pre-label as it was
ORIGIN_PREDICTION_CHANGED = "prediction-changed"  # the labeler edited the pre-label
PRELABEL_ORIGINS = (ORIGIN_PREDICTION, ORIGIN_PREDICTION_CHANGED)
LABELER_PREFIX = "ls:"
AUTO_LABELER_PREFIX = "model:"
MAX_LISTED_PROBLEMS = 20
ANNOTATOR_DOMAIN = "loopwise.local"
# What JSON-MIN writes beside the task's data and one column per control (the SDK's
# ``Converter.convert_to_json_min``).
JSON_MIN_FIELDS = frozenset(
    {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement"})
# The characters of an email's local part that need no quoting (RFC 5322 dot-atom).
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")

ExportSource = bytes | bytearray | str | list[Any] | IO[bytes] | IO[str]


class LabelStudioFormatError(ValueError):
    """The input is not a Label Studio JSON export; ``problems`` says what and where."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listed = "; ".join(problems[:MAX_LISTED_PROBLEMS])
        more = len(problems) - MAX_LISTED_PROBLEMS
        suffix = f"; and {more} more problem(s)" if more > 0 else ""
        super().__init__(f"not a Label Studio JSON export: {listed}{suffix}")


@dataclass(frozen=True)
class AnnotationRef:
    """Where an imported label sits in Label Studio, so an export writes it back in place."""

    task_id: int | str
    annotation_id: int | str
    result_id: str | None
    from_name: str | None
    to_name: str | None


@dataclass(frozen=True)
class SkippedAnnotation:
    """An annotation that was not imported, and why."""

    task_id: str
    item_id: str
    annotation_id: str
    reason: str


@dataclass(frozen=True)
class IgnoredResult:
    """A result left out of an imported annotation because ``label_key`` names another control."""

    task_id: str
    item_id: str
    annotation_id: str
    from_name: str | None
    result_type: str | None


@dataclass
class ImportResult:
    """What one export gave: label events, item payloads, and everything left out.

    ``items`` holds the ``data`` of every task, labeled or not; ``skipped`` every
    annotation not imported and why; ``ignored`` the results of other controls
    than ``label_key`` inside imported annotations; ``refs`` maps each
    event id to the Label Studio control (``from_name``/``to_name``) and ids it
    came from, for :func:`to_export`.
    """

    batch_id: str
    events: list[LabelEvent] = field(default_factory=list)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[SkippedAnnotation] = field(default_factory=list)
    ignored: list[IgnoredResult] = field(default_factory=list)
    refs: dict[uuid.UUID, AnnotationRef] = field(default_factory=dict)


class _Skip(Exception):
    """Internal: this annotation does not map to one label; the message says why."""


def parse_export(
    data: ExportSource,
    *,
    project: str,
    label_key: str | None = None,
    batch_id: str | None = None,
    item_key: str | None = None,
    label_options: Iterable[str] | None = None,
    users: Mapping[int, str] | None = None,
    annotator_domain: str = ANNOTATOR_DOMAIN,
) -> ImportResult:
    """Read a Label Studio JSON or JSON-MIN export into label events with provenance.

    ``label_key`` is the ``from_name`` of the choices control that holds the
    label; without it an annotation must hold exactly one choices control and
    nothing else. A JSON-MIN export has no result types, so its label column is
    ``label_key``, or else the one column whose every value is one of
    ``label_options`` (the project's labels). ``item_key`` names a ``data`` field
    holding the item id (as written by :func:`to_export`); by default the item id is
    the task id. ``users`` (Label Studio user id -> email, as its ``GET /api/users/``
    lists them) and ``annotator_domain`` decide who each annotation is by
    (:class:`Annotators`).
    ``batch_id`` defaults to a digest of the export, so the same file gives the
    same batch. Event ids derive from (project, task id, annotation id, label):
    importing the same file again yields the same events, while an annotation
    edited in Label Studio since yields a new event for the append-only store.

    Raises :class:`LabelStudioFormatError` listing every structural problem
    before anything is mapped, and ``ValueError`` for an invalid project name.
    """
    if not re.fullmatch(PROJECT_PATTERN, project):
        raise ValueError(f"invalid project name {project!r}")
    tasks = _load_json(data)
    if isinstance(tasks, dict) and isinstance(tasks.get("tasks"), list):
        # {"tasks": <an export>, "users": <Label Studio's GET /api/users/>}: one body
        users = {**_user_emails(tasks.get("users")), **(users or {})}
        tasks = tasks["tasks"]
    if _is_json_min(tasks):
        tasks = _from_json_min(tasks, label_key, label_options)
    _check_structure(tasks, item_key)
    annotators = Annotators.of(tasks, users or {}, annotator_domain)
    result = ImportResult(batch_id=batch_id or _digest_batch_id(tasks))
    for task in tasks:
        item_id, payload = _item_of(task, item_key)
        result.items[item_id] = payload
        task_id = f"{LABELER_PREFIX}{task['id']}"
        for annotation in task.get("annotations") or []:
            annotation_id = str(annotation["id"])
            try:
                event, ref, ignored = _label_of(
                    task,
                    annotation,
                    project=project,
                    item_id=item_id,
                    batch_id=result.batch_id,
                    label_key=label_key,
                    annotators=annotators,
                )
            except _Skip as skip:
                result.skipped.append(SkippedAnnotation(task_id, item_id, annotation_id, str(skip)))
                continue
            result.events.append(event)
            result.refs[event.event_id] = ref
            result.ignored.extend(
                IgnoredResult(task_id, item_id, annotation_id, r.get("from_name"), r.get("type"))
                for r in ignored
            )
    return result


def to_export(
    labels: Iterable[LabelEvent | Mapping[str, Any]],
    items: Mapping[str, Mapping[str, Any]],
    *,
    from_name: str = "label",
    to_name: str = "text",
    refs: Mapping[uuid.UUID, AnnotationRef] | None = None,
    item_key: str | None = None,
    annotator_domain: str = ANNOTATOR_DOMAIN,
) -> list[dict[str, Any]]:
    """Write label events as a Label Studio JSON export that :func:`parse_export` reads back.

    One task per entry of ``items`` (unlabeled items too, ready to label); each
    human, imported, adjudicated or consensus label becomes an annotation with a
    ``choices`` result; an auto label (``model:<version>``) becomes a prediction,
    as do pre-labels a labeler was shown, so ``origin`` and the prediction's
    ``model_version`` carry the pre-label provenance. ``refs`` (from an import)
    restores the original controls and ids; otherwise ``from_name``/``to_name``
    name the control. ``item_key`` also writes the item id into ``data``, so it
    survives Label Studio renumbering tasks. A label that recorded the model's
    guess (``model_label``, e.g. revealed after a blind review) brings that guess
    as a prediction too. Annotators are written by :func:`annotator_email`.
    Label Studio's import keeps each annotation's result, annotator, ``lead_time``
    and ``ground_truth`` but stamps its own ``created_at``.
    """
    events = [_as_label_event(label) for label in labels]
    missing = sorted({event.item_id for event in events} - set(items))
    if missing:
        raise ValueError(f"no item payload for {len(missing)} labeled item(s): {missing[:10]}")
    refs = refs or {}
    by_item: dict[str, list[LabelEvent]] = defaultdict(list)
    for event in events:
        by_item[event.item_id].append(event)
    default_control = (from_name, to_name)
    return [
        _export_task(
            item_id,
            payload,
            sorted(by_item.get(item_id, []), key=lambda e: _utc(e.created_at)),
            refs,
            default_control,
            item_key,
            annotator_domain,
        )
        for item_id, payload in items.items()
    ]


# --- reading -------------------------------------------------------------------------------


def _load_json(data: ExportSource) -> Any:
    if isinstance(data, list):
        return data
    if hasattr(data, "read"):
        data = data.read()
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LabelStudioFormatError([f"not UTF-8 text ({exc})"]) from exc
    if not isinstance(data, str):
        raise TypeError(f"expected bytes, str, a list or a readable stream, got {type(data)}")
    try:
        return json.loads(data.removeprefix("\ufeff"))
    except json.JSONDecodeError as exc:
        raise LabelStudioFormatError(
            [f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"]
        ) from exc


def _is_json_min(tasks: Any) -> bool:
    """JSON-MIN: flat rows (no ``data``), each naming its task and its annotation."""
    return (isinstance(tasks, list) and bool(tasks)
            and all(isinstance(t, dict) and "data" not in t and "annotation_id" in t
                    and "id" in t for t in tasks))


def _from_json_min(rows: list[dict[str, Any]], label_key: str | None,
                   label_options: Iterable[str] | None) -> list[dict[str, Any]]:
    """JSON-MIN rows as the tasks of a full JSON export: one task per task id, its data
    the row's other columns, one ``choices`` annotation per annotated row."""
    key = label_key or _json_min_label_column(rows, label_options)
    tasks: dict[str, dict[str, Any]] = {}
    for row in rows:
        data = {k: v for k, v in row.items() if k not in JSON_MIN_FIELDS and k != key}
        task = tasks.setdefault(str(row["id"]), {"id": row["id"], "data": data,
                                                 "annotations": []})
        if row.get("annotation_id") is None:
            continue  # a task nobody annotated: its data only
        value = row.get(key)
        result: list[dict[str, Any]] = []
        if isinstance(value, str):
            result = [{"type": CHOICES, "value": {CHOICES: [value]}, "from_name": key}]
        elif isinstance(value, dict) and CHOICES in value:
            result = [{"type": CHOICES, "value": {CHOICES: value[CHOICES]}, "from_name": key}]
        elif value is not None:
            result = [{"type": f"JSON-MIN {_json_kind(value)}", "from_name": key}]
        task["annotations"].append({
            "id": row["annotation_id"], "completed_by": row.get("annotator"), "result": result,
            "created_at": row.get("created_at"), "updated_at": row.get("updated_at"),
            "lead_time": row.get("lead_time"), "json_min": True})
    return list(tasks.values())


def _json_min_label_column(rows: list[dict[str, Any]], label_options: Iterable[str] | None
                           ) -> str:
    """The one column of annotated rows whose values are all labels of the project."""
    annotated = [r for r in rows if r.get("annotation_id") is not None]
    columns = sorted({k for r in rows for k in r} - JSON_MIN_FIELDS)
    options = set(label_options or ())
    if not annotated:
        return columns[0] if columns else "label"  # nothing to label: any column will do
    fits = [c for c in columns if options and all(
        (isinstance(r.get(c), str) and r[c] in options)
        or (isinstance(r.get(c), dict) and set(r[c].get(CHOICES) or ()) <= options)
        for r in annotated)]
    if len(fits) == 1:
        return fits[0]
    why = (f"columns {', '.join(fits)} all hold the project's labels" if fits
           else "no column holds only the project's labels" if options
           else "the project declares no labels to recognise it by")
    raise LabelStudioFormatError([
        f"a JSON-MIN export names no result types and {why}: pass label_key, the "
        f"column (the choices control's name) holding the label; columns: {', '.join(columns)}"])


def _check_structure(tasks: Any, item_key: str | None) -> None:
    """Every structural problem at once, with the task index, before any mapping."""
    if not isinstance(tasks, list):
        raise LabelStudioFormatError([f"expected a JSON list of tasks, got {_json_kind(tasks)}"])
    problems: list[str] = []
    first_task_of_item: dict[str, int] = {}
    for index, task in enumerate(tasks):
        where = f"task #{index}"
        if not isinstance(task, dict):
            problems.append(f"{where}: expected a task object, got {_json_kind(task)}")
            continue
        has_id = _is_id(task.get("id"))
        if has_id:
            where = f"task #{index} (id {task['id']!r})"
        elif "id" in task:
            problems.append(f"{where}: 'id' must be an integer or a non-empty string")
        else:
            problems.append(f"{where}: no 'id'")
        if "data" not in task:
            problems.append(f"{where}: no 'data'")
        elif not isinstance(task["data"], dict):
            problems.append(f"{where}: 'data' must be an object, got {_json_kind(task['data'])}")
        elif has_id:
            item_id, _ = _item_of(task, item_key)
            if item_id in first_task_of_item:
                first = first_task_of_item[item_id]
                problems.append(f"{where}: item id {item_id!r} already used by task #{first}")
            else:
                first_task_of_item[item_id] = index
        problems.extend(_entry_problems(task, "annotations", where))
        problems.extend(_entry_problems(task, "predictions", where))
    if problems:
        raise LabelStudioFormatError(problems)


def _entry_problems(task: dict[str, Any], key: str, where: str) -> list[str]:
    entries = task.get(key)
    if entries is None:
        return []
    if not isinstance(entries, list):
        return [f"{where}: '{key}' must be a list, got {_json_kind(entries)}"]
    problems = []
    annotation_ids: set[str] = set()
    for index, entry in enumerate(entries):
        at = f"{where}: {key}[{index}]"
        if key == "predictions" and _is_id(entry):
            continue  # Label Studio 1.23's export API lists predictions by id
        if not isinstance(entry, dict):
            problems.append(f"{at} must be an object, got {_json_kind(entry)}")
            continue
        if key == "annotations":
            if not _is_id(entry.get("id")):
                problems.append(f"{at}: no 'id' (integer or non-empty string)")
            elif str(entry["id"]) in annotation_ids:
                problems.append(f"{at}: annotation id {entry['id']!r} repeated in the task")
            else:
                annotation_ids.add(str(entry["id"]))
        results = entry.get("result")
        if results is not None and not (
            isinstance(results, list) and all(isinstance(r, dict) for r in results)
        ):
            problems.append(f"{at}: 'result' must be a list of objects")
    return problems


def _label_of(
    task: dict[str, Any],
    annotation: dict[str, Any],
    *,
    project: str,
    item_id: str,
    batch_id: str,
    label_key: str | None,
    annotators: Annotators | None = None,
) -> tuple[LabelEvent, AnnotationRef, list[dict[str, Any]]]:
    """The one label event of an annotation, or ``_Skip`` saying why there is none."""
    if annotation.get("was_cancelled"):
        raise _Skip("cancelled by the annotator (was_cancelled)")
    result, ignored = _label_result(annotation.get("result") or [], label_key)
    label = _single_choice(result)
    annotators = annotators or Annotators({}, ANNOTATOR_DOMAIN)
    rejection = _rejecting_review(annotation, annotators)
    if rejection:
        raise _Skip(rejection)
    labeler_id = annotators.labeler(annotation.get("completed_by"))
    if labeler_id is None:
        raise _Skip("no annotator: 'completed_by' is missing or unreadable")
    created_at = _timestamp(annotation.get("updated_at") or annotation.get("created_at"))

    origin = result.get("origin")
    mode: ReviewMode | None = None
    shown_prelabel: str | None = None
    agreed: bool | None = None
    model_version: str | None = None
    if origin in PRELABEL_ORIGINS:
        mode = ReviewMode.prelabel
        prediction = _parent_prediction(task, annotation)
        if prediction is not None:
            model_version = _optional_str(prediction.get("model_version"))
            shown_prelabel = _predicted_choice(prediction, result.get("from_name"))
        if shown_prelabel is None and origin == ORIGIN_PREDICTION:
            shown_prelabel = label  # kept unchanged: what was shown is what was submitted
        agreed = label == shown_prelabel if shown_prelabel is not None else False
    elif annotation.get("json_min"):
        mode = None  # JSON-MIN does not say whether a pre-label was shown
    elif not task.get("predictions") and not annotation.get("prediction"):
        mode = ReviewMode.blind  # no pre-label existed to be shown

    try:
        event = LabelEvent(
            event_id=_event_id(project, task["id"], annotation["id"], label),
            project=project,
            item_id=item_id,
            label=label,
            labeler_id=labeler_id,
            source=LabelSource.imported,
            mode=mode,
            shown_prelabel=shown_prelabel,
            agreed_with_prelabel=agreed,
            model_version=model_version,
            task_id=f"{LABELER_PREFIX}{task['id']}",
            batch_id=batch_id,
            created_at=created_at,
            duration_ms=_duration_ms(annotation.get("lead_time")),
        )
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'label'}: {error['msg']}"
            for error in exc.errors()
        )
        raise _Skip(f"not a valid label event ({details})") from exc
    ref = AnnotationRef(
        task_id=task["id"],
        annotation_id=annotation["id"],
        result_id=_optional_str(result.get("id")),
        from_name=_optional_str(result.get("from_name")),
        to_name=_optional_str(result.get("to_name")),
    )
    return event, ref, ignored


def _event_id(project: str, task_id: Any, annotation_id: Any, label: str) -> uuid.UUID:
    """Stable across re-imports of a file; new when the annotation's label was edited since."""
    return stable_id("labelstudio", project, str(task_id), str(annotation_id), label)


def _label_result(
    results: list[dict[str, Any]], label_key: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The choices result holding the label, and the results deliberately left out."""
    if not results:
        raise _Skip("empty result: nothing was labeled")
    if label_key is None:
        chosen, ignored = results, []
    else:
        chosen = [r for r in results if r.get("from_name") == label_key]
        ignored = [r for r in results if r.get("from_name") != label_key]
        if not chosen:
            controls = sorted({str(r.get("from_name")) for r in results})
            raise _Skip(f"no result for control {label_key!r} (controls: {', '.join(controls)})")
    unmappable = sorted(
        {f"{r.get('type')} ({r.get('from_name')})" for r in chosen if r.get("type") != CHOICES}
    )
    if unmappable:
        raise _Skip(
            f"result type(s) loopwise cannot map: {', '.join(unmappable)}; "
            "only single-choice classification ('choices') imports"
        )
    controls = sorted({str(r.get("from_name")) for r in chosen})
    if len(controls) > 1:
        raise _Skip(
            f"choices from several controls ({', '.join(controls)}); "
            "pass label_key to name the one holding the label"
        )
    if len(chosen) > 1:
        raise _Skip(f"{len(chosen)} choices results for control {controls[0]} (per-region?)")
    return chosen[0], ignored


def _single_choice(result: dict[str, Any]) -> str:
    value = result.get("value")
    choices = value.get(CHOICES) if isinstance(value, dict) else None
    if not isinstance(choices, list):
        raise _Skip("choices result without a 'value.choices' list")
    if not choices:
        raise _Skip("no choice selected")
    if len(choices) > 1:
        raise _Skip(
            f"{len(choices)} choices selected {choices!r}: multi-label, "
            "a loopwise label is one choice"
        )
    if not isinstance(choices[0], str):
        raise _Skip(f"choice {choices[0]!r} is not text")
    return choices[0]


def _rejecting_review(annotation: dict[str, Any], annotators: Annotators) -> str | None:
    """A reason when the latest review rejected the annotation: it is not a label to learn from."""
    reviews = [r for r in annotation.get("reviews") or [] if isinstance(r, dict)]
    if not reviews:
        return None
    latest = max(reviews, key=lambda r: str(r.get("created_at") or ""))
    if latest.get("accepted") is not False:
        return None
    reviewer = annotators.labeler(latest.get("created_by")) or "a reviewer"
    return f"rejected in review by {reviewer} (review {latest.get('id')})"


def _parent_prediction(task: dict[str, Any], annotation: dict[str, Any]) -> dict[str, Any] | None:
    """The prediction the annotation started from: embedded, by id, or the task's only one."""
    embedded = annotation.get("prediction")
    if isinstance(embedded, dict) and embedded.get("result"):
        return embedded
    predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    parent_id = annotation.get("parent_prediction")
    if parent_id is not None:
        return next((p for p in predictions if p.get("id") == parent_id), None)
    return predictions[0] if len(predictions) == 1 else None


def _predicted_choice(prediction: dict[str, Any], from_name: Any) -> str | None:
    results = prediction.get("result")
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, dict) or result.get("type") != CHOICES:
            continue
        if result.get("from_name") != from_name:
            continue
        try:
            return _single_choice(result)
        except _Skip:
            return None
    return None


@dataclass(frozen=True)
class Annotators:
    """Who a Label Studio ``completed_by`` is in loopwise: one labeler per person, whichever
    form the export names them in (a bare user id, as 1.23 and JSON-MIN write it, or an
    object with ``id`` and ``email``, as older exports do).

    The email decides when it is known: from the object itself, or for a bare id from the
    ``users`` given (Label Studio's ``GET /api/users/``) or from an object naming the same
    id elsewhere in the export. An email of ``annotator_domain`` is a loopwise labeler that
    :func:`annotator_email` wrote out (``alice@loopwise.local`` is ``alice`` again, ``=XX``
    undone), so a round trip through Label Studio keeps the labeler; any other email is
    ``ls:<email>``. An id whose email is not known is ``ls:<id>``.
    """

    emails: Mapping[int, str]
    domain: str

    @classmethod
    def of(cls, tasks: list[dict[str, Any]], users: Mapping[int, str], domain: str
           ) -> Annotators:
        emails = {int(k): v for k, v in users.items()}
        for task in tasks:
            for annotation in task.get("annotations") or []:
                if not isinstance(annotation, dict):
                    continue
                named = [annotation.get("completed_by"),
                         *(r.get("created_by") for r in annotation.get("reviews") or []
                           if isinstance(r, dict))]
                for who in named:
                    if isinstance(who, dict) and _is_int_id(who.get("id")) \
                            and isinstance(who.get("email"), str) and who["email"]:
                        emails.setdefault(int(who["id"]), who["email"])
        return cls(emails, domain)

    def labeler(self, completed_by: Any) -> str | None:
        email: str | None = None
        user_id: Any = completed_by
        if isinstance(completed_by, dict):
            given = completed_by.get("email")
            email = given if isinstance(given, str) and given else None
            user_id = completed_by.get("id")
        if email is None and _is_int_id(user_id):
            email = self.emails.get(int(user_id))
        if email is not None:
            local, _, host = email.rpartition("@")
            if local and host.lower() == self.domain.lower():
                return _unescape_local(local)
            return f"{LABELER_PREFIX}{email}"
        if _is_id(user_id):
            return f"{LABELER_PREFIX}{user_id}"
        return None


def _user_emails(users: Any) -> dict[int, str]:
    """Label Studio's user list (``GET /api/users/``: objects with ``id`` and ``email``)
    as id -> email; entries without both are passed over."""
    if not isinstance(users, list):
        return {}
    return {int(u["id"]): u["email"] for u in users if isinstance(u, dict)
            and _is_int_id(u.get("id")) and isinstance(u.get("email"), str) and u["email"]}


def user_emails(data: bytes) -> dict[int, str]:
    """A file of Label Studio's ``GET /api/users/`` answer, as id -> email."""
    return _user_emails(_load_json(data))


def _is_int_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _unescape_local(local: str) -> str:
    """The labeler id :func:`_email_local` wrote as ``local`` (``=XX`` are UTF-8 bytes)."""
    if "=" not in local:
        return local
    out = bytearray()
    i = 0
    while i < len(local):
        if local[i] == "=" and re.fullmatch(r"[0-9A-F]{2}", local[i + 1:i + 3]):
            out.append(int(local[i + 1:i + 3], 16))
            i += 3
        else:
            out.extend(local[i].encode())
            i += 1
    return out.decode("utf-8", "replace")


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise _Skip("no 'updated_at' or 'created_at' timestamp")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _Skip(f"unreadable timestamp {value!r}") from exc
    return _utc(moment)


def _duration_ms(lead_time: Any) -> int | None:
    """Label Studio's ``lead_time`` is seconds spent on the annotation."""
    if isinstance(lead_time, bool) or not isinstance(lead_time, int | float):
        return None
    if not math.isfinite(lead_time) or lead_time < 0:
        return None
    return round(lead_time * 1000)


def _item_of(task: dict[str, Any], item_key: str | None) -> tuple[str, dict[str, Any]]:
    payload = dict(task["data"])
    if item_key is not None and _is_id(payload.get(item_key)):
        return str(payload.pop(item_key)), payload
    return str(task["id"]), payload


def _digest_batch_id(tasks: list[Any]) -> str:
    body = json.dumps(tasks, sort_keys=True, ensure_ascii=False, default=str)
    return f"ls-import:{hashlib.sha256(body.encode()).hexdigest()[:16]}"


# --- writing -------------------------------------------------------------------------------


def _export_task(
    item_id: str,
    payload: Mapping[str, Any],
    events: list[LabelEvent],
    refs: Mapping[uuid.UUID, AnnotationRef],
    default_control: tuple[str, str],
    item_key: str | None,
    annotator_domain: str,
) -> dict[str, Any]:
    known = [refs[e.event_id] for e in events if e.event_id in refs]
    task_id = known[0].task_id if known else _task_id_of(item_id)
    data = dict(payload)
    if item_key is not None:
        data[item_key] = item_id
    predictions: dict[tuple[str | None, str, str, str], dict[str, Any]] = {}

    def prediction(
        model_version: str | None, label: str, control: tuple[str, str], score: float | None
    ) -> dict[str, Any]:
        key = (model_version, label, *control)
        if key not in predictions:
            predictions[key] = {
                "id": len(predictions) + 1,
                "model_version": model_version,
                "score": score,
                "result": [_choices_result(f"p{len(predictions) + 1}", label, control, None)],
                "task": task_id,
            }
        elif predictions[key]["score"] is None:
            predictions[key]["score"] = score
        return predictions[key]

    annotations = []
    for event in events:
        ref = refs.get(event.event_id)
        control = (
            (ref.from_name or default_control[0], ref.to_name or default_control[1])
            if ref
            else default_control
        )
        if event.source is LabelSource.auto:
            version = event.model_version or event.labeler_id.removeprefix(AUTO_LABELER_PREFIX)
            prediction(version, event.label, control, event.confidence)
            continue
        origin, parent = ORIGIN_MANUAL, None
        if event.model_label is not None:  # the model's guess, shown or not
            prediction(event.model_version, event.model_label, control, event.confidence)
        if event.shown_prelabel is not None:
            agreed = event.label == event.shown_prelabel
            origin = ORIGIN_PREDICTION if agreed else ORIGIN_PREDICTION_CHANGED
            if not event.planted_prelabel:  # a planted gold pre-label is no model's guess
                parent = prediction(event.model_version, event.shown_prelabel, control, None)
        moment = _ls_timestamp(event.created_at)
        annotations.append(
            {
                "id": ref.annotation_id if ref else event.event_id.int % 2**53,
                "completed_by": annotator_email(event.labeler_id, annotator_domain),
                "result": [
                    _choices_result(
                        (ref.result_id if ref else None) or event.event_id.hex[:10],
                        event.label,
                        control,
                        origin,
                    )
                ],
                "was_cancelled": False,
                "ground_truth": False,
                "created_at": moment,
                "updated_at": moment,
                "lead_time": None if event.duration_ms is None else event.duration_ms / 1000,
                "prediction": copy.deepcopy(parent) if parent else {},
                "parent_prediction": parent["id"] if parent else None,
                "task": task_id,
            }
        )
    return {
        "id": task_id,
        "data": data,
        "annotations": annotations,
        "predictions": list(predictions.values()),
    }


def _choices_result(
    result_id: str, label: str, control: tuple[str, str], origin: str | None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "id": result_id,
        "type": CHOICES,
        "value": {CHOICES: [label]},
        "from_name": control[0],
        "to_name": control[1],
    }
    if origin is not None:
        result["origin"] = origin
    return result


def annotator_email(labeler_id: str, domain: str = ANNOTATOR_DOMAIN) -> int | dict[str, str]:
    """The ``completed_by`` Label Studio's import resolves to one of its users.

    An annotator imported from Label Studio goes back as it came (``ls:7`` is user 7 of
    that Label Studio, ``ls:ann@x.org`` that email); a labeler id that is an email
    stays itself; any other labeler becomes ``<labeler>@<domain>``; a labeler id that is
    no plain local part (a space, a second dot, ``=``, non-ASCII) has those characters
    written ``=XX`` (UTF-8 bytes in hex), so two labelers never share an address and
    the address is one Label Studio accepts.
    """
    if labeler_id.startswith(LABELER_PREFIX):
        name = labeler_id.removeprefix(LABELER_PREFIX)
        if name.isascii() and name.isdigit() and str(int(name)) == name:
            return int(name)
        if "@" in name:
            return {"email": name}
        labeler_id = name
    local, at, host = labeler_id.rpartition("@")
    if at and local and host and _EMAIL_LOCAL.fullmatch(local) and "." in host:
        return {"email": labeler_id}
    return {"email": f"{_email_local(labeler_id)}@{domain}"}


def _email_local(name: str) -> str:
    """``name`` when it is a plain local part without ``=``; else every character but
    the plain ones escaped, ``=`` included (so the mapping is one-to-one)."""
    if _EMAIL_LOCAL.fullmatch(name) and "=" not in name:
        return name
    plain = re.compile(r"[A-Za-z0-9!#$%&'*+/?^_`{|}~-]")
    return "".join(c if plain.fullmatch(c) else "".join(f"={b:02X}" for b in c.encode())
                   for c in name)


def _task_id_of(item_id: str) -> int | str:
    if item_id.isascii() and item_id.isdigit() and str(int(item_id)) == item_id:
        return int(item_id)
    return item_id


def _ls_timestamp(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _as_label_event(label: LabelEvent | Mapping[str, Any]) -> LabelEvent:
    if isinstance(label, LabelEvent):
        return label
    if isinstance(label, Mapping):
        return LabelEvent.model_validate(dict(label))
    return LabelEvent.model_validate(label, from_attributes=True)


# --- small readers ---------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    """Label Studio writes UTC; a timestamp without a zone is read as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and bool(value.strip()))


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return kinds.get(type(value), type(value).__name__)
