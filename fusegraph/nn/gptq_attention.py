"""`GPTQAttentionWithRope`: `AttentionWithRope` with GPTQ-quantized q/k/v/o projections.

Unlike MAX's layer of the same name (GPU-only, 4-bit, group 128, symmetric, none of the flags
below), this one takes any `QuantizationConfig` the op supports and every flag of
`AttentionWithRope`: `stacked_qkv`, `has_bias`, `clip_qkv`, `use_qk_norm`, `sliding_window` /
`mask_variant` and both values of `_fuse_rope_and_store`. q/k/v are `GPTQLinear`s emitting
`fg.qmatmul.gptq`; o_proj is built by `linear_cls` (default `GPTQLinear`; a `Linear` for
checkpoints that leave o_proj dense). Weights use AutoGPTQ names (`q_proj.qweight`, `.qzeros`,
`.scales`, `.g_idx`, and `.bias` with `has_bias`).

Act order: after each `load_state_dict`, q/k/v whose loaded `g_idx` are equal share q's
`g_idx` weight (`share_equal_g_idx`), so `fuse-qkv-projections` can stack them;
`g_idx_sharing` holds None or the reason they stay apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fusegraph.compiler import DeviceRef, DType, TensorValue
from fusegraph.nn.attention import AttentionWithRope
from fusegraph.nn.layer import Module
from fusegraph.nn.linear import GPTQLinear
from fusegraph.nn.quant import QuantizationConfig


class GPTQAttentionWithRope(AttentionWithRope):
    """GPTQ attention with rope over a paged KV cache.

    Args:
        quantization_config: The GPTQ settings of every projection (the base class's
            `quant_config`).
        linear_cls: The class of o_proj: `GPTQLinear` (default) or a subclass, built with
            `quantization_config`; or `Linear` (or a subclass, or any class taking `Linear`'s
            arguments and holding `weight [hidden, H·D]`) for a dense o_proj. MAX's default,
            `Linear`, means a GPTQ o_proj there; here it means a dense one.
        **kwargs: Every other argument of `AttentionWithRope` (`rope`, `num_attention_heads`,
            `num_key_value_heads`, `hidden_size`, `kv_params`, `devices`, `dtype`, `scale`,
            `stacked_qkv`, `has_bias`, `clip_qkv`, `use_qk_norm`, `rms_norm_eps`,
            `sliding_window`, `mask_variant`, `_fuse_rope_and_store`), supported in full.

    Raises:
        ValueError: As `AttentionWithRope`; when `group_size` does not divide `hidden_size`
            (or `num_attention_heads * head_dim`, o_proj's input); when `linear_cls` cannot be
            built as o_proj or its parameters are not a dense or GPTQ `[hidden, H·D]` projection.

    Example:
        >>> cfg = QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=False)
        >>> attn = GPTQAttentionWithRope(quantization_config=cfg, rope=rope, num_attention_heads=4,
        ...                              num_key_value_heads=2, hidden_size=64, kv_params=kv_params)
        >>> attn.load_state_dict(quantize_gptq_projections({"q_proj": wq, ...}, cfg))
    """

    def __init__(
        self,
        *,
        quantization_config: QuantizationConfig,
        linear_cls: Callable[..., Callable[[TensorValue], TensorValue]] = GPTQLinear,
        **kwargs: Any,
    ) -> None:
        if not isinstance(quantization_config, QuantizationConfig):
            raise ValueError(
                f"GPTQAttentionWithRope: quantization_config must be a QuantizationConfig, "
                f"got {type(quantization_config).__name__}"
            )
        self.quantization_config = quantization_config
        super().__init__(linear_cls=linear_cls, quant_config=quantization_config, **kwargs)

    def _output_projection(self) -> Callable[[TensorValue], TensorValue]:
        return build_output_projection(
            self.linear_cls,
            self.q_dim,
            self.hidden_size,
            self.quantization_config,
            self.dtype,
            self.devices[0],
        )

    @property
    def wqkv(self) -> torch.Tensor:
        """MAX's "packed + scales" q/k/v weight, as a host uint8 tensor `[rows, Ntot]`.

        Each int32 qweight `[K·bits/32, N]` is reinterpreted as bytes and the three are
        concatenated column-wise (the bytes of `concat(q, k, v, axis=1)` of the int32 words,
        which is also `qkv_proj.qweight` when `stacked_qkv`), then viewed as `[K·bits/8, Ntot]`;
        the scales get the same treatment (`[G·s, Ntot]`, s = bytes per scale, 2 for fp16); the
        two are stacked along axis 0. With G = K/group_size groups this is
        `[G·(group_size·bits/8 + s), Ntot]`: `G·(group/2 + 2)` rows for 4-bit fp16 (MAX's case),
        `G·(group + 2)` for 8-bit, `G·(group/4 + 2)` for 2-bit, `G·(3·group/8 + 2)` for 3-bit.
        qzeros and g_idx are not part of this layout (MAX's is symmetric and takes the act-order
        permutation separately). The graph has no bitcast op, so this is built on the host from
        the loaded tensors.

        Raises:
            RuntimeError: The weights are not loaded.
        """
        state = self.state_dict()
        names = ["qkv_proj"] if self.stacked_qkv else ["q_proj", "k_proj", "v_proj"]
        qweight = torch.cat([state[f"{n}.qweight"] for n in names], dim=1).contiguous()
        scales = torch.cat([state[f"{n}.scales"] for n in names], dim=1).contiguous()
        n_total = qweight.shape[1]
        qweight_bytes = qweight.view(torch.uint8).reshape(-1, n_total)
        scales_bytes = scales.view(torch.uint8).reshape(-1, n_total)
        return torch.cat([qweight_bytes, scales_bytes], dim=0)


def build_output_projection(
    linear_cls: Callable[..., Callable[[TensorValue], TensorValue]],
    in_dim: int,
    out_dim: int,
    quant: QuantizationConfig,
    dtype: DType,
    device: DeviceRef,
) -> Callable[[TensorValue], TensorValue]:
    """o_proj from `linear_cls`: a `GPTQLinear` (subclass) gets `quant`; anything else is built
    with `Linear`'s arguments. The result must hold a projection's weights: `weight [out, in]`
    (dense) or GPTQ `qweight`/`qzeros`/`scales` of `[in, out]`.

    Raises:
        ValueError: The class cannot be built so, or does not hold those weights; the message
            names the class, the dims and the parameters it has.
    """
    name = getattr(linear_cls, "__name__", repr(linear_cls))
    where = f"GPTQAttentionWithRope: linear_cls={name} as o_proj (in_dim={in_dim}, out_dim={out_dim})"
    if not callable(linear_cls):
        raise ValueError(f"{where}: not a class")
    make: Callable[..., object] = linear_cls
    try:
        if isinstance(linear_cls, type) and issubclass(linear_cls, GPTQLinear):
            proj = make(in_dim, out_dim, quant, dtype, device, False, None)
        else:
            proj = make(in_dim, out_dim, dtype=dtype, device=device, has_bias=False, clip_weight=None)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: cannot be built: {err}") from None
    if not isinstance(proj, Module) or not callable(proj):
        raise ValueError(f"{where}: built a {type(proj).__name__}, not a callable fusegraph Module")
    params = {n: list(spec.shape) for n, spec in proj.named_params()}
    dense = {"weight": [out_dim, in_dim]}
    gptq = GPTQLinear(in_dim, out_dim, quant, dtype, device)
    quantized = {n: list(spec.shape) for n, spec in gptq.named_params()}
    if params not in (dense, quantized):
        raise ValueError(
            f"{where}: cannot take the projection's weights: it declares {params}, expected a dense "
            f"{dense} or GPTQ {quantized} projection"
        )
    return proj
