"""Hypothesis strategies shared by the property and fuzz tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def json_values(*, max_leaves: int = 8, max_text: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value: scalars (64-bit integers, finite floats, short texts) and small nests."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=max_text)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=max_leaves,
    )
