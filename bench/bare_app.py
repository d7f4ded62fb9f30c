"""A bare FastAPI app for ``loopwise bench router``: the reviewer API's two routes, no work.

Same paths, similar response sizes and the same server (uvicorn, one process,
no access log) as the router, but no auth, no Redis and no database: the
ceiling that the router's reviewer API is compared against.

    python -m uvicorn bench.bare_app:app --port 29010 --no-access-log
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

app = FastAPI(title="loopwise bench: bare endpoint")
OPTIONS = [str(i) for i in range(10)]


class SubmitIn(BaseModel):
    label: str = Field(min_length=1, max_length=256)
    duration_ms: int | None = Field(None, ge=0)


@app.get("/v1/projects/{project}/tasks/next")
async def next_task(project: str) -> dict[str, Any]:
    return {
        "task_id": "00000000-0000-0000-0000-000000000000",
        "project": project,
        "item_id": "item-0",
        "mode": "blind",
        "payload": {"uri": "s3://bench/item-0.png"},
        "options": OPTIONS,
        "prelabel": None,
        "lease_expires_at": (datetime.now(UTC) + timedelta(minutes=10)).isoformat(),
    }


@app.post("/v1/tasks/{task_id}/submit")
async def submit(task_id: str, body: SubmitIn) -> dict[str, Any]:
    return {
        "event_id": task_id,
        "status": "recorded",
        "late": False,
        "reveal": {"model_label": body.label, "confidence": 0.5, "model_version": "m1"},
    }


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
