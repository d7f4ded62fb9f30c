"""The stream wire format: one field ``data`` holding a JSON object.

Any Redis client can produce it (``XADD loopwise:items '*' data '{...}'``).
FastStream publishers write their own binary envelope under ``__data__``;
both are accepted. The body is left as bytes for the event model to parse and
validate in one pass; an entry without a body becomes a malformed marker so the
consumer can dead-letter it with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faststream.redis.parser.binary import BinaryMessageFormatV1
from redis.typing import EncodableT, FieldT

DATA_FIELD = "data"
FASTSTREAM_FIELD = "__data__"
MALFORMED_KEY = "__loopwise_malformed__"


def text(value: Any) -> str:
    """A Redis reply value as text (bytes decoded as UTF-8, undecodable bytes replaced)."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def original_fields(fields: Mapping[Any, Any]) -> dict[str, str]:
    """The entry's fields as text, for a dead letter that keeps the original."""
    return {text(k): text(v) for k, v in fields.items()}


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


def encode_event(json_text: str) -> dict[FieldT, EncodableT]:
    """Stream fields for one event, in the contract's wire format."""
    return {DATA_FIELD: json_text}
