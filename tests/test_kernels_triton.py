"""The Triton mixed-sum kernels against the PyTorch oracle (sdarts.ops.reference).

tests/conftest.py chooses the mode for the whole session, before anything imports triton:
on a machine where torch sees a GPU the kernels run compiled on CUDA tensors
(TRITON_INTERPRET=0); elsewhere they run on CPU tensors in Triton's interpreter
(TRITON_INTERPRET=1).  This file never changes that choice: interpreted Triton is never
mixed with CUDA tensors.
"""

import os
import sys

import pytest

pytest.importorskip("numpy")  # the interpreter needs it
pytest.importorskip("triton")
import torch  # noqa: E402

try:
    from sdarts.kernels import mixed_sum as tk
except ImportError:  # no editable install yet: load kernels/ straight from the tree
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels"))
    import mixed_sum as tk

from sdarts.ops import reference as ref  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if torch.cuda.is_available():
    if INTERPRET:  # conftest never leaves it so; someone ran this file without it
        pytest.skip("TRITON_INTERPRET=1 on a GPU machine: this suite runs Triton compiled on CUDA tensors there "
                    "(tests/conftest.py sets TRITON_INTERPRET=0)", allow_module_level=True)
    DEVICE = "cuda"
elif INTERPRET:
    DEVICE = "cpu"
else:
    pytest.skip("compiled Triton needs a GPU, and TRITON_INTERPRET is not 1 (tests/conftest.py sets it on CPU-only "
                "machines)", allow_module_level=True)

# Big blocks keep the interpreter fast (it runs programs one at a time); the loop/split and
# channel-mask paths get their own tests with small blocks.
BIG = (4, 64)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
LAYOUTS = ["nchw", "cl"]
SHAPE = (2, 3, 5, 7)


@pytest.fixture(autouse=True)
def poison_allocations(monkeypatch):
    """Fill every tensor the kernels' host code allocates with NaN, so that an element (or
    a partial sum) the kernels fail to write shows up as a mismatch."""
    empty, empty_like = torch.empty, torch.empty_like

    def nan_fill(t):
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: nan_fill(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: nan_fill(empty_like(*a, **k)))


def _fmt(layout):
    return torch.channels_last if layout == "cl" else torch.contiguous_format


def _rand(shape, dtype, layout, gen):
    t = torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype)
    return t.to(DEVICE).contiguous(memory_format=_fmt(layout))


def _inputs(B, dtype, layout, affine, shape=SHAPE, seed=0):
    gen = torch.Generator().manual_seed(seed)
    C = shape[1]
    branches = [_rand(shape, dtype, layout, gen) for _ in range(B)]
    x = _rand(shape, dtype, layout, gen)
    g = _rand(shape, dtype, layout, gen)
    coef = torch.randn(B + 2, generator=gen).to(DEVICE)
    scale = torch.randn(B, C, generator=gen).to(DEVICE) if affine else None
    shift = torch.randn(B, C, generator=gen).to(DEVICE) if affine else None
    return branches, x, g, coef, scale, shift


def _up(ts):
    return [t.double() for t in ts]


def _close(got, want, tol, what):
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    got64 = got.double().cpu()
    want64 = want.double().cpu()
    assert torch.isfinite(got64).all(), f"{what}: non-finite values (unwritten elements?)"
    err = (got64 - want64).abs().max().item() if got64.numel() else 0.0
    bound = tol * max(1.0, want64.abs().max().item() if want64.numel() else 0.0)
    assert err <= bound, f"{what}: max abs err {err:.3e} > {bound:.3e}"


def _check_forward(branches, x, coef, scale, shift, has_skip, has_pool, dtype, **kw):
    out = tk.mixed_forward(branches, coef, scale, shift, x, has_skip, has_pool, **kw)
    want = ref.mixed_forward(_up(branches), coef, scale, shift, x.double(), has_skip, has_pool)
    like = branches[0] if branches else x
    assert out.dtype == dtype and out.stride() == like.stride() and out.device == like.device
    _close(out, want, TOL[dtype], "out")


def _check_backward(g, branches, x, coef, scale, has_skip, has_pool, need_bg, need_gx, dtype, **kw):
    got = tk.mixed_backward(g, branches, coef, scale, x, has_skip, has_pool, need_bg, need_gx, **kw)
    want = ref.mixed_backward(g.double(), _up(branches), coef, scale, x.double(), has_skip, has_pool, need_bg, need_gx)
    gb, gx, chan_dot, chan_gsum, dot_skip, dot_pool = got
    tol = TOL[dtype]
    assert len(gb) == len(want[0])
    for k, (a, b) in enumerate(zip(gb, want[0])):
        assert a.dtype == dtype and a.stride() == branches[k].stride()
        _close(a, b, tol, f"grad_branches[{k}]")
    if want[1].numel():
        assert gx.dtype == dtype and gx.stride() == x.stride()
        _close(gx, want[1], tol, "grad_x")
    else:
        assert gx.numel() == 0
    for name, a, b in (("chan_dot", chan_dot, want[2]), ("chan_gsum", chan_gsum, want[3]),
                       ("dot_skip", dot_skip, want[4]), ("dot_pool", dot_pool, want[5])):
        assert a.dtype == torch.float32, name
        # The reductions accumulate in float32 whatever the input dtype.
        _close(a, b, 1e-5, name)
    return got


# (has_affine, has_skip, has_pool) combinations run for every dtype/layout/B.
FWD_CASES = [(True, True, True), (False, False, True), (True, True, False), (False, False, False)]


@pytest.mark.parametrize("B", [0, 1, 3, 8])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_forward(dtype, layout, B):
    for i, (affine, skip, pool) in enumerate(FWD_CASES):
        branches, x, _, coef, scale, shift = _inputs(B, dtype, layout, affine, seed=i)
        _check_forward(branches, x, coef, scale, shift, skip, pool, dtype, block=BIG)


