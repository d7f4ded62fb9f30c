"""HTTP calls from one service to another's API, as a ``service`` principal.

A service reads another's data through that service's API (or a stream), never its
tables or keys; this is the one client for it. The token is ``LOOPWISE_SERVICE_TOKEN``
when set; otherwise the service makes itself a ``service`` token for ``*`` valid one day
when it starts, and revokes it when it stops (tokens are the platform's identity, kept
by shared.auth, not one service's data).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import auth
from shared.settings import Settings


class PeerError(Exception):
    """Another service refused a call or could not be reached; the message says which."""


class Peers:
    def __init__(self, settings: Settings, engine: AsyncEngine, name: str) -> None:
        self.settings = settings
        self.engine = engine
        self.name = name
        self._client: httpx.AsyncClient | None = None
        self._token_id: int | None = None

    async def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            token = self.settings.service_token
            if token is None:
                async with self.engine.begin() as conn:
                    token, self._token_id = await auth.issue_token(
                        conn, f"service:{self.name}", "service", auth.ALL_PROJECTS, ttl_days=1)
            self._client = httpx.AsyncClient(
                headers={"Authorization": f"Bearer {token}",
                         "User-Agent": f"loopwise-{self.name}"},
                timeout=self.settings.peer_timeout_seconds)
        return self._client

    async def get(self, service: str, path: str, *, timeout: float | None = None,
                  **params: Any) -> Any:
        """GET ``path`` of ``service``'s API; the JSON body, or PeerError with the reason.
        ``timeout``: this call's, for an answer known to take long (default: the client's)."""
        options: dict[str, Any] = {"params": {k: v for k, v in params.items() if v is not None}}
        if timeout is not None:
            options["timeout"] = timeout
        return await self._call("GET", service, path, **options)

    async def post(self, service: str, path: str, body: Any) -> Any:
        return await self._call("POST", service, path, json=body)

    async def get_jsonl(self, service: str, path: str, **params: Any) -> list[Any]:
        """GET a JSON-lines body (an export): one value a line."""
        text = await self._call("GET", service, path, lines=True,
                                params={k: v for k, v in params.items() if v is not None})
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    async def _call(self, method: str, service: str, path: str, lines: bool = False,
                    **options: Any) -> Any:
        url = self.settings.url_of(service) + path
        try:
            r = await (await self._http()).request(method, url, **options)
            if r.status_code == 401 and self.settings.service_token is None:
                # The token this service made expired (a day) or was revoked: make another.
                await self._renew()
                r = await (await self._http()).request(method, url, **options)
        except httpx.HTTPError as exc:
            raise PeerError(f"{service} unreachable at {url}: {exc!r}") from exc
        if r.status_code >= 400:
            raise PeerError(f"{service} answered {r.status_code} to {method} {path}: "
                            f"{r.text[:300]}")
        return r.text if lines else r.json()

    async def _renew(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._token_id is not None:
            async with self.engine.begin() as conn:
                await auth.revoke_token(conn, self._token_id)
            self._token_id = None
