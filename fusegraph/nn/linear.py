"""`Linear` (dense, optional bias) and `GPTQLinear` (GPTQ-quantized weights).

Both compute `y = x · Wᵀ (+ b)` for `x` `[M, in_dim]`. Parameter names are HF's: `weight`,
`bias`; GPTQ: `qweight`, `qzeros`, `scales`, `g_idx` (act order only), `bias`.

Example:
    >>> proj = Linear(64, 128, dtype=DType.float32, device=DeviceRef.CPU(), has_bias=True)
    >>> proj.load_state_dict({"weight": w, "bias": b})
    >>> y = proj(x)            # inside `with Graph(...)`
"""

from __future__ import annotations

import torch

from fusegraph import ops
from fusegraph.compiler import DeviceRef, DType, TensorValue
from fusegraph.nn.layer import Module
from fusegraph.nn.quant import QuantizationConfig


class Linear(Module):
    """A dense projection, MAX's `Linear`: weight `[out_dim, in_dim]`, optional bias `[out_dim]`.

    Args:
        in_dim: Input features.
        out_dim: Output features.
        dtype: Weight (and activation) type.
        device: Where the weights live (default CPU).
        has_bias: Add a bias parameter.
        clip_weight: Clamp the weight to `[-clip_weight, clip_weight]` in the graph.

    Raises:
        ValueError: `in_dim` or `out_dim` is not a positive int (the message names it).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        dtype: DType = DType.float32,
        device: DeviceRef | None = None,
        has_bias: bool = False,
        clip_weight: float | None = None,
    ) -> None:
        super().__init__()
        check_positive_dims("Linear", in_dim=in_dim, out_dim=out_dim)
        device = device if device is not None else DeviceRef.CPU()
        self.in_dim, self.out_dim, self.dtype, self.device = in_dim, out_dim, dtype, device
        self.has_bias, self.clip_weight = has_bias, clip_weight
        self._declare("weight", [out_dim, in_dim], dtype, device)
        if has_bias:
            self._declare("bias", [out_dim], dtype, device)

    def __call__(self, x: TensorValue) -> TensorValue:
        """`x · Wᵀ (+ b)`, `x` being `[M, in_dim]`."""
        w = self.weight("weight")
        if self.clip_weight is not None:
            w = ops.clamp(w, -self.clip_weight, self.clip_weight)
        y = x @ w.T
        return y + self.weight("bias") if self.has_bias else y


class GPTQLinear(Module):
    """A GPTQ-quantized projection emitting `fg.qmatmul.gptq`.

    Parameters (AutoGPTQ layout, K = in_dim, N = out_dim, G = groups):
    `qweight` int32 `[K·bits/32, N]`, `qzeros` int32 `[G, N·bits/32]`, `scales` `[G, N]`
    (`scales_dtype`, float16 in checkpoints), `g_idx` int32 `[K]` (only with `desc_act`), and
    `bias` `[N]` if `has_bias`.

    Without `desc_act` the graph binds no `g_idx`: the op's absent g_idx means
    `k // group_size`, so the q/k/v projections of one input share their (absent) g_idx and
    `fuse-qkv-projections` can stack them. `load_state_dict` still accepts a checkpoint's
    `g_idx` for such a layer, checks that it is `arange(K) // group_size`, and drops it.

    Args:
        in_dim: Input features K.
        out_dim: Output features N.
        quant_config: The GPTQ settings (any the op supports: 2/3/4/8 bits, sym or not,
            desc_act, v1 or v2 zeros).
        dtype: Activation (and bias) type.
        device: Where the weights live (default CPU).
        has_bias: Add a bias parameter.
        clip_weight: The op's `clip` attribute: clamp the dequantized weight.
        scales_dtype: The scales' element type.

    Raises:
        ValueError: in_dim/out_dim is not a positive int, group_size does not divide in_dim,
            or in_dim/out_dim do not pack into whole int32 words.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        quant_config: QuantizationConfig,
        dtype: DType = DType.float32,
        device: DeviceRef | None = None,
        has_bias: bool = False,
        clip_weight: float | None = None,
        scales_dtype: DType = DType.float16,
    ) -> None:
        super().__init__()
        check_positive_dims("GPTQLinear", in_dim=in_dim, out_dim=out_dim)
        if not isinstance(quant_config, QuantizationConfig):
            raise ValueError(
                f"GPTQLinear: quant_config must be a QuantizationConfig, got {type(quant_config).__name__}"
            )
        check_gptq_dims(quant_config, in_dim, out_dim, "in_dim")
        device = device if device is not None else DeviceRef.CPU()
        self.in_dim, self.out_dim, self.dtype, self.device = in_dim, out_dim, dtype, device
        self.quant_config, self.has_bias, self.clip_weight = quant_config, has_bias, clip_weight
        bits, groups = quant_config.bits, quant_config.num_groups(in_dim)
        self._declare("qweight", [in_dim * bits // 32, out_dim], DType.int32, device)
        self._declare("qzeros", [groups, out_dim * bits // 32], DType.int32, device)
        self._declare("scales", [groups, out_dim], scales_dtype, device)
        if quant_config.desc_act:
            self._declare("g_idx", [in_dim], DType.int32, device)
        else:
            self._accept("g_idx", self._check_trivial_g_idx)
        if has_bias:
            self._declare("bias", [out_dim], dtype, device)

    def __call__(self, x: TensorValue) -> TensorValue:
        """`x · dequant(W) (+ b)` through `fg.qmatmul.gptq`."""
        cfg = self.quant_config
        y = ops.qmatmul_gptq(
            x,
            self.weight("qweight"),
            self.weight("scales"),
            self.weight("qzeros"),
            self.weight("g_idx") if cfg.desc_act else None,
            bits=cfg.bits,
            group_size=cfg.group_size,
            sym=cfg.sym,
            desc_act=cfg.desc_act,
            zero_format=cfg.zero_format,
            clip=self.clip_weight,
        )
        return y + self.weight("bias") if self.has_bias else y

    def _check_trivial_g_idx(self, name: str, value: torch.Tensor) -> None:
        """A desc_act=False checkpoint's g_idx must be the order the graph assumes."""
        cfg, k = self.quant_config, self.in_dim
        rule = f"arange({k}) // group_size ({cfg.group_size})"
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (k,):
            got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"tensor {name!r}: expected g_idx of shape [{k}] = {rule}, got {got}")
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"tensor {name!r}: g_idx must be an integer tensor, got {value.dtype}")
        want = torch.arange(k, device=value.device) // (cfg.group_size if cfg.group_size != -1 else k)
        if (wrong := (value.long() != want).nonzero()).numel():
            i = int(wrong[0, 0])
            raise ValueError(
                f"tensor {name!r}: a desc_act=False layer needs g_idx = {rule}, but entry {i} is "
                f"{int(value[i])} (expected {int(want[i])}); use desc_act=True for an act-order g_idx"
            )


def check_positive_dims(owner: str, **dims: object) -> None:
    """Raise a ValueError naming the field unless every given dim is a positive int.

    Example:
        >>> check_positive_dims("Linear", in_dim=64, out_dim=-1)
        Traceback (most recent call last):
        ValueError: Linear: out_dim must be a positive int, got -1
    """
    for name, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")


def check_gptq_dims(cfg: QuantizationConfig, in_dim: int, out_dim: int, in_name: str) -> None:
    """Raise a ValueError naming the field when `in_dim`/`out_dim` cannot hold GPTQ weights."""
    if cfg.group_size != -1 and in_dim % cfg.group_size:
        raise ValueError(
            f"GPTQ: group_size ({cfg.group_size}) must divide {in_name} ({in_dim}); "
            f"use a divisor of {in_dim} or -1"
        )
    for name, dim in ((in_name, in_dim), ("out_dim", out_dim)):
        if dim * cfg.bits % 32:
            raise ValueError(
                f"GPTQ: {name} ({dim}) * bits ({cfg.bits}) must be a multiple of 32 to pack into int32 words"
            )
