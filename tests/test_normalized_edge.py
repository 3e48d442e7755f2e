"""The one-node BatchNorm-folded edge (``sdarts.ops.normalized_edge``) and its use in MixedOp
and the cells, against float64 oracles written with plain autograd (F.batch_norm, F.avg_pool2d)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from sdarts.diagnostics import kernel_ops
from sdarts.mixed_op import MixedOp
from sdarts.ops import backends
from sdarts.ops.normalized_edge import mixed_normalized_edge
from sdarts.primitives import DARTS, NB201
from sdarts.spaces import build_supernet

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 3e-2}
CPU_BACKENDS = backends.available("cpu")
PAIRS = [("cpu", b) for b in CPU_BACKENDS] + ([("cuda", b) for b in backends.available("cuda")] if torch.cuda.is_available() else [])


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def oracle(branches, coef, x, has_skip, has_pool, eps, grad):
    """float64 autograd: sum_k coef_k BN(b_k) + coef_B x + coef_B+1 avgpool3(x).  Contiguous:
    PyTorch's CUDA avg_pool2d backward disagrees with its CPU one in channels_last."""
    bs = [b.detach().double().contiguous().requires_grad_() for b in branches]
    c = coef.detach().double().requires_grad_()
    xd = x.detach().double().contiguous().requires_grad_()
    out = sum(c[k] * F.batch_norm(b, None, None, training=True, eps=eps) for k, b in enumerate(bs))
    if has_skip:
        out = out + c[len(bs)] * xd
    if has_pool:
        out = out + c[len(bs) + 1] * F.avg_pool2d(xd, 3, 1, 1, count_include_pad=False)
    out.backward(grad.double().contiguous())
    return out, [b.grad for b in bs], c.grad, xd.grad


