"""The built-in IMS simulator: a local ``GET /v2/cloudimages`` for tests, the demo and bench.

See docs/simulator.md.
"""

from syncer.simulator.catalog import REMOVED, Catalog
from syncer.simulator.faults import FaultRule, Faults
from syncer.simulator.server import RequestRecord, Simulator

__all__ = ["REMOVED", "Catalog", "FaultRule", "Faults", "RequestRecord", "Simulator"]
