"""`MLP`: the gated feed-forward of Llama/Mistral/Qwen, `down(silu(gate(x)) * up(x))`.

Projections are dense `Linear`s or, with a `quant_config`, `GPTQLinear`s (HF names
`gate_proj`, `up_proj`, `down_proj`). With `stacked_gate_up` gate and up are one projection
`gate_up_proj` `[2·I, hidden]` whose output is split in two (one matmul instead of two, as MAX
stacks them); a checkpoint's separate gate/up tensors are stacked by
`fusegraph.nn.hf_loader.stack_projections`, which refuses GPTQ projections whose `g_idx`
differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fusegraph import ops
from fusegraph.compiler import DeviceRef, DType, TensorValue
from fusegraph.nn.layer import Module
from fusegraph.nn.linear import GPTQLinear, Linear
from fusegraph.nn.quant import QuantizationConfig


def make_linear(
    in_dim: int,
    out_dim: int,
    *,
    dtype: DType,
    device: DeviceRef,
    quant_config: QuantizationConfig | None = None,
    has_bias: bool = False,
    scales_dtype: DType = DType.float16,
) -> Linear | GPTQLinear:
    """A `GPTQLinear` when `quant_config` is given, else a dense `Linear`."""
    if quant_config is not None:
        return GPTQLinear(in_dim, out_dim, quant_config, dtype, device, has_bias, scales_dtype=scales_dtype)
    return Linear(in_dim, out_dim, dtype=dtype, device=device, has_bias=has_bias)


class MLP(Module):
    """Gated SiLU feed-forward: `down_proj(silu(gate_proj(x)) * up_proj(x))`.

    Args:
        hidden_dim: Model size (input of gate/up, output of down).
        feed_forward_length: Intermediate size I.
        dtype: Weight and activation type.
        devices: Where the weights live (default CPU; the first is used).
        quant_config: GPTQ settings: every projection becomes a `GPTQLinear`.
        has_bias: Biases on the three projections (Llama's `mlp_bias`).
        stacked_gate_up: One `gate_up_proj` `[2·I, hidden]` (gate rows first) instead of two.
        scales_dtype: The GPTQ scales' type.

    Example:
        >>> mlp = MLP(64, 96, DType.float32, stacked_gate_up=True)
        >>> mlp.load_state_dict(stack_projections(hf_tensors, ["gate_proj", "up_proj"], "gate_up_proj"))
        >>> y = mlp(x)               # x [T, 64] -> [T, 64], inside `with Graph(...)`
    """

    def __init__(
        self,
        hidden_dim: int,
        feed_forward_length: int,
        dtype: DType = DType.float32,
        devices: Sequence[DeviceRef] | None = None,
        *,
        quant_config: QuantizationConfig | None = None,
        has_bias: bool = False,
        stacked_gate_up: bool = False,
        scales_dtype: DType = DType.float16,
    ) -> None:
        super().__init__()
        device = devices[0] if devices else DeviceRef.CPU()
        self.hidden_dim, self.feed_forward_length, self.dtype = hidden_dim, feed_forward_length, dtype
        self.stacked_gate_up, self.quant_config = stacked_gate_up, quant_config
        kw: dict[str, Any] = dict(
            dtype=dtype,
            device=device,
            quant_config=quant_config,
            has_bias=has_bias,
            scales_dtype=scales_dtype,
        )
        if stacked_gate_up:
            self.gate_up_proj = make_linear(hidden_dim, 2 * feed_forward_length, **kw)
        else:
            self.gate_proj = make_linear(hidden_dim, feed_forward_length, **kw)
            self.up_proj = make_linear(hidden_dim, feed_forward_length, **kw)
        self.down_proj = make_linear(feed_forward_length, hidden_dim, **kw)

    def __call__(self, x: TensorValue) -> TensorValue:
        """`x` `[T, hidden]` -> `[T, hidden]`."""
        if self.stacked_gate_up:
            size = self.feed_forward_length
            gate, up = ops.split(self.gate_up_proj(x), [size, size], axis=1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(ops.silu(gate) * up)