def make(shape, dtype, device, channels_last, scale=1.0, offset=0.0):
    t = (torch.randn(shape, device=device) * scale + offset).to(dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


KERNEL_DEVICES = [
    d for d in ("cpu", "cuda")
    if backends.triton_edge_module() is not None and backends.is_available("triton", torch.device(d))
    and (d == "cpu" or torch.cuda.is_available())
]


@pytest.fixture(params=["torch", "triton"], ids=["torch-ops", "triton-kernels"])
def edge_kernels(request, monkeypatch):
    """The ``edge_kernels`` option to test with: the edge's statistics and backward tail in
    PyTorch ops, then in the Triton kernels; the Triton case records which kernel entry
    points were called."""
    calls = []
    if request.param == "triton":
        module = backends.triton_edge_module()
        if module is None:
            pytest.skip("Triton is not usable here")
        for name in ("batch_stats", "edge_backward_tail"):
            original = getattr(module, name)
            monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    yield request.param, calls


@pytest.mark.parametrize("device,backend", PAIRS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("B,has_skip,has_pool", [(2, True, True), (1, False, False), (3, True, False), (9, False, True)])
def test_matches_float64_oracle(device, backend, dtype, channels_last, B, has_skip, has_pool, edge_kernels):
    kernels, kernel_calls = edge_kernels
    use_kernels = kernels == "triton"
    if use_kernels and device not in KERNEL_DEVICES:
        pytest.skip(f"the Triton edge kernels do not run on {device} here")
    torch.manual_seed(B + 10 * has_skip + 100 * has_pool)
    shape = (3, 4, 6, 5)
    # Branch statistics far from (0, 1), so a wrong mean or variance cannot hide.
    branches = [make(shape, dtype, device, channels_last, 1.5 + k, k - 1.0).requires_grad_() for k in range(B)]
    x = make(shape, dtype, device, channels_last).requires_grad_()
    coef = torch.randn(B + 2, device=device).requires_grad_()
    grad = make(shape, dtype, device, channels_last)
    out, mean, var = mixed_normalized_edge(branches, coef, eps=1e-3, x=x, has_skip=has_skip, has_pool=has_pool, backend=backend,
                                           edge_kernels=kernels)
    out.backward(grad)
    ref_out, ref_gb, ref_gc, ref_gx = oracle(branches, coef, x, has_skip, has_pool, 1e-3, grad)
    tol = TOL[dtype]
    assert out.dtype == dtype and out.shape == shape
    assert rel_err(out, ref_out) <= tol
    for b, g in zip(branches, ref_gb):
        assert b.grad.dtype == dtype and rel_err(b.grad, g) <= tol
    if has_skip or has_pool:
        assert rel_err(x.grad, ref_gx) <= tol
    else:
        assert x.grad is None
    # Absent skip/pool entries get an exactly zero gradient.
    assert rel_err(coef.grad, ref_gc) <= (1e-5 if dtype == torch.float32 else 5e-3)
    if not has_skip:
        assert coef.grad[B].item() == 0.0, f"absent skip entry got gradient {coef.grad[B].item()}"
    if not has_pool:
        assert coef.grad[B + 1].item() == 0.0, f"absent pool entry got gradient {coef.grad[B + 1].item()}"
    stacked = torch.stack([b.detach().double() for b in branches])
    assert rel_err(mean, stacked.mean(dim=(1, 3, 4))) <= tol
    assert rel_err(var, stacked.var(dim=(1, 3, 4), unbiased=False)) <= tol
    assert not mean.requires_grad and not var.requires_grad
    # The kernels take up to 8 candidates; 9 go through the PyTorch ops.
    assert kernel_calls == (["batch_stats", "edge_backward_tail"] if use_kernels and B <= 8 else [])


@pytest.mark.parametrize("device", KERNEL_DEVICES)
@pytest.mark.parametrize("shape", [(5, 64, 12, 12), (2, 70, 9, 9), (7, 3, 1, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_batch_stats_against_float64(device, shape, channels_last, dtype):
    """Several tiles per image, several channel blocks, partial merges; a mean 20x the spread
    (the case a sum-of-squares formula gets wrong)."""
    torch.manual_seed(shape[1])
    branches = [make(shape, dtype, device, channels_last, 0.5, 10.0 * (k + 1)) for k in range(3)]
    mean, invstd, shift, var = backends.triton_edge_module().batch_stats(branches, 1e-5)
    ref = torch.stack([b.double() for b in branches])
    ref_mean = ref.mean(dim=(1, 3, 4))
    ref_var = ref.var(dim=(1, 3, 4), unbiased=False)
    assert rel_err(mean, ref_mean) <= 1e-6
    assert rel_err(var, ref_var) <= 1e-4
    assert rel_err(invstd, (ref_var + 1e-5).rsqrt()) <= 1e-4
    assert rel_err(shift, -ref_mean * (ref_var + 1e-5).rsqrt()) <= 1e-4


def test_gradcheck_float64():
    torch.manual_seed(0)
    shape = (2, 3, 4, 4)
    branches = [torch.randn(shape, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    coef = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def f(c, x, *bs):
        return mixed_normalized_edge(list(bs), c, x=x, has_skip=True, has_pool=True, backend="reference")[0]

    assert torch.autograd.gradcheck(f, (coef, x, *branches))


def test_errors_name_the_argument():
    b = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="coef must have shape"):
        mixed_normalized_edge([b], torch.ones(2))
    with pytest.raises(ValueError, match="need the edge input x"):
        mixed_normalized_edge([b], torch.ones(3), has_skip=True)
    with pytest.raises(ValueError, match="at least one branch"):
        mixed_normalized_edge([], torch.ones(2))


# ---------------------------------------------------------------------------- MixedOp


def _step(op, x, w, seed=1):
    x = x.clone().requires_grad_()
    w = w.clone().requires_grad_()
    out = op(x, w)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype))
    return out, x.grad, w.grad, [p.grad for p in op.parameters()]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("primitives,stride", [(NB201, 1), (DARTS, 1), (DARTS, 2)])
@pytest.mark.parametrize("recompute", [False, True, "named"], ids=["keep", "recompute-edge", "recompute-named"])
def test_mixed_op_one_node_path_matches_composed_path(backend, primitives, stride, recompute, edge_kernels):
    """The one-node edge gives what the composed ops (channel_moments + mixed_edge) give,
    including the candidates' BatchNorm running statistics: keeping every branch, recomputing
    the whole edge, or recomputing named candidates' outputs in the edge's backward."""
    if recompute == "named":
        recompute = ("nor_conv_1x1",) if primitives is NB201 else ("sep_conv_3x3", "dil_conv_5x5")
    kernels, kernel_calls = edge_kernels
    use_kernels = kernels == "triton"
    if use_kernels and (backend == "reference" or "cpu" not in KERNEL_DEVICES):
        pytest.skip("the Triton edge kernels take float32 (the reference case here is float64)")
    torch.manual_seed(3)
    dtype = torch.float64 if backend == "reference" else torch.float32  # the kernels take no float64
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)
    # memory_format=None: both paths in x's layout, so only their arithmetic differs.
    fast = MixedOp(4, stride, primitives, backend=backend, recompute=recompute, edge_kernels=kernels, memory_format=None).to(dtype)
    composed = copy.deepcopy(fast)
    composed.one_node = False
    assert fast.one_node
    x = torch.randn(3, 4, 8, 8, dtype=dtype) * 2 + 0.5
    w = torch.rand(len(primitives), dtype=dtype)
    for _ in range(2):  # twice: running statistics after more than one update
        got, want = _step(fast, x, w), _step(composed, x, w)
    assert got[0].grad_fn.name() == "_NormalizedMixedEdgeBackward"
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b, **tol)
    for a, b in zip(got[3], want[3]):
        torch.testing.assert_close(a, b, **tol)
    for (name, a), (_, b) in zip(fast.named_buffers(), composed.named_buffers()):
        torch.testing.assert_close(a, b, **tol, msg=name)
    assert bool(kernel_calls) == use_kernels
    if primitives is DARTS:
        assert any(name.endswith("running_mean") for name, _ in fast.named_buffers())


def test_mixed_op_eval_mode_uses_running_statistics():
    torch.manual_seed(4)
    op = MixedOp(4, 1, DARTS, backend="reference").double()
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    w = torch.rand(len(DARTS), dtype=torch.float64)
    op(x * 3 + 1, w)  # moves the running statistics away from (0, 1)
    op.eval()
    plain = copy.deepcopy(op)
    plain.fused = False
    torch.testing.assert_close(op(x, w), plain(x, w), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("primitives", [NB201, DARTS])
def test_shared_relu_is_used_and_exact(primitives):
    torch.manual_seed(5)
    op = MixedOp(4, 1, primitives, backend="reference").double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    w = torch.rand(len(primitives), dtype=torch.float64)
    relu_x = F.relu(x)
    assert op.wants_relu
    own = kernel_ops(lambda: op(x, w))["relu"]
    given = kernel_ops(lambda: op(x, w, relu_x))["relu"]
    assert own - given == 1  # the edge's ReLU of x is the caller's (SepConv's inner ReLUs remain)
    torch.testing.assert_close(op(x, w, relu_x), op(x, w), rtol=0, atol=0)


# ---------------------------------------------------------------------------- cells


@pytest.mark.parametrize("space,kwargs,relus", [("nb201", dict(N=1, C=4), 3), ("darts", dict(layers=1, C=4), 2 + 5 + 28)])
def test_cells_compute_one_relu_per_feeding_node(space, kwargs, relus):
    """NB201: one per node 0-2; DARTS: the two preprocessing ReLUs, then one per state that
    feeds edges (s0, s1, nodes 0-2) instead of one per edge, and the inner ReLU of each of
    the 14 edges' two SepConvs."""
    torch.manual_seed(6)
    model = build_supernet(space, 10, backend="reference", **kwargs)
    cell = next(m for m in model.modules() if type(m).__name__ == "SearchCell")
    with torch.no_grad():
        h = model.stem(torch.randn(2, 3, 16, 16))
        p = model.arch_weights()
    if space == "nb201":
        ops = kernel_ops(lambda: cell(h, p["alpha"]))
    else:
        ops = kernel_ops(lambda: cell(*h, p["alpha_reduce"] if cell.reduction else p["alpha_normal"]))
    assert ops["relu"] == relus


@pytest.mark.parametrize("space,kwargs", [("nb201", dict(N=1, C=4)), ("darts", dict(layers=2, C=4))])
def test_fused_supernet_matches_plain_supernet(space, kwargs):
    """The whole supernet step (shared ReLUs, one-node edges) against the plain sum(w * op(x))."""
    torch.manual_seed(7)
    fused = build_supernet(space, 10, backend="reference", **kwargs).double()
    plain = build_supernet(space, 10, fused=False, **kwargs).double()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 10, (4,))
    for model in (fused, plain):
        F.cross_entropy(model(x), y).backward()
    for (name, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-10, msg=name)
    for (name, a), (_, b) in zip(fused.named_buffers(), plain.named_buffers()):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-10, atol=1e-12, msg=name)


def test_kernel_ops_counts_work_not_views():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    counts = kernel_ops(lambda: (a + b).view(-1).relu().detach())
    assert dict(counts) == {"add": 1, "relu": 1}
