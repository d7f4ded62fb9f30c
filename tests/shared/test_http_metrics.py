"""HTTP request metrics: every request counted and timed by route template, method and
status; an unmatched path under one label, a handler that raised as a 500."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY

from shared.httpmetrics import RequestMetrics


def _app(service: str) -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestMetrics, service=service)

    @app.get("/v1/projects/{project}/tasks/next")
    async def next_task(project: str) -> dict[str, str]:
        return {"project": project}

    @app.post("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return app


def _count(service: str, route: str, method: str, status: str) -> float | None:
    return REGISTRY.get_sample_value("loopwise_http_requests_total", {
        "service": service, "route": route, "method": method, "status": status})


def _timed(service: str, route: str, method: str, status: str) -> float | None:
    return REGISTRY.get_sample_value("loopwise_http_request_seconds_count", {
        "service": service, "route": route, "method": method, "status": status})


async def test_requests_are_counted_by_route_template_method_and_status():
    service = f"test-{uuid.uuid4().hex[:8]}"
    transport = httpx.ASGITransport(app=_app(service), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for project in ("a", "b", "c"):
            assert (await http.get(f"/v1/projects/{project}/tasks/next")).status_code == 200
        assert (await http.get("/nowhere/1")).status_code == 404
        assert (await http.get("/nowhere/2")).status_code == 404
        assert (await http.post("/v1/projects/a/tasks/next")).status_code == 405
        assert (await http.post("/v1/boom")).status_code == 500

    template = "/v1/projects/{project}/tasks/next"
    assert _count(service, template, "GET", "200") == 3  # one series, not one a project
    assert _timed(service, template, "GET", "200") == 3
    assert _count(service, "unmatched", "GET", "404") == 2
    assert _count(service, template, "POST", "405") == 1
    assert _count(service, "/v1/boom", "POST", "500") == 1
    assert _timed(service, "/v1/boom", "POST", "500") == 1
    raw = [s for m in REGISTRY.collect() if m.name == "loopwise_http_requests"
           for s in m.samples if s.labels.get("service") == service]
    assert not [s for s in raw if "/a/" in s.labels["route"] or "nowhere" in s.labels["route"]]
