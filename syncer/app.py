"""Composition root: opens the pool and the IMS client, closes them in reverse order."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from syncer.config import Settings
from syncer.ims.client import ImsClient
from syncer.store.pool import sync_pool
from syncer.store.status import ensure_schema


@dataclass(frozen=True)
class App:
    settings: Settings
    pool: asyncpg.Pool
    client: ImsClient


@contextlib.asynccontextmanager
async def open_app(settings: Settings) -> AsyncIterator[App]:
    settings.require_credentials()
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            sync_pool(
                settings.database,
                size=max(settings.database.pool_size, settings.sync.partition_concurrency + 1),
            )
        )
        await ensure_schema(pool)
        client = await stack.enter_async_context(ImsClient(settings.api, settings.credentials))
        yield App(settings, pool, client)
