"""Fixtures of the integration tier."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from syncer.simulator import Catalog, Simulator
from tests.feed_helpers import Served, serve
from tests.sync_env import REGIONS, Env


@pytest.fixture
async def env(db: str) -> AsyncIterator[Env]:
    """2 regions × 4 types × 120 images, page size 50, delta overlap 0 s."""
    catalog = Catalog(regions=REGIONS, images_per_partition=120, seed=3)
    async with Simulator(catalog) as sim, Env.open(sim, db) as env:
        yield env


@pytest.fixture
async def served(db: str) -> AsyncIterator[Served]:
    """The feed's HTTP app served on loopback over this test's database."""
    async with serve(db) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
