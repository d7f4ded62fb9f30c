"""The HTTP door of every service (shared.request_guard, shared.limits): who asks is
checked before the body is read, a body above the limit gets 413, and a body with a
value no store can hold gets 422 before anything is recorded."""

from __future__ import annotations

import pytest

from tests.helpers import client, token

pytestmark = pytest.mark.integration

# One route that takes a JSON body on each service.
BODY_ROUTES = {
    "scorer": ("POST", "/v1/projects/{project}/items"),
    "router": ("POST", "/v1/tasks/some-task/submit"),
    "labels": ("POST", "/v1/projects/{project}/labels"),
    "quality": ("POST", "/v1/projects/{project}/flags/someone/clear"),
}
MIB = 1024 * 1024


async def _chunks(body: bytes, size: int = 64 * 1024):
    """The body without a Content-Length (chunked transfer encoding)."""
    for i in range(0, len(body), size):
        yield body[i:i + size]


@pytest.mark.parametrize("service", sorted(BODY_ROUTES))
async def test_without_a_valid_token_any_body_gets_401(services, service, project) -> None:
    method, path = BODY_ROUTES[service]
    path = path.format(project=project)
    for bearer in (None, "not-a-token"):
        async with client(services, service, bearer) as http:
            for body in (b"{not json", b"[" * 10, b"x" * (2 * MIB)):
                r = await http.request(method, path, content=body,
                                       headers={"Content-Type": "application/json"})
                assert r.status_code == 401, (bearer, body[:10], r.status_code, r.text[:200])
                assert r.json()["detail"]
            r = await http.request(method, path, content=_chunks(b"x" * (2 * MIB)))
            assert r.status_code == 401, r.text[:200]


@pytest.mark.parametrize("service", sorted(BODY_ROUTES))
async def test_a_body_above_the_limit_gets_413_with_a_message(services, engine, service,
                                                              project) -> None:
    method, path = BODY_ROUTES[service]
    bearer = await token(engine, "ada", "admin", project)
    async with client(services, service, bearer) as http:
        big = b'{"x": "' + b"y" * services.max_body_bytes + b'"}'
        for content in (big, _chunks(big)):  # with a Content-Length, and chunked
            r = await http.request(method, path.format(project=project), content=content,
                                   headers={"Content-Type": "application/json"})
            assert r.status_code == 413, r.text[:200]
            assert "limit" in r.json()["detail"]
        r = await http.request(method, path.format(project=project), content=b"{not json",
                               headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 422), r.text  # authenticated: now the body is read
        assert r.json()["detail"]


async def test_a_label_studio_import_may_be_larger_than_a_json_body(services, engine,
                                                                    project) -> None:
    bearer = await token(engine, "ada", "admin", project)
    async with client(services, "labels", bearer) as http:
        r = await http.post(f"/v1/projects/{project}/imports/labelstudio",
                            content=b" " * (2 * MIB) + b"[]", params={"dry_run": "true"})
        assert r.status_code != 413, r.text[:200]


async def test_values_no_store_can_hold_get_422_before_anything_is_recorded(
        services, engine, project) -> None:
    bearer = await token(engine, "ada", "admin", project)
    nan_settings = b'{"settings": {"note": NaN}}'  # what json.loads accepts
    async with client(services, "labels", bearer) as http:
        for body in (nan_settings, b'{"routing": {"recalibration_seconds": 1e999}}',
                     b'{"label_options": ["a\\u0000"]}'):
            r = await http.patch(f"/v1/projects/{project}", content=body,
                                 headers={"Content-Type": "application/json"})
            assert r.status_code == 422, (body, r.status_code, r.text)
        assert (await http.get(f"/v1/projects/{project}")).status_code == 404  # not created
        r = await http.put(f"/v1/projects/{project}", json={"label_options": ["a", "b"]})
        assert r.status_code == 200, r.text  # declared: what follows is about values, not 404s
        r = await http.put(f"/v1/projects/{project}/members/a%00b", json={"role": "labeler"})
        assert r.status_code == 422, r.text
        r = await http.get("/v1/audit", params={"project": project, "after_id": 2**33})
        assert r.status_code == 422, r.text  # was a 500: out of the column's int32 range
        r = await http.post(f"/v1/tokens/{2**33}/revoke")
        assert r.status_code == 422, r.text
    async with client(services, "router", bearer) as http:
        r = await http.post(f"/v1/projects/{project}/gold", json={"items": [
            {"item_id": "g1", "label": "a", "payload": {"text": "a\x00"}}]})
        assert r.status_code == 422, r.text
        assert (await http.get(f"/v1/projects/{project}/gold")).json()["items"] == []
    async with client(services, "scorer", bearer) as http:
        r = await http.post(f"/v1/projects/{project}/items/lookup",
                            json={"item_ids": ["a\x00"]})
        assert r.status_code in (403, 422), r.text  # never a database error
        r = await http.post(f"/v1/projects/{project}/items", content=b'{"items": [{"item_id": '
                            b'"i1", "features": [NaN]}]}',
                            headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
