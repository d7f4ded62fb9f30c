"""The scorer's tables: the items it has seen (to train on, to show reviewers) and its
model versions. Only the scorer reads them; others ask its API."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Integer, LargeBinary, String, Table, Text

from shared.limits import ID_MAX, PROJECT_MAX, VERSION_MAX
from shared.tables import metadata

items = Table(
    "items",
    metadata,
    Column("project", String(PROJECT_MAX), primary_key=True),
    Column("item_id", String(ID_MAX), primary_key=True),
    Column("features", JSON, nullable=True),
    Column("text", Text, nullable=True),
    Column("payload", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The payload of an item that reached loopwise only as a prediction (a producer's
# ``loopwise:predictions`` entry with a ``payload``), never as an item to score: the
# scorer owns items, so it keeps what reviewers were shown, and exports can show it too.
prediction_payloads = Table(
    "prediction_payloads",
    metadata,
    Column("project", String(PROJECT_MAX), primary_key=True),
    Column("item_id", String(ID_MAX), primary_key=True),
    Column("payload", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("version", String(VERSION_MAX), primary_key=True),
    Column("project", String(PROJECT_MAX), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("label_count", Integer, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("blob", LargeBinary, nullable=False),
)
