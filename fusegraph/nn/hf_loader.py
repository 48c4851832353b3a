"""`load_model`: a Hugging Face model directory (dense or GPTQ) as a `DecoderModel` with weights.

It reads `config.json` (plus `quantize_config.json` if the config has no
`quantization_config`), then `model.safetensors` or the shards of
`model.safetensors.index.json` (or every `*.safetensors` when there is no index). It never
unpickles: `.bin`/`.pt` files are refused by name. Every error is a `ModelLoadError` (a
`ValueError`) naming the file and the tensor or field.

With `fuse=True`, q/k/v become one `qkv_proj` and gate/up one `gate_up_proj` per layer when
their weights can be stacked: always for dense weights, and for GPTQ weights when the `g_idx`
of the projections are equal (checked here, as the weights are bound; act-order checkpoints
quantized from the same inputs have equal ones). Layers where they differ keep separate
projections.

Example:
    >>> model = load_model("Llama-3-8B-GPTQ/", device="cuda", dtype="float16")
    >>> run = model.compile(num_blocks=512, device="cuda", cuda_graphs=True)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open

from fusegraph.compiler import DeviceRef, DType
from fusegraph.nn.decoder import DecoderModel
from fusegraph.nn.gptq_share import g_idx_mismatch
from fusegraph.nn.hf_config import ModelConfig, ModelLoadError, parse_dtype

INDEX_FILE = "model.safetensors.index.json"
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
_QKV, _GATE_UP = ("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")


class SafetensorsDir:
    """The tensors of a model directory, read lazily; `origin[name]` is the file holding it.

    Raises:
        ModelLoadError: No safetensors (pickled files are named and refused), a shard the index
            lists is missing, the index names a tensor its shard lacks, or two files hold the
            same tensor name (naming both files).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.origin: dict[str, Path] = {}
        index = folder / INDEX_FILE
        files = self._files_from_index(index) if index.is_file() else sorted(folder.glob("*.safetensors"))
        if not files:
            pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
            hint = f"; found {pickled}, which would need unpickling and are never loaded" if pickled else ""
            raise ModelLoadError(f"{folder}: no model.safetensors (nor shards){hint}")
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                    if (first := self.origin.get(name)) is not None:
                        raise ModelLoadError(
                            f"tensor {name!r} is in two files: {first} and {file}; a checkpoint must hold each tensor once"
                        )
                    self.origin[name] = file
        if index.is_file():
            self._check_index(index)

    def _files_from_index(self, index: Path) -> list[Path]:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelLoadError(f"{index}: cannot read its weight_map: {err}") from None
        self._weight_map: dict[str, str] = dict(weight_map)
        files = []
        for shard in sorted(set(self._weight_map.values())):
            if not (self.folder / shard).is_file():
                example = next(n for n, s in self._weight_map.items() if s == shard)
                raise ModelLoadError(f"{index}: shard {shard!r} (holding e.g. tensor {example!r}) is missing")
            files.append(self.folder / shard)
        return files

    def _check_index(self, index: Path) -> None:
        for name, shard in self._weight_map.items():
            if (found := self.origin.get(name)) is None or found.name != shard:
                where = f"it is in {found.name}" if found is not None else "no file holds it"
                raise ModelLoadError(f"{index}: tensor {name!r} is listed in {shard!r}, but {where}")

    def __contains__(self, name: str) -> bool:
        return name in self.origin

    def where(self, name: str) -> str:
        """The file holding `name` (or the folder, when no file does)."""
        return str(self.origin.get(name, self.folder))

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor."""
        with safe_open(str(self.origin[name]), framework="pt") as f:
            tensor: torch.Tensor = f.get_tensor(name)  # safetensors' stub leaves it untyped
            return tensor


def stack_projections(
    tensors: Mapping[str, torch.Tensor], parts: Sequence[str], into: str, *, quantized: bool
) -> dict[str, torch.Tensor]:
    """Stack projections `parts` (e.g. q/k/v_proj) of `tensors` into one `into` (`qkv_proj`).

    Dense: `weight` and `bias` are concatenated along the output rows. GPTQ: `qweight`,
    `qzeros` and `scales` along their column axis (each packs along K or per column word, so
    columns stack), `bias` along its only axis, and `g_idx` is kept once; it must be equal in
    every part (GPTQ's act-order permutation is per input, so stacked columns need one).

    Raises:
        ValueError: The `g_idx` of the parts differ (naming the first two that do).
    """
    out: dict[str, torch.Tensor] = {}
    suffixes = ("qweight", "qzeros", "scales", "g_idx", "bias") if quantized else ("weight", "bias")
    for suffix in suffixes:
        names = [f"{p}.{suffix}" for p in parts]
        if not all(n in tensors for n in names):
            continue
        values = [tensors[n] for n in names]
        if suffix == "g_idx":
            if bad := next((n for n, v in zip(names[1:], values[1:]) if not torch.equal(v, values[0])), None):
                raise ValueError(
                    f"stack_projections: {names[0]} != {bad}; act-order projections stack only with equal g_idx"
                )
            out[f"{into}.g_idx"] = values[0]
            continue
        axis = 1 if suffix in ("qweight", "qzeros", "scales") else 0
        out[f"{into}.{suffix}"] = torch.cat(values, dim=axis)
    return out


def load_model(
    path: str | Path,
    *,
    device: str | DeviceRef = "cpu",
    dtype: str | DType | torch.dtype | None = None,
    fuse: bool = True,
    max_seq_len: int | None = None,
    page_size: int = 16,
) -> DecoderModel:
    """Load a Llama/Mistral/Qwen2/Qwen3 directory (dense or GPTQ) with its weights bound.

    Args:
        path: The model directory.
        device: "cpu", "cuda", "cuda:N" or a `DeviceRef`: where the graph puts weights and cache.
        dtype: The activation/cache dtype ("float32", "float16", "bfloat16", a DType or a
            torch.dtype); default: the checkpoint's (`dtype`/`torch_dtype` in config.json).
        fuse: Fused rope/split/store, and stacked q/k/v and gate/up where the weights allow.
        max_seq_len: Rows of the rope table (default `max_position_embeddings`).
        page_size: Tokens per KV-cache page.

    Returns:
        A `DecoderModel`; `model.state_dict()` equals its graph's weights.

    Raises:
        ModelLoadError: See the module docstring; each names the file and the tensor or field.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: not a directory")
    config = ModelConfig.from_file(folder / "config.json")
    if config.attention_bias and config.model_type != "qwen2":
        raise ModelLoadError(f"{config.source}: attention_bias=true (a biased o_proj) is not supported")
    files = SafetensorsDir(folder)
    model_dtype = _parse(parse_dtype, dtype) if dtype is not None else config.dtype
    dev = _parse(_device, device)
    lm_head_quantized = "lm_head.qweight" in files
    if config.quantization is None and (
        packed := next((n for n in files.origin if n.endswith(".qweight")), None)
    ):
        raise ModelLoadError(
            f"{files.where(packed)}: tensor {packed!r} is GPTQ-packed, but {config.source} has no quantization_config"
        )
    kw: dict[str, Any] = dict(
        dtype=model_dtype,
        device=dev,
        quantized_lm_head=lm_head_quantized,
        max_seq_len=max_seq_len,
        page_size=page_size,
    )
    plain = DecoderModel(config, fuse=fuse, **kw)
    state = _read_checked(plain, files, config)
    qkv, gate_up = ([False] * config.num_hidden_layers for _ in range(2))
    if fuse:
        state, qkv, gate_up = _stack_layers(state, config)
    model = plain if not (any(qkv) or any(gate_up)) else DecoderModel(
        config, fuse=fuse, stacked_qkv=qkv, stacked_gate_up=gate_up, **kw
    )  # fmt: skip
    model.load_state_dict(state)
    return model


_In = TypeVar("_In")
_Out = TypeVar("_Out")


def _parse(fn: Callable[[_In], _Out], value: _In) -> _Out:
    try:
        return fn(value)
    except ValueError as err:
        raise ModelLoadError(f"load_model: {err}") from None


def _device(device: str | DeviceRef) -> DeviceRef:
    if isinstance(device, DeviceRef):
        return device
    kind, _, index = str(device).partition(":")
    if kind == "cpu":
        return DeviceRef.CPU()
    if kind in ("cuda", "gpu"):
        return DeviceRef.GPU(int(index or 0))
    raise ValueError(f"device={device!r} is not supported; allowed: 'cpu', 'cuda', 'cuda:N'")


def _read_checked(model: DecoderModel, files: SafetensorsDir, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Every parameter of the unstacked `model` from `files`, checked against the config and
    converted to the declared float type; checkpoint-only tensors checked and dropped."""
    specs, accepted = dict(model.named_params()), dict(model.named_accepted())
    state: dict[str, torch.Tensor] = {}
    for name, spec in specs.items():
        if name not in files:
            raise ModelLoadError(_missing(name, files, config))
        tensor = files.get(name)
        if tuple(tensor.shape) != spec.shape:
            raise ModelLoadError(
                f"{files.where(name)}: tensor {name!r} has shape {list(tensor.shape)}, but {config.source} "
                f"implies {list(spec.shape)} ({_dims(config)})"
            )
        want = spec.dtype.to_torch()
        if tensor.dtype != want and tensor.is_floating_point() and want.is_floating_point:
            tensor = tensor.to(want)
        if tensor.dtype != want:
            raise ModelLoadError(
                f"{files.where(name)}: tensor {name!r} has dtype {tensor.dtype}, expected {want}"
            )
        state[name] = tensor
    for name, check in accepted.items():
        if name in files:
            try:
                check(name, files.get(name))
            except ValueError as err:
                raise ModelLoadError(f"{files.where(name)}: {err}") from None
            state[name] = files.get(name)  # kept for stacking decisions; the layer drops it
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    for name in files.origin:
        if (
            name not in specs
            and name not in accepted
            and name not in tied
            and not name.endswith(_IGNORED_SUFFIXES)
        ):
            raise ModelLoadError(
                f"{files.where(name)}: unexpected tensor {name!r}: not a parameter of a "
                f"{config.model_type} model with this {config.source}"
            )
    return state


def _missing(name: str, files: SafetensorsDir, config: ModelConfig) -> str:
    prefix = name.rsplit(".", 1)[0]
    hint = ""
    if name.endswith(".qweight") and f"{prefix}.weight" in files:
        hint = f"; {files.where(prefix + '.weight')} holds a dense {prefix}.weight, but {config.source} says GPTQ"
    elif name.endswith(".weight") and f"{prefix}.qweight" in files:
        hint = f"; {files.where(prefix + '.qweight')} holds GPTQ {prefix}.qweight, but {config.source} has no quantization_config"
    return f"{files.folder}: tensor {name!r} not found in any safetensors file{hint}"


def _dims(c: ModelConfig) -> str:
    return (
        f"vocab_size={c.vocab_size}, hidden_size={c.hidden_size}, intermediate_size={c.intermediate_size}, "
        f"num_attention_heads={c.num_attention_heads}, num_key_value_heads={c.num_key_value_heads}, head_dim={c.head_dim}"
    )


def _stack_layers(
    state: dict[str, torch.Tensor], config: ModelConfig
) -> tuple[dict[str, torch.Tensor], list[bool], list[bool]]:
    """Stack q/k/v and gate/up of each layer where their g_idx agree (always when dense)."""
    quantized = config.quantization is not None
    desc_act = config.quantization is not None and config.quantization.desc_act
    qkv_flags: list[bool] = []
    gate_up_flags: list[bool] = []
    for i in range(config.num_hidden_layers):
        for block, parts, into, flags in (
            (f"model.layers.{i}.self_attn.", _QKV, "qkv_proj", qkv_flags),
            (f"model.layers.{i}.mlp.", _GATE_UP, "gate_up_proj", gate_up_flags),
        ):
            local = {k.removeprefix(block): v for k, v in state.items() if k.startswith(block)}
            ok = not desc_act or g_idx_mismatch(parts, [local.get(f"{p}.g_idx") for p in parts]) is None
            flags.append(ok)
            if not ok:
                continue
            stacked = stack_projections(local, parts, into, quantized=quantized)
            if not desc_act:
                stacked.pop(f"{into}.g_idx", None)  # the trivial one: checked already, unused
            for p in parts:
                for key in [k for k in state if k.startswith(f"{block}{p}.")]:
                    del state[key]
            state.update({block + k: v for k, v in stacked.items()})
    return state, qkv_flags, gate_up_flags
