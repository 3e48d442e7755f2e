"""MixedOp: the fused engine computes exactly what the original `sum(w * op(x))` computes,
saves at most half the bytes for backward, and drops into DARTS code unchanged."""

import copy

import pytest
import torch

from sdarts import MixedOp
from sdarts.diagnostics import saved_bytes
from sdarts.ops import backends
from sdarts.primitives import DARTS, NB201, PRIMITIVES

CASES = [(NB201, 1), (DARTS, 1), (DARTS, 2)]


def twin(m: MixedOp) -> MixedOp:
    plain = copy.deepcopy(m)
    plain.fused = False
    plain.recompute = False
    return plain


def run(m, x, w, g):
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    out = m(x, w)
    out.backward(g)
    return out.detach(), x.grad, w.grad, [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("primitives,stride", CASES, ids=lambda v: getattr(v, "name", str(v)))
@pytest.mark.parametrize("recompute", [False, True])
def test_fused_equals_plain_in_float64(primitives, stride, recompute):
    torch.manual_seed(stride)
    m = MixedOp(6, stride, primitives, recompute=recompute).double()
    plain = twin(m)
    x = torch.randn(3, 6, 8, 8, dtype=torch.float64)
    w = torch.rand(len(primitives), dtype=torch.float64)
    g = torch.randn(3, 6, 8 // stride, 8 // stride, dtype=torch.float64)
    got, want = run(m, x, w, g), run(plain, x, w, g)
    for a, b in zip(got[:3], want[:3]):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(got[3], want[3]):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)
    # Running statistics and batch counts move exactly as nn.BatchNorm2d moves them (once,
    # even when recomputing).
    for (name, a), (_, b) in zip(m.named_buffers(), plain.named_buffers()):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12) if a.dtype.is_floating_point else torch.equal(a, b), name
    m.eval(), plain.eval()
    with torch.no_grad():
        assert torch.allclose(m(x, w), plain(x, w), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", backends.available("cpu"))
@pytest.mark.parametrize("primitives", [NB201, DARTS], ids=lambda p: p.name)
def test_every_cpu_backend_in_float32(backend, primitives):
    """The fused float32 edge against the plain edge in float64 (same weights, same inputs):
    output, input and alpha gradients and every parameter's gradient, relative norm error
    < 1e-5 (float32 rounding measures ~3e-7 here)."""
    torch.manual_seed(0)
    m = MixedOp(8, 1, primitives, backend=backend)
    oracle = twin(m).double()
    x = torch.randn(4, 8, 8, 8)
    w = torch.rand(len(primitives))
    g = torch.randn(4, 8, 8, 8)
    got, want = run(m, x, w, g), run(oracle, x.double(), w.double(), g.double())

    def rel(a, b):
        assert a.dtype == torch.float32 and a.shape == b.shape
        return ((a.double() - b).norm() / b.norm()).item()

    for name, a, b in zip(("output", "grad x", "grad weights"), got[:3], want[:3]):
        assert rel(a, b) < 1e-5, name
    names = [n for n, _ in m.named_parameters()]
    assert names and len(got[3]) == len(want[3]) == len(names)
    for name, a, b in zip(names, got[3], want[3]):
        assert rel(a, b) < 1e-5, f"grad of {name}: relative error {rel(a, b):.2e}"


@pytest.mark.parametrize(
    "primitives,recompute,limit",
    [(NB201, False, 0.5), (NB201, True, 0.25), (DARTS, True, 0.1), (DARTS, False, 0.7)],
    ids=["nb201", "nb201-recompute", "darts-recompute", "darts"],
)
def test_saves_at_most_half_the_bytes_of_the_plain_mixed_op(primitives, recompute, limit):
    m = MixedOp(16, 1, primitives, recompute=recompute)
    x = torch.randn(8, 16, 16, 16, requires_grad=True)
    w = torch.rand(len(primitives), requires_grad=True)
    fused = saved_bytes(lambda: m(x, w))["bytes"]
    plain = saved_bytes(lambda: twin(m)(x, w))["bytes"]
    assert fused <= limit * plain, (fused / plain)


@pytest.mark.parametrize("primitives", [NB201, DARTS], ids=lambda p: p.name)
def test_recomputed_edge_keeps_only_its_input_and_relu(primitives):
    """recompute=True: backward recomputes the whole edge (candidates, batch statistics, the
    kernel's forward), so the edge keeps x and relu(x), not one pre-BN output per candidate."""
    m = MixedOp(16, 1, primitives, recompute=True)
    assert m.recompute_edge
    x = torch.randn(8, 16, 16, 16, requires_grad=True)
    w = torch.rand(len(primitives), requires_grad=True)
    kept = saved_bytes(lambda: m(x, w))
    assert kept["bytes"] <= 2 * x.numel() * x.element_size() + 1024, kept
    assert not MixedOp(16, 1, DARTS, recompute=("sep_conv_3x3", "sep_conv_5x5")).recompute_edge


def test_recomputed_outputs_are_not_kept_and_refuse_in_place_changes():
    """recompute=<names> on NB201 (no candidate internals): the 1x1's pre-BN output is not kept
    but recomputed in the edge's backward, exactly; a weight changed in place in between is
    an error, not a silently wrong gradient."""
    torch.manual_seed(3)
    x = torch.randn(8, 16, 16, 16, requires_grad=True)
    w = torch.rand(len(NB201), requires_grad=True)
    kept = {r: saved_bytes(lambda r=r: MixedOp(16, 1, NB201, recompute=r)(x, w))["bytes"] for r in ((), ("nor_conv_1x1",))}
    assert kept[()] - kept[("nor_conv_1x1",)] >= x.numel() * x.element_size()  # one activation fewer
    m = MixedOp(6, 1, NB201, recompute=("nor_conv_1x1",)).double()
    xs = torch.randn(3, 6, 8, 8, dtype=torch.float64)
    ws = torch.rand(len(NB201), dtype=torch.float64)
    g = torch.randn(3, 6, 8, 8, dtype=torch.float64)
    got, want = run(m, xs, ws, g), run(twin(m), xs, ws, g)
    for a, b in zip(got[:3] + tuple(got[3]), want[:3] + tuple(want[3])):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    out = m(xs.clone().requires_grad_(), ws)
    with torch.no_grad():
        m._ops[NB201.names.index("nor_conv_1x1")].conv.weight.mul_(2.0)
    with pytest.raises(RuntimeError, match="nor_conv_1x1 were modified in place between forward and backward"):
        out.backward(g)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels-last"])
def test_recomputed_outputs_under_bf16_autocast(channels_last):
    """The edge's backward recomputes under the forward's autocast state and layout: the same
    gradients as keeping the outputs."""
    torch.manual_seed(4)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    kept = MixedOp(8, 1, NB201).to(memory_format=fmt)
    redone = copy.deepcopy(kept)
    redone._recomputed = tuple(n in ("nor_conv_1x1", "nor_conv_3x3") for n in NB201.names)
    x = torch.randn(4, 8, 8, 8).contiguous(memory_format=fmt)
    w = torch.rand(len(NB201))
    g = torch.randn(4, 8, 8, 8)
    results = []
    for m in (kept, redone):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(run(m, x, w, g))
    for a, b in zip(results[0][:3] + tuple(results[0][3]), results[1][:3] + tuple(results[1][3])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_recompute_some_candidates_only():
    """recompute=<names>: exact, and it saves less than none recomputed, more than all."""
    torch.manual_seed(2)
    sep = ("sep_conv_3x3", "sep_conv_5x5")
    m = MixedOp(6, 1, DARTS, recompute=sep).double()
    x = torch.randn(3, 6, 8, 8, dtype=torch.float64)
    w = torch.rand(len(DARTS), dtype=torch.float64)
    g = torch.randn(3, 6, 8, 8, dtype=torch.float64)
    got, want = run(m, x, w, g), run(twin(m), x, w, g)
    for a, b in zip(got[:3], want[:3]):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    xs = torch.randn(4, 8, 16, 16, requires_grad=True)
    ws = torch.rand(len(DARTS), requires_grad=True)
    kept = {r: saved_bytes(lambda r=r: MixedOp(8, 1, DARTS, recompute=r)(xs, ws))["bytes"] for r in (False, sep, True)}
    assert kept[False] > kept[sep] > kept[True]
    with pytest.raises(ValueError, match="sep_conv_7x7"):
        MixedOp(4, 1, DARTS, recompute=("sep_conv_7x7",))


def test_drop_in_for_original_darts_code():
    # The original: MixedOp(C, stride) and forward(x, weights) with weights = softmax(alpha)[edge].
    alpha = torch.zeros(14, len(PRIMITIVES), requires_grad=True)
    op = MixedOp(4, 1, keep_weight_grad=True)
    weights = torch.softmax(alpha, dim=-1)
    out = op(torch.randn(2, 4, 6, 6), weights[3])
    assert out.shape == (2, 4, 6, 6)
    out.square().mean().backward()
    assert alpha.grad[3].abs().sum() > 0 and alpha.grad[0].abs().sum() == 0
    # The per-op gradient dL/dp of the edge is kept for diagnostics; `none` gets exactly 0.
    assert op.last_weight_grad.shape == (len(PRIMITIVES),)
    assert op.last_weight_grad[PRIMITIVES.index("none")] == 0
    # Off by default: no gradient hook on the hot path.
    plain = MixedOp(4, 1)
    weights = torch.softmax(alpha, dim=-1)
    plain(torch.randn(2, 4, 6, 6), weights[3]).sum().backward()
    assert plain.last_weight_grad is None and plain._grad_hook is None


def test_edge_kernels_is_an_option_checked_at_construction():
    with pytest.raises(ValueError, match="edge_kernels must be one of"):
        MixedOp(4, 1, NB201, edge_kernels="fast")
    assert MixedOp(4, 1, NB201, edge_kernels="torch").edge_kernels == "torch"
    import sdarts.ops.normalized_edge as normalized_edge

    assert not hasattr(normalized_edge, "use_triton_edge_kernels")  # no process-wide switch


def test_zero_candidate_costs_nothing_and_contributes_nothing():
    m = MixedOp(4, 1, NB201)
    x = torch.randn(2, 4, 5, 5)
    w = torch.rand(5)
    w_more_zero = w.clone()
    w_more_zero[0] = 10.0
    assert torch.equal(m(x, w), m(x, w_more_zero))


def test_bad_weights_are_rejected_clearly():
    m = MixedOp(4, 1, NB201)
    with pytest.raises(ValueError, match="weights must be 1-D with 5 entries"):
        m(torch.randn(1, 4, 4, 4), torch.rand(8))
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        MixedOp(4, 3)
    with pytest.raises(ValueError, match="unknown darts primitives"):
        MixedOp(4, 1, ["sep_conv_3x3", "conv_9x9"])
