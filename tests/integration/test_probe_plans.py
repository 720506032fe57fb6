"""A page's statements stay probes of the primary key when the statistics are stale.

A first sync fills a region that the last ANALYZE never saw: PostgreSQL then prices
`region = '<new>'` at one row. The `known` probe (`region = $1 AND image_id = …`) must still be
one descent of the primary key by (region, image_id): priced so, the planner entered the smaller
partition index by region alone, image_id a filter, and every probe read the region's whole
index (4-6 s per page at 1,000,000 images in `make bench`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from syncer.store.queries import sql

ROWS = 20_000


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def fill(conn: asyncpg.Connection, region: str, rows: int = ROWS) -> None:
    await conn.execute(
        """
        INSERT INTO ims.image_rows (region, image_id, image_type, status, created_at, raw,
                                    content_hash)
        SELECT $1, 'img-' || g, (ARRAY['gold','private','shared','market'])[g % 4 + 1],
               'active', timestamptz '2020-01-01' + g * interval '1 minute', '{}',
               decode(repeat('00', 16), 'hex')
        FROM generate_series(1, $2::int) g
        """,
        region,
        rows,
    )


@pytest.mark.no_replay_check("rows written by hand, without their events")
async def test_the_known_probe_uses_the_primary_key_under_stale_statistics(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        await conn.execute("ALTER TABLE ims.image_rows SET (autovacuum_enabled = false)")
        await fill(conn, "old")
        await conn.execute("ANALYZE ims.image_rows")
        await fill(conn, "new")  # unseen by the statistics, as mid-way through a first sync
        estimate = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM ims.image_rows WHERE region = 'new'"
        )
        assert orjson.loads(estimate)[0]["Plan"]["Plan Rows"] < 100  # the trap is set
        await conn.execute(sql("create_work_tables"))  # the pass's session settings
        ids = orjson.dumps([f"img-{n}-x" for n in range(500)]).decode()  # none of them known
        hashes = bytes(16 * 500)
        first = datetime(2020, 1, 2, tzinfo=UTC)
        last = datetime(2020, 1, 3, tzinfo=UTC)
        plans = {
            "page_prefilter": (await conn.fetchval(
                "EXPLAIN (FORMAT JSON) " + sql("page_prefilter"),
                "new", "gold", ids, hashes, True,
            )),
            "page_prefilter_range": (await conn.fetchval(
                "EXPLAIN (FORMAT JSON) " + sql("page_prefilter_range"),
                "new", "gold", ids, hashes, True, first, last,
            )),
            "page_upsert": (await conn.fetchval(
                "EXPLAIN (FORMAT JSON) " + sql("page_upsert"), "new", "gold",
            )),
        }  # fmt: skip
    finally:
        await conn.close()
    for name, text in plans.items():
        scans = [
            n
            for n in nodes(orjson.loads(text)[0]["Plan"])
            if n.get("Relation Name") == "image_rows"
        ]
        probes = [n for n in scans if "image_id" in n.get("Index Cond", "") + n.get("Filter", "")]
        assert len(probes) == 1, (name, scans)
        probe = probes[0]
        assert probe["Node Type"] in ("Index Scan", "Index Only Scan"), (name, probe)
        assert probe["Index Name"] == "image_rows_pkey", (name, probe)
        assert "image_id" in probe["Index Cond"], (name, probe)
