"""The C++/CUDA mixed-sum kernels of ``sdarts._C`` against ``sdarts.ops.reference``.

The reference runs in float64 on the kernels' inputs upcast (so it is exact for
them); the kernels compute in float32.  Errors are measured relative to the largest
magnitude of the reference output: float32 <= 1e-5, float16/bfloat16 <= 1e-2.

CPU tests need ``sdarts._C`` (skipped with the reason when it is not built).  The
CUDA tests run only where ``torch.cuda.is_available()``; they are the only check
the CUDA kernels get, so they cover the whole matrix plus large shapes, streams,
determinism and the absence of host synchronization.  Where nvcc and a CUDA torch are
present (CI has both), ``test_cuda_kernels_were_compiled`` proves the CUDA code was built.
"""

from __future__ import annotations

import itertools
import os
import shutil

import pytest
import torch

from sdarts.ops import reference as R

try:
    from sdarts import _C
except ImportError as exc:  # pragma: no cover - depends on the build
    _C = None
    _IMPORT_ERROR = f"sdarts._C is not importable (build the extension: pip install -e .): {exc}"
else:
    _IMPORT_ERROR = ""

needs_ext = pytest.mark.skipif(_C is None, reason=_IMPORT_ERROR or "sdarts._C missing")
HAS_CUDA_KERNELS = _C is not None and _C.with_cuda() and torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA_KERNELS,
    reason="CUDA kernels need a GPU and an sdarts._C built with CUDA"
    if _C is not None
    else (_IMPORT_ERROR or "sdarts._C missing"),
)

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
LAYOUTS = ["nchw", "cl"]
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2, torch.float64: 1e-12}
SKIP_POOL = [(True, True), (True, False), (False, True), (False, False)]


def _fmt(layout: str):
    return torch.channels_last if layout == "cl" else torch.contiguous_format


class Case:
    """Fresh random inputs of one call (never zeros), on `device`."""

    def __init__(self, shape, B, dtype, layout, affine, seed=0, device="cpu", grad_layout=None):
        gen = torch.Generator().manual_seed(seed)
        fmt = _fmt(layout)
        c = shape[1]

        def act():
            return torch.randn(*shape, generator=gen).to(dtype).contiguous(memory_format=fmt).to(device)

        self.branches = [act() for _ in range(B)]
        self.x = act()
        self.coef = (torch.randn(B + 2, generator=gen) + 0.1).to(device)
        self.scale = (torch.randn(B, c, generator=gen) + 1.0).to(device) if affine else None
        self.shift = torch.randn(B, c, generator=gen).to(device) if affine else None
        gfmt = _fmt(grad_layout or layout)
        self.grad = torch.randn(*shape, generator=gen).to(dtype).contiguous(memory_format=gfmt).to(device)
        self.dtype, self.layout = dtype, layout

    @staticmethod
    def _d(t):
        return None if t is None else t.detach().cpu().double()

    def ref_forward(self, skip, pool):
        d = self._d
        return R.mixed_forward([d(b) for b in self.branches], d(self.coef), d(self.scale), d(self.shift),
                               d(self.x), skip, pool)

    def ref_backward(self, skip, pool, need_b, need_x, magnitudes=False):
        d = (lambda t: None if t is None else t.detach().cpu().double().abs()) if magnitudes else self._d
        return R.mixed_backward(d(self.grad), [d(b) for b in self.branches], d(self.coef), d(self.scale),
                                d(self.x), skip, pool, need_b, need_x)

    def forward(self, kind, skip, pool):
        fn = getattr(_C, f"mixed_forward_{kind}")
        return fn(self.branches, self.coef, self.scale, self.shift, self.x, skip, pool)

    def backward(self, kind, skip, pool, need_b, need_x):
        fn = getattr(_C, f"mixed_backward_{kind}")
        return fn(self.grad, self.branches, self.coef, self.scale, self.x, skip, pool, need_b, need_x)


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    assert tuple(got.shape) == tuple(ref.shape), (got.shape, ref.shape)
    if ref.numel() == 0:
        return 0.0
    got = got.detach().cpu().double()
    scale = ref.abs().max().item()
    err = (got - ref).abs().max().item()
    assert err == err, "NaN in kernel output"
    return err / max(scale, 1e-30) if scale > 0 else err


def _assert_close(name, got, ref, tol):
    e = _rel_err(got, ref)
    assert e <= tol, f"{name}: relative error {e:.3g} > {tol:g}"


