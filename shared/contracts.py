"""The event contract for producer teams: a JSON Schema of every event and an AsyncAPI
document of every stream, generated from the one definition of each event
(:mod:`shared.events`, :mod:`shared.projects`).

The AsyncAPI document is FastStream's own generator run over a documentation-only
``RedisBroker`` that declares who consumes and who publishes each stream (never
connected: the services read the streams with :mod:`shared.bus`). The tables below are
the declaration; ``tests/test_contracts.py`` checks them against the consumers the
running services report on ``/readyz``, and the committed files under ``schemas/``
against what the models generate now (``make schemas`` regenerates them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared import streams
from shared.events import (
    AdjudicationRequestEvent,
    ComparisonEvent,
    DeadLetterEvent,
    GuidelineAlertEvent,
    ItemEvent,
    LabelerFlagClearedEvent,
    LabelerFlagEvent,
    LabelEvent,
    ModelTrainedEvent,
    PredictionEvent,
    QualityEvent,
)
from shared.projects import ProjectSettingsChanged

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
DOC_VERSION = "1"  # shared.events.SCHEMA_VERSION is the events'; this is the document's
WIRE_FORMAT = ("Each entry has one field, `data`, holding the event as a JSON object "
               "(entries FastStream publishes, in its `__data__` envelope, are read too). "
               "An entry that does not validate goes to `loopwise:deadletter` with the "
               "reason.")

# One file per event, named by the event's kind. QualityEvent is what loopwise:quality
# carries: one of the four findings, told apart by ``type``.
EVENT_MODELS: dict[str, type[BaseModel]] = {
    "item": ItemEvent,
    "prediction": PredictionEvent,
    "comparison": ComparisonEvent,
    "label": LabelEvent,
    "quality": QualityEvent,
    "labeler_flag": LabelerFlagEvent,
    "labeler_flag_cleared": LabelerFlagClearedEvent,
    "adjudication_request": AdjudicationRequestEvent,
    "guideline_alert": GuidelineAlertEvent,
    "project_settings": ProjectSettingsChanged,
    "model": ModelTrainedEvent,
    "deadletter": DeadLetterEvent,
}

STREAM_EVENTS: dict[str, type[BaseModel]] = {
    streams.ITEMS: ItemEvent,
    streams.PREDICTIONS: PredictionEvent,
    streams.COMPARISONS: ComparisonEvent,
    streams.LABELS: LabelEvent,
    streams.QUALITY: QualityEvent,
    streams.PROJECTS: ProjectSettingsChanged,
    streams.MODELS: ModelTrainedEvent,
    streams.DEADLETTER: DeadLetterEvent,
}


@dataclass(frozen=True)
class Consumer:
    service: str
    stream: str
    group: str
    why: str


@dataclass(frozen=True)
class Producer:
    who: str  # a service, or "producers" (any client of the wire format)
    stream: str
    why: str


CONSUMERS = (
    Consumer("scorer", streams.ITEMS, streams.GROUP_SCORER, "stores and scores new items"),
    Consumer("scorer", streams.LABELS, streams.GROUP_SCORER,
             "counts new human labels towards the next retraining"),
    Consumer("scorer", streams.PROJECTS, streams.GROUP_SCORER, "keeps the selection settings"),
    Consumer("scorer", streams.PREDICTIONS, streams.GROUP_SCORER,
             "keeps the payload of items that came only as a producer's prediction"),
    Consumer("router", streams.PREDICTIONS, streams.GROUP_ROUTER,
             "auto-accepts or queues each prediction for review"),
    Consumer("router", streams.QUALITY, streams.GROUP_ROUTER,
             "pauses flagged labelers, queues adjudications"),
    Consumer("router", streams.PROJECTS, streams.GROUP_ROUTER, "keeps the routing policy"),
    Consumer("router", streams.COMPARISONS, streams.GROUP_ROUTER,
             "queues each comparison for reviewers, candidates in an order drawn per reviewer"),
    Consumer("labels", streams.LABELS, streams.GROUP_LABELS,
             "stores every label, append-only, once per event_id"),
    Consumer("quality", streams.LABELS, streams.GROUP_QUALITY,
             "counts votes: agreement, gold, consensus, deference"),
    Consumer("quality", streams.PROJECTS, streams.GROUP_QUALITY, "keeps the quality settings"),
)

PRODUCERS = (
    Producer("producers", streams.ITEMS, "items to score (any Redis client)"),
    Producer("producers", streams.PREDICTIONS, "predictions of an outside model"),
    Producer("scorer", streams.PREDICTIONS, "its model's scores of new items and selections"),
    Producer("producers", streams.COMPARISONS, "comparisons of candidate outputs to judge"),
    Producer("router", streams.COMPARISONS, "comparisons posted over HTTP"),
    Producer("scorer", streams.COMPARISONS, "the pairs its reward model is least sure about"),
    Producer("router", streams.LABELS, "auto labels and every submitted review"),
    Producer("labels", streams.LABELS, "labels posted over HTTP and Label Studio imports"),
    Producer("quality", streams.LABELS, "consensus labels"),
    Producer("quality", streams.QUALITY, "labeler flags, adjudication requests, alerts"),
    Producer("labels", streams.PROJECTS, "every change of a project's settings"),
    Producer("scorer", streams.MODELS, "each model version that starts serving"),
    Producer("every service", streams.DEADLETTER, "entries a consumer refused, with the reason"),
)


def event_schema(name: str, model: type[BaseModel]) -> dict[str, Any]:
    """What a producer may send (the validation side: defaulted fields are optional)."""
    schema = model.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_DIALECT, "$id": f"events/{name}.schema.json", **schema}


def event_schemas() -> dict[str, dict[str, Any]]:
    """File name under ``schemas/`` -> its JSON Schema."""
    return {f"events/{name}.schema.json": event_schema(name, model)
            for name, model in EVENT_MODELS.items()}


def _handler(model: type[BaseModel]) -> Any:
    async def handle(event: Any) -> None:
        """Documentation only: the services consume with shared.bus."""

    handle.__annotations__ = {"event": model, "return": None}  # the message's schema
    return handle


@cache
def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every stream: who consumes it (and in which group),
    who publishes it, and the schema of its events."""
    from faststream.redis import RedisBroker, StreamSub
    from faststream.specification import AsyncAPI

    # The address the README and docker-compose use; never connected to.
    broker = RedisBroker("redis://localhost:6379", description=WIRE_FORMAT)
    for c in CONSUMERS:
        broker.subscriber(
            stream=StreamSub(c.stream, group=c.group, consumer=c.service),
            title=f"{c.service}.reads.{c.stream}", description=f"{c.why}. {WIRE_FORMAT}",
        )(_handler(STREAM_EVENTS[c.stream]))
    for p in PRODUCERS:
        broker.publisher(stream=p.stream, schema=STREAM_EVENTS[p.stream],
                         title=f"{p.who.replace(' ', '-')}.writes.{p.stream}", description=p.why)
    spec = AsyncAPI(broker, title="loopwise streams", version=DOC_VERSION,
                    description="The Redis streams of loopwise: " + WIRE_FORMAT,
                    schema_version="3.0.0").to_specification()
    document: dict[str, Any] = spec.to_jsonable()
    return document


def generated_files() -> dict[str, str]:
    """Every file ``make schemas`` writes under ``schemas/``, as text."""
    files = {name: schema for name, schema in event_schemas().items()}
    files["asyncapi.json"] = asyncapi_document()
    return {name: json.dumps(body, indent=2, sort_keys=True) + "\n"
            for name, body in files.items()}


def write(folder: Path) -> list[Path]:
    """(Re)write the generated files under ``folder``; return what changed."""
    changed = []
    for name, text in generated_files().items():
        path = folder / name
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(path)
    return changed


def main() -> None:
    """``python -m shared.contracts [folder]``: regenerate ``schemas/``."""
    import sys

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")
    for path in write(folder):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
