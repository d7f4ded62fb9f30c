"""The label store on both of its databases: PostgreSQL and SQLite."""

import pytest

from shared.db import make_engine, upgrade_async


@pytest.fixture(params=["postgresql", "sqlite"])
async def store_engine(request, settings, tmp_path):
    if request.param == "postgresql":
        engine = make_engine(settings.database_url)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/labels.db"
        await upgrade_async(url)
        engine = make_engine(url)
    yield engine
    await engine.dispose()
