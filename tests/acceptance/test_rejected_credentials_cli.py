"""`syncer sync --once` with a wrong SK, as a subprocess against the simulator's gateway."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg

from syncer.simulator import Catalog, Simulator

REGIONS = ("cn-north-4", "ap-southeast-1", "af-south-1")
AK = "AKCLIGATE0123456789"
SK = "SKCLIGATE-the-right-one"
WRONG_SK = "SKCLIGATE-a-wrong-one"


async def syncer(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """The CLI as a subprocess, awaited without blocking the loop the simulator serves on."""
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "HUAWEICLOUD_"))
    }
    full_env.update(env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncer",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=full_env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_sync_once_with_a_wrong_sk_sends_one_rejected_request(
    tmp_path: Path, db: str
) -> None:
    catalog = Catalog(regions=REGIONS, images_per_partition=10, seed=1)
    async with Simulator(catalog, auth="aksk", ak=AK, sk=SK) as sim:
        config = tmp_path / "syncer.toml"
        config.write_text(
            f'[database]\ndsn = "{db}"\n'
            f'[api]\nendpoint = "{sim.endpoint_template}"\nauth = "aksk"\n'
            f"[sync]\nregions = {list(REGIONS)!r}\n".replace("'", '"')
        )
        env = {
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": WRONG_SK,
            "HUAWEICLOUD_SDK_PROJECT_ID": catalog.tenant_project_id,
        }
        code, out, err = await syncer("--config", str(config), "sync", "--once", env=env)
        assert code == 1, err
        assert [r.status for r in sim.requests] == [401]
        lines = [line for line in out.splitlines() if "AK/SK rejected (HTTP 401" in line]
        assert len(lines) == 1, out  # the reason, printed once
        assert "APIGW.0301" in lines[0] and "held back for 1m until" in lines[0]
        assert "12 of 12 partitions did not complete" in out
        for secret in (WRONG_SK, SK):
            assert secret not in out and secret not in err

        # The next cycle (another run) tries the credential once more: one probe.
        code, out, err = await syncer("--config", str(config), "sync", "--once", env=env)
        assert code == 1 and [r.status for r in sim.requests] == [401, 401]

        # With the right key, the same command completes every partition.
        env["HUAWEICLOUD_SDK_SK"] = SK
        code, out, err = await syncer("--config", str(config), "sync", "--once", env=env)
        assert code == 0, out + err

    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT outcome, count(*) AS n, min(error) AS error FROM ims.sync_runs GROUP BY 1"
        )
    finally:
        await conn.close()
    by_outcome = {r["outcome"]: r for r in rows}
    assert by_outcome["failed"]["n"] == 24 and by_outcome["ok"]["n"] == 12
    assert "AK/SK rejected: Incorrect IAM authentication" in by_outcome["failed"]["error"]
