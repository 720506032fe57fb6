"""Backoff delays, Retry-After parsing and the AIMD limit, without any I/O."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest

from syncer.ims.backoff import Backoff, parse_retry_after
from syncer.ims.concurrency import AdaptiveLimit, ConcurrencyGate


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    backoff = Backoff(base=0.5, cap=4.0, rng=random.Random(3))
    for retry in range(1, 12):
        ceiling = min(4.0, 0.5 * 2 ** (retry - 1))
        delays = [backoff.delay(retry) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # the whole range is used, not just the low end


def test_retry_after_wins_and_is_capped() -> None:
    backoff = Backoff(retry_after_cap=60.0, rng=random.Random(1))
    assert backoff.delay(1, 3.0) == 3.0
    assert backoff.delay(5, 0.0) == 0.0
    assert backoff.delay(1, 3600.0) == 60.0


NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-4", 0.0),
        ("Tue, 02 Jan 2024 03:04:35 GMT", 30.0),
        ("Tue, 02 Jan 2024 03:00:00 GMT", 0.0),  # in the past: now
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


async def test_limit_grants_in_fifo_order_and_survives_cancellation() -> None:
    limit = AdaptiveLimit(1)
    await limit.acquire()
    order: list[str] = []

    async def waiter(name: str) -> None:
        await limit.acquire()
        order.append(name)
        limit.release()

    first = asyncio.create_task(waiter("first"))
    doomed = asyncio.create_task(waiter("doomed"))
    last = asyncio.create_task(waiter("last"))
    await asyncio.sleep(0)
    doomed.cancel()
    limit.release()
    await asyncio.gather(first, last)
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert order == ["first", "last"]
    assert limit.in_flight == 0


async def test_throttle_in_an_old_epoch_does_not_halve_again() -> None:
    limit = AdaptiveLimit(8, increase_after=2)
    epochs = [await limit.acquire() for _ in range(3)]
    for e in epochs:
        limit.throttled(e)
    assert limit.limit == 4
    limit.throttled(limit.epoch)
    assert limit.limit == 2
    limit.succeeded()
    limit.succeeded()
    assert limit.limit == 3


async def test_gate_endpoint_ceiling_never_exceeds_global_cap() -> None:
    gate = ConcurrencyGate(global_cap=2, endpoint_ceiling=10)
    assert gate.limit_for("x").ceiling == 2
    async with gate.slot("x") as ticket:
        assert ticket.limit is gate.limit_for("x")
        assert gate.limit_for("x").in_flight == 1
    assert gate.limit_for("x").in_flight == 0