def _assert_sum_close(name, got, ref, mag, tol):
    """|got - ref| <= tol * (sum of |terms|), elementwise."""
    got = got.detach().cpu().double()
    assert tuple(got.shape) == tuple(ref.shape), (name, got.shape, ref.shape)
    if ref.numel() == 0:
        return
    assert not torch.isnan(got).any(), f"{name}: NaN"
    e = ((got - ref).abs() / mag.clamp_min(1e-30)).max().item()
    assert e <= tol, f"{name}: error {e:.3g} of the terms' magnitude > {tol:g}"


def _assert_layout(t: torch.Tensor, case: Case):
    assert t.dtype == case.dtype
    assert t.is_contiguous(memory_format=_fmt(case.layout)), f"lost the {case.layout} layout: {t.stride()}"


def check_case(case: Case, kind: str, skip: bool, pool: bool, need_b=True, need_x=True, tol=None):
    """Forward and backward of `case` on backend `kind` against the float64 reference."""
    tol = TOL[case.dtype] if tol is None else tol
    out = case.forward(kind, skip, pool)
    _assert_layout(out, case)
    assert out.device == case.x.device
    _assert_close("forward", out, case.ref_forward(skip, pool), tol)

    got = case.backward(kind, skip, pool, need_b, need_x)
    ref = case.ref_backward(skip, pool, need_b, need_x)
    gb, gx, chan_dot, chan_gsum, dot_skip, dot_pool = got
    B, C = len(case.branches), case.x.shape[1]
    assert isinstance(gb, list) and len(gb) == (B if need_b else 0)
    for k, (g, r) in enumerate(zip(gb, ref[0])):
        _assert_layout(g, case)
        _assert_close(f"grad_branches[{k}]", g, r, tol)
    if need_x and (skip or pool):
        _assert_layout(gx, case)
        _assert_close("grad_x", gx, ref[1], tol)
    else:
        assert gx.numel() == 0
    for name, t, shape in (("chan_dot", chan_dot, (B, C)), ("chan_gsum", chan_gsum, (C,)),
                           ("dot_skip", dot_skip, ()), ("dot_pool", dot_pool, ())):
        assert t.dtype == torch.float32 and tuple(t.shape) == shape, (name, t.dtype, t.shape)
        assert t.device == case.x.device
    # Reductions: float32 accuracy whatever the input dtype (the inputs are exact), measured
    # against the sum of the terms' magnitudes (a sum can cancel to near zero by chance).
    rtol = max(1e-5, tol / 10) if case.dtype != torch.float32 else tol
    mag = case.ref_backward(skip, pool, False, False, magnitudes=True)
    _assert_sum_close("chan_dot", chan_dot, ref[2], mag[2], rtol)
    _assert_sum_close("chan_gsum", chan_gsum, ref[3], mag[3], rtol)
    if skip:
        _assert_sum_close("dot_skip", dot_skip, ref[4], mag[4], rtol)
    else:
        assert dot_skip.item() == 0.0
    if pool:
        _assert_sum_close("dot_pool", dot_pool, ref[5], mag[5], rtol)
    else:
        assert dot_pool.item() == 0.0


def _matrix():
    for dtype, layout, B, affine, (skip, pool) in itertools.product(DTYPES, LAYOUTS, [0, 1, 3, 8], [False, True],
                                                                    SKIP_POOL):
        if B == 0 and affine:
            continue
        yield pytest.param(dtype, layout, B, affine, skip, pool,
                           id=f"{str(dtype)[6:]}-{layout}-B{B}-{'aff' if affine else 'plain'}"
                              f"{'-skip' if skip else ''}{'-pool' if pool else ''}")


ODD_SHAPE = (2, 3, 5, 7)
# Shapes that cut slabs into several blocks, tiles and tasks, or degenerate windows.
EDGE_SHAPES = [(1, 2, 70, 40), (3, 5, 1, 1), (2, 3, 1, 9), (2, 4, 9, 1), (300, 2, 3, 3), (4, 16, 32, 32),
               (2, 1, 6, 5), (2, 40, 3, 4)]


# ---------------------------------------------------------------- CPU


@needs_ext
@pytest.mark.parametrize("dtype,layout,B,affine,skip,pool", list(_matrix()))
def test_cpu_matches_reference(dtype, layout, B, affine, skip, pool):
    check_case(Case(ODD_SHAPE, B, dtype, layout, affine, seed=B * 7 + 1), "cpu", skip, pool)


