"""A fuzz of every stream the services consume (issue 13, item 6).

Each example posts one batch to the real stream, read by the real services (each its
own process): valid entries mixed with malformed ones (no body, bytes that are not
JSON, JSON that is not an object, a required field missing, a field of the wrong type,
NaN and infinities, NUL and control characters, over-long strings, integers beyond
64 bits, payloads nested too deep). Then:

- every malformed entry is dead-lettered by every consumer group of the stream, with a
  reason that names what was wrong;
- every valid neighbour is processed (its effect is visible through the owning
  service's API) and none is dead-lettered;
- nothing is left pending and every consumer is still consuming (``/readyz``).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis as syncredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import streams
from shared.limits import ID_MAX, JSON_DEPTH_MAX, LABEL_MAX, VERSION_MAX
from shared.settings import Settings
from tests.helpers import token

pytestmark = pytest.mark.integration

GROUPS = {
    streams.ITEMS: (streams.GROUP_SCORER,),
    streams.PREDICTIONS: (streams.GROUP_ROUTER, streams.GROUP_SCORER),
    streams.LABELS: (streams.GROUP_LABELS, streams.GROUP_SCORER, streams.GROUP_QUALITY),
    streams.QUALITY: (streams.GROUP_ROUTER,),
    streams.PROJECTS: (streams.GROUP_ROUTER, streams.GROUP_SCORER, streams.GROUP_QUALITY),
}

# --- valid events, one per stream --------------------------------------------------------


def valid_event(stream: str, project: str, n: int) -> dict[str, Any]:
    item = f"item-{n}"
    if stream == streams.ITEMS:
        return {"project": project, "item_id": item, "features": [0.25, float(n)],
                "payload": {"text": f"item {n}", "tags": ["a", None, 1.5]}}
    if stream == streams.PREDICTIONS:
        return {"project": project, "item_id": item, "model_version": "m1",
                "probs": {"a": 0.6, "b": 0.4}, "review": True, "priority": 0.5,
                "payload": {"n": n}}
    if stream == streams.LABELS:
        return {"project": project, "item_id": item, "label": "a\tb", "labeler_id": "alice",
                "source": "human", "mode": "blind", "confidence": 0.5, "duration_ms": 100}
    if stream == streams.QUALITY:
        if n % 2:
            return {"type": "labeler_flag", "project": project, "labeler_id": f"lab-{n}",
                    "pause": True, "statistic": 3.5, "threshold": 3.0,
                    "tasks_in_evidence": 10}
        return {"type": "adjudication_request", "project": project, "item_id": item,
                "labels": {"alice": "a", "bob": "b"}, "consensus": "a", "confidence": 0.5,
                "reason": "split_vote"}
    if stream == streams.PROJECTS:
        return {"project": project, "revision": n + 1, "changed_by": "admin",
                "settings": {"routing": {"audit_rate": round(0.01 * (n + 1), 4)},
                             "selection": {"select_budget": n + 1},
                             "settings": {"note": f"rev {n + 1}"}}}
    raise AssertionError(stream)


# --- what makes an entry malformed ----------------------------------------------------------

NOT_A_STRING = st.one_of(st.integers(-5, 5), st.booleans(), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
NOT_A_NUMBER = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, "many", [1.0], {}]))


def with_control(max_size: int, allowed_whitespace: bool = False) -> st.SearchStrategy[str]:
    """A short text holding a control character (NUL included) that the field refuses."""
    bad = "\x00\x01\x1b\x7f" if allowed_whitespace else "\x00\x01\x1b\x7f\n\t"
    return st.builds(lambda a, c, b: a + c + b, st.text(max_size=max_size // 2),
                     st.sampled_from(list(bad)), st.text(max_size=max_size // 2))


def too_long(max_length: int) -> st.SearchStrategy[str]:
    return st.integers(max_length + 1, max_length + 50).map(lambda n: "x" * n)


def bad_id(max_length: int) -> st.SearchStrategy[Any]:
    return st.one_of(with_control(20), too_long(max_length), st.just(""), NOT_A_STRING)


def bad_label() -> st.SearchStrategy[Any]:
    return st.one_of(with_control(20, allowed_whitespace=True), too_long(LABEL_MAX),
                     st.just(""), NOT_A_STRING)


def deep(levels: int) -> Any:
    doc: Any = 1
    for _ in range(levels):
        doc = {"d": doc}
    return doc


BAD_JSON_DOC = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]).map(lambda x: {"x": [1, {"y": x}]}),
    with_control(10).filter(lambda s: "\x00" in s).map(lambda s: {"note": s}),
    st.just({"k\x00ey": 1}),
    st.integers(2**63, 2**70).map(lambda n: {"big": n}),
    st.just(deep(JSON_DEPTH_MAX + 2)),
    st.just([1, 2]),
)

# Per stream: field -> values it refuses. A mutation sets one of them on a valid event.
BAD_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    streams.ITEMS: {
        "project": bad_id(64), "item_id": bad_id(ID_MAX), "payload": BAD_JSON_DOC,
        "features": st.one_of(NOT_A_NUMBER.map(lambda x: [0.1, x]), st.just("1,2")),
        "text": st.one_of(st.just("a\x00b"), st.just(7)),
    },
    streams.PREDICTIONS: {
        "project": bad_id(64), "item_id": bad_id(ID_MAX), "model_version": bad_id(VERSION_MAX),
        "priority": NOT_A_NUMBER, "payload": BAD_JSON_DOC,
        "probs": st.one_of(NOT_A_NUMBER.map(lambda x: {"a": x, "b": 0.5}),
                           bad_label().filter(lambda s: isinstance(s, str)).map(
                               lambda s: {s: 1.0}),
                           st.just({"a": 0.2, "b": 0.2}), st.just(["a"])),
        "created_at": st.sampled_from(["yesterday", 1e30, [2024]]),
    },
    streams.LABELS: {
        "project": bad_id(64), "item_id": bad_id(ID_MAX), "label": bad_label(),
        "labeler_id": bad_id(ID_MAX), "source": st.sampled_from(["robot", 1, None]),
        "mode": st.sampled_from(["loud", 3]),
        "confidence": st.one_of(NOT_A_NUMBER, st.just(1.5)),
        "duration_ms": st.sampled_from([-1, 2**31, 2**64, math.nan, "long"]),
        "task_id": bad_id(64), "batch_id": bad_id(64), "guideline_version": bad_id(64),
        "shown_prelabel": bad_label(), "gold_label": bad_label(),
        "supersedes": bad_id(36), "schema_version": st.sampled_from([0, 2, "one"]),
    },
    streams.QUALITY: {
        "type": st.sampled_from(["labeler_flagged", "", 5]),
        "project": bad_id(64),
        "labeler_id": bad_id(ID_MAX),
        "statistic": NOT_A_NUMBER, "threshold": NOT_A_NUMBER,
        "item_id": bad_id(ID_MAX), "consensus": bad_label(),
        "confidence": st.one_of(NOT_A_NUMBER, st.just(-0.5)),
        "labels": st.one_of(bad_label().filter(lambda s: isinstance(s, str)).map(
            lambda s: {"alice": s}), st.just({"al\x00ice": "a"}), st.just(["a"])),
        "tasks_in_evidence": st.sampled_from([-1, 2**40, math.inf]),
    },
    streams.PROJECTS: {
        "project": bad_id(64), "revision": st.sampled_from([-1, math.nan, "two", 2**60]),
        "changed_by": bad_id(ID_MAX),
        "settings": st.one_of(
            NOT_A_NUMBER.map(lambda x: {"routing": {"recalibration_seconds": x}}),
            NOT_A_NUMBER.map(lambda x: {"routing": {"audit_rate": x}}),
            BAD_JSON_DOC.filter(lambda d: isinstance(d, dict)).map(lambda d: {"settings": d}),
            bad_label().filter(lambda s: isinstance(s, str)).map(
                lambda s: {"label_options": [s]}),
            st.just({"routing": {"guideline_version": "v\x001"}}),
            st.just({"selection": {"strategy": "psychic"}}),
            st.just(["settings"]),
        ),
    },
}
REQUIRED = {
    streams.ITEMS: ["project", "item_id"],
    streams.PREDICTIONS: ["project", "item_id", "model_version", "probs"],
    streams.LABELS: ["project", "item_id", "label", "labeler_id", "source"],
    streams.QUALITY: ["type", "project"],
    streams.PROJECTS: ["project", "settings", "revision"],
}


@dataclass
class Entry:
    fields: dict[str, Any]  # as XADD'ed
    valid: bool
    names: str | None  # what a dead letter's reason must mention


def _dumps(doc: Any) -> str:
    return json.dumps(doc)  # NaN and Infinity as the literals JSON parsers accept


@st.composite
def malformed(draw: st.DrawFn, stream: str, project: str, n: int) -> Entry:
    event = valid_event(stream, project, n)
    kind = draw(st.sampled_from(["field", "field", "field", "missing", "raw"]))
    if kind == "field":
        # A quality event's fields depend on its type: only those of this one count.
        name = draw(st.sampled_from(sorted(
            n for n in BAD_FIELDS[stream] if stream != streams.QUALITY or n in event)))
        event[name] = draw(BAD_FIELDS[stream][name])
        return Entry({"data": _dumps(event)}, False, "type" if name == "type" else name)
    if kind == "missing":
        name = draw(st.sampled_from(REQUIRED[stream]))
        event.pop(name)
        return Entry({"data": _dumps(event)}, False, "type" if name == "type" else name)
    raw = draw(st.sampled_from(["no body", "not json", "not an object", "bytes"]))
    if raw == "no body":
        return Entry({"payload": _dumps(event)}, False, "'data'")
    if raw == "not json":
        return Entry({"data": _dumps(event)[:-1]}, False, "'data'")
    if raw == "not an object":
        doc = draw(st.one_of(st.just([event]), st.integers(), st.text(max_size=5)))
        return Entry({"data": _dumps(doc)}, False, "'data'")
    return Entry({"data": b"\xff\xfe" + draw(st.binary(max_size=8))}, False, "'data'")


@st.composite
def batches(draw: st.DrawFn, stream: str) -> tuple[str, list[Entry]]:
    project = f"fz-{uuid.uuid4().hex[:10]}"
    shape = draw(st.lists(st.booleans(), min_size=3, max_size=8))
    shape[0] = True  # at least one valid neighbour...
    shape[-1] = shape[-1] if any(not s for s in shape) else False  # ...and one bad entry
    entries = [Entry({"data": _dumps(valid_event(stream, project, n))}, True, None) if ok
               else draw(malformed(stream, project, n)) for n, ok in enumerate(shape)]
    return project, entries


# --- checks ----------------------------------------------------------------------------------


def _wait_drained(r: syncredis.Redis, stream: str, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        groups = {g["name"].decode(): g for g in r.xinfo_groups(stream)}
        if all(int(groups[g]["pending"]) == 0 and int(groups[g].get("lag") or 0) == 0
               for g in GROUPS[stream] if g in groups) and set(GROUPS[stream]) <= set(groups):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{stream}: groups not drained: {groups}")
        time.sleep(0.1)


def _dead_letters(r: syncredis.Redis, since: str, stream: str) -> dict[tuple[str, str], str]:
    """(entry id, group) -> reason of the dead letters for ``stream`` written since."""
    out = {}
    for _, fields in r.xrange(streams.DEADLETTER, min=since):
        dead = json.loads(fields[b"data"])
        if dead["stream"] == stream:
            out[(dead["entry_id"], dead["group"])] = dead["reason"]
    return out


def _processed(http: dict[str, httpx.Client], stream: str, project: str,
               valid: list[dict[str, Any]]) -> None:
    """The valid entries' effects, through the owning services' APIs."""
    if stream == streams.ITEMS:
        r = http["scorer"].post(f"/v1/projects/{project}/items/lookup",
                                json={"item_ids": [e["item_id"] for e in valid]})
        assert r.status_code == 200, r.text
        assert sorted(r.json()["items"]) == sorted(e["item_id"] for e in valid)
    elif stream == streams.PREDICTIONS:
        r = http["router"].get(f"/v1/projects/{project}/queue")
        assert r.status_code == 200, r.text
        assert r.json()["depth"] == len(valid)
    elif stream == streams.LABELS:
        r = http["labels"].get(f"/v1/projects/{project}/labels", params={"limit": 1000})
        assert r.status_code == 200, r.text
        assert sorted(x["item_id"] for x in r.json()["labels"]) == sorted(
            e["item_id"] for e in valid)
    elif stream == streams.QUALITY:
        r = http["router"].get(f"/v1/projects/{project}/queue")
        assert r.status_code == 200, r.text
        flags = [e for e in valid if e["type"] == "labeler_flag"]
        assert r.json()["adjudication_depth"] == len(valid) - len(flags)
        assert sorted(r.json()["paused"]) == sorted(e["labeler_id"] for e in flags)
    elif stream == streams.PROJECTS:
        newest = max(valid, key=lambda e: e["revision"])["settings"]
        r = http["router"].get(f"/v1/projects/{project}/policy")
        assert r.status_code == 200, r.text
        assert r.json()["audit_rate"] == newest["routing"]["audit_rate"]
        r = http["scorer"].get(f"/v1/projects/{project}/config")
        assert r.status_code == 200, r.text
        assert r.json()["select_budget"] == newest["selection"]["select_budget"]


def _all_consuming(http: dict[str, httpx.Client]) -> None:
    for name, client in http.items():
        r = client.get("/readyz")
        assert r.status_code == 200, (name, r.text)
        assert all(c["status"] == "consuming" for c in r.json()["consumers"]), (name, r.text)


@pytest.fixture(scope="module")
async def service_bearer(services: Settings, engine) -> str:
    return await token(engine, f"fuzz-{uuid.uuid4().hex[:6]}", "service", "*")


@pytest.fixture(scope="module")
def http(services: Settings, service_bearer: str):
    headers = {"Authorization": f"Bearer {service_bearer}"}
    clients = {name: httpx.Client(base_url=services.url_of(name), headers=headers, timeout=30)
               for name in ("scorer", "router", "labels", "quality")}
    yield clients
    for c in clients.values():
        c.close()


@pytest.fixture(scope="module")
def sync_redis(services: Settings):
    client = syncredis.Redis.from_url(services.redis_url)
    yield client
    client.close()


FUZZ = settings(max_examples=6, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("stream", sorted(GROUPS))
@FUZZ
@given(data=st.data())
def test_every_malformed_entry_is_dead_lettered_and_its_neighbours_processed(
        stream: str, data: st.DataObject, http, sync_redis) -> None:
    project, entries = data.draw(batches(stream))
    pipe = sync_redis.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(stream, entry.fields)
    ids = [i.decode() for i in pipe.execute()]
    try:
        _wait_drained(sync_redis, stream)
        _check(sync_redis, http, stream, project, ids, entries)
    finally:
        # Consumed and acknowledged by every group: gone, so that the tests that read a
        # whole stream (the streams are shared by the session) never meet a fuzz entry.
        sync_redis.xdel(stream, *ids)


def _check(sync_redis: syncredis.Redis, http: dict[str, httpx.Client], stream: str,
           project: str, ids: list[str], entries: list[Entry]) -> None:
    dead = _dead_letters(sync_redis, ids[0], stream)
    for entry_id, entry in zip(ids, entries, strict=True):
        for group in GROUPS[stream]:
            reason = dead.get((entry_id, group))
            if entry.valid:
                assert reason is None, f"{group} dead-lettered a valid entry: {reason}"
            else:
                assert reason, f"{group} did not dead-letter {entry.fields!r}"
                assert entry.names in reason, (entry.names, reason, entry.fields)
    _processed(http, stream, project,
               [json.loads(e.fields["data"]) for e in entries if e.valid])
    _all_consuming(http)
