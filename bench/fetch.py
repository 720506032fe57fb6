"""The serving limit: what the simulator serves to a client that only fetches.

``fetch_only`` pages every partition exactly as a full sweep does — the same query
(``__imagetype``, ``limit``, ``sort_key=created_at``, ``sort_dir=asc``, ``marker``), the same page
size, the same number of partitions at a time, one request in flight per partition — and reads
each page only as far as its length and its ``page_info.next_marker`` (msgspec, in C, without
building an object per image), then drops it. No database, no hashing, no typed records.

``client_only`` is syncer's own fetch path without the database: ``ImsClient`` + ``iter_listing``
(decoding, paging checks, the confirmation of each listing's end), pages dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec


class _Page(msgspec.Struct):
    images: list[msgspec.Raw]
    page_info: dict[str, Any] | None = None


_decode = msgspec.json.Decoder(_Page).decode


@dataclass
class Fetched:
    seconds: float
    images: int
    requests: int

    @property
    def rate(self) -> float:
        return self.images / self.seconds


async def fetch_only(
    endpoint: str,
    regions: Sequence[str],
    types: Sequence[str],
    *,
    page_size: int = 500,
    concurrency: int = 4,
) -> Fetched:
    images = requests = 0
    gate = asyncio.Semaphore(concurrency)

    async def partition(session: aiohttp.ClientSession, region: str, image_type: str) -> None:
        nonlocal images, requests
        base = (
            endpoint.replace("{region}", region)
            + f"/v2/cloudimages?__imagetype={image_type}&limit={page_size}"
            "&sort_key=created_at&sort_dir=asc"
        )
        async with gate:
            marker = None
            while True:
                url = base if marker is None else f"{base}&marker={marker}"
                async with session.get(url) as r:
                    body = await r.read()
                    assert r.status == 200, (r.status, body[:200])
                page = _decode(body)
                requests += 1
                images += len(page.images)
                marker = (page.page_info or {}).get("next_marker")
                if not marker:
                    return

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(partition(session, r, t) for r in regions for t in types))
        seconds = time.perf_counter() - began
    return Fetched(seconds, images, requests)


async def client_only(config: str, *, concurrency: int = 4) -> Fetched:
    """syncer's ImsClient + iter_listing over every configured partition, pages dropped."""
    from syncer.config import load_settings
    from syncer.ims.client import ImsClient
    from syncer.ims.pager import Listing, ListingStats, iter_listing
    from syncer.sync.partitions import plan_partitions

    settings = load_settings(config)
    gate = asyncio.Semaphore(concurrency)
    stats: list[ListingStats] = []

    async def partition(client: ImsClient, region: str, image_type: str) -> None:
        async with gate:
            s = ListingStats()
            stats.append(s)
            listing = Listing(region, image_type, page_size=settings.api.page_size)
            async for _ in iter_listing(
                client, listing, partition=f"{region}/{image_type}", stats=s
            ):
                pass

    async with ImsClient(settings.api, settings.credentials) as client:
        began = time.perf_counter()
        await asyncio.gather(
            *(partition(client, p.region, p.image_type) for p in plan_partitions(settings))
        )
        seconds = time.perf_counter() - began
    return Fetched(seconds, sum(s.images for s in stats), sum(s.requests for s in stats))
