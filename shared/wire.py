"""The stream wire format: one field ``data`` holding a JSON object.

Any Redis client can produce it (``XADD loopwise:items '*' data '{...}'``).
FastStream publishers write their own binary envelope under ``__data__``;
both are accepted. Decoding never raises: an undecodable entry becomes a
``Malformed`` marker so the consumer can dead-letter it with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from faststream.redis.parser.binary import BinaryMessageFormatV1
from faststream.redis.parser.message import MessageFormat

from shared.events import stable_id

DATA_FIELD = "data"
FASTSTREAM_FIELD = "__data__"
MALFORMED_KEY = "__loopwise_malformed__"


def text(value: Any) -> str:
    """A Redis reply value as text (bytes decoded as UTF-8, undecodable bytes replaced)."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def original_fields(fields: Mapping[Any, Any]) -> dict[str, str]:
    """The entry's fields as text, for a dead letter that keeps the original."""
    return {text(k): text(v) for k, v in fields.items()}


def decode_entry(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """Decode one stream entry to its JSON object, or to a malformed marker with a reason."""
    raw = entry_body(fields)
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return malformed(f"'{DATA_FIELD}' is not JSON: {exc}", fields)
    if not isinstance(value, dict):
        return malformed(
            f"'{DATA_FIELD}' must be a JSON object, got {type(value).__name__}", fields
        )
    if value.get("event_id") is None:
        # A resend of the same bytes gets the same id. Hashing the bytes as they came is
        # cheaper than the models' own derivation (re-encoding the object with sorted keys).
        value["event_id"] = str(stable_id("entry", raw.decode(errors="replace")))
    return value


def entry_body(fields: Mapping[Any, Any]) -> bytes | dict[str, Any]:
    """The entry's JSON bytes, undecoded (the model validates them in one pass), or a
    malformed marker when the entry has no body at all."""
    raw = fields.get(DATA_FIELD.encode(), fields.get(DATA_FIELD))
    if raw is None:
        envelope = fields.get(FASTSTREAM_FIELD.encode(), fields.get(FASTSTREAM_FIELD))
        if envelope is None:
            return malformed(f"no '{DATA_FIELD}' field", fields)
        raw, _headers = BinaryMessageFormatV1.parse(
            envelope if isinstance(envelope, bytes) else envelope.encode()
        )
    return raw if isinstance(raw, bytes) else str(raw).encode()


def malformed(reason: str, fields: Mapping[Any, Any]) -> dict[str, Any]:
    return {MALFORMED_KEY: reason, "fields": original_fields(fields)}


def encode_event(json_text: str) -> dict[str, str]:
    """Stream fields for one event, in the contract's wire format."""
    return {DATA_FIELD: json_text}


class LoopwiseMessageFormat(MessageFormat):
    """FastStream message format that reads the contract's plain ``data`` entries.

    FastStream's batch stream parser hands each raw entry (a dict of fields)
    to ``parse`` when the entry has no ``__data__`` envelope; we turn it into
    JSON bytes, keeping malformed entries as markers instead of failing the batch.
    """

    @classmethod
    async def encode(cls, **kwargs: Any) -> bytes:  # type: ignore[override]
        return await BinaryMessageFormatV1.encode(**kwargs)

    @classmethod
    def parse(cls, data: Any) -> tuple[bytes, dict[str, Any]]:
        if isinstance(data, Mapping):
            return json.dumps(decode_entry(data)).encode(), {}
        body, headers = BinaryMessageFormatV1.parse(data)
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            value = malformed(f"FastStream body is not JSON: {exc}", {FASTSTREAM_FIELD: body})
        if not isinstance(value, dict):
            value = malformed("FastStream body must be a JSON object", {FASTSTREAM_FIELD: body})
        return json.dumps(value).encode(), headers
