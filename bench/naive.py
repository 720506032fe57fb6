"""The naive path a user would write instead of syncer (issue 11, figure 6).

Huawei's official SDK (``huaweicloudsdkims``) lists each image type of one region, one page
after another, following ``page_info.next_marker``; every image is upserted with its own
``INSERT … ON CONFLICT DO UPDATE`` (every column, every time: the naive path does not know
what changed), and each page is committed. Same typed columns and ``raw`` as syncer's table.

Run as ``python -m bench.naive ENDPOINT DSN REGION TYPE…``; prints the loop's seconds, images
and requests as JSON (the process's start-up and the SDK's import are not counted).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import datetime
from typing import Any

import asyncpg
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkims.v2 import ImsClient, ListImagesRequest

UPSERT = """
INSERT INTO naive_images (
    region, image_id, image_type, name, status, visibility, owner, os_type, platform, os_version,
    os_bit, disk_format, container_format, min_ram, min_disk, size, image_size,
    virtual_env_type, protected, tags, enterprise_project_id, created_at, updated_at, active_at,
    raw)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
        $20, $21, $22, $23, $24, $25)
ON CONFLICT (region, image_id) DO UPDATE SET
    image_type = excluded.image_type, name = excluded.name, status = excluded.status,
    visibility = excluded.visibility, owner = excluded.owner, os_type = excluded.os_type,
    platform = excluded.platform, os_version = excluded.os_version, os_bit = excluded.os_bit,
    disk_format = excluded.disk_format, container_format = excluded.container_format,
    min_ram = excluded.min_ram, min_disk = excluded.min_disk, size = excluded.size,
    image_size = excluded.image_size, virtual_env_type = excluded.virtual_env_type,
    protected = excluded.protected, tags = excluded.tags,
    enterprise_project_id = excluded.enterprise_project_id, created_at = excluded.created_at,
    updated_at = excluded.updated_at, active_at = excluded.active_at, raw = excluded.raw,
    observed_at = now()
"""

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS naive_images (LIKE ims.image_rows INCLUDING ALL);
ALTER TABLE naive_images ALTER COLUMN content_hash DROP NOT NULL;
"""


def when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def number(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


def row(region: str, image: Any) -> tuple[Any, ...]:
    return (
        region,
        image.id,
        image.imagetype,
        image.name,
        image.status,
        image.visibility,
        image.owner,
        image.os_type,
        image.platform,
        image.os_version,
        image.os_bit,
        image.disk_format,
        image.container_format,
        number(image.min_ram),
        number(image.min_disk),
        number(image.size),
        number(image.image_size),
        image.virtual_env_type,
        image.protected,
        image.tags,
        image.enterprise_project_id,
        when(image.created_at),
        when(image.updated_at),
        when(image.active_at),
        json.dumps(image.to_dict()),
    )


async def sync(endpoint: str, dsn: str, region: str, types: list[str]) -> dict[str, float]:
    config = HttpConfig.get_default_config()
    config.timeout = (5, 60)
    ims = (
        ImsClient.new_builder()
        .with_credentials(
            BasicCredentials(
                os.environ["HUAWEICLOUD_SDK_AK"],
                os.environ["HUAWEICLOUD_SDK_SK"],
                os.environ["HUAWEICLOUD_SDK_PROJECT_ID"],
            )
        )
        .with_http_config(config)
        .with_endpoint(endpoint)
        .build()
    )
    conn = await asyncpg.connect(dsn)
    await conn.execute(CREATE_TABLE)
    images = requests = 0
    began = time.perf_counter()
    for image_type in types:
        marker = None
        while True:
            response = ims.list_images(ListImagesRequest(imagetype=image_type, marker=marker))
            requests += 1
            async with conn.transaction():
                for image in response.images or []:
                    await conn.execute(UPSERT, *row(region, image))
                    images += 1
            marker = response.page_info.next_marker if response.page_info else None
            if not marker:
                break
    seconds = time.perf_counter() - began
    await conn.close()
    return {"seconds": seconds, "images": images, "requests": requests}


def main() -> None:
    endpoint, dsn, region, *types = sys.argv[1:]
    print(json.dumps(asyncio.run(sync(endpoint, dsn, region, types))))


if __name__ == "__main__":
    main()
