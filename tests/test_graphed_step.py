"""GraphedStep on the CPU, with an emulated CUDA graph.

:class:`EmulatedGraphs` behaves as a CUDA graph does where it matters to GraphedStep's
bookkeeping: capturing runs no kernel (the training state is put back afterwards and the
outputs hold garbage, here NaN), and a replay runs the captured step with the learning rates
baked in at capture, writing its results into the tensors returned at capture.  A GraphedStep
that counted the capture as a step, skipped a replay, forgot to copy a batch in or to
recapture after an lr change would therefore train differently from the eager step.
"""

import contextlib
import functools
import math
import types

import pytest
import torch

from sdarts.cli import search as cli
from sdarts.search import assembly, loop
from sdarts.search.graphed_step import CudaGraphCaptureError, GraphedStep
from sdarts.search.loop import SearchData, Searcher
from sdarts.search.strategies import build_strategy
from sdarts.spaces import build_supernet, get_space


class EmulatedGraphs:
    """A capture backend for the CPU: see the module docstring.  Counts what it is asked."""

    device_type = "cpu"
    needs_capturable = False  # a replay re-runs Python: Adam's host-side step count advances

    def __init__(self, model, strategy):
        self.model, self.optimizers = model, (strategy.w_optimizer, strategy.alpha_optimizer)
        self.captures = self.replays = self.releases = self.side_steps = 0

    def _state(self):
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        for opt in self.optimizers:
            tensors += [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
        return tensors

    def _lrs(self):
        return [[g["lr"] for g in opt.param_groups] for opt in self.optimizers]

    def _set_lrs(self, lrs):
        for opt, group_lrs in zip(self.optimizers, lrs):
            for g, lr in zip(opt.param_groups, group_lrs):
                g["lr"] = lr

    @staticmethod
    def _outputs(out):
        return [out.loss, out.logits, *out.weight_grads.values()]

    def new_graph(self):
        return types.SimpleNamespace(fn=None, out=None, lrs=None)

    def capture(self, graph, fn):
        before = [t.clone() for t in self._state()]
        out = fn()
        with torch.no_grad():
            for t, b in zip(self._state(), before):
                t.copy_(b)
            for t in self._outputs(out):
                t.fill_(math.nan)
        graph.fn, graph.out, graph.lrs = fn, out, self._lrs()
        self.captures += 1
        return out

    def replay(self, graph):
        assert graph.fn is not None, "replay of a released graph"
        current = self._lrs()
        self._set_lrs(graph.lrs)
        try:
            fresh = graph.fn()
        finally:
            self._set_lrs(current)
        assert fresh.targets is graph.out.targets  # the static y, read in place
        with torch.no_grad():
            for static, t in zip(self._outputs(graph.out), self._outputs(fresh)):
                static.copy_(t)
        self.replays += 1

    def release(self, graph):
        graph.fn = graph.out = None
        self.releases += 1

    def side_stream(self):
        self.side_steps += 1
        return contextlib.nullcontext()


def make(level, capturable=False, **kwargs):
    torch.manual_seed(0)
    model = build_supernet("nb201", 10, N=1, C=4, backend="reference")
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), capturable=capturable)
    return model, build_strategy(level, w_opt, a_opt, grad_clip=5.0, **kwargs)


