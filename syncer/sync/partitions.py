"""Partitions: one per (region, image type) of the configuration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from syncer.config import Settings
from syncer.errors import ConfigError


class Partition(NamedTuple):
    region: str
    image_type: str

    @property
    def name(self) -> str:
        return f"{self.region}/{self.image_type}"


def plan_partitions(
    settings: Settings, regions: Sequence[str] = (), image_types: Sequence[str] = ()
) -> list[Partition]:
    """The configured partitions, narrowed by ``--region``/``--type`` (which must be configured)."""
    for r in regions:
        if r not in settings.sync.regions:
            raise ConfigError(f"--region {r} is not in sync.regions of {settings.source}")
    for t in image_types:
        if t not in settings.sync.image_types:
            raise ConfigError(f"--type {t} is not in sync.image_types of {settings.source}")
    return [
        Partition(r, t)
        for r in settings.sync.regions
        if not regions or r in regions
        for t in settings.sync.image_types
        if not image_types or t in image_types
    ]
