"""The one metadata of every table, and the tables of the platform's identity.

Alembic migrations under shared/migrations own the schema. Each service's tables live
with it, on this metadata (``services/<service>/tables.py``), and only that service
reads or writes them; the import-linter contracts keep the others out. What is here is
identity (tokens, users, project membership): shared.auth's, which every service's
auth layer reads; the labels service serves its admin API.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
)

from shared.limits import ID_MAX, PROJECT_MAX, ROLE_MAX

metadata = MetaData()

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", String(ID_MAX), nullable=False),
    Column("role", String(ROLE_MAX), nullable=False),
    Column("project", String(PROJECT_MAX), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

users = Table(
    "users",
    metadata,
    Column("user_id", String(ID_MAX), primary_key=True),
    Column("display_name", String(ID_MAX), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
)

project_members = Table(
    "project_members",
    metadata,
    Column("project", String(PROJECT_MAX), nullable=False),
    Column("user_id", String(ID_MAX), nullable=False),
    Column("role", String(ROLE_MAX), nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("project", "user_id"),
    Index("ix_project_members_user", "user_id"),
)
