"""GPTQ checkpoints (AutoGPTQ/GPTQModel format): load, validate, save, and RTN-quantize.

A checkpoint is a folder holding `*.safetensors` files plus either `quantize_config.json` or a
HF `config.json` with a `quantization_config` entry. Each quantized projection `P` has
`P.qweight` int32 `[K·bits/32, N]`, `P.qzeros` int32 `[G, N·bits/32]`, `P.scales` `[G, N]` and
`P.g_idx` int32 `[K]`. Loading never unpickles: only safetensors files are read.

Example:
    >>> cfg = QuantizationConfig(bits=4, group_size=32, desc_act=True, sym=False)
    >>> tensors = quantize_gptq_projections({"q_proj": wq, "k_proj": wk}, cfg)
    >>> save_gptq_checkpoint("ckpt", tensors, cfg)
    >>> cfg2, loaded = load_gptq_checkpoint("ckpt")
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file, save_file

from fusegraph.nn.gptq_quantizer import gptq_quantize
from fusegraph.nn.quant import QuantizationConfig
from fusegraph.ops.gptq_packing import pack, unpack_rows

GPTQ_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")
_SCALE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class CheckpointError(ValueError):
    """A GPTQ checkpoint is malformed; the message names the file or tensor."""


class GPTQCheckpoint(NamedTuple):
    """What `load_gptq_checkpoint` returns: the config and the tensors by name."""

    config: QuantizationConfig
    tensors: dict[str, torch.Tensor]


def load_gptq_checkpoint(path: str | Path, prefix: str = "") -> GPTQCheckpoint:
    """Read and validate a GPTQ checkpoint folder.

    Args:
        path: The folder.
        prefix: Keep only tensors whose name starts with it, with it removed
            (e.g. `"model.layers.0.self_attn."` gives names `q_proj.qweight`, ...).

    Returns:
        `(config, tensors)`.

    Raises:
        CheckpointError: No config or no safetensors file, a bad config value (naming the field
            and the allowed values), a missing tensor, a wrong shape or dtype, or a g_idx value
            out of range (naming the tensor).
    """
    folder = Path(path)
    config = read_quantization_config(folder)
    tensors: dict[str, torch.Tensor] = {}
    for file in _safetensors_files(folder):
        tensors.update(_load_safetensors(file))
    if prefix:
        tensors = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    validate_gptq_tensors(tensors, config)
    return GPTQCheckpoint(config, tensors)


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """`load_file`, with any failure (empty, truncated, not safetensors) naming the file."""
    try:
        return load_file(str(file))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own and OS errors
        size = file.stat().st_size if file.exists() else 0
        raise CheckpointError(
            f"{file}: not a readable safetensors file ({size} bytes; empty, truncated or another "
            f"format?): {type(err).__name__}: {err}"
        ) from None


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{file}: not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def read_quantization_config(folder: Path) -> QuantizationConfig:
    """The QuantizationConfig of `quantize_config.json`, else of `config.json`'s entry."""
    data: Any
    if (file := folder / "quantize_config.json").is_file():
        data = _read_json(file)
    elif (file := folder / "config.json").is_file():
        data = _read_json(file).get("quantization_config")
        if data is None:
            raise CheckpointError(f"{file}: no 'quantization_config' entry; is this a GPTQ checkpoint?")
        if not isinstance(data, dict):
            raise CheckpointError(
                f"{file}: 'quantization_config' must be an object, got {type(data).__name__}"
            )
    else:
        raise CheckpointError(f"{folder}: neither quantize_config.json nor config.json found")
    try:
        return QuantizationConfig.from_dict(data)
    except ValueError as err:
        raise CheckpointError(f"{file}: {err}") from None


def _safetensors_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
        hint = f"; found {pickled}, which would need unpickling and are not loaded" if pickled else ""
        raise CheckpointError(f"{folder}: no *.safetensors files{hint}")
    return files


