"""Feed clients for the benchmark, run in a process of their own (so that counting events does
not share a core's time slice with the writer or the server).

    python -m bench.feed_clients throughput URL CLIENTS CURSOR EXPECT
        CLIENTS streams from CURSOR; each counts frames until EXPECT events; prints one JSON
        line per stream: {"first": t, "last": t, "events": n} (time.monotonic, system-wide)
    python -m bench.feed_clients idle URL STREAMS
        opens STREAMS streams at the head and holds them until stdin closes

Each prints "ready" once every stream answered 200.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson

PATTERN = b"\nevent: "  # one per event frame (after its id line); never in a comment or data


async def _open(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    resp = await http.get(url)
    if resp.status != 200:
        raise SystemExit(f"stream answered {resp.status}: {await resp.text()}")
    return resp


async def throughput(url: str, clients: int, cursor: str, expect: int) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as http:
        streams = await asyncio.gather(
            *(_open(http, f"{url}/v1/events/stream?since={cursor}") for _ in range(clients))
        )
        print("ready", flush=True)

        async def count(resp: aiohttp.ClientResponse) -> dict[str, float]:
            n, first, keep = 0, 0.0, b""
            async for chunk in resp.content.iter_any():
                buf = keep + chunk
                found = buf.count(PATTERN)
                if found:
                    if not n:
                        first = time.monotonic()
                    n += found
                    if n >= expect:
                        break
                keep = buf[-(len(PATTERN) - 1) :]
            last = time.monotonic()
            resp.close()
            return {"first": first, "last": last, "events": n}

        for result in await asyncio.gather(*(count(r) for r in streams)):
            print(orjson.dumps(result).decode(), flush=True)


async def idle(url: str, streams: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        opened = []
        for _ in range(streams):
            opened.append(await _open(http, f"{url}/v1/events/stream"))
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for resp in opened:
            resp.close()


def main() -> None:
    mode, url, *rest = sys.argv[1:]
    if mode == "throughput":
        asyncio.run(throughput(url, int(rest[0]), rest[1], int(rest[2])))
    else:
        asyncio.run(idle(url, int(rest[0])))


if __name__ == "__main__":
    main()
