"""`get_torch_impl`: an op class without a registered torch implementation is refused by name."""

from __future__ import annotations

import pytest
from xdsl.dialects import test as xdsl_test

from fusegraph.compiler.impls import MissingTorchImplError, get_torch_impl


def test_get_torch_impl__an_op_without_one_names_the_op_and_how_to_register_it() -> None:
    with pytest.raises(MissingTorchImplError, match=r"test\.op: no torch implementation registered for TestOp; "
                       r"register one with @torch_impl\(TestOp\)"):  # fmt: skip
        get_torch_impl(xdsl_test.TestOp.create())