@needs_ext
@pytest.mark.parametrize("need_b,need_x", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cpu_need_flags(need_b, need_x, layout):
    case = Case(ODD_SHAPE, 3, torch.float32, layout, True, seed=11)
    for skip, pool in SKIP_POOL:
        check_case(case, "cpu", skip, pool, need_b=need_b, need_x=need_x)


@needs_ext
@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_edge_shapes(shape, layout, dtype):
    case = Case(shape, 2, dtype, layout, True, seed=3)
    check_case(case, "cpu", True, True)
    check_case(case, "cpu", False, True, need_b=False)


@needs_ext
def test_cpu_float64_inputs():
    case = Case(ODD_SHAPE, 3, torch.float64, "nchw", True, seed=5)
    check_case(case, "cpu", True, True, tol=1e-12)


@needs_ext
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cpu_grad_out_in_other_layout(layout):
    other = "nchw" if layout == "cl" else "cl"
    check_case(Case((2, 6, 5, 7), 2, torch.float32, layout, True, seed=9, grad_layout=other), "cpu", True, True)


@needs_ext
def test_cpu_x_unused_and_missing():
    case = Case(ODD_SHAPE, 2, torch.float32, "nchw", True, seed=4)
    ref = R.mixed_forward([b.double() for b in case.branches], case.coef.double(), case.scale.double(),
                          case.shift.double(), None, False, False)
    out = _C.mixed_forward_cpu(case.branches, case.coef, case.scale, case.shift, None, False, False)
    _assert_close("forward without x", out, ref, 1e-5)
    gb, gx, *_ = _C.mixed_backward_cpu(case.grad, case.branches, case.coef, case.scale, None, False, False, True, True)
    assert len(gb) == 2 and gx.numel() == 0


@needs_ext
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_deterministic_across_threads(layout, dtype):
    case = Case((6, 16, 33, 31), 3, dtype, layout, True, seed=21)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3, 1):
            torch.set_num_threads(threads)
            results.append((case.forward("cpu", True, True), case.backward("cpu", True, True, True, True)))
    finally:
        torch.set_num_threads(before)
    out0, (gb0, gx0, *red0) = results[0]
    for out, (gb, gx, *red) in results[1:]:
        assert torch.equal(out, out0)
        assert all(torch.equal(a, b) for a, b in zip(gb, gb0))
        assert torch.equal(gx, gx0)
        assert all(torch.equal(a, b) for a, b in zip(red, red0)), "reductions depend on the thread count"


@needs_ext
def test_cpu_rejects_bad_inputs():
    case = Case(ODD_SHAPE, 2, torch.float32, "nchw", True)
    b, coef, x = case.branches, case.coef, case.x
    with pytest.raises(RuntimeError, match="coef"):
        _C.mixed_forward_cpu(b, coef[:3], None, None, x, True, True)
    with pytest.raises(RuntimeError, match="x is required"):
        _C.mixed_forward_cpu([], coef[:2], None, None, None, False, False)
    with pytest.raises(RuntimeError, match="at most 8"):
        _C.mixed_forward_cpu([b[0]] * 9, torch.randn(11), None, None, x, True, True)
    with pytest.raises(RuntimeError, match="shape"):
        _C.mixed_forward_cpu([b[0], b[1][:, :2]], coef, None, None, x, True, True)
    with pytest.raises(RuntimeError, match="layout"):
        _C.mixed_forward_cpu([b[0], b[1].contiguous(memory_format=torch.channels_last)], coef, None, None, x,
                             True, True)
    with pytest.raises(RuntimeError, match="contiguous"):
        _C.mixed_forward_cpu([t.transpose(2, 3) for t in b], coef, None, None, None, False, False)
    with pytest.raises(RuntimeError, match="together"):
        _C.mixed_forward_cpu(b, coef, case.scale, None, x, True, True)
    with pytest.raises(RuntimeError, match="float32"):
        _C.mixed_forward_cpu(b, coef.double(), None, None, x, True, True)
    with pytest.raises(RuntimeError, match="dtype"):
        _C.mixed_forward_cpu(b, coef, None, None, x.half(), True, True)
    with pytest.raises(RuntimeError, match="grad_out"):
        _C.mixed_backward_cpu(case.grad[:1], b, coef, None, x, True, True, True, True)


@needs_ext
def test_with_cuda_is_bool():
    assert isinstance(_C.with_cuda(), bool)
    assert hasattr(_C, "mixed_forward_cuda") == _C.with_cuda()


