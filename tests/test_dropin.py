"""sdarts.MixedOp swapped into foreign DARTS code (bench/dropin_darts.py): the swapped network
computes what the original computes, and the edges' shared inputs (one ReLU and one layout copy
per tensor a cell hands several edges) are never served stale."""

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from sdarts import MixedOp
from sdarts.diagnostics import kernel_ops
from sdarts.primitives import DARTS, NB201
from sdarts.spaces import build_supernet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import dropin  # noqa: E402  (bench/dropin.py)
import dropin_darts  # noqa: E402  (bench/dropin_darts.py, the stand-in user code)


# ----------------------------------------------------------------------------- the swapped network


OPTIONS = {"defaults": {}, "recompute-all": dict(recompute=True), "channels-last": dict(memory_format=torch.channels_last),
           "no-share": dict(share_inputs=False)}


@pytest.mark.parametrize("space", ["darts", "nb201"])
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_swapped_network_equals_the_original_in_float64(space, options):
    """Two training steps from the same weights: logits, every weight gradient, the alpha
    gradients and the BatchNorm running statistics agree to float64 rounding (measured
    ~1e-14; the running variance, a difference of squares summed otherwise, ~2e-13)."""
    figures = dropin.equivalence(space, options)
    assert figures["logits"] < 1e-12 and figures["weights"] < 1e-11 and figures["alphas"] < 1e-11, figures
    assert figures["stats"] < 1e-11, figures
    assert figures["grads_compared"] > 100


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_swapped_network_in_float32_is_close_to_the_original_in_float64(space):
    """float32 on the CPU takes the channels_last edges (memory_format="auto"): float32 rounding."""
    figures = dropin.equivalence(space, {}, dtype=torch.float32)
    assert max(figures[k] for k in ("logits", "weights", "alphas", "stats")) < 1e-4, figures


def test_the_swap_is_the_class_and_the_genotype_is_the_users():
    original, swapped = dropin_darts.load(False), dropin_darts.load(True)
    assert swapped.MixedOp is MixedOp and original.MixedOp is not MixedOp
    torch.manual_seed(0)
    a = original.Network(4, 10, 3)
    torch.manual_seed(0)
    b = swapped.Network(4, 10, 3)
    assert all(isinstance(op, MixedOp) for cell in b.cells for op in cell._ops)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # same creation order
    assert a.genotype() == b.genotype()


def test_swapped_cell_computes_one_relu_per_state():
    """A normal DARTS cell: the original computes 2 + 14 * 6 ReLUs; swapped, one per state that
    feeds edges (s0, s1, nodes 0-2) plus the inner ReLU of each of the 28 SepConvs and the two
    preprocessing ReLUs: 35.  Without sharing, one per edge: 2 + 14 + 28 = 44."""
    counts = {}
    for label, options in (("shared", {}), ("own", dict(share_inputs=False))):
        module = dropin.user_module(dropin.Variant(label, True, options))
        cell = module.Cell(4, 4, 8, 8, 4, reduction=False, reduction_prev=False).double()
        s = torch.randn(2, 8, 6, 6, dtype=torch.float64)
        w = torch.rand(14, len(DARTS), dtype=torch.float64)
        counts[label] = kernel_ops(lambda: cell(s, s, w))["relu"]
    assert counts == {"shared": 35, "own": 44}


def test_own_supernets_are_left_alone():
    """sdarts' own cells pass relu_x: no layout change (a float32 NCHW supernet stays NCHW)."""
    torch.manual_seed(0)
    model = build_supernet("darts", 10, layers=1, C=4, backend="reference")
    cell = model.cells[0]
    s0, s1 = model.stem(torch.randn(2, 3, 8, 8))
    assert cell(s0, s1, model.arch_weights()["alpha_normal"]).is_contiguous()


# ----------------------------------------------------------------------------- shared inputs: safety


def edges(primitives=NB201, n=2, **options):
    torch.manual_seed(1)
    first = MixedOp(4, 1, primitives, **options).double()
    return [first] + [copy.deepcopy(first) for _ in range(n - 1)]


def plain(op: MixedOp) -> MixedOp:
    twin = copy.deepcopy(op)
    twin.fused = False
    return twin


def relus(fn) -> int:
    return kernel_ops(fn)["relu"]


def test_edges_given_the_same_tensor_share_its_relu():
    a, b = edges()
    h = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True) * 1.0  # a non-leaf, as a cell's states
    w = torch.rand(len(NB201), dtype=torch.float64)
    assert relus(lambda: (a(h, w), b(h, w))) == 1
    assert relus(lambda: (a(h.clone(), w), b(h.clone(), w))) == 2  # different tensors: no sharing


def test_in_place_change_between_edges_is_not_served_a_stale_relu():
    a, b, c = edges(n=3)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    w = torch.rand(len(NB201), dtype=torch.float64)
    with torch.no_grad():
        a(x, w)
        x.mul_(-1.0)  # bumps x._version: a's ReLU is stale now
        torch.testing.assert_close(b(x, w), plain(b)(x, w), rtol=1e-12, atol=1e-12)
        # Without a change in between, the next edge is served the ReLU b made (it computes none).
        assert relus(lambda: c(x, w)) == 0


