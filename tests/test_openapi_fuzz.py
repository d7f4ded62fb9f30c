"""Schemathesis against every service's OpenAPI document, with a valid admin token
(issue 13, item 6): requests that fit the schema and requests that do not, for every
operation. No answer is a 5xx, every 4xx says why (a non-empty ``detail``), and the
answers conform to the documented response schemas.

The routes that would change what other tests rely on are pinned to a throwaway
target: revoking a token by id revokes the fuzz's own spare token, disabling a user
disables a spare user.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from shared.auth import issue_token
from shared.settings import Settings
from tests.helpers import token

pytestmark = pytest.mark.integration

EXAMPLES = 5  # per operation and generation mode (15 found nothing more, in 80 s)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
async def fuzz_targets(services: Settings, engine) -> dict[str, Any]:
    admin = await token(engine, f"fuzz-admin-{uuid.uuid4().hex[:6]}", "admin", "*")
    spare_user = f"fuzz-spare-{uuid.uuid4().hex[:6]}"
    async with engine.begin() as conn:
        _, spare_token_id = await issue_token(conn, spare_user, "labeler", "fuzz-spare")
    return {"admin": admin, "token_id": spare_token_id, "user_id": spare_user}


def _has_message(response: httpx.Response | Any) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and bool(body.get("detail"))


def _fuzz(strategy: Any, base: str, mode: GenerationMode, failures: list[str]) -> None:
    """Call the operation with generated cases; what goes wrong is added to failures."""

    @FUZZ
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base, timeout=30)
        where = f"{case.method} {case.formatted_path} ({mode.value})"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.status_code} {response.text[:300]}"
                            f" for {case.as_curl_command()[:600]}")
        elif 400 <= response.status_code < 500 and not _has_message(response):
            failures.append(f"{where}: {response.status_code} without a message: "
                            f"{response.text[:200]}")
        elif response.status_code < 300:
            try:
                case.validate_response(response, checks=[response_schema_conformance])
            except AssertionError as exc:
                failures.append(f"{where}: {str(exc)[:300]}")

    run()


@pytest.mark.parametrize("service", ["scorer", "router", "labels", "quality"])
def test_no_5xx_and_every_4xx_says_why(service: str, services: Settings,
                                       fuzz_targets: dict[str, Any]) -> None:
    base = services.url_of(service)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    headers = {"Authorization": f"Bearer {fuzz_targets['admin']}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    for operation in operations:
        pinned = {name: fuzz_targets[name] for name in ("token_id", "user_id")
                  if "{" + name + "}" in operation.path}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(mode, headers=headers,
                                             path_parameters=pinned or None)
            try:
                _fuzz(strategy, base, mode, failures)
            except Unsatisfiable:  # nothing to make invalid (an operation without inputs)
                assert mode is GenerationMode.NEGATIVE
    assert not failures, "\n".join(sorted(set(failures))[:30])
