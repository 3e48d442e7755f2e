"""The GPU-only paths, each checked on a real GPU (``bench/gpu_check.sh`` runs this file).

Skipped, with reason "needs CUDA", where torch sees no GPU.  What the other files check on
CUDA at small shapes (``test_normalized_edge.py``, ``test_mixed_sum.py``,
``test_kernels_triton.py``, ``test_kernels_cpp.py``, the real-GPU case of
``test_graphed_step.py``), this file checks where those stop:

* the go/no-go of a GPU run: the whole Single-DARTS search step of the real NB201 supernet at
  the search shapes, captured as a CUDA graph and replayed N times, trains exactly as N eager
  steps (weights, alpha, BatchNorm statistics, losses); ``gpu_check.sh`` runs it first, alone;
* ``MixedOp``'s training path (the one-node edge, ``sdarts/ops/normalized_edge.py``) on every
  CUDA backend, with and without the Triton edge kernels (``SDARTS_TRITON_EDGE``), in every
  recompute mode, against the float64 plain ``sum(w * op(x))`` on the CPU: output, dL/dx,
  dL/dp, every parameter's gradient and the running statistics;
* the one-node edge and the composed edge (``mixed_edge`` with scale/shift) at the launched
  search shapes (NB201 64x16x32x32 ... 64x64x8x8, DARTS reductions), in both layouts, against
  float64 oracles: values, branch grads, dL/dcoef, scale/shift grads, batch statistics;
* ``sdarts-search --cuda-graph-strict`` end to end on the GPU;
* DDP over NCCL: the gradient averaging, broadcast and alpha check in one NCCL process (one GPU
  is enough), and a two-process ``torchrun`` search where there are two GPUs.

TF32 is switched off in these tests: they compare float32 with float64.
"""

import copy
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from sdarts.ops import backends

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CUDA_BACKENDS = backends.available("cuda") if torch.cuda.is_available() else []
EDGE_KERNELS = ["torch"] + (["triton"] if backends.triton_edge_module() is not None else [])