def _build_had_nvcc() -> bool:
    """setup.py builds the CUDA kernels whenever nvcc and a CUDA torch are present."""
    if os.environ.get("SDARTS_EXPECT_CUDA_BUILD") == "1":
        return True
    if any(os.environ.get(v, "0") == "1" for v in ("SDARTS_NO_EXTENSION", "SDARTS_NO_CUDA")):
        return False
    nvcc = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    return torch.version.cuda is not None and (os.path.exists(nvcc) or shutil.which("nvcc") is not None)


# Kept here for bench/gpu_check.sh (it runs this file with -k cuda); tests/test_build_complete.py
# checks the same, and every other kernel family, strictly under CI=true.
@pytest.mark.skipif(not _build_had_nvcc(), reason="no nvcc or CPU-only torch here: the CUDA kernels are not built")
def test_cuda_kernels_were_compiled():
    assert _C is not None, _IMPORT_ERROR
    assert _C.with_cuda(), "sdarts._C was built without its CUDA kernels"
    assert hasattr(_C, "mixed_forward_cuda") and hasattr(_C, "mixed_backward_cuda")


# ---------------------------------------------------------------- CPU without AVX2


needs_simd_switch = pytest.mark.skipif(_C is None or not hasattr(_C, "set_simd"),
                                       reason=_IMPORT_ERROR or "sdarts._C predates set_simd: rebuild it")


@pytest.fixture
def base_isa():
    """The CPU kernels' baseline (non-AVX2) build for the duration of one test."""
    before = _C.set_simd(False)
    try:
        assert _C.cpu_isa() == "base"
        yield
    finally:
        _C.set_simd(before)


@needs_ext
def test_simd_switch_reports_and_restores():
    assert hasattr(_C, "set_simd") and hasattr(_C, "cpu_isa") and hasattr(_C, "simd_available"), \
        "sdarts._C has no run-time AVX2 switch (rebuild: pip install --no-build-isolation -e .)"
    before = _C.set_simd(False)
    try:
        assert _C.cpu_isa() == "base"
        assert _C.set_simd(True) is False
        assert _C.cpu_isa() == ("avx2" if _C.simd_available() else "base")
    finally:
        _C.set_simd(before)


@needs_simd_switch
@pytest.mark.parametrize("dtype,layout,B,affine,skip,pool",
                         [p for p in _matrix() if p.values[2] in (1, 3) and p.values[3]] +
                         [p for p in _matrix() if p.values[2] in (0, 8) and not p.values[3] and p.values[4]])
def test_cpu_baseline_build_matches_reference(base_isa, dtype, layout, B, affine, skip, pool):
    """The kernels every CPU without AVX2/FMA/F16C runs (this machine's would pick the AVX2 build)."""
    check_case(Case(ODD_SHAPE, B, dtype, layout, affine, seed=B * 7 + 1), "cpu", skip, pool)


