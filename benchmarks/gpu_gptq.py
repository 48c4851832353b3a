"""GPTQ matmul benchmark (the "gptq" section of `benchmarks/gpu.py`): the four Llama-3-8B shapes.

For qkv 4096x6144, o_proj 4096x4096, gate_up 4096x28672 and down 14336x4096 at M = 1, 4, 16,
64, 256, 1024: ours on the repacked layout (`fg.gptq.repack` + `gptq_tiled_matmul`) 4-bit g128
plain and act-order, 8-bit g128; cuBLAS fp16 on the dense weight; torch's tinygemm
(`aten._weight_int4pack_mm`, bf16); at M ≤ 2 also "pdl4", ours launched with programmatic dependent
launch and an 8 KB L2 prefetch (`PDL_CHAIN`: it pays between consecutive GPTQ matmuls, as here);
the previous kernel on the checkpoint layout with GPTQ_PREV=1. "ours" is the default dispatch (at
M ≤ 16 the compiled CUDA kernel of `gptq_cuda.py`), on sm_90 in the PDL chain (`runtime/kernels/pdl.py`): the
graph's consecutive calls overlap, each one's launch and first weight block under the call before, as in a
decode step; at M ≤ 16 "nochain4" is the same kernels without it (cuBLAS and tinygemm are not chained
either) and "tri*" is `gptq_tiled_matmul` forced onto its Triton kernels. GPTQ_NO_PDL=1 leaves out the PDL column; GPTQ_REPEAT=1 times ours4 and cuBLAS
again at the end of each row ("ours4b", "cuBLASb": the order's effect on a cell). Device time
from CUDA-graph replays with every operand rotated over enough copies that L2 stays cold, and
the share of the measured copy bandwidth that the bytes each one must read and write make.
Every variant is checked against `x.float() @ W.float()` on its own random data before timing.
A last row times the four projections of one decoder layer (stacked wqkv) back to back.
"""

# ruff: noqa: B023, E731
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import torch

DEV = "cuda"
SHAPES = (("qkv", 4096, 6144), ("o_proj", 4096, 4096), ("gate_up", 4096, 28672), ("down", 14336, 4096))
SHAPES_LABELS = tuple(label for label, _, _ in SHAPES)
MS = tuple(int(m) for m in os.environ.get("GPTQ_MS", "1,4,16,64,256,1024").split(","))
GROUP = 128
PDL_CHAIN = {"pf": 1, "pf_lines": 64, "pdl": 2}  # the opt-in launch of `gptq_tiled_matmul` (Hopper)
TRITON = {"cuda": False}  # `gptq_tiled_matmul` on its Triton kernels only
# the CUDA kernels without the PDL chain (`runtime/kernels/pdl.py`): at M ≤ 16 (a config skips the wgmma default)
NO_CHAIN = {"chain": False}


def pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    per = 32 // bits
    v = values.to(torch.int64).reshape(values.shape[0] // per, per, -1)
    word = cast(torch.Tensor, sum((v[:, i] & ((1 << bits) - 1)) << (i * bits) for i in range(per)))
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def make_layer(k_in: int, n_out: int, *, bits: int = 4, act_order: bool = False) -> SimpleNamespace:
    """Random GPTQ tensors (v1 zeros, g128), their repacked form, and the dense fp16 W [K, N]."""
    from fusegraph.ops.gptq_layout import repack

    groups = k_in // GROUP
    q = torch.randint(0, 2**bits, (k_in, n_out), device=DEV, dtype=torch.int32)
    z = torch.randint(1, 2**bits, (groups, n_out), device=DEV, dtype=torch.int32)
    scales = (torch.rand(groups, n_out, device=DEV) * 0.004 + 0.001).half()
    g_idx = torch.arange(k_in, device=DEV) // GROUP
    if act_order:
        g_idx = g_idx[torch.randperm(k_in, device=DEV)]
    w = ((q - z[g_idx]).float() * scales[g_idx].float()).half()
    qzeros = pack_rows((z - 1).t().contiguous(), bits).t().contiguous()
    t = {"qweight": pack_rows(q, bits), "qzeros": qzeros, "scales": scales, "g_idx": g_idx.to(torch.int32)}
    r = repack(t["qweight"], t["qzeros"], t["g_idx"] if act_order else None, bits=bits, group_size=GROUP,
               sym=False, desc_act=act_order, zero_format="v1")  # fmt: skip
    layer = SimpleNamespace(t=t, r=r, w=w, bits=bits, act=act_order, q=q, z=z, k=k_in, n=n_out)
    if bits == 4 and not act_order:
        layer.tg = tinygemm_weight(q, z, scales)
    return layer


def tinygemm_weight(
    q: torch.Tensor, z: torch.Tensor, scales: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's int4 weight for `_weight_int4pack_mm`: W = (q − 8)·s + (8 − z)·s = (q − z)·s."""
    wt = q.t().contiguous()
    packed = (wt[:, ::2] << 4 | wt[:, 1::2]).to(torch.uint8)
    w4 = torch.ops.aten._convert_weight_to_int4pack(packed, 8)
    s = scales.float()
    sz = torch.stack([s, (8 - z).float() * s], -1).to(torch.bfloat16).contiguous()
    return w4, sz


def ours(
    k: Any, layer: SimpleNamespace, x: torch.Tensor, config: dict[str, Any] | None = None
) -> torch.Tensor:
    r = layer.r
    y: torch.Tensor = k.tiled(x, r["qweight"], layer.t["scales"], r["qzeros"], r.get("perm"), bits=layer.bits,
                              group_size=GROUP, zero_format="v1", config=config)  # fmt: skip
    return y


def previous(k: Any, layer: SimpleNamespace, x: torch.Tensor) -> torch.Tensor:
    t = layer.t
    y: torch.Tensor = k.gptq(x, t["qweight"], t["scales"], t["qzeros"], t["g_idx"] if layer.act else None,
                             bits=layer.bits, group_size=GROUP, zero_format="v1", desc_act=layer.act)  # fmt: skip
    return y


def tinygemm(layer: SimpleNamespace, x: torch.Tensor) -> torch.Tensor:
    w4, sz = layer.tg
    y: torch.Tensor = torch.ops.aten._weight_int4pack_mm(x, w4, GROUP, sz)
    return y


def named_configs(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The variants a sweep's environment variable adds, "name:{json config};..." (none for "").

    Example:
        >>> named_configs('i4:{"infl": 4};s2:{"split_k": 2}')
        [('i4', {'infl': 4}), ('s2', {'split_k': 2})]
    """
    out = []
    for item in filter(None, text.split(";")):
        name, _, cfg = item.partition(":")
        out.append((name, json.loads(cfg)))
    return out


def quant_bytes(k_in: int, n_out: int, bits: int) -> int:
    """Bytes our kernel must read for the weight: values, fp16 scales, packed zeros."""
    cb = 8 if bits == 8 else 4
    groups = k_in // GROUP
    return k_in * n_out * cb // 8 + groups * n_out * 2 + groups * n_out * cb // 8


def copies_for(nbytes: int) -> int:
    """Operand copies to rotate so that one pass over them is 3x the 60 MB L2."""
    return max(2, min(16, math.ceil(180e6 / nbytes)))


class Bench:
    """Layers of one shape and their rotated copies."""

    def __init__(self, k_in: int, n_out: int, kinds: tuple[str, ...] = ("plain", "act", "int8")) -> None:
        n = copies_for(quant_bytes(k_in, n_out, 4))
        self.k_in, self.n_out = k_in, n_out
        self.layers: dict[str, list[SimpleNamespace]] = {}
        spec: dict[str, dict[str, Any]] = {"plain": {}, "act": {"act_order": True}, "int8": {"bits": 8}}
        for kind in kinds:
            count = n if kind == "plain" else copies_for(quant_bytes(k_in, n_out, 8 if kind == "int8" else 4))
            self.layers[kind] = [make_layer(k_in, n_out, **spec[kind]) for _ in range(count)]

    def xs(self, m: int, count: int, dtype: torch.dtype = torch.float16) -> list[torch.Tensor]:
        return [torch.randn(m, self.k_in, device=DEV, dtype=dtype) for _ in range(count)]


def checked_time(name: str, fn: Callable[..., Any], layers: list[SimpleNamespace], xs: list[torch.Tensor], graph_us: Callable[..., Any], tol: float = 5e-3,
                 ref_dtype: torch.dtype = torch.float32) -> tuple[float, float]:  # fmt: skip
    """(graph µs, error) of fn(layer, x) rotated over the copies, after checking two copies against
    x @ W; raises AssertionError naming the variant when the error is over tol."""
    errs = []
    for i in range(min(2, len(layers))):
        y = fn(layers[i], xs[i])
        ref = xs[i].to(ref_dtype).float() @ layers[i].w.float()
        errs.append(((y.double() - ref.double()).norm() / ref.double().norm()).item())
    err = max(errs)
    if not err < tol:
        raise AssertionError(f"{name}: relative error {err:.3g} >= {tol}")
    return graph_us(
        [lambda i=i: fn(layers[i % len(layers)], xs[i % len(xs)]) for i in range(len(layers))]
    ), err


def bench_shapes(
    k: Any, bw: float, graph_us: Callable[..., Any], log: Callable[..., Any], ms: tuple[int, ...] = MS
) -> None:
    """The table of the issue: per shape and M, µs and % of copy bandwidth of every variant."""
    log(f"GPTQ g128, CUDA-graph device time (us), L2 cold; HBM% = bytes to move / time / copy bandwidth "
        f"({bw / 1e12:.2f} TB/s)")  # fmt: skip
    for label, k_in, n_out in SHAPES:
        b = Bench(k_in, n_out)
        for m in ms:
            row: dict[str, str] = {}
            io = m * (k_in + n_out) * 2
            q4, q8, f16 = quant_bytes(k_in, n_out, 4), quant_bytes(k_in, n_out, 8), torch.float16
            variants: list[tuple[str, Callable[..., Any], str, int, torch.dtype]] = [
                ("cuBLAS", lambda lay, x: torch.matmul(x, lay.w), "plain", k_in * n_out * 2, torch.float16),
                ("ours4", lambda lay, x: ours(k, lay, x), "plain", q4, f16),
                ("act4", lambda lay, x: ours(k, lay, x), "act", q4, f16),
                ("ours8", lambda lay, x: ours(k, lay, x), "int8", q8, f16),
                (
                    "tinygemm",
                    tinygemm,
                    "plain",
                    k_in * n_out // 2 + k_in // GROUP * n_out * 4,
                    torch.bfloat16,
                ),
            ]
            if m <= 64:  # the default dispatch (CUDA kernels where their plan takes M) vs Triton forced
                variants[2:2] = [("tri4", lambda lay, x: ours(k, lay, x, TRITON), "plain", q4, f16)]
                variants[4:4] = [("triact4", lambda lay, x: ours(k, lay, x, TRITON), "act", q4, f16)]
                variants[6:6] = [("tri8", lambda lay, x: ours(k, lay, x, TRITON), "int8", q8, f16)]
            if m <= 16:  # the same kernels, not chained: each call starts after the one before has ended
                variants.insert(2, ("nochain4", lambda lay, x: ours(k, lay, x, NO_CHAIN), "plain", q4, f16))
            if m <= 2 and not os.environ.get("GPTQ_NO_PDL"):  # consecutive GPTQ matmuls launched with PDL
                variants.insert(2, ("pdl4", lambda lay, x: ours(k, lay, x, PDL_CHAIN), "plain", quant_bytes(k_in, n_out, 4),
                                    torch.float16))  # fmt: skip
            if os.environ.get("GPTQ_REPEAT"):  # the same kernels again, last: how much the order moves a cell
                variants += [("ours4b", lambda lay, x: ours(k, lay, x), "plain", q4, f16),
                             ("cuBLASb", lambda lay, x: torch.matmul(x, lay.w), "plain", k_in * n_out * 2, f16)]  # fmt: skip
            if os.environ.get("GPTQ_PREV"):
                variants.append(("prev4", lambda lay, x: previous(k, lay, x), "plain", quant_bytes(k_in, n_out, 4),
                                 torch.float16))  # fmt: skip
            times = {}
            for name, fn, kind, wbytes, dtype in variants:
                layers = b.layers[kind]
                try:
                    us, _ = checked_time(name, fn, layers, b.xs(m, len(layers), dtype), graph_us,
                                         tol=2e-2 if dtype == torch.bfloat16 else 5e-3)  # fmt: skip
                    times[name] = us
                    row[name] = f"{us:7.1f} ({(wbytes + io) / (us * 1e-6) / bw:4.0%})"
                except Exception as err:  # noqa: BLE001 - one failing variant must not hide the row
                    row[name] = f"FAILED {type(err).__name__}: {str(err)[:80]}"
            cub = times.get("cuBLAS", float("nan"))
            ratios = " ".join(
                f"{n}/cuBLAS {cub / times[n]:.2f}x" for n in ("ours4", "nochain4", "pdl4", "ours8") if n in times
            ) + "".join(f" {a}/{b} {times[b] / times[a]:.2f}x" for a, b in (("ours4", "tri4"), ("act4", "triact4"),
                        ("ours8", "tri8")) if a in times and b in times)  # fmt: skip
            act = (f" act/plain {times['act4'] / times['ours4']:.2f}x" if "act4" in times and "ours4" in times
                   else "")  # fmt: skip
            tg = (
                f" ours4 vs tinygemm {times['tinygemm'] / times['ours4']:.2f}x"
                if "tinygemm" in times and "ours4" in times
                else ""
            )
            log(f"{label:<8}{k_in}x{n_out:<6} M={m:<5}" + " | ".join(f"{n} {v}" for n, v in row.items())
                + f" || {ratios}{act}{tg}")  # fmt: skip
        del b
        torch.cuda.empty_cache()


def bench_layer(
    k: Any, graph_us: Callable[..., Any], log: Callable[..., Any], ms: tuple[int, ...] = MS
) -> None:
    """The four projections of one Llama-3-8B decoder layer (stacked wqkv) back to back."""
    benches = {label: Bench(k_in, n_out, ("plain",)) for label, k_in, n_out in SHAPES}
    copies = min(len(b.layers["plain"]) for b in benches.values())
    for m in ms:
        xs = {label: b.xs(m, copies) for label, b in benches.items()}
        xb = {label: [x.bfloat16() for x in v] for label, v in xs.items()}

        def layer_fn(
            fn: Callable[..., Any], inputs: dict[str, list[torch.Tensor]], i: int
        ) -> Callable[..., Any]:
            return lambda: [fn(benches[lb].layers["plain"][i], inputs[lb][i]) for lb in benches]

        res = {}
        runs = [("ours4", lambda lay, x: ours(k, lay, x), xs), ("cuBLAS", lambda lay, x: torch.matmul(x, lay.w), xs),
                ("tinygemm", tinygemm, xb)]  # fmt: skip
        if m <= 16:
            runs.insert(1, ("nochain4", lambda lay, x: ours(k, lay, x, NO_CHAIN), xs))
        if m <= 2:
            runs.insert(1, ("pdl4", lambda lay, x: ours(k, lay, x, PDL_CHAIN), xs))
        for name, fn, inputs in runs:
            try:
                res[name] = graph_us([layer_fn(fn, inputs, i) for i in range(copies)])
            except Exception as err:  # noqa: BLE001
                log(f"layer M={m} {name}: FAILED {type(err).__name__}: {str(err)[:120]}")
        log(f"layer (wqkv+o+gate_up+down) M={m:<5} " + " | ".join(f"{n} {v:7.1f} us" for n, v in res.items())
            + (f" || cuBLAS/ours {res['cuBLAS'] / res['ours4']:.2f}x" if {"cuBLAS", "ours4"} <= res.keys() else ""))  # fmt: skip


FOLDED = ("qkv", "gate_up", "down")  # what `fold-act-order-permutation` folds in a Llama layer (o_proj stays)


def bench_layer_act(
    k: Any, graph_us: Callable[..., Any], log: Callable[..., Any], ms: tuple[int, ...] = (1, 16, 64, 256)
) -> dict[int, dict[str, float]]:
    """One Llama-3-8B layer (wqkv + o_proj + gate_up + down) 4-bit g128: plain; act-order with x permuted per
    matmul ("act"); act-order as `fold-act-order-permutation` leaves it ("act_fold": x of wqkv, gate_up and
    down already permuted by its producer, those GEMMs without perm; o_proj still permutes). The folded
    GEMMs are checked first: W_sorted without perm on x[:, perm] equals x @ W."""
    benches = {label: Bench(k_in, n_out, ("plain", "act")) for label, k_in, n_out in SHAPES}
    copies = min(min(len(v) for v in b.layers.values()) for b in benches.values())
    for label, b in benches.items():
        lay = b.layers["act"][0]
        x = b.xs(16, 1)[0]
        y = k.tiled(x[:, lay.r["perm"].long()].contiguous(), lay.r["qweight"], lay.t["scales"], lay.r["qzeros"],
                    None, bits=4, group_size=GROUP, zero_format="v1")  # fmt: skip
        ref = x.float() @ lay.w.float()
        err = ((y.double() - ref.double()).norm() / ref.double().norm()).item()
        if not err < 5e-3:
            raise AssertionError(f"act_fold {label}: relative error {err:.3g} >= 5e-3")

    def tiled(lay: SimpleNamespace, x: torch.Tensor, perm: bool) -> torch.Tensor:
        y: torch.Tensor = k.tiled(x, lay.r["qweight"], lay.t["scales"], lay.r["qzeros"],
                                  lay.r.get("perm") if perm else None, bits=4, group_size=GROUP, zero_format="v1")  # fmt: skip
        return y

    out: dict[int, dict[str, float]] = {}
    for m in ms:
        xs = {label: b.xs(m, copies) for label, b in benches.items()}
        runs = {"plain": ("plain", set(SHAPES_LABELS)), "act": ("act", set(SHAPES_LABELS)),
                "act_fold": ("act", set(SHAPES_LABELS) - set(FOLDED))}  # fmt: skip
        res: dict[str, float] = {}
        for name, (kind, permuted) in runs.items():
            fns = [lambda i=i, kind=kind, permuted=permuted: [
                tiled(benches[lb].layers[kind][i], xs[lb][i], lb in permuted) for lb in benches]
                for i in range(copies)]  # fmt: skip
            res[name] = graph_us(fns)
        out[m] = res
        log(f"layer act-order (wqkv+o+gate_up+down) M={m:<5} " + " | ".join(f"{n} {v:7.1f} us" for n, v in res.items())
            + f" || act/plain {res['act'] / res['plain']:.3f}x act_fold/plain {res['act_fold'] / res['plain']:.3f}x")  # fmt: skip
    return out


def gptq_layers_graph(device: Any, weights: dict[str, torch.Tensor]) -> Any:
    """x [m, 512] @ three GPTQ layers (4-bit act-order, 8-bit, 3-bit one group) on `device` (a DeviceRef);
    `weights` gets the random checkpoint tensors the first time."""
    from fusegraph import DType, Graph, TensorType, ops
    from fusegraph.ops.gptq_packing import pack

    k_in, n_out = 512, 256
    with Graph("gptq", input_types=[TensorType(DType.float16, ["m", k_in], device)]) as g:
        (x,) = g.inputs
        outs = []
        for name, bits, gs, act in (("a", 4, 128, True), ("b", 8, 128, False), ("c", 3, -1, False)):
            if f"{name}.qweight" not in weights:
                t = pack(torch.randn(n_out, k_in), bits=bits, group_size=gs, sym=False, desc_act=act)
                weights |= {f"{name}.{key}": v for key, v in t.items()}
            w = {}
            for key in ("qweight", "scales", "qzeros", "g_idx"):
                v = weights[f"{name}.{key}"]
                w[key] = g.add_weight(
                    f"{name}.{key}", TensorType(DType.from_torch(v.dtype), list(v.shape), device)
                )
            outs.append(ops.qmatmul_gptq(x, w["qweight"], w["scales"], w["qzeros"], w["g_idx"], bits=bits,
                                         group_size=gs, sym=False, desc_act=act))  # fmt: skip
        g.output(*outs)
    return g


def check_gptq_compile(
    check: Callable[..., Any], rel_err: Callable[..., Any], log: Callable[..., Any]
) -> None:
    """fusegraph.compile on CUDA (default pipeline: gptq-repack, folded at compile) == the CPU graph."""
    from fusegraph import DeviceRef, compile  # noqa: A004

    weights: dict[str, torch.Tensor] = {}
    ref_model = compile(
        gptq_layers_graph(DeviceRef.CPU(), weights), device="cpu", weights=weights, pipeline=None
    )
    x = torch.randn(3, 512, dtype=torch.float16)
    refs = ref_model(x)
    for graphs in (False, True):
        g = gptq_layers_graph(DeviceRef.GPU(), weights)
        model = compile(g, backend="eager", device="cuda", weights=weights, cuda_graphs=graphs)
        text = str(model.graph)
        assert text.count("fg.qmatmul.gptq_tiled") == 3 and "gptq_repack" not in model.module.code, (
            model.pipeline
        )
        for _ in range(3):  # replays too
            for i, (y, ref) in enumerate(zip(model(x.to(DEV)), refs)):
                check(f"compiled gptq layer {i} cuda_graphs={graphs}", rel_err(y.cpu(), ref), 2e-3)
    log(f"fusegraph.compile on CUDA (pipeline {model.pipeline}): 3 GPTQ layers (4-bit act-order, 8-bit, 3-bit) "
        "run as fg.qmatmul.gptq_tiled, the repack folded at compile time; == the CPU graph (eager, CUDA graphs)")  # fmt: skip
