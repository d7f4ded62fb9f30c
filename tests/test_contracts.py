"""The API and event contracts (issue 17, item 2), against the four running services:
each OpenAPI document states the bearer scheme, a typed 2xx answer and the error answers
of every operation, in the error shape the services really answer; an unknown project
answers 404 on every project route; the committed JSON Schemas and AsyncAPI document
are what the models generate now, and say what the services consume; /docs and /redoc
render in Chromium with nothing but loopback reachable."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import jsonschema
import pytest

from shared import sharding, streams
from shared.auth import create_token
from shared.contracts import CONSUMERS, STREAM_EVENTS, event_schemas, generated_files
from shared.openapi import BEARER_SCHEME, ErrorBody, UnprocessableBody
from shared.settings import Settings
from tests.conftest import ROOT
from tests.helpers import client, configure, groups_idle

pytestmark = pytest.mark.integration

SERVICES = ("scorer", "router", "labels", "quality")
SCHEMAS = ROOT / "schemas"
# The project routes that declare a project or bring it its first data: no 404 for a
# project not known yet (it becomes known by them).
CREATING = {
    ("labels", "put", "/v1/projects/{project}"),
    ("labels", "patch", "/v1/projects/{project}"),
    ("labels", "post", "/v1/projects/{project}/labels"),
    ("labels", "post", "/v1/projects/{project}/imports/labelstudio"),
    ("scorer", "post", "/v1/projects/{project}/items"),
    ("router", "post", "/v1/projects/{project}/gold"),
}
# Routes for service tokens only: a peer asking about a project it has not seen yet gets
# the empty answer, never a 404 (shared.auth.require_known).
SERVICE_ONLY = {("scorer", "post", "/v1/projects/{project}/items/lookup")}
PATH_VALUES = {"version": "1", "item_id": "i1", "user_id": "someone", "labeler": "someone",
               "labeler_id": "someone"}


def _document(settings, service: str) -> dict[str, Any]:
    r = httpx.get(f"{settings.url_of(service)}/openapi.json", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _operations(document: dict[str, Any]):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


@pytest.mark.parametrize("service", SERVICES)
def test_openapi_states_bearer_typed_answers_and_errors(service: str, services) -> None:
    document = _document(services, service)
    scheme = document["components"]["securitySchemes"][BEARER_SCHEME]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    problems = []
    for path, method, operation in _operations(document):
        where = f"{service} {method.upper()} {path}"
        responses = operation["responses"]
        ok = {code: r for code, r in responses.items() if code.startswith("2")}
        if not ok:
            problems.append(f"{where}: no 2xx answer")
        for code, answer in ok.items():
            if code == "204":
                continue
            schemas = [c.get("schema") for c in answer.get("content", {}).values()]
            if not schemas or not all(schemas):
                problems.append(f"{where}: {code} has no schema")
                continue
            for schema in schemas:
                resolved = _resolve(document, schema)
                if resolved.get("type") == "object" and not resolved.get("properties") \
                        and path != "/asyncapi.json":
                    problems.append(f"{where}: {code} is an untyped object")
        wanted = set()
        if path.startswith("/v1/"):
            wanted |= {"401", "403"}
            if operation.get("security") != [{BEARER_SCHEME: []}]:
                problems.append(f"{where}: no bearer security")
            if method in ("post", "put", "patch", "delete"):
                wanted.add("413")
        if "{project}" in path:
            wanted.add("404")
        if operation.get("parameters") or operation.get("requestBody"):
            wanted.add("422")
        for code in sorted(wanted - set(responses)):
            problems.append(f"{where}: {code} not documented")
        for code, answer in responses.items():
            if int(code) >= 400 and path not in ("/readyz", "/healthz"):  # 503: the report
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                expected = "UnprocessableBody" if code == "422" else "ErrorBody"
                if not ref.endswith("/" + expected):
                    problems.append(f"{where}: {code} answers {ref}, not {expected}")
    assert not problems, "\n".join(problems)
    assert "HTTPValidationError" not in document["components"]["schemas"]


async def test_the_documented_error_bodies_are_what_the_services_answer(services, engine,
                                                                       project) -> None:
    """401, 403, 404, 413 and 422 as they come, validated against the documented models."""
    base = services.url_of("labels")
    admin = await create_token(engine, f"adm-{project}", "admin", project)
    other = await create_token(engine, f"adm-{project}-o", "admin", project + "-o")
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        answers = {
            401: await http.get(f"/v1/projects/{project}/labels"),
            403: await http.get(f"/v1/projects/{project}/labels",
                                headers={"Authorization": f"Bearer {other}"}),
            404: await http.get(f"/v1/projects/{project}/versions",
                                headers={"Authorization": f"Bearer {admin}"}),
            413: await http.post(f"/v1/projects/{project}/labels",
                                 content=b"x" * (services.max_body_bytes + 1),
                                 headers={"Authorization": f"Bearer {admin}",
                                          "Content-Type": "application/json"}),
            422: await http.post(f"/v1/projects/{project}/labels", json={"labels": []},
                                 headers={"Authorization": f"Bearer {admin}"}),
        }
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        model = UnprocessableBody if status == 422 else ErrorBody
        model.model_validate(response.json())
    assert answers[404].json()["detail"].startswith(f"unknown project {project!r}")


async def _declared_world(services, engine, redis, project: str) -> str:
    admin = await create_token(engine, f"adm-{project}", "admin", "*")
    await configure(services, admin, project, label_options=["a", "b"])
    return admin


def _fill(path: str, project: str) -> str:
    path = path.replace("{project}", project)
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), "x"), path)


async def test_an_unknown_project_answers_404_on_every_project_route(services, engine,
                                                                    redis, project) -> None:
    admin = await create_token(engine, f"fuzz-{project}", "admin", "*")
    unknown = f"{project}-nobody"
    declared = project
    await configure(services, admin, declared, label_options=["a", "b"])
    seen, problems = 0, []
    for service in SERVICES:
        document = _document(services, service)
        async with client(services, service, admin) as http:
            for path, method, _ in _operations(document):
                route = (service, method, path)
                if "{project}" not in path or route in CREATING or route in SERVICE_ONLY:
                    continue
                seen += 1
                body = {"json": {}} if method in ("post", "put", "patch", "delete") else {}
                r = await http.request(method, _fill(path, unknown), **body)
                where = f"{service} {method.upper()} {path}"
                if r.status_code != 404 or f"unknown project {unknown!r}" not in r.text:
                    problems.append(f"{where}: {r.status_code} {r.text[:200]}")
                # A declared project is known at every service (its settings reached each).
                r = await http.request(method, _fill(path, declared), **body)
                if "unknown project" in r.text:
                    problems.append(f"{where}: declared project refused: {r.text[:200]}")
    assert seen >= 25  # every service's project routes (29 when written)
    assert not problems, "\n".join(problems)


async def test_a_project_with_data_is_known_without_being_declared(services, engine, redis,
                                                                  project) -> None:
    """The README's wire format: predictions for a project nobody declared become tasks
    that reviewers take (the project is known where its data is)."""
    entry = {"project": project, "item_id": "a2", "model_version": "m1",
             "probs": {"3": 0.55, "8": 0.45}}
    await redis.xadd(streams.PREDICTIONS, {"data": json.dumps(entry)})
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER))
    labeler = await create_token(engine, f"lab-{project}", "labeler", project)
    async with client(services, "router", labeler) as http:
        r = await http.get(f"/v1/projects/{project}/tasks/next")
    assert r.status_code == 200 and r.json()["item_id"] == "a2", r.text


async def test_a_denial_says_nothing_of_whether_the_project_exists(services, engine,
                                                                  project) -> None:
    await _declared_world(services, engine, None, project)
    outsider = await create_token(engine, f"out-{project}", "admin", project + "-elsewhere")
    async with client(services, "labels", outsider) as http:
        known = await http.get(f"/v1/projects/{project}/versions")
        unknown = await http.get(f"/v1/projects/{project}-nobody/versions")
    assert known.status_code == unknown.status_code == 403
    assert known.json() == unknown.json()


async def test_a_service_token_gets_the_empty_answer_for_a_project_not_seen_yet(
        services, engine, project) -> None:
    """Peers ask each other about projects before every service has seen them."""
    peer = await create_token(engine, f"svc-{project}", "service", "*")
    async with client(services, "router", peer) as http:
        r = await http.get(f"/v1/projects/{project}/gold")
    assert r.status_code == 200 and r.json() == {"project": project, "items": []}


# --- event contracts ------------------------------------------------------------------------


def test_the_committed_schemas_are_what_the_models_generate() -> None:
    """A model change without ``make schemas`` fails here, naming the stale files."""
    stale = [name for name, text in generated_files().items()
             if not (SCHEMAS / name).exists() or (SCHEMAS / name).read_text() != text]
    committed = {str(p.relative_to(SCHEMAS)) for p in SCHEMAS.rglob("*.json")}
    extra = committed - set(generated_files())
    assert not stale, f"regenerate with `make schemas`: {stale}"
    assert not extra, f"files no model generates: {sorted(extra)}"


def test_the_event_schemas_accept_the_readme_entries_and_refuse_bad_ones() -> None:
    schemas = event_schemas()
    prediction = schemas["events/prediction.schema.json"]
    item = schemas["events/item.schema.json"]
    jsonschema.Draft202012Validator.check_schema(prediction)
    ok = {"project": "digits", "item_id": "a1", "model_version": "m1",
          "probs": {"3": 0.91, "8": 0.09}}
    jsonschema.validate(ok, prediction)
    jsonschema.validate({"project": "digits", "item_id": "b7", "features": [0, 0, 5, 13]}, item)
    for bad in ({**ok, "probs": "high"}, {k: v for k, v in ok.items() if k != "item_id"},
                {**ok, "project": "no spaces allowed"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, prediction)
    for name, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"] == name


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_serves_the_committed_asyncapi_and_consumes_what_it_says(
        service: str, services) -> None:
    base = services.url_of(service)
    served = httpx.get(f"{base}/asyncapi.json", timeout=30).json()
    assert served == json.loads((SCHEMAS / "asyncapi.json").read_text())
    assert served["asyncapi"].startswith("3.")
    ready = httpx.get(f"{base}/readyz", timeout=30).json()
    consuming = {(c["stream"], c["group"]) for c in ready["consumers"]}
    declared = {(c.stream, c.group) for c in CONSUMERS if c.service == service}
    # A sharded stream is read as its plain name and each shard (shared.sharding): the
    # document names the stream, the README the sharding scheme.
    shards = {(name, g) for s, g in declared if s in streams.SHARDED
              for name in sharding.every_stream(s, Settings().shards)}
    assert consuming == declared | shards
    for stream, group in declared:
        channel = served["channels"][f"{service}.reads.{stream}"]
        assert channel["address"] == stream
        assert channel["bindings"]["redis"]["groupName"] == group
        message = next(iter(channel["messages"].values()))["$ref"].rsplit("/", 1)[-1]
        payload = served["components"]["messages"][_unquote(message)]["payload"]["$ref"]
        assert payload.endswith("/" + STREAM_EVENTS[stream].__name__)


def _unquote(name: str) -> str:
    from urllib.parse import unquote

    return unquote(name)


# --- offline docs -----------------------------------------------------------------------------


CHROMIUM = Path("/usr/bin/chromium")
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _chromium() -> str:
    if CHROMIUM.exists():
        return str(CHROMIUM)
    message = f"{CHROMIUM} is missing: apt-get install chromium"
    if os.environ.get("LOOPWISE_REQUIRE_INTEGRATION") == "1":
        pytest.fail(message)
    pytest.skip(message)


async def test_docs_and_redoc_render_offline_in_chromium(services) -> None:
    """Every request but loopback's is refused; the pages ask for none and render the
    operations with no console error."""
    from playwright.async_api import async_playwright

    executable = _chromium()
    base = services.url_of("labels")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable,
                                                   args=LAUNCH_ARGS)
        try:
            page = await browser.new_page()
            outside: list[str] = []
            errors: list[str] = []

            async def only_loopback(route) -> None:
                host = urlparse(route.request.url).hostname
                if host in ("127.0.0.1", "localhost", "::1"):
                    await route.continue_()
                else:
                    outside.append(route.request.url)
                    await route.abort()

            await page.route("**/*", only_loopback)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            await page.goto(f"{base}/docs")
            await page.wait_for_selector(".opblock", timeout=30_000)
            operations = await page.locator(".opblock").count()
            assert operations >= 25  # the labels service's operations, each rendered
            assert await page.locator(".btn.authorize").count() == 1  # the bearer scheme
            assert not outside, f"Swagger UI asked outside loopback: {outside}"
            assert not errors, f"console errors: {errors}"

            await page.goto(f"{base}/redoc")
            await page.wait_for_selector("[data-section-id^='tag/labels']", timeout=30_000)
            assert await page.locator("[data-section-id*='operation/']").count() >= 25
            # ReDoc's bundle always asks for its vendor's logo in the sidebar footer and
            # hides the image when it does not load: decorative, nothing else is asked.
            assert set(outside) <= {REDOC_LOGO}, f"ReDoc asked outside loopback: {outside}"
            assert not [e for e in errors if "ERR_FAILED" not in e], errors
        finally:
            await browser.close()

