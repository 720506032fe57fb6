"""How long the generated tests run: bounded in `make test`, longer on request.

``SYNCER_HYPOTHESIS_EXAMPLES`` (property tests), ``SYNCER_FUZZ_EXAMPLES`` (fuzzing of what
people and servers send us) and ``SYNCER_SOAK_SECONDS`` (the chaos soak) raise the budgets, e.g.
``SYNCER_HYPOTHESIS_EXAMPLES=500 SYNCER_FUZZ_EXAMPLES=2000 .venv/bin/pytest -k "property or fuzz"``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def _budget(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


PROPERTY_EXAMPLES = _budget("SYNCER_HYPOTHESIS_EXAMPLES", 20)
FUZZ_EXAMPLES = _budget("SYNCER_FUZZ_EXAMPLES", 40)
SOAK_SECONDS = _budget("SYNCER_SOAK_SECONDS", 60)

# Examples share the test's database (each starts by emptying it) and take real time (servers,
# PostgreSQL): no deadline, and the function-scoped fixtures are meant.
_COMMON = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    "print_blob": True,
}
PROPERTY = settings(max_examples=PROPERTY_EXAMPLES, **_COMMON)  # type: ignore[arg-type]
FUZZ = settings(max_examples=FUZZ_EXAMPLES, **_COMMON)  # type: ignore[arg-type]