def test_a_second_forward_does_not_reuse_the_first():
    """The same edge called again with the same tensor is a new forward: it computes its own
    ReLU, and the backward of each forward works on its own graph."""
    a, b, c = edges(n=3)
    h = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True).clone()  # its own graph keeps nothing
    w = torch.rand(len(NB201), dtype=torch.float64)
    assert relus(lambda: a(h, w)) == 1
    assert relus(lambda: a(h, w)) == 1
    first = a(h, w) + b(h, w)
    first.sum().backward()
    # After a backward through the shared ReLU (its graph freed), an edge that has not taken it
    # yet gets a new one.
    second = c(h, w)
    second.sum().backward()  # would raise "backward through the graph a second time" if served


def test_no_sharing_across_grad_modes_or_for_leaves_that_require_grad():
    a, b = edges()
    w = torch.rand(len(NB201), dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True) * 1.0
    with torch.no_grad():
        a(h, w)
    out = b(h, w)  # a no-grad ReLU served here would cut the gradient to h
    assert out.requires_grad
    (g,) = torch.autograd.grad(out.square().sum(), h)  # (a normalized branch's plain sum has no gradient)
    h2 = h.detach().requires_grad_()
    (want,) = torch.autograd.grad(plain(b)(h2, w).square().sum(), h2)
    torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)
    leaf = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    assert relus(lambda: (a(leaf, w), b(leaf, w))) == 2
    y1, y2 = a(leaf, w), b(leaf, w)
    y1.sum().backward()
    y2.sum().backward()  # separate graphs, as in the original


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_activation_checkpointing_sees_no_value_of_the_other_forward(use_reentrant):
    """A user checkpointing a function of several edges: the recomputation computes its own
    ReLU (the original forward and the recomputation run under different saved-tensors hooks or
    grad modes) and the gradients equal those without checkpointing."""
    a, b, c = edges(DARTS, 3)
    w = torch.rand(len(DARTS), dtype=torch.float64)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)

    def run(wrap):
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        params = [*a.parameters(), *b.parameters()]
        for p in params:
            p.grad = None

        def node(h):
            return a(h, ws) + b(h, ws)

        h = xs * 2.0
        out = c(h, ws) + wrap(node, h)  # c's ReLU of h is made outside the checkpointed region
        out.square().sum().backward()  # (reentrant checkpointing takes no autograd.grad)
        return [xs.grad, ws.grad, *(p.grad for p in params)]

    want = run(lambda fn, h: fn(h))
    got = run(lambda fn, h: checkpoint(fn, h, use_reentrant=use_reentrant))
    for g1, g2 in zip(got, want):
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


def test_autocast_mode_is_part_of_the_key():
    a, b = edges()
    a.float(), b.float()
    x = torch.randn(2, 4, 5, 5) * 1.0
    w = torch.rand(len(NB201))
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a(x, w)
        assert relus(lambda: b(x, w)) == 1  # not the entry made under autocast


def test_torch_compile_traces_the_edges_without_the_table():
    a, b = edges()
    a.float(), b.float()
    w = torch.rand(len(NB201))

    def node(h):
        return a(h, w) + b(h, w)

    compiled = torch.compile(node, fullgraph=True, backend="aot_eager")
    h = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(compiled(h), node(h), rtol=1e-5, atol=1e-6)


def test_bad_options_fail_at_construction():
    with pytest.raises(ValueError, match="memory_format must be 'auto', None, torch.channels_last"):
        MixedOp(4, 1, memory_format="nhwc")
    with pytest.raises(TypeError, match="share_inputs must be a bool"):
        MixedOp(4, 1, share_inputs="yes")


def test_recompute_auto_follows_the_device():
    op = MixedOp(4, 1, DARTS)
    assert op.recompute == "auto"
    assert [n for n, r in zip(DARTS.names, op._recomputed) if r] == ["sep_conv_3x3", "sep_conv_5x5"]
    assert [n for n, r in zip(NB201.names, MixedOp(4, 1, NB201)._recomputed) if r] == ["nor_conv_1x1"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replay_of_edges_sharing_an_input():
    """Under capture nothing is shared (a served ReLU's kernel might not be in the graph);
    replays with new input data give what eager gives."""
    torch.manual_seed(0)
    a = MixedOp(8, 1, NB201).cuda()
    b = copy.deepcopy(a)
    w = torch.rand(len(NB201), device="cuda")
    static = torch.randn(4, 8, 8, 8, device="cuda")

    def node(x):
        h = x * 1.0
        return a(h, w) + b(h, w)

    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            node(static)
            node(static)  # entries from before the capture must not be served inside it
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = node(static)
        for _ in range(2):
            new = torch.randn_like(static)
            static.copy_(new)
            graph.replay()
            torch.testing.assert_close(out, node(new), rtol=1e-5, atol=1e-5)


def test_dropin_bench_runs_tiny():
    result = dropin.main(["--space", "nb201", "--device", "cpu", "--batch-size", "2", "--image-size", "8", "--C", "4",
                          "--layers", "3", "--steps", "1", "--warmup", "0", "--isolate", "never",
                          "--variants", "original", "dropin", "dropin-issue12"])
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"original", "dropin", "dropin-issue12"}
    assert rows["dropin"]["saved_mb"] < rows["dropin-issue12"]["saved_mb"] < rows["original"]["saved_mb"]
    assert abs(rows["dropin"]["loss"] - rows["original"]["loss"]) < 1e-4


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
