"""Faults on demand: throttling, server errors, slow pages, dropped connections, bad bodies.

Rules are checked in the order they were added, for each listing request they match (region,
image type, with or without a marker). Every matching ``slow`` rule that fires adds its delay;
then the first other rule that fires decides the answer. A rule fires with probability ``rate``
and at most ``times`` times.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final, Literal

FaultKind = Literal["429", "500", "503", "slow", "drop", "malformed", "truncated", "cut"]
FAULT_KINDS: Final = ("429", "500", "503", "slow", "drop", "malformed", "truncated", "cut")


@dataclass
class FaultRule:
    """One fault. ``delay`` is the sleep for ``slow`` and the Retry-After for ``429``."""

    kind: FaultKind
    rate: float = 1.0
    times: int | None = None
    region: str | None = None
    image_type: str | None = None
    with_marker: bool | None = None
    delay: float = 0.0
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (one of {', '.join(FAULT_KINDS)})")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate {self.rate} is not within 0..1")
        if self.times is not None and self.times < 0:
            raise ValueError("fault times must be >= 0")
        if self.delay < 0:
            raise ValueError("fault delay must be >= 0")

    def applies(self, region: str, image_type: str | None, has_marker: bool) -> bool:
        return (
            (self.times is None or self.fired < self.times)
            and (self.region is None or self.region == region)
            and (self.image_type is None or self.image_type == image_type)
            and (self.with_marker is None or self.with_marker == has_marker)
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> FaultRule:
        if not isinstance(data, dict):
            raise ValueError("a fault rule is a JSON object")
        known = {f.name for f in fields(cls)}  # "fired" (as GET shows it) is ignored
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault rule fields: {sorted(unknown)}")
        if "kind" not in data:
            raise ValueError("a fault rule needs a kind")
        kind = str(data["kind"])
        rule = cls(kind)  # type: ignore[arg-type]  # validated in __post_init__
        try:
            if "rate" in data:
                rule.rate = float(data["rate"])
            if data.get("times") is not None:
                rule.times = int(data["times"])
            for name in ("region", "image_type"):
                if data.get(name) is not None:
                    setattr(rule, name, str(data[name]))
            if data.get("with_marker") is not None:
                rule.with_marker = bool(data["with_marker"])
            if "delay" in data:
                rule.delay = float(data["delay"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad fault rule: {e}") from None
        rule.__post_init__()
        return rule


def parse_faults_spec(spec: str) -> list[FaultRule]:
    """``"429:0.05,500:0.02,slow:0.1:2.0"`` → rules: ``kind[:rate[:delay]]``, comma-separated."""
    rules = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        if len(parts) > 3:
            raise ValueError(f"bad fault {item!r}: kind[:rate[:delay]]")
        try:
            rate = float(parts[1]) if len(parts) > 1 and parts[1] else 1.0
            delay = (
                float(parts[2]) if len(parts) > 2 else (2.0 if parts[0] in ("429", "slow") else 0.0)
            )
        except ValueError:
            raise ValueError(f"bad fault {item!r}: rate and delay are numbers") from None
        rules.append(FaultRule(parts[0], rate=rate, delay=delay))  # type: ignore[arg-type]
    return rules


@dataclass(frozen=True, slots=True)
class Decision:
    delay: float  # seconds to wait first (slow rules)
    rule: FaultRule | None  # the fault that decides the answer, if any


class Faults:
    """The simulator's fault rules (``sim.faults``); also served at ``/_sim/faults``."""

    def __init__(
        self, rules: list[FaultRule] | tuple[FaultRule, ...] = (), *, seed: int = 0
    ) -> None:
        self.rules: list[FaultRule] = list(rules)
        self._rng = random.Random(f"faults/{seed}")

    def add(self, rule: FaultRule) -> None:
        self.rules.append(rule)

    def clear(self) -> None:
        self.rules.clear()

    def decide(self, region: str, image_type: str | None, has_marker: bool) -> Decision:
        delay = 0.0
        chosen: FaultRule | None = None
        for rule in self.rules:
            if chosen is not None and rule.kind != "slow":
                continue
            if not rule.applies(region, image_type, has_marker):
                continue
            if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                continue
            rule.fired += 1
            if rule.kind == "slow":
                delay += rule.delay
            else:
                chosen = rule
        return Decision(delay, chosen)
