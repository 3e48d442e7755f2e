"""The public mixed-sum API on every available backend, against float64 PyTorch oracles.

The oracles here are written independently of ``sdarts.ops.reference`` (plain autograd over
``sum(w * b)`` and ``F.avg_pool2d``), so the reference backend is checked too.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import sdarts
from sdarts.ops import backends

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float64: 1e-12}


def _devices_and_backends():
    pairs = [("cpu", b) for b in backends.available("cpu")]
    if torch.cuda.is_available():
        pairs += [("cuda", b) for b in backends.available("cuda")]
    return pairs


BACKENDS = _devices_and_backends()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def make(shape, dtype, device, layout="contiguous"):
    t = torch.randn(shape, dtype=torch.float32, device=device).to(dtype)
    if layout == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        # A non-dense view: every other column of a wider tensor.
        wide = torch.randn(*shape[:-1], shape[-1] * 2, dtype=torch.float32, device=device).to(dtype)
        t = wide[..., ::2]
    return t


def oracle_sum(branches, weights, grad):
    bs = [b.detach().double().requires_grad_() for b in branches]
    w = weights.detach().double().requires_grad_()
    out = sum(wk * b for wk, b in zip(w, bs))
    out.backward(grad.double())
    return out, [b.grad for b in bs], w.grad


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("K", [1, 5, 8])
def test_mixed_sum_matches_float64_oracle(device, backend, dtype, layout, K):
    torch.manual_seed(K)
    shape = (2, 3, 5, 7)
    branches = [make(shape, dtype, device, layout).requires_grad_() for _ in range(K)]
    weights = torch.rand(K, device=device, requires_grad=True)
    out = sdarts.mixed_sum(branches, weights, backend=backend)
    grad = torch.randn(shape, device=device).to(dtype)
    out.backward(grad)
    ref_out, ref_gb, ref_gw = oracle_sum(branches, weights, grad)
    tol = TOL[dtype]
    assert out.dtype == dtype and out.shape == shape
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(out, ref_out) <= tol
    for b, gb in zip(branches, ref_gb):
        assert b.grad.dtype == dtype
        assert rel_err(b.grad, gb) <= tol
    # dL/dp accumulates in float32 whatever the input dtype.
    assert rel_err(weights.grad, ref_gw) <= (1e-5 if dtype == torch.float32 else 2e-3)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("B,skip,pool,affine", [(0, True, True, False), (2, True, True, True), (3, False, True, True), (8, True, False, False)])
def test_mixed_edge_matches_float64_oracle(device, backend, dtype, layout, B, skip, pool, affine):
    torch.manual_seed(B)
    shape = (2, 4, 6, 5)
    C = shape[1]
    branches = [make(shape, dtype, device, layout).requires_grad_() for _ in range(B)]
    x = make(shape, dtype, device, layout).requires_grad_()
    coef = torch.rand(B + 2, device=device)
    coef[B] = coef[B] if skip else 0.0
    coef[B + 1] = coef[B + 1] if pool else 0.0
    coef.requires_grad_()
    scale = (torch.rand(B, C, device=device) + 0.5).requires_grad_() if affine else None
    shift = torch.randn(B, C, device=device).requires_grad_() if affine else None
    out = sdarts.mixed_edge(branches, coef, scale=scale, shift=shift, x=x, has_skip=skip, has_pool=pool, backend=backend)
    grad = torch.randn(shape, device=device).to(dtype)
    out.backward(grad)

    # The oracle runs in contiguous layout: PyTorch's CUDA avg_pool2d backward with
    # channels_last and count_include_pad=False disagreed with its own CPU result on the
    # H200 (torch 2.11), while our kernels and reference agreed with the CPU.
    d = lambda t: None if t is None else t.detach().double().contiguous().requires_grad_()  # noqa: E731
    bs, xd, cd, sd, td = [d(b) for b in branches], d(x), d(coef), d(scale), d(shift)
    ref = torch.zeros(shape, dtype=torch.float64, device=device)
    for k, b in enumerate(bs):
        y = b if sd is None else b * sd[k].view(1, -1, 1, 1) + td[k].view(1, -1, 1, 1)
        ref = ref + cd[k] * y
    if skip:
        ref = ref + cd[B] * xd
    if pool:
        ref = ref + cd[B + 1] * F.avg_pool2d(xd, 3, 1, 1, count_include_pad=False)
    ref.backward(grad.double())
    tol = TOL[dtype]
    assert rel_err(out, ref) <= tol
    for b, bd in zip(branches, bs):
        assert rel_err(b.grad, bd.grad) <= tol
    assert rel_err(x.grad, xd.grad) <= tol
    used = [k for k in range(B)] + ([B] if skip else []) + ([B + 1] if pool else [])
    wtol = 1e-5 if dtype == torch.float32 else 2e-3
    assert rel_err(coef.grad[used], cd.grad[used]) <= wtol
    if affine:
        assert rel_err(scale.grad, sd.grad) <= wtol
        assert rel_err(shift.grad, td.grad) <= wtol


def test_reference_gradcheck_float64():
    torch.manual_seed(0)
    shape = (2, 3, 4, 5)
    bs = [torch.randn(shape, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, *b: sdarts.mixed_sum(list(b), w, backend="reference"), (w, *bs))
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    coef = torch.rand(5, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(3, 3, dtype=torch.float64, requires_grad=True)
    shift = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)

    def edge(coef, scale, shift, x, *b):
        return sdarts.mixed_edge(list(b), coef, scale=scale, shift=shift, x=x, has_skip=True, has_pool=True, backend="reference")

    assert torch.autograd.gradcheck(edge, (coef, scale, shift, x, *bs))


def test_more_branches_than_one_kernel_call_takes():
    torch.manual_seed(1)
    K = 11  # more than MAX_BRANCHES: chunked, same result
    bs = [torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True) for _ in range(K)]
    w = torch.rand(K, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, *b: sdarts.mixed_sum(list(b), w), (w, *bs))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_backward_is_deterministic(device, backend):
    torch.manual_seed(2)
    bs = [torch.randn(4, 8, 16, 16, device=device, requires_grad=True) for _ in range(5)]
    grads = []
    for _ in range(2):
        w = torch.rand(5, device=device, generator=torch.Generator(device).manual_seed(0)).requires_grad_()
        sdarts.mixed_sum(bs, w, backend=backend).backward(torch.ones(4, 8, 16, 16, device=device) * 0.37)
        grads.append(w.grad.clone())
    assert torch.equal(grads[0], grads[1])


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 6),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.integers(1, 6),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_all_cpu_backends(n, c, h, w, k, channels_last, seed):
    torch.manual_seed(seed)
    shape = (n, c, h, w)
    layout = "channels_last" if channels_last else "contiguous"
    grad = torch.randn(shape)
    x = make(shape, torch.float32, "cpu", layout)
    branches = [make(shape, torch.float32, "cpu", layout) for _ in range(k)]
    weights = torch.rand(k + 2)
    ref_out = None
    for backend in backends.available("cpu"):
        bs = [b.clone().requires_grad_() for b in branches]
        coef = weights.clone().requires_grad_()
        xx = x.clone().requires_grad_()
        out = sdarts.mixed_edge(bs, coef, x=xx, has_skip=True, has_pool=True, backend=backend)
        out.backward(grad)
        if ref_out is None:
            ref_out, ref_grads = out.detach(), (coef.grad, xx.grad, [b.grad for b in bs])
            continue
        assert rel_err(out, ref_out) <= 1e-5
        assert rel_err(coef.grad, ref_grads[0]) <= 1e-5
        assert rel_err(xx.grad, ref_grads[1]) <= 1e-5
        for g, rg in zip([b.grad for b in bs], ref_grads[2]):
            assert rel_err(g, rg) <= 1e-5


def test_non_4d_branches():
    torch.manual_seed(4)
    bs = [torch.randn(7, 3, requires_grad=True) for _ in range(3)]
    w = torch.rand(3, requires_grad=True)
    out = sdarts.mixed_sum(bs, w)
    assert out.shape == (7, 3)
    out.sum().backward()
    assert torch.allclose(w.grad, torch.stack([b.detach().sum() for b in bs]), rtol=1e-5, atol=1e-5)


def test_torch_compile_traces_without_graph_break():
    torch.manual_seed(3)
    bs = [torch.randn(2, 3, 4, 4, requires_grad=True) for _ in range(3)]
    w = torch.rand(3, requires_grad=True)
    compiled = torch.compile(lambda b, w: sdarts.mixed_sum(b, w), fullgraph=True, backend="aot_eager")
    out = compiled(bs, w)
    out.sum().backward()
    assert torch.allclose(out, sum(wk * b for wk, b in zip(w, bs)), rtol=1e-5, atol=1e-6)
    # A sum of 96 terms in another order: absolute tolerance for sums near zero.
    assert torch.allclose(w.grad, torch.stack([b.detach().sum() for b in bs]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "branches,weights,exc,match",
    [
        ([], torch.ones(0), ValueError, "at least one"),
        (torch.randn(2, 3), torch.ones(2), TypeError, "branches must be a list"),
        ([torch.randn(2, 3), torch.randn(2, 4)], torch.ones(2), ValueError, r"branches\[1\] has shape"),
        ([torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64)], torch.ones(2), TypeError, r"branches\[1\] has dtype"),
        ([torch.randn(2, 3), torch.randn(2, 3)], torch.ones(3), ValueError, "weights must be 1-D with one entry per branch"),
        ([torch.randn(2, 3), torch.randn(2, 3)], torch.ones(2, 1), ValueError, "weights must be 1-D"),
        ([torch.ones(2, 3, dtype=torch.int64)], torch.ones(1), TypeError, r"branches\[0\] must be a floating-point"),
        ([torch.randn(2, 3)], torch.ones(1, dtype=torch.int64), TypeError, "weights must be a floating-point"),
        ([torch.randn(2, 3), "x"], torch.ones(2), TypeError, r"branches\[1\] must be a torch.Tensor"),
    ],
)
def test_bad_input_gives_clear_error(branches, weights, exc, match):
    with pytest.raises(exc, match=match):
        sdarts.mixed_sum(branches, weights)


def test_unknown_or_unavailable_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        sdarts.mixed_sum([torch.randn(2, 3)], torch.ones(1), backend="fast")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available for cpu tensors"):
            sdarts.mixed_sum([torch.randn(2, 3)], torch.ones(1), backend="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_is_clear():
    with pytest.raises(ValueError, match="is on"):
        sdarts.mixed_sum([torch.randn(2, 3), torch.randn(2, 3, device="cuda")], torch.ones(2))