# (has_affine, has_skip, has_pool, need_branch_grads, need_x_grad)
BWD_CASES = [(True, True, True, True, True), (False, False, True, False, True), (True, True, False, True, False)]


@pytest.mark.parametrize("B", [0, 1, 3, 8])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_backward(dtype, layout, B):
    for i, (affine, skip, pool, need_bg, need_gx) in enumerate(BWD_CASES):
        branches, x, g, coef, scale, _ = _inputs(B, dtype, layout, affine, seed=10 + i)
        _check_backward(g, branches, x, coef, scale, skip, pool, need_bg, need_gx, dtype, block=BIG)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_without_x(layout):
    """Branches only: x is None, no skip/pool, dot_skip/dot_pool are zero, grad_x empty."""
    branches, _, g, coef, scale, shift = _inputs(3, torch.float32, layout, True, seed=3)
    got = tk.mixed_backward(g, branches, coef, scale, None, False, False, True, True, block=BIG)
    want = ref.mixed_backward(g.double(), _up(branches), coef, scale, None, False, False, True, True)
    assert got[1].numel() == 0
    for k in range(3):
        _close(got[0][k], want[0][k], 1e-5, "grad_branches")
    for a, b in zip(got[2:], want[2:]):
        _close(a, b, 1e-5, "sums")
    assert got[4].item() == 0.0 and got[5].item() == 0.0
    out = tk.mixed_forward(branches, coef, scale, shift, None, False, False, block=BIG)
    want_out = ref.mixed_forward(_up(branches), coef, scale, shift, None, False, False)
    _close(out, want_out, 1e-5, "out")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 5, 5, 7), (1, 3, 1, 9), (3, 2, 6, 1)])
def test_small_blocks_loop_and_split(layout, shape):
    """Several channel blocks, several HW tiles per program and a split that does not divide
    the tile count: exercises the masks, the tile loop and the partials layout."""
    dtype = torch.float32
    branches, x, g, coef, scale, shift = _inputs(3, dtype, layout, True, shape=shape, seed=7)
    _check_forward(branches, x, coef, scale, shift, True, True, dtype, block=(2, 8))
    for split in (2, 3):  # split=1 (one program loops over all tiles) runs in every other test
        _check_backward(g, branches, x, coef, scale, True, True, True, True, dtype, block=(2, 8), split=split)


def test_backward_deterministic():
    branches, x, g, coef, scale, _ = _inputs(8, torch.float32, "nchw", True, seed=5)
    a = tk.mixed_backward(g, branches, coef, scale, x, True, True, True, True, block=(4, 16), split=2)
    b = tk.mixed_backward(g, branches, coef, scale, x, True, True, True, True, block=(4, 16), split=2)
    for t, u in zip(a[0] + list(a[1:]), b[0] + list(b[1:])):
        assert torch.equal(t, u)


def test_grad_out_other_layout():
    """grad_out in NCHW while the inputs are channels_last (the contract allows any strides)."""
    branches, x, g, coef, scale, _ = _inputs(2, torch.float32, "cl", True, seed=6)
    _check_backward(g.contiguous(), branches, x, coef, scale, True, True, True, True, torch.float32, block=BIG)


def test_batch_chunking(monkeypatch):
    """The host splits batches larger than the grid's z limit; force that with a limit of 1."""
    monkeypatch.setattr(tk, "_MAX_GRID_Z", 1)
    branches, x, g, coef, scale, shift = _inputs(2, torch.float32, "cl", True, shape=(3, 3, 4, 5), seed=8)
    _check_forward(branches, x, coef, scale, shift, True, True, torch.float32, block=BIG)
    _check_backward(g, branches, x, coef, scale, True, True, True, True, torch.float32, block=BIG, split=2)


def test_default_heuristics():
    """No block override: the heuristic block sizes used on the GPU are correct too."""
    branches, x, g, coef, scale, shift = _inputs(2, torch.float16, "nchw", True, shape=(1, 4, 6, 6), seed=9)
    _check_forward(branches, x, coef, scale, shift, True, True, torch.float16)
    _check_backward(g, branches, x, coef, scale, True, True, True, True, torch.float16)


@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("shape", [(64, 16, 32, 32), (64, 64, 8, 8), (256, 64, 32, 32), (2, 3, 5, 7), (1, 1, 1, 1)])
def test_block_heuristics(shape, cl):
    """The GPU heuristics (not run by the interpreter): power-of-two tiles within the sizes
    the kernels are tuned for, and enough tiles to cover an H100's 132 SMs when possible."""
    n, c, h, w = shape
    bc, bhw, warps = tk._choose_blocks(n, c, h * w, cl, None, 132)
    assert bc & (bc - 1) == 0 and bhw & (bhw - 1) == 0 and warps in (2, 4, 8)
    assert 1 <= bc <= 64 and 1 <= bhw <= 4096 // bc and bc * bhw <= 4096
    tiles = n * -(-c // bc) * -(-h * w // bhw)
    assert tiles >= 2 * 132 or bc * bhw <= 512 or (bc >= c and bhw >= h * w)


def test_bad_arguments():
    branches, x, g, coef, scale, shift = _inputs(1, torch.float32, "nchw", False)
    with pytest.raises(ValueError):
        tk.mixed_forward([], coef[:2], None, None, None, True, False)
    with pytest.raises(ValueError):
        tk.mixed_forward(branches, coef[:2], None, None, x, True, False)  # coef too short
    with pytest.raises(ValueError):
        tk.mixed_forward(branches * 9, torch.zeros(11, device=DEVICE), None, None, x, True, False)
