"""Independent references written from the math, for the demo, examples and tests."""

from fusegraph.testing.reference import DenseAttentionReference, rope_reference

__all__ = ["DenseAttentionReference", "rope_reference"]
