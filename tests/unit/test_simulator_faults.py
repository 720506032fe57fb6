"""Fault rules: the CLI spec, the JSON form of the control API, and which rule decides."""

from __future__ import annotations

import pytest

from syncer.simulator import FaultRule, Faults
from syncer.simulator.faults import parse_faults_spec


def test_cli_spec() -> None:
    rules = parse_faults_spec("429:0.05, 500:0.02,slow:0.1:2.5,drop,truncated:1")
    assert [(r.kind, r.rate, r.delay) for r in rules] == [
        ("429", 0.05, 2.0),  # Retry-After defaults to 2 s, as the gateway suggests
        ("500", 0.02, 0.0),
        ("slow", 0.1, 2.5),
        ("drop", 1.0, 0.0),
        ("truncated", 1.0, 0.0),
    ]
    assert parse_faults_spec("") == []
    for bad in ("teapot:0.1", "500:often", "500:2", "slow:0.1:-1", "429:0.1:1:1"):
        with pytest.raises(ValueError):
            parse_faults_spec(bad)


def test_json_round_trip_and_validation() -> None:
    rule = FaultRule("500", rate=0.5, times=3, region="r", image_type="gold", with_marker=True)
    rule.fired = 2
    assert FaultRule.from_json(rule.to_json()) == rule  # what GET /_sim/faults shows
    assert FaultRule.from_json(rule.to_json()).fired == 0
    for bad in ({}, {"kind": "500", "colour": "red"}, {"kind": "500", "rate": "x"}, [1], "500"):
        with pytest.raises(ValueError):
            FaultRule.from_json(bad)


def test_decisions() -> None:
    faults = Faults(seed=1)
    assert faults.decide("r", None, False).rule is None
    slow = FaultRule("slow", delay=0.5)
    once = FaultRule("429", times=1, delay=3)
    later_pages = FaultRule("500", with_marker=True, image_type="private")
    faults.add(slow)
    faults.add(once)
    faults.add(later_pages)
    first = faults.decide("r", "private", True)
    assert (first.delay, first.rule) == (0.5, once)
    second = faults.decide("r", "private", True)
    assert (second.delay, second.rule) == (0.5, later_pages)
    assert faults.decide("r", "private", False).rule is None
    assert faults.decide("r", "gold", True).rule is None
    assert (slow.fired, once.fired, later_pages.fired) == (4, 1, 1)
    faults.clear()
    sometimes = FaultRule("503", rate=0.25)
    faults.add(sometimes)
    hits = sum(faults.decide("r", None, False).rule is not None for _ in range(4000))
    assert 850 < hits < 1150 and sometimes.fired == hits