def gptq_projections(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The prefixes `P` of every quantized projection (every name `P.<qweight|qzeros|...>`)."""
    return sorted({name.rsplit(".", 1)[0] for name in tensors if name.rsplit(".", 1)[-1] in GPTQ_SUFFIXES})


def validate_gptq_tensors(tensors: Mapping[str, torch.Tensor], config: QuantizationConfig) -> None:
    """Check every quantized projection's tensors against each other and `config`.

    Also warns (`UserWarning`) when a symmetric checkpoint's zeros look like the other zero
    format than `config.checkpoint_format` says.

    Raises:
        CheckpointError: A missing tensor, a wrong dtype or shape, or a g_idx out of range.
    """
    for proj in gptq_projections(tensors):
        if missing := [f"{proj}.{s}" for s in GPTQ_SUFFIXES if f"{proj}.{s}" not in tensors]:
            raise CheckpointError(f"GPTQ checkpoint: projection {proj!r} is missing tensor(s) {missing}")
        _check_projection(proj, tensors, config)
        if config.sym:
            _check_zero_format(proj, tensors[f"{proj}.qzeros"], config)


def _check_projection(proj: str, t: Mapping[str, torch.Tensor], cfg: QuantizationConfig) -> None:
    qweight, qzeros, scales, g_idx = (t[f"{proj}.{s}"] for s in GPTQ_SUFFIXES)
    for name, tensor in (("qweight", qweight), ("qzeros", qzeros), ("g_idx", g_idx)):
        if tensor.dtype != torch.int32:
            raise CheckpointError(f"tensor '{proj}.{name}': dtype {tensor.dtype}, expected torch.int32")
    if scales.dtype not in _SCALE_DTYPES:
        raise CheckpointError(
            f"tensor '{proj}.scales': dtype {scales.dtype}, expected one of {_SCALE_DTYPES}"
        )
    for name, tensor, rank in (
        ("qweight", qweight, 2),
        ("qzeros", qzeros, 2),
        ("scales", scales, 2),
        ("g_idx", g_idx, 1),
    ):
        if tensor.dim() != rank:
            raise CheckpointError(
                f"tensor '{proj}.{name}': rank {tensor.dim()} (shape {list(tensor.shape)}), expected {rank}"
            )
    k, n = _projection_dims(proj, qweight, scales, g_idx, cfg)
    groups = cfg.num_groups(k)
    expected = {
        "qweight": [k * cfg.bits // 32, n],
        "qzeros": [groups, n * cfg.bits // 32],
        "scales": [groups, n],
        "g_idx": [k],
    }
    for name, want in expected.items():
        if list(t[f"{proj}.{name}"].shape) != want:
            got = list(t[f"{proj}.{name}"].shape)
            raise CheckpointError(
                f"tensor '{proj}.{name}': shape {got}, expected {want} "
                f"(K={k}, N={n} from qweight {list(qweight.shape)}, g_idx {list(g_idx.shape)} and "
                f"scales {list(scales.shape)}; bits={cfg.bits}, group_size={cfg.group_size})"
            )
    if g_idx.numel() and (int(g_idx.min()) < 0 or int(g_idx.max()) >= groups):
        raise CheckpointError(
            f"tensor '{proj}.g_idx': values must lie in [0, {groups}), "
            f"got min {int(g_idx.min())}, max {int(g_idx.max())}"
        )
    if not bool(torch.isfinite(scales).all()):
        bad = torch.nonzero(~torch.isfinite(scales))[0].tolist()
        raise CheckpointError(
            f"tensor '{proj}.scales': scales must be finite, but entry {bad} is {scales[tuple(bad)].item()}"
        )


def _projection_dims(
    proj: str, qweight: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor, cfg: QuantizationConfig
) -> tuple[int, int]:
    """K and N of a projection. qweight `[K*bits/32, N]` and g_idx `[K]` each give K; when they
    disagree, the one whose K is `group_size` times the scales' group count is trusted (so the
    caller blames the other), and if that does not decide it the error names both."""
    n, k_g = scales.shape[1], g_idx.shape[0]
    rows = qweight.shape[0]
    k_q = rows * 32 // cfg.bits if rows * 32 % cfg.bits == 0 else None
    if k_q is None or k_q == k_g:
        return k_g, n
    groups, size = scales.shape[0], cfg.group_size
    fits = [k for k in (k_q, k_g) if size != -1 and k % size == 0 and k // size == groups]
    if len(fits) == 1:
        return fits[0], n
    raise CheckpointError(
        f"GPTQ checkpoint: projection {proj!r}: qweight {list(qweight.shape)} gives K={k_q} "
        f"(bits={cfg.bits}) but g_idx {list(g_idx.shape)} gives K={k_g}; scales {list(scales.shape)} "
        f"(group_size={cfg.group_size}) do not decide which is wrong"
    )


def _check_zero_format(proj: str, qzeros: torch.Tensor, cfg: QuantizationConfig) -> None:
    """Sym checkpoints store z = 2^(bits-1): as z - 1 in v1, as z in v2. If every stored zero
    is the other format's value, the config's checkpoint_format is probably wrong."""
    stored = unpack_rows(qzeros.t().contiguous(), cfg.bits)
    half = 1 << (cfg.bits - 1)
    looks = {"v1": bool((stored == half - 1).all()), "v2": bool((stored == half).all())}
    other = "v2" if cfg.zero_format == "v1" else "v1"
    if looks[other] and not looks[cfg.zero_format]:
        fmt = {"v1": "gptq", "v2": "gptq_v2"}
        warnings.warn(
            f"tensor '{proj}.qzeros': a sym {cfg.bits}-bit checkpoint whose stored zeros are all "
            f"{half - 1 if other == 'v1' else half}, which is the {other} format, but "
            f"checkpoint_format={cfg.checkpoint_format!r}; it is probably {fmt[other]!r}",
            UserWarning,
            stacklevel=3,
        )


def quantize_gptq(
    weight: torch.Tensor,
    config: QuantizationConfig,
    *,
    perm: torch.Tensor | None = None,
    scales_dtype: torch.dtype = torch.float16,
    inputs: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """GPTQ quantization of one HF-layout weight `[N, K]`: round-to-nearest, or the GPTQ
    algorithm (`gptq_quantizer.gptq_quantize`) when calibration `inputs` are given.

    Args:
        weight: Float `[out_features, in_features]`.
        config: Bits, group size, sym, desc_act and zero format.
        perm: RTN only: the act order when `config.desc_act` (default: descending
            input-column norm). With `inputs`, the act order is descending `diag(XᵀX)`.
        scales_dtype: The stored scales' type.
        inputs: Calibration activations `[n, K]` of the layer; selects the GPTQ algorithm.

    Returns:
        `{"qweight", "qzeros", "scales", "g_idx"}` in AutoGPTQ layout.
    """
    if inputs is not None:
        if perm is not None:
            raise ValueError(
                "quantize_gptq: perm is for round-to-nearest; GPTQ orders columns by its Hessian"
            )
        return gptq_quantize(weight, config, inputs, scales_dtype=scales_dtype)
    return pack(
        weight,
        bits=config.bits,
        group_size=config.group_size,
        sym=config.sym,
        desc_act=config.desc_act,
        perm=perm,
        zero_format=config.zero_format,
        scale_dtype=scales_dtype,
    )


def quantize_gptq_projections(
    weights: Mapping[str, torch.Tensor],
    config: QuantizationConfig,
    *,
    perm: torch.Tensor | None = None,
    scales_dtype: torch.dtype = torch.float16,
    inputs: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """`quantize_gptq` each `{prefix: weight}` (same keyword options), giving
    `{prefix.qweight: ..., ...}`."""
    out: dict[str, torch.Tensor] = {}
    for prefix, weight in weights.items():
        t = quantize_gptq(weight, config, perm=perm, scales_dtype=scales_dtype, inputs=inputs)
        out.update({f"{prefix}.{k}": v for k, v in t.items()})
    return out


def save_gptq_checkpoint(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    config: QuantizationConfig,
    *,
    hf_config: bool = False,
) -> Path:
    """Write `tensors` to `path/model.safetensors` and the config beside it.

    Args:
        path: The folder (created if needed).
        tensors: Name -> tensor (GPTQ projections and any others).
        config: Written as `quantize_config.json`, or as `config.json`'s
            `quantization_config` entry when `hf_config`.
        hf_config: Write the HF form.

    Returns:
        The folder.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    data = config.to_dict()
    if hf_config:
        (folder / "config.json").write_text(json.dumps({"quantization_config": data}, indent=2))
    else:
        (folder / "quantize_config.json").write_text(json.dumps(data, indent=2))
    return folder