@needs_simd_switch
@pytest.mark.parametrize("shape", [(1, 2, 70, 40), (2, 40, 3, 4), (4, 16, 32, 32)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cpu_baseline_build_edge_shapes_and_agrees_with_avx2(shape, layout, dtype):
    """Several blocks and tiles through the baseline build; both builds agree to float32 rounding."""
    case = Case(shape, 3, dtype, layout, True, seed=5)
    before = _C.set_simd(False)
    try:
        check_case(case, "cpu", True, True)
        base_out, base_bwd = case.forward("cpu", True, True), case.backward("cpu", True, True, True, True)
    finally:
        _C.set_simd(before)
    if not _C.simd_available():
        return
    _C.set_simd(True)
    try:
        out, bwd = case.forward("cpu", True, True), case.backward("cpu", True, True, True, True)
    finally:
        _C.set_simd(before)
    tol = TOL[dtype]
    _assert_close("forward avx2 vs base", out, base_out.double(), tol)
    for k, (a, b) in enumerate(zip(bwd[0], base_bwd[0])):
        _assert_close(f"grad_branches[{k}] avx2 vs base", a, b.double(), tol)
    _assert_close("grad_x avx2 vs base", bwd[1], base_bwd[1].double(), tol)
    for name, a, b in zip(("chan_dot", "chan_gsum", "dot_skip", "dot_pool"), bwd[2:], base_bwd[2:]):
        _assert_close(f"{name} avx2 vs base", a, b.double(), 1e-5)


# ---------------------------------------------------------------- CUDA


@needs_cuda
@pytest.mark.parametrize("dtype,layout,B,affine,skip,pool", list(_matrix()))
def test_cuda_matches_reference(dtype, layout, B, affine, skip, pool):
    check_case(Case(ODD_SHAPE, B, dtype, layout, affine, seed=B * 7 + 1, device="cuda"), "cuda", skip, pool)


@needs_cuda
@pytest.mark.parametrize("need_b,need_x", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_need_flags(need_b, need_x, layout):
    case = Case(ODD_SHAPE, 3, torch.float32, layout, True, seed=11, device="cuda")
    for skip, pool in SKIP_POOL:
        check_case(case, "cuda", skip, pool, need_b=need_b, need_x=need_x)


@needs_cuda
@pytest.mark.parametrize("shape", EDGE_SHAPES + [(64, 16, 32, 32), (8, 64, 33, 17), (2, 300, 6, 5)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_shapes(shape, layout, dtype):
    case = Case(shape, 2, dtype, layout, True, seed=3, device="cuda")
    check_case(case, "cuda", True, True)
    check_case(case, "cuda", False, True, need_b=False)


@needs_cuda
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_all_branches_large(layout):
    check_case(Case((16, 48, 16, 16), 8, torch.bfloat16, layout, True, seed=8, device="cuda"), "cuda", True, True)


@needs_cuda
def test_cuda_float64_inputs():
    check_case(Case(ODD_SHAPE, 3, torch.float64, "cl", True, seed=5, device="cuda"), "cuda", True, True, tol=1e-12)


@needs_cuda
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_grad_out_in_other_layout(layout):
    other = "nchw" if layout == "cl" else "cl"
    check_case(Case((2, 6, 5, 7), 2, torch.float32, layout, True, seed=9, device="cuda", grad_layout=other),
               "cuda", True, True)


@needs_cuda
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu_kernel(layout, dtype):
    gpu = Case((4, 24, 17, 13), 3, dtype, layout, True, seed=13, device="cuda")
    cpu = Case((4, 24, 17, 13), 3, dtype, layout, True, seed=13, device="cpu")
    out_g, out_c = gpu.forward("cuda", True, True), cpu.forward("cpu", True, True)
    tol = TOL[dtype]
    _assert_close("forward cuda vs cpu", out_g, out_c.double(), tol)
    for a, b in zip(gpu.backward("cuda", True, True, True, True)[2:], cpu.backward("cpu", True, True, True, True)[2:]):
        _assert_close("reductions cuda vs cpu", a, b.double(), 1e-5)


@needs_cuda
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_deterministic(layout):
    case = Case((32, 32, 16, 16), 4, torch.float32, layout, True, seed=17, device="cuda")
    a = case.backward("cuda", True, True, True, True)
    b = case.backward("cuda", True, True, True, True)
    assert torch.equal(case.forward("cuda", True, True), case.forward("cuda", True, True))
    for u, v in zip(a[0], b[0]):
        assert torch.equal(u, v)
    for u, v in zip(a[1:], b[1:]):
        assert torch.equal(u, v), "CUDA backward is not deterministic"


@needs_cuda
def test_cuda_no_host_sync():
    """coef/scale/shift stay on the device: the kernels never synchronize with the host."""
    case = Case((4, 8, 9, 9), 3, torch.float32, "cl", True, seed=2, device="cuda")
    case.forward("cuda", True, True)  # warm up allocations outside the check
    case.backward("cuda", True, True, True, True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        case.forward("cuda", True, True)
        case.backward("cuda", True, True, True, True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@needs_cuda
def test_cuda_runs_on_current_stream():
    case = Case((8, 16, 12, 12), 2, torch.float16, "nchw", True, seed=6, device="cuda")
    side = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        out = case.forward("cuda", True, True)
        red = case.backward("cuda", True, True, True, True)
    side.synchronize()
    _assert_close("forward on a side stream", out, case.ref_forward(True, True), 1e-2)
    _assert_close("chan_dot on a side stream", red[2], case.ref_backward(True, True, True, True)[2], 1e-5)


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_second_device():
    check_case(Case(ODD_SHAPE, 2, torch.float32, "cl", True, device="cuda:1"), "cuda", True, True)


@needs_cuda
def test_cuda_rejects_host_coef():
    case = Case(ODD_SHAPE, 2, torch.float32, "nchw", False, device="cuda")
    with pytest.raises(RuntimeError, match="coef"):
        _C.mixed_forward_cuda(case.branches, case.coef.cpu(), None, None, case.x, True, True)
    with pytest.raises(RuntimeError, match="cuda|CUDA"):
        _C.mixed_forward_cuda([b.cpu() for b in case.branches], case.coef.cpu(), None, None, case.x.cpu(), True,
                              True)