def rel_err(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.fixture(autouse=True)
def exact_float32():
    """float32 convolutions and matmuls (no TF32), deterministic cuDNN; restored afterwards."""
    if not torch.cuda.is_available():
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved


@pytest.fixture(params=EDGE_KERNELS, ids=lambda kernels: f"{kernels}-edge")
def edge_kernels(request):
    """The ``edge_kernels`` option: the edge's statistics and backward tail in PyTorch ops or
    in the Triton kernels."""
    return request.param


# ---------------------------------------------------------------------------- go / no-go


@pytest.mark.parametrize("edge_kernels_option", EDGE_KERNELS, ids=lambda kernels: "triton-edge" if kernels == "triton" else "engine")
def test_go_no_go_captured_search_step_equals_eager(edge_kernels_option):
    """The real NB201 supernet (C=16, 5 cells per stage), batch 64 at 32x32, the engine's
    default backend, Single-DARTS: one eager warm-up step, then replays of the captured step
    (captured again after an lr change), against the same steps run eagerly."""
    from sdarts.search.graphed_step import GraphedStep
    from sdarts.search.strategies import build_strategy
    from sdarts.spaces import build_supernet


    def build():
        torch.manual_seed(0)
        model = build_supernet("nb201", 10, edge_kernels=edge_kernels_option).cuda()
        w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), capturable=True)
        return model, build_strategy("single", w_opt, a_opt, grad_clip=5.0)

    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(64, 3, 32, 32, generator=g).cuda(), torch.randint(0, 10, (64,), generator=g).cuda())
               for _ in range(5)]
    lrs = [0.025, 0.025, 0.025, 0.02, 0.02]
    runs = []
    for graphed in (False, True):
        model, strategy = build()
        step = GraphedStep(model, strategy, warmup=1, on_failure="raise") if graphed else None
        losses = []
        for (x, y), lr in zip(batches, lrs):
            for group in strategy.w_optimizer.param_groups:
                group["lr"] = lr
            out = step((x, y), (x, y)) if graphed else strategy.step(model, (x, y), (x, y))
            losses.append(out.loss.detach().clone())
        torch.cuda.synchronize()
        if graphed:
            assert step.failure is None and step.captures == 2
        runs.append((model, torch.stack(losses)))
    (eager, eager_losses), (ours, our_losses) = runs
    assert torch.isfinite(our_losses).all()
    torch.testing.assert_close(our_losses, eager_losses, rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(ours.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    start = build()[0]
    assert not torch.equal(ours.alpha, start.alpha)  # alpha moved: not two untouched models


# ---------------------------------------------------------------------------- MixedOp, one-node edge


def _mixed_op_step(op, x, w, g):
    x = x.clone().requires_grad_()
    w = w.clone().requires_grad_()
    out = op(x, w)
    out.backward(g)
    return out, x.grad, w.grad, [p.grad for p in op.parameters()]


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("space,stride", [("nb201", 1), ("darts", 1), ("darts", 2)])
@pytest.mark.parametrize("recompute", [False, True, "named"], ids=["keep", "recompute-edge", "recompute-named"])
def test_mixed_op_training_path_on_cuda_matches_the_float64_plain_sum(backend, space, stride, recompute, edge_kernels):
    from sdarts.mixed_op import MixedOp
    from sdarts.primitives import DARTS, NB201

    primitives = NB201 if space == "nb201" else DARTS
    if recompute == "named":
        recompute = ("nor_conv_1x1",) if space == "nb201" else ("sep_conv_3x3", "sep_conv_5x5")
    torch.manual_seed(11)
    fast = MixedOp(16, stride, primitives, backend=backend, recompute=recompute, edge_kernels=edge_kernels).cuda()
    assert fast.one_node
    oracle = copy.deepcopy(fast).cpu().double()
    oracle.fused = False
    size = 16 * stride
    x = torch.randn(8, 16, size, size) * 1.5 + 0.3
    w = torch.rand(len(primitives))
    for seed in range(2):  # twice: the running statistics after more than one update
        g = torch.randn(8, 16, 16, 16, generator=torch.Generator().manual_seed(seed))
        got = _mixed_op_step(fast, x.cuda(), w.cuda(), g.cuda())
        want = _mixed_op_step(oracle, x.double(), w.double(), g.double())
    for what, a, b in (("out", got[0], want[0]), ("dL/dx", got[1], want[1]), ("dL/dp", got[2], want[2])):
        assert rel_err(a, b) <= 1e-4, (what, rel_err(a, b))
    for (name, _), a, b in zip(fast.named_parameters(), got[3], want[3]):
        assert rel_err(a, b) <= 1e-4, (name, rel_err(a, b))
    for (name, a), (_, b) in zip(fast.named_buffers(), oracle.named_buffers()):
        if a.is_floating_point():
            assert rel_err(a, b) <= 1e-5, (name, rel_err(a, b))


# ---------------------------------------------------------------------------- the edges at search shapes


def _oracle_edge(branches, coef, x, has_skip, has_pool, eps, grad):
    """float64, on the CPU, plain autograd: sum_k coef_k BN(b_k) + coef_B x + coef_B+1 avgpool3(x)."""
    bs = [b.detach().cpu().double().contiguous().requires_grad_() for b in branches]
    c = coef.detach().cpu().double().requires_grad_()
    xd = x.detach().cpu().double().contiguous().requires_grad_()
    out = sum(c[k] * F.batch_norm(b, None, None, training=True, eps=eps) for k, b in enumerate(bs))
    if has_skip:
        out = out + c[len(bs)] * xd
    if has_pool:
        out = out + c[len(bs) + 1] * F.avg_pool2d(xd, 3, 1, 1, count_include_pad=False)
    out.backward(grad.detach().cpu().double().contiguous())
    return out, [b.grad for b in bs], c.grad, xd.grad


SEARCH_EDGES = [  # (shape, branches, skip, pool): NB201's three stages, a DARTS normal and reduction edge
    ((64, 16, 32, 32), 2, True, True), ((64, 32, 16, 16), 2, True, True), ((64, 64, 8, 8), 2, True, True),
    ((64, 16, 32, 32), 6, True, False), ((64, 32, 16, 16), 7, False, False),
]


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("shape,B,has_skip,has_pool", SEARCH_EDGES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else None)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_one_node_edge_at_search_shapes_matches_float64(backend, shape, B, has_skip, has_pool, channels_last, edge_kernels):
    from sdarts.ops.normalized_edge import mixed_normalized_edge

    torch.manual_seed(B + shape[1])
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def make(scale=1.0, offset=0.0):
        return (torch.randn(shape, device="cuda") * scale + offset).contiguous(memory_format=fmt)

    # Statistics far from (0, 1): a wrong mean or variance cannot hide.
    branches = [make(1.5 + k, k - 1.0).requires_grad_() for k in range(B)]
    x = make().requires_grad_()
    coef = torch.randn(B + 2, device="cuda").requires_grad_()
    grad = make()
    out, mean, var = mixed_normalized_edge(branches, coef, eps=1e-5, x=x, has_skip=has_skip, has_pool=has_pool, backend=backend,
                                           edge_kernels=edge_kernels)
    out.backward(grad)
    ref_out, ref_gb, ref_gc, ref_gx = _oracle_edge(branches, coef, x, has_skip, has_pool, 1e-5, grad)
    assert rel_err(out, ref_out) <= 1e-5
    for k, (b, want) in enumerate(zip(branches, ref_gb)):
        assert rel_err(b.grad, want) <= 1e-5, (k, rel_err(b.grad, want))
    assert rel_err(coef.grad, ref_gc) <= 1e-5, (coef.grad, ref_gc)
    if has_skip or has_pool:
        assert rel_err(x.grad, ref_gx) <= 1e-5
    for k, present in ((B, has_skip), (B + 1, has_pool)):
        if not present:
            assert coef.grad[k].item() == 0.0
    stacked = torch.stack([b.detach().double() for b in branches])
    assert rel_err(mean, stacked.mean(dim=(1, 3, 4))) <= 1e-6
    assert rel_err(var, stacked.var(dim=(1, 3, 4), unbiased=False)) <= 1e-5


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("shape,B", [((64, 16, 32, 32), 2), ((64, 64, 8, 8), 6), ((96, 64, 28, 28), 8)],
                         ids=["nb201-s1", "nb201-s3", "imagenet"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_composed_edge_scale_shift_grads_at_search_shapes_match_float64(backend, shape, B, channels_last):
    """mixed_edge with per-branch scale/shift (eval-mode BatchNorm, the composed path):
    values and the gradients of branches, coef, x, scale and shift."""
    import sdarts

    torch.manual_seed(B)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    branches = [torch.randn(shape, device="cuda").contiguous(memory_format=fmt).requires_grad_() for _ in range(B)]
    x = torch.randn(shape, device="cuda").contiguous(memory_format=fmt).requires_grad_()
    coef = torch.randn(B + 2, device="cuda").requires_grad_()
    scale = (torch.rand(B, shape[1], device="cuda") + 0.5).requires_grad_()
    shift = torch.randn(B, shape[1], device="cuda").requires_grad_()
    grad = torch.randn(shape, device="cuda")
    out = sdarts.mixed_edge(branches, coef, scale=scale, shift=shift, x=x, has_skip=True, has_pool=True, backend=backend)
    out.backward(grad)

    leaves = [t.detach().cpu().double().requires_grad_() for t in (*branches, coef, x, scale, shift)]
    bs, c, xd, s, t = leaves[:B], leaves[B], leaves[B + 1], leaves[B + 2], leaves[B + 3]
    ref = sum(c[k] * (s[k].view(1, -1, 1, 1) * b + t[k].view(1, -1, 1, 1)) for k, b in enumerate(bs))
    ref = ref + c[B] * xd + c[B + 1] * F.avg_pool2d(xd, 3, 1, 1, count_include_pad=False)
    ref.backward(grad.cpu().double())
    assert rel_err(out, ref) <= 1e-5
    for name, got, leaf in [*((f"branch {k}", b.grad, bs[k]) for k, b in enumerate(branches)), ("coef", coef.grad, c),
                            ("x", x.grad, xd), ("scale", scale.grad, s), ("shift", shift.grad, t)]:
        assert rel_err(got, leaf.grad) <= 1e-5, (name, rel_err(got, leaf.grad))


# ---------------------------------------------------------------------------- the CLI on a GPU


def test_sdarts_search_cuda_graph_strict_runs_every_epoch_from_graphs(tmp_path):
    from sdarts.cli import search as cli

    out = tmp_path / "run"
    argv = ["--dataset", "synthetic", "--device", "cuda", "--batch-size", "16", "--init-channels", "4", "--layers", "1",
            "--max-steps-per-epoch", "4", "--epochs", "2", "--out", str(out), "--cuda-graph-strict"]
    assert cli.main(argv) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["cuda_graph"] for r in records] == ["replayed", "replayed"]
    assert json.loads((out / "config.json").read_text())["args"]["cuda_graph"] is True


# ---------------------------------------------------------------------------- DDP over NCCL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NCCL_ONE_PROCESS = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from sdarts.run import distributed as d
    from sdarts.search.strategies import build_strategy
    from sdarts.spaces import build_supernet

    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{sys.argv[1]}", rank=0, world_size=1)
    assert dist.get_backend() == "nccl"

    def make(sync):
        torch.manual_seed(0)
        model = build_supernet("nb201", 10, N=1, C=8).cuda()
        w = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        a = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999))
        return model, build_strategy("single", w, a, grad_clip=5.0, grad_sync=d.average_grads if sync else None)

    ddp, ref = make(True), make(False)
    d.broadcast_module(ddp[0])
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        b = (torch.randn(8, 3, 16, 16, generator=g).cuda(), torch.randint(0, 10, (8,), generator=g).cuda())
        ddp[1].step(ddp[0], b, b)
        ref[1].step(ref[0], b, b)
    for (name, a), b in zip(ddp[0].state_dict().items(), ref[0].state_dict().values()):
        assert torch.equal(a, b), name
    assert d.alpha_rank_spread(ddp[0].arch_parameters()) == 0.0
    ts = [torch.full((3,), 2.0, device="cuda"), torch.arange(4, dtype=torch.float64, device="cuda")]
    d.all_reduce_(ts, "mean")
    assert ts[0].tolist() == [2.0] * 3 and ts[1].tolist() == [0.0, 1.0, 2.0, 3.0]
    d.all_reduce_(ts, "min")
    assert ts[1].tolist() == [0.0, 1.0, 2.0, 3.0]
    dist.destroy_process_group()
    print("NCCL one-process OK")
""")


def test_ddp_collectives_over_nccl_in_one_process():
    """The DDP pieces on NCCL with world size 1 (one GPU): average_grads (steps equal the
    unsynchronized ones), broadcast_module, alpha_rank_spread, all_reduce_ for two dtypes."""
    done = subprocess.run([sys.executable, "-c", NCCL_ONE_PROCESS, str(_free_port())], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "NCCL one-process OK" in done.stdout


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_process_nccl_search_keeps_alpha_identical(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "sdarts.cli.search",
           "--dataset", "synthetic", "--device", "cuda", "--batch-size", "16", "--max-steps-per-epoch", "2",
           "--init-channels", "4", "--layers", "1", "--out", str(out), "--epochs", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert [r["alpha_rank_spread"] for r in records] == [0.0, 0.0]
