import asyncio
import json

from faststream.redis.parser.binary import BinaryMessageFormatV1

from shared.wire import MALFORMED_KEY, LoopwiseMessageFormat, decode_entry


def _without_id(value: dict) -> dict:
    return {k: v for k, v in value.items() if k != "event_id"}


def test_plain_data_field_from_any_client():
    assert _without_id(decode_entry({b"data": b'{"project": "p"}'})) == {"project": "p"}
    assert _without_id(decode_entry({"data": '{"project": "p"}'})) == {"project": "p"}


def test_an_entry_without_an_id_gets_one_from_its_bytes_so_a_resend_is_harmless():
    first = decode_entry({b"data": b'{"project": "p", "item_id": "1"}'})
    again = decode_entry({b"data": b'{"project": "p", "item_id": "1"}'})
    other = decode_entry({b"data": b'{"project": "p", "item_id": "2"}'})
    assert first["event_id"] == again["event_id"] != other["event_id"]
    explicit = decode_entry({b"data": b'{"event_id": "e-1", "project": "p"}'})
    assert explicit["event_id"] == "e-1"


def test_faststream_envelope_is_understood():
    envelope = asyncio.run(BinaryMessageFormatV1.encode(
        message={"project": "p", "item_id": "1"}, reply_to=None, headers=None,
        correlation_id="c1"))
    assert _without_id(decode_entry({b"__data__": envelope})) == {"project": "p", "item_id": "1"}
    body, _ = LoopwiseMessageFormat.parse(envelope)
    assert json.loads(body) == {"project": "p", "item_id": "1"}


def test_malformed_entries_become_markers_with_reasons_and_originals():
    not_json = decode_entry({b"data": b"{nope"})
    assert "not JSON" in not_json[MALFORMED_KEY]
    assert not_json["fields"] == {"data": "{nope"}
    assert "no 'data' field" in decode_entry({b"other": b"1"})[MALFORMED_KEY]
    assert "JSON object" in decode_entry({b"data": b"[1, 2]"})[MALFORMED_KEY]


def test_faststream_format_parses_a_raw_entry_dict():
    body, headers = LoopwiseMessageFormat.parse({b"data": b'{"a": 1}'})
    assert _without_id(json.loads(body)) == {"a": 1} and headers == {}
