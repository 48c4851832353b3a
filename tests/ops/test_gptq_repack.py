"""`fg.gptq.repack` / `fg.qmatmul.gptq_tiled` and the pass `gptq-repack` (CPU, torch implementations).

The repack round-trips to the checkpoint's integers; its placement follows the documented
formula (checked here value by value, not through the inverse); the repacked graph computes
what the checkpoint graph computes; the repack is folded at compile time.
"""

from __future__ import annotations

import pytest
import torch

import fusegraph
from fusegraph import DeviceRef, DType, Graph, TensorType, TensorValue, ops
from fusegraph.ops.gptq_layout import repack, tile_rows, unrepack
from fusegraph.ops.gptq_packing import dequantize, pack, unpack
from fusegraph.passes import PassManager
from fusegraph.passes.manager import PassFailedError

CPU = DeviceRef.CPU()
K, N = 256, 128


@pytest.mark.parametrize(
    ("bits", "group_size", "desc_act", "sym", "zero_format"),
    [
        (4, 128, False, False, "v1"),
        (4, 128, True, False, "v2"),
        (8, 256, True, False, "v1"),
        (3, -1, False, True, "v1"),
        (2, 128, True, True, "v2"),
    ],  # fmt: skip
)
def test_repack__round_trips_to_the_checkpoint_integers(bits, group_size, desc_act, sym, zero_format):
    t = pack(
        torch.randn(N, K),
        bits=bits,
        group_size=group_size,
        sym=sym,
        desc_act=desc_act,
        zero_format=zero_format,
    )
    qzeros = None if sym else t["qzeros"]
    r = repack(t["qweight"], qzeros, t["g_idx"] if desc_act else None, bits=bits, group_size=group_size, sym=sym,
               desc_act=desc_act, zero_format=zero_format)  # fmt: skip
    cb = 8 if bits == 8 else 4
    assert r["qweight"].shape == (N // 64, K * cb // 32, 64)
    assert ("perm" in r) == desc_act
    q, z = unrepack(r["qweight"], r["qzeros"], r.get("perm"), bits=bits, zero_format=zero_format)
    q_ref, z_ref = unpack(t["qweight"], qzeros, bits=bits, zero_format=zero_format, num_groups=z.shape[0])
    assert torch.equal(q, q_ref)
    assert torch.equal(z, z_ref)  # sym: z = 2**(bits-1), written out


def test_tile_rows__places_each_value_by_the_layout_formula():
    # 4 bits: P = 8 values a word, R = 16 word rows a block; row 128b + 2(jR + r) + e -> slot e*4 + j
    q = torch.randint(0, 16, (K, N))
    words = tile_rows(q, 4).to(torch.int64) & 0xFFFFFFFF
    for b, j, r, e, n in ((0, 0, 0, 0, 0), (1, 3, 15, 1, 127), (0, 2, 7, 1, 64), (1, 1, 4, 0, 5)):
        k = 128 * b + 2 * (j * 16 + r) + e
        word = int(words[n // 64, b * 16 + r, n % 64].item())
        assert (word >> (4 * (e * 4 + j))) & 15 == q[k, n].item()


def test_repack__refuses_what_the_layout_cannot_hold():
    t = pack(torch.randn(N, K), bits=4, group_size=128, sym=False, desc_act=True)
    with pytest.raises(ValueError, match=r"fg.gptq.repack: desc_act=False but g_idx is not k // group_size"):
        repack(t["qweight"], t["qzeros"], t["g_idx"], bits=4, group_size=128, sym=False, desc_act=False)
    bad = t["g_idx"].clone()
    bad[bad == 0] = 1  # group 1 gets 256 rows, group 0 none
    with pytest.raises(ValueError, match=r"g_idx does not sort into groups of group_size \(128\) rows"):
        repack(t["qweight"], t["qzeros"], bad, bits=4, group_size=128, sym=False, desc_act=True)
    with pytest.raises(
        ValueError, match=r"fg.gptq.repack: group_size \(64\) must be -1 or a multiple of 128"
    ):
        repack(t["qweight"], t["qzeros"], None, bits=4, group_size=64, sym=False, desc_act=False)


def _weights(
    g: Graph, name: str, bits: int, groups: int, k: int = K, n: int = N
) -> tuple[TensorValue, TensorValue, TensorValue, TensorValue]:
    i32, f16 = DType.int32, DType.float16
    return (
        g.add_weight(f"{name}.qweight", TensorType(i32, [k * bits // 32, n], CPU)),
        g.add_weight(f"{name}.scales", TensorType(f16, [groups, n], CPU)),
        g.add_weight(f"{name}.qzeros", TensorType(i32, [groups, n * bits // 32], CPU)),
        g.add_weight(f"{name}.g_idx", TensorType(i32, [k], CPU)),
    )


def test_repack_op__shape_rule_names_the_op_and_the_dims():
    with Graph("bad", input_types=[TensorType(DType.float16, ["m", 192], CPU)]) as g:
        qw, _, qz, _ = _weights(g, "l", 4, 1, k=192)
        with pytest.raises(ValueError, match=r"fg.gptq.repack: K \(192\) must be a multiple of 128"):
            ops.gptq_repack(qw, qz, bits=4, group_size=-1, sym=False, desc_act=False)
    with Graph("bad2", input_types=[TensorType(DType.float16, ["m", K], CPU)]) as g:
        qw, _, qz, _ = _weights(g, "l", 4, 1)
        with pytest.raises(ValueError, match="fg.gptq.repack: desc_act=True requires g_idx"):
            ops.gptq_repack(qw, qz, bits=4, group_size=-1, sym=False, desc_act=True)
        with pytest.raises(ValueError, match=r"fg.gptq.repack: qzeros dim 0 \(1\) != G \(2\)"):
            ops.gptq_repack(qw, qz, bits=4, group_size=128, sym=False, desc_act=False)


def _checkpoint_graph() -> Graph:
    """x @ W for an act-order 4-bit layer, an 8-bit layer, a sym 2-bit layer and a clipped one."""
    with Graph("gptq", input_types=[TensorType(DType.float16, ["m", K], CPU)]) as g:
        (x,) = g.inputs
        a = _weights(g, "act4", 4, 2)
        b = _weights(g, "int8", 8, 1)
        c = _weights(g, "sym2", 2, 2)
        outs = [
            ops.qmatmul_gptq(x, *a[:3], a[3], bits=4, group_size=128, sym=False, desc_act=True),
            ops.qmatmul_gptq(
                x, *b[:3], b[3], bits=8, group_size=-1, sym=False, desc_act=False, zero_format="v2"
            ),
            ops.qmatmul_gptq(x, c[0], c[1], bits=2, group_size=128, sym=True, desc_act=False),
            ops.qmatmul_gptq(x, *a[:3], a[3], bits=4, group_size=128, sym=False, desc_act=True, clip=0.01),
        ]
        g.output(*outs)
    return g


def _checkpoint_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    out: dict[str, torch.Tensor] = {}
    for name, bits, gs, desc, sym, zf in (("act4", 4, 128, True, False, "v1"), ("int8", 8, -1, False, False, "v2"),
                                          ("sym2", 2, 128, False, True, "v1")):  # fmt: skip
        t = pack(torch.randn(N, K), bits=bits, group_size=gs, sym=sym, desc_act=desc, zero_format=zf)
        out |= {f"{name}.{key}": v for key, v in t.items()}
    return out


def test_gptq_repack_pass__graph_computes_what_the_checkpoint_graph_computes():
    weights = _checkpoint_weights()
    ref_model = fusegraph.compile(
        _checkpoint_graph(), backend="eager", device="cpu", weights=weights, pipeline=None
    )
    g = _checkpoint_graph()
    PassManager("gptq-repack{target=cuda}").run(g)
    text = str(g)
    assert text.count("fg.gptq.repack") == 3 and text.count("fg.qmatmul.gptq_tiled") == 3
    assert "clip" in text  # the clipped op stays in the checkpoint layout
    model = fusegraph.compile(g, backend="eager", device="cpu", weights=weights, pipeline=None)
    assert "gptq_repack" not in model.module.code  # folded at compile time: no repack per call
    x = torch.randn(5, K).half()
    ys, refs = model(x), ref_model(x)
    for name, y, ref in zip(("act4", "int8", "sym2", "clip"), ys, refs):
        bits = {"act4": 4, "int8": 8, "sym2": 2, "clip": 4}[name]
        key = "act4" if name == "clip" else name
        w = dequantize(weights[f"{key}.qweight"], weights[f"{key}.scales"],
                       None if name == "sym2" else weights[f"{key}.qzeros"], weights[f"{key}.g_idx"], bits=bits,
                       group_size=-1 if name == "int8" else 128, sym=name == "sym2",
                       zero_format="v2" if name == "int8" else "v1", clip=0.01 if name == "clip" else None,
                       dtype=torch.float64)  # fmt: skip
        exact = x.double() @ w
        assert ((y.double() - exact).norm() / exact.norm()).item() < 2e-3, name
        assert torch.allclose(y.float(), ref.float(), rtol=2e-3, atol=2e-3), name


def test_gptq_repack_pass__refuses_an_unknown_target():
    with pytest.raises(PassFailedError, match="gptq-repack: target must be one of cuda, got 'rocm'"):
        PassManager("gptq-repack{target=rocm}").run(_checkpoint_graph())


def test_custom_ops__pass_opcheck():
    t = pack(torch.randn(N, K), bits=4, group_size=128, sym=False, desc_act=True)
    torch.library.opcheck(
        torch.ops.fusegraph.gptq_repack.default,
        (t["qweight"], t["qzeros"], t["g_idx"], 4, 128, False, True, "v1"),
    )
    r = repack(t["qweight"], t["qzeros"], t["g_idx"], bits=4, group_size=128, sym=False, desc_act=True)
    args = (torch.randn(3, K), r["qweight"], t["scales"], r["qzeros"], r["perm"], 4, 128, "v1")
    torch.library.opcheck(torch.ops.fusegraph.qmatmul_gptq_tiled.default, args)
