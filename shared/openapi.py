"""The HTTP contract every service's OpenAPI document states: how to authenticate, and
what an error looks like.

The rules mirror the door (:mod:`shared.request_guard`) and :mod:`shared.auth`, so that
the document says what the code does: every ``/v1`` route wants ``Authorization:
Bearer <token>`` (401 without a valid one, 403 when its role or project does not
reach the route); a request that may carry a body is refused with 413 above the
limit; a route with a ``{project}`` answers 404 for a project nobody declared or
sent data for; a request that does not validate gets 422. Every error body is
``{"detail": ...}``. A route adds the answers of its own (409, 423, 503, ...) with
``responses=``; they are kept.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

BEARER_SCHEME = "bearerAuth"
PROTECTED_PREFIX = "/v1/"  # shared.request_guard authenticates these before their body
BODY_METHODS = frozenset({"post", "put", "patch", "delete"})


class ErrorBody(BaseModel):
    """Every refusal: what went wrong, in one message."""

    detail: str = Field(description="why the request was refused")


class ValidationIssue(BaseModel):
    """One reason a request did not validate (FastAPI's shape)."""

    model_config = ConfigDict(extra="allow")
    loc: list[str | int] = Field(description="where: body, query or path, then the field")
    msg: str
    type: str


class UnprocessableBody(BaseModel):
    """422: the request's values are outside what loopwise accepts, with the reasons: the
    fields that failed validation, a use case's message (or messages), or a file's
    problems (``{"message", "problems"}`` for a Label Studio import)."""

    detail: list[ValidationIssue] | list[str] | str | dict[str, Any]


ERROR_DESCRIPTIONS = {
    401: "no valid bearer token (missing, malformed, unknown, expired or revoked)",
    403: "the token's role or project does not reach this",
    404: "not found (an unknown project: nobody declared it or sent data for it)",
    413: "the request body is above the limit (LOOPWISE_MAX_BODY_BYTES)",
    422: "the request does not validate, or a value is outside the limits",
}


def _error(status: int, description: str | None = None) -> dict[str, Any]:
    model = UnprocessableBody if status == 422 else ErrorBody
    return {"description": description or ERROR_DESCRIPTIONS.get(status, "refused"),
            "content": {"application/json": {"schema": {
                "$ref": f"#/components/schemas/{model.__name__}"}}}}


def _has_inputs(operation: dict[str, Any]) -> bool:
    return bool(operation.get("parameters") or operation.get("requestBody"))


def describe_errors(path: str, method: str, operation: dict[str, Any]) -> None:
    """Add the error answers that apply to one operation, in the services' error shape."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    wanted: list[int] = []
    if path.startswith(PROTECTED_PREFIX):
        wanted += [401, 403]
        operation["security"] = [{BEARER_SCHEME: []}]
        if method in BODY_METHODS:
            wanted.append(413)
    if "{project}" in path:
        wanted.append(404)
    if _has_inputs(operation):
        wanted.append(422)
    for status in wanted:
        given = responses.get(str(status), {}).get("description")
        responses[str(status)] = _error(status, None if given == "Validation Error" else given)
    for code, answer in list(responses.items()):  # a route's own error answers: same body
        if code.isdigit() and int(code) >= 400 and "content" not in answer:
            responses[code] = _error(int(code), answer.get("description"))


def install(app: FastAPI, metrics_path: str = "/metrics") -> None:
    """Make ``app.openapi()`` state the bearer scheme and the error answers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version,
                               description=app.description, routes=app.routes)
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for model in (ErrorBody, UnprocessableBody):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)  # FastAPI's; UnprocessableBody says what is answered
        components["securitySchemes"] = {BEARER_SCHEME: {
            "type": "http", "scheme": "bearer", "bearerFormat": "lw_<random>",
            "description": "a loopwise API token (`loopwise token create ...` or "
                           "`POST /v1/tokens` at the labels service), sent as "
                           "`Authorization: Bearer <token>`; only its SHA-256 is stored"}}
        for path, methods in document.get("paths", {}).items():
            for method, operation in methods.items():
                describe_errors(path, method, operation)
                if path == metrics_path:  # the scrape token, or a '*' token
                    operation["security"] = [{BEARER_SCHEME: []}]
                    operation["responses"].update({"401": _error(401), "403": _error(403)})
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
