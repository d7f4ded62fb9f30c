import asyncio

from faststream.redis.parser.binary import BinaryMessageFormatV1

from shared.events import ItemEvent
from shared.wire import MALFORMED_KEY, encode_event, entry_body


def test_plain_data_field_from_any_client():
    assert entry_body({b"data": b'{"project": "p"}'}) == b'{"project": "p"}'
    assert entry_body({"data": '{"project": "p"}'}) == b'{"project": "p"}'
    assert entry_body(encode_event('{"a": 1}')) == b'{"a": 1}'


def test_an_entry_without_an_id_gets_one_from_its_bytes_so_a_resend_is_harmless():
    def event_id(raw: bytes) -> str:
        body = entry_body({b"data": raw})
        assert isinstance(body, bytes)
        return str(ItemEvent.model_validate_json(body, context={"raw": body}).event_id)

    first = event_id(b'{"project": "p", "item_id": "1", "text": "x"}')
    again = event_id(b'{"project": "p", "item_id": "1", "text": "x"}')
    other = event_id(b'{"project": "p", "item_id": "2", "text": "x"}')
    assert first == again != other
    explicit = "6f1c3c52-7d0e-4a53-9a59-2d1f6f0b7a11"
    assert event_id(f'{{"event_id": "{explicit}", "project": "p", "item_id": "1", '
                    f'"text": "x"}}'.encode()) == explicit


def test_faststream_envelope_is_understood():
    envelope = asyncio.run(BinaryMessageFormatV1.encode(
        message={"project": "p", "item_id": "1", "text": "x"}, reply_to=None, headers=None,
        correlation_id="c1"))
    body = entry_body({b"__data__": envelope})
    assert isinstance(body, bytes)
    assert ItemEvent.model_validate_json(body).item_id == "1"


def test_an_entry_without_a_body_becomes_a_marker_with_its_reason_and_original():
    marker = entry_body({b"other": b"1"})
    assert isinstance(marker, dict)
    assert "no 'data' field" in marker[MALFORMED_KEY]
    assert marker["fields"] == {"other": "1"}