def batch(seed, n=4, size=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def graphed(model, strategy, warmup=2):
    backend = EmulatedGraphs(model, strategy)
    return GraphedStep(model, strategy, warmup=warmup, backend=backend), backend


def run_steps(step, strategy, batches, lrs):
    """Step through ``batches`` (w's and alpha's), setting w's lr before each; copies of the outputs."""
    outs = []
    for (bw, ba), lr in zip(batches, lrs):
        for g in strategy.w_optimizer.param_groups:
            g["lr"] = lr
        out = step(bw, ba)
        outs.append((out.loss.clone(), out.logits.clone(), {k: v.clone() for k, v in out.weight_grads.items()}))
    return outs


def assert_same_state(a, b):
    (model_a, strat_a), (model_b, strat_b) = a, b
    for (name, ta), tb in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(ta, tb), name
    for opt_a, opt_b in ((strat_a.w_optimizer, strat_b.w_optimizer), (strat_a.alpha_optimizer, strat_b.alpha_optimizer)):
        sa, sb = opt_a.state_dict(), opt_b.state_dict()
        assert sa["param_groups"] == sb["param_groups"]
        assert sa["state"].keys() == sb["state"].keys()
        for k in sa["state"]:
            for key, value in sa["state"][k].items():
                assert torch.equal(value, sb["state"][k][key]), (k, key)


def assert_same_outputs(outs_a, outs_b):
    assert len(outs_a) == len(outs_b)
    for (la, ga, wa), (lb, gb, wb) in zip(outs_a, outs_b):
        assert torch.isfinite(la) and torch.equal(la, lb)
        assert torch.equal(ga, gb)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("level", ["single", "bilevel"])
def test_graphed_steps_train_exactly_as_eager_steps(level):
    same = level == "single"
    batches = [(batch(i), batch(i) if same else batch(100 + i)) for i in range(7)]
    lrs = [0.025] * 4 + [0.02] * 3  # a schedule step after step 4: the graph must follow it
    eager = make(level)
    model, strategy = eager
    outs_eager = run_steps(lambda bw, ba: strategy.step(model, bw, ba), strategy, batches, lrs)

    ours = make(level)
    step, backend = graphed(*ours)
    outs_graphed = run_steps(step, ours[1], batches, lrs)

    assert (backend.side_steps, backend.captures, backend.replays) == (2, 2, 5)
    assert_same_outputs(outs_graphed, outs_eager)
    assert_same_state(ours, eager)
    # alpha moved, so the comparison above is not of two untouched models.
    assert not torch.equal(ours[0].alpha, make(level)[0].alpha)


def test_alpha_reads_w_static_batch_when_the_strategy_reuses_it():
    step, _ = graphed(*make("single"), warmup=1)
    for i in range(2):
        step(batch(i), batch(i))
    static_w, static_alpha = step.static_inputs
    assert static_alpha is static_w

    step, _ = graphed(*make("bilevel"), warmup=1)
    for i in range(2):
        step(batch(i), batch(100 + i))
    static_w, static_alpha = step.static_inputs
    assert static_alpha[0] is not static_w[0] and torch.equal(static_alpha[0], batch(101)[0])


def test_recaptures_exactly_when_a_learning_rate_changes():
    model, strategy = make("single")
    step, backend = graphed(model, strategy, warmup=1)
    w_group, a_group = strategy.w_optimizer.param_groups[0], strategy.alpha_optimizer.param_groups[0]
    counts = []
    for i, change in enumerate([None, None, None, None, "w", None, "alpha", None, "w-same"]):
        if change == "w":
            w_group["lr"] *= 0.5
        elif change == "alpha":
            a_group["lr"] *= 0.5
        elif change == "w-same":
            w_group["lr"] = float(w_group["lr"])  # the same value again: no new graph
        step(batch(i), batch(i))
        counts.append((step.captures, backend.captures, backend.releases))
    assert [c[0] for c in counts] == [0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert [c[1] for c in counts] == [c[0] for c in counts]
    assert [c[2] for c in counts] == [0, 0, 0, 0, 1, 1, 2, 2, 2]  # the old graph goes first
    assert backend.replays == 8 and backend.side_steps == 1


def test_outputs_are_the_graphs_static_tensors():
    step, _ = graphed(*make("single"), warmup=1)
    step(batch(0), batch(0))  # warm-up: an eager step's own tensors
    first = step(batch(1), batch(1))
    loss_1, logits_1 = first.loss.clone(), first.logits.clone()
    second = step(batch(2), batch(2))
    assert second.loss is first.loss and second.logits is first.logits
    assert all(second.weight_grads[k] is first.weight_grads[k] for k in first.weight_grads)
    assert second.targets is step.static_inputs[0][1] and torch.equal(second.targets, batch(2)[1])
    # Overwritten in place by the replay of batch 2.
    assert not torch.equal(first.loss, loss_1) and not torch.equal(first.logits, logits_1)


def test_a_batch_of_another_shape_takes_the_eager_step():
    shapes = [4, 4, 2, 4, 4]
    batches = [(batch(i, n), batch(i, n)) for i, n in enumerate(shapes)]
    eager = make("single")
    outs_eager = run_steps(lambda bw, ba: eager[1].step(eager[0], bw, ba), eager[1], batches, [0.025] * 5)
    ours = make("single")
    step, backend = graphed(*ours, warmup=1)
    outs_graphed = run_steps(step, ours[1], batches, [0.025] * 5)
    assert (backend.side_steps, backend.captures, backend.replays) == (1, 1, 3)
    assert_same_outputs(outs_graphed, outs_eager)
    assert_same_state(ours, eager)


def test_a_failed_capture_warns_and_the_search_goes_on_eagerly():
    """An op that cannot be captured: a warning with the reason, then eager steps; since a
    capture runs no kernel, the run equals a plain eager one."""
    batches = [(batch(i), batch(i)) for i in range(5)]
    eager = make("single")
    outs_eager = run_steps(lambda bw, ba: eager[1].step(eager[0], bw, ba), eager[1], batches, [0.025] * 5)
    ours = make("single")
    step, backend = graphed(*ours, warmup=2)
    backend.capture = refuse
    with pytest.warns(RuntimeWarning, match="capture failed; continuing with eager steps .RuntimeError: operation not permitted"):
        outs_graphed = run_steps(step, ours[1], batches, [0.025] * 5)
    assert step.failure == "RuntimeError: operation not permitted when stream is capturing"
    assert (backend.side_steps, backend.replays) == (2, 0)
    assert_same_outputs(outs_graphed, outs_eager)
    assert_same_state(ours, eager)


def refuse(graph, fn):
    raise RuntimeError("operation not permitted when stream is capturing\nmore detail")


def test_a_failed_capture_in_strict_mode_raises_with_the_reason_and_ran_nothing():
    """on_failure="raise" (``--cuda-graph-strict``): the first capture that fails stops the
    run with the reason; the capture ran nothing, so the state is that of the warm-up steps."""
    batches = [(batch(i), batch(i)) for i in range(3)]
    eager = make("single")
    run_steps(lambda bw, ba: eager[1].step(eager[0], bw, ba), eager[1], batches[:2], [0.025] * 2)
    ours = make("single")
    backend = EmulatedGraphs(*ours)
    step = GraphedStep(*ours, warmup=2, backend=backend, on_failure="raise")
    backend.capture = refuse
    run_steps(step, ours[1], batches[:2], [0.025] * 2)  # the two warm-up steps, eager
    with pytest.raises(CudaGraphCaptureError, match=r"^CUDA graph capture failed at capture 1 "
                       r"\(RuntimeError: operation not permitted when stream is capturing\)$"):
        step(*batches[2])
    assert step.failure == "RuntimeError: operation not permitted when stream is capturing"
    assert isinstance(CudaGraphCaptureError("x"), RuntimeError)
    assert (backend.side_steps, backend.replays, step.captures) == (2, 0, 0)
    assert_same_state(ours, eager)


def test_strict_mode_replays_exactly_as_the_default_mode_when_captures_succeed():
    batches = [(batch(i), batch(i)) for i in range(6)]
    lrs = [0.025] * 3 + [0.02] * 3
    outs = []
    for on_failure in ("warn", "raise"):
        ours = make("single")
        backend = EmulatedGraphs(*ours)
        step = GraphedStep(*ours, warmup=1, backend=backend, on_failure=on_failure)
        outs.append((run_steps(step, ours[1], batches, lrs), ours))
        assert (backend.captures, backend.replays, step.failure) == (2, 5, None)
    assert_same_outputs(outs[0][0], outs[1][0])
    assert_same_state(outs[0][1], outs[1][1])


def test_on_failure_must_be_warn_or_raise():
    model, strategy = make("single")
    with pytest.raises(ValueError, match=r"on_failure must be one of \('warn', 'raise'\), got 'ignore'"):
        GraphedStep(model, strategy, backend=EmulatedGraphs(model, strategy), on_failure="ignore")


@pytest.mark.parametrize("case", ["cpu-model", "adam-not-capturable", "grad-sync", "bilevel-second", "warmup"])
def test_unsupported_setups_are_clear_errors(case):
    level = "bilevel-second" if case == "bilevel-second" else "single"
    kwargs = {"grad_sync": lambda params: None} if case == "grad-sync" else {}
    model, strategy = make(level, capturable=case != "adam-not-capturable", **kwargs)
    expected = {
        "cpu-model": r"model is on cpu: a CUDA graph needs it on a cuda device",
        "adam-not-capturable": r"strategy\.alpha_optimizer \(Adam\) must be built with capturable=True",
        "grad-sync": r"strategy\.grad_sync is set \(DDP\)",
        "bilevel-second": r"strategy 'bilevel-second' cannot run from a CUDA graph",
        "warmup": r"warmup must be at least 1",
    }[case]
    with pytest.raises(ValueError, match=expected):
        GraphedStep(model, strategy, warmup=0 if case == "warmup" else 3)  # the real CUDA backend


class Loader:
    """A fixed list of batches with the loop's loader interface."""

    def __init__(self, batches):
        self.batches = batches

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def search(monkeypatch, cuda_graph):
    model, strategy = make("bilevel")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(strategy.w_optimizer, T_max=3)
    data = SearchData(train=Loader([batch(i) for i in range(3)]), valid=Loader([batch(50)]),
                      alpha=Loader([batch(100 + i) for i in range(2)]))
    backend = EmulatedGraphs(model, strategy)
    monkeypatch.setattr(loop, "GraphedStep", functools.partial(GraphedStep, warmup=2, backend=backend))
    searcher = Searcher(model, strategy, scheduler, data, get_space("nb201"), epochs=3, progress=False, cuda_graph=cuda_graph)
    history = searcher.run()
    return (model, strategy), [{k: v for k, v in r.items() if k not in ("time_s", "elapsed_s")} for r in history], backend


def test_the_search_loop_with_cuda_graph_matches_the_eager_loop(monkeypatch):
    eager, history_eager, _ = search(monkeypatch, cuda_graph=False)
    ours, history_graphed, backend = search(monkeypatch, cuda_graph=True)
    # 9 steps: 2 warm-up, then a graph per epoch (the cosine schedule changes the lr each epoch).
    assert (backend.side_steps, backend.captures, backend.replays) == (2, 3, 7)
    assert [r.pop("cuda_graph") for r in history_graphed] == ["replayed"] * 3  # said in every epoch record
    assert history_graphed == history_eager
    assert_same_state(ours, eager)


def test_the_strict_search_loop_stops_at_the_first_failed_capture(monkeypatch):
    model, strategy = make("bilevel")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(strategy.w_optimizer, T_max=3)
    data = SearchData(train=Loader([batch(i) for i in range(3)]), valid=Loader([batch(50)]),
                      alpha=Loader([batch(100 + i) for i in range(2)]))
    backend = EmulatedGraphs(model, strategy)
    backend.capture = refuse
    monkeypatch.setattr(loop, "GraphedStep", functools.partial(GraphedStep, warmup=2, backend=backend))
    searcher = Searcher(model, strategy, scheduler, data, get_space("nb201"), epochs=3, progress=False,
                        cuda_graph=True, cuda_graph_strict=True)
    assert searcher.graphed.on_failure == "raise"
    with pytest.raises(CudaGraphCaptureError, match="operation not permitted"):
        searcher.run()
    assert searcher.history == [] and backend.side_steps == 2  # stopped in epoch 1, at step 3
    lenient = Searcher(model, strategy, scheduler, data, get_space("nb201"), epochs=1, progress=False, cuda_graph=True)
    assert lenient.graphed.on_failure == "warn"


def test_a_checkpoint_without_capturable_loads_into_a_capturable_adam():
    model, strategy = make("single")
    for i in range(2):
        strategy.step(model, batch(i), batch(i))
    saved = strategy.alpha_optimizer.state_dict()
    assert saved["param_groups"][0]["capturable"] is False

    model_b, strategy_b = make("single", capturable=True)
    loop._load_optimizer(strategy_b.alpha_optimizer, saved)
    group = strategy_b.alpha_optimizer.param_groups[0]
    assert group["capturable"] is True and group["lr"] == 3e-4
    step_count = strategy_b.alpha_optimizer.state[model_b.alpha]["step"]
    assert step_count.dtype == torch.float32 and step_count.device == model_b.alpha.device and float(step_count) == 2.0


def test_the_cli_flag_builds_a_capturable_adam_and_a_graphed_searcher(tmp_path, monkeypatch):
    class Built(Exception):
        pass

    def searcher(model, strategy, *args, **kwargs):
        raise Built(strategy.alpha_optimizer.param_groups[0]["capturable"], kwargs["cuda_graph"], kwargs["cuda_graph_strict"])

    monkeypatch.setattr(assembly, "check_cuda_graph", lambda *args: None)  # the CPU stands in for CUDA
    monkeypatch.setattr(assembly, "Searcher", searcher)
    argv = ["--dataset", "synthetic", "--device", "cpu", "--batch-size", "16", "--init-channels", "4", "--layers", "1",
            "--out", str(tmp_path / "run")]
    for flag, expected in (([], (False, False, False)), (["--cuda-graph"], (True, True, False)),
                           (["--cuda-graph-strict"], (True, True, True)),
                           (["--cuda-graph", "--cuda-graph-strict"], (True, True, True))):
        with pytest.raises(Built) as built:
            cli.main(argv + flag)
        assert built.value.args == expected, flag


def test_the_strict_cli_flag_is_documented_and_a_failed_capture_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--cuda-graph-strict" in help_text and "a failed capture stops the search at once with the reason" in help_text

    def failing_graphs(model, strategy, **kwargs):
        backend = EmulatedGraphs(model, strategy)
        backend.capture = refuse
        return GraphedStep(model, strategy, warmup=1, backend=backend, **kwargs)

    real_adam = torch.optim.Adam
    monkeypatch.setattr(assembly, "check_cuda_graph", lambda *args: None)  # the CPU stands in for CUDA
    # A capturable Adam steps only on CUDA; the emulated graphs re-run Python (needs_capturable=False).
    monkeypatch.setattr(torch.optim, "Adam", lambda *args, capturable=False, **kwargs: real_adam(*args, **kwargs))
    monkeypatch.setattr(loop, "GraphedStep", failing_graphs)
    argv = ["--dataset", "synthetic", "--device", "cpu", "--batch-size", "16", "--init-channels", "4", "--layers", "1",
            "--max-steps-per-epoch", "3", "--epochs", "2", "--out", str(tmp_path / "run"), "--cuda-graph-strict"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("sdarts-search: error: CUDA graph capture failed at capture 1 (RuntimeError: operation not "
                       "permitted when stream is capturing); search stopped (--cuda-graph-strict)"), err


# ---------------------------------------------------------------------------- a real GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("level,edge_kernels,recompute", [
    ("single", "torch", False), ("single", "triton", False), ("bilevel", "torch", False), ("bilevel", "triton", False),
    ("single", "torch", True), ("single", "torch", ("nor_conv_1x1",)),
], ids=["single-torch-edge", "single-triton-edge", "bilevel-torch-edge", "bilevel-triton-edge", "single-recompute",
        "single-recompute-1x1"])
def test_cuda_graph_on_a_real_gpu_matches_eager(level, edge_kernels, recompute):
    """The real capture (CudaGraphs): every op of the step must be capturable (the whole-edge
    recomputation and the 1x1 outputs redone in the edge's backward too), and replays must
    train as eager steps do (deterministic kernels, so to rounding at most)."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        def build():
            torch.manual_seed(0)
            model = build_supernet("nb201", 10, N=1, C=8, recompute=recompute, edge_kernels=edge_kernels).cuda()
            w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
            a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), capturable=True)
            return model, build_strategy(level, w_opt, a_opt, grad_clip=5.0)

        def on_gpu(b):
            return tuple(t.cuda() for t in b)

        same = level == "single"
        batches = [(on_gpu(batch(i, 8, 16)), on_gpu(batch(i if same else 100 + i, 8, 16))) for i in range(8)]
        lrs = [0.025] * 5 + [0.02] * 3
        eager = build()
        outs_eager = run_steps(lambda bw, ba: eager[1].step(eager[0], bw, ba), eager[1], batches, lrs)
        ours = build()
        step = GraphedStep(*ours, warmup=2)
        outs_graphed = run_steps(step, ours[1], batches, lrs)
        torch.cuda.synchronize()
        assert step.failure is None and step.captures == 2
        for (la, ga, wa), (lb, gb, wb) in zip(outs_graphed, outs_eager):
            assert torch.isfinite(la)
            torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-5)
            for k in wa:
                torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)
        for (name, a), b in zip(ours[0].state_dict().items(), eager[0].state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved
