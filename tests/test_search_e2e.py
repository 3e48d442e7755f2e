"""``sdarts-search`` end to end on synthetic data: the run directory, kill-and-resume, NaN
handling, clear errors, and a 2-process gloo search."""

import csv
import itertools
import json
import os
import subprocess
import sys

import pytest
import torch

from sdarts.nb201 import ACCURACY_COLUMNS
from sdarts.cli import search as cli
from sdarts.search import assembly
from sdarts.search.config import recompute_setting
from sdarts.primitives import NB201
from sdarts.search.strategies import STRATEGIES, SearchStrategy
from sdarts.nb201 import NB201Cell

# A tiny NB201 supernet (C=4, one cell per stage) on 16-image batches, 2 steps per epoch.
TINY = ["--dataset", "synthetic", "--device", "cpu", "--batch-size", "16", "--max-steps-per-epoch", "2",
        "--init-channels", "4", "--layers", "1"]




def run(out, *extra):
    return cli.main([*TINY, "--out", str(out), *extra])


def fake_accuracy(index, column):
    return round(50 + (index * 7919 + ACCURACY_COLUMNS.index(column) * 104729) % 4500 / 100, 3)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A table of every NB201 cell with made-up accuracies (so any derived cell is found)."""
    path = tmp_path_factory.mktemp("table") / "nb201.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "arch_str", *ACCURACY_COLUMNS])
        for index, ops in enumerate(itertools.product(NB201.names, repeat=6)):
            writer.writerow([index, NB201Cell(ops).tostr(), *(fake_accuracy(index, c) for c in ACCURACY_COLUMNS)])
    return path


def checkpoint(run_dir):
    return torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_times(records):
    return [{k: v for k, v in r.items() if k not in ("time_s", "elapsed_s")} for r in records]


def test_help_states_the_paper_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for fragment in ("default: 50", "default: 64", "default: sigmoid", "default: single", "0.005", "0.025",
                     "momentum 0.9", "weight decay 0.0003", "clipped at 5.0", "Adam lr 0.0003", "(0.5, 0.999)",
                     "default: digits"):
        assert fragment in text, fragment


def test_tiny_search_writes_the_run_directory(tmp_path, table, capsys):
    out = tmp_path / "run"
    assert run(out, "--epochs", "2", "--nb201-table", str(table)) == 0
    assert sorted(os.listdir(out)) == [".lock", "checkpoint.pt", "config.json", "genotype.json", "metrics.jsonl"]

    config = json.loads((out / "config.json").read_text())
    assert config["args"]["lr"] == 0.005 and config["args"]["optimizer_level"] == "single"
    assert config["args"]["cuda_graph"] is False
    assert config["versions"]["torch"] == torch.__version__ and config["device"] == "cpu"
    assert config["backend"] in ("cpu", "reference") and config["world_size"] == 1
    assert config["space"]["ops"] == list(NB201.names) and len(config["space"]["edges"]["alpha"]) == 6

    records = metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0]["lr"] == pytest.approx(0.005) and records[1]["lr"] == pytest.approx(0.0025)
    for r in records:
        assert {"train_loss", "train_acc", "valid_loss", "valid_acc", "time_s", "elapsed_s"} <= set(r)
        assert 0 <= r["valid_acc"] <= 100 and r["train_loss"] > 0
        p, grads = torch.tensor(r["p"]["alpha"]), torch.tensor(r["dL_dp"]["alpha"])
        assert p.shape == grads.shape == (6, 5)
        assert torch.all(grads[:, NB201.index("none")] == 0) and grads.abs().sum() > 0  # none: exactly no gradient
        cell = NB201Cell.from_str(r["genotype"])
        assert list(cell.ops) == [NB201.names[k] for k in p.argmax(1).tolist()]
        row = r["benchmark"]
        assert row["index"] == sum(NB201.index(op) * 5 ** (5 - e) for e, op in enumerate(cell.ops))
        assert row["cifar10_test"] == fake_accuracy(row["index"], "cifar10_test")
    # alpha moved from its start (p = 1/5) during the search.
    assert (torch.tensor(records[-1]["p"]["alpha"]) - 0.2).abs().max() > 1e-5

    genotype = json.loads((out / "genotype.json").read_text())
    assert genotype["genotype"] == records[-1]["genotype"] and genotype["benchmark"] == records[-1]["benchmark"]
    state = checkpoint(out)
    assert state["epoch"] == 2 and state["metrics"] == records
    assert set(state) >= {"model", "w_optimizer", "alpha_optimizer", "scheduler", "rng"}
    printed = capsys.readouterr().out
    assert "derived cell: " + records[-1]["genotype"] in printed and "cifar10_test" in printed


class Kill(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("level", ["single", "bilevel"])
def test_resume_after_a_kill_ends_exactly_like_an_uninterrupted_run(tmp_path, monkeypatch, level):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    args = ("--epochs", "2", "--optimizer-level", level)
    assert run(straight, *args) == 0

    # Kill the second run in the middle of epoch 2 (after its first step there).
    strategy_cls = STRATEGIES[level]
    real_step = strategy_cls.step
    calls = []

    def step_then_maybe_die(self, *a):
        calls.append(1)
        if len(calls) == 4:
            raise Kill()
        return real_step(self, *a)

    monkeypatch.setattr(strategy_cls, "step", step_then_maybe_die)
    assert run(killed, *args) == 130
    assert checkpoint(killed)["epoch"] == 1 and len(metrics(killed)) == 1
    monkeypatch.setattr(strategy_cls, "step", real_step)

    assert cli.main(["--resume", str(killed)]) == 0
    a, b = checkpoint(straight), checkpoint(killed)
    assert torch.equal(a["model"]["alpha"], b["model"]["alpha"])
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert without_times(metrics(straight)) == without_times(metrics(killed))
    assert json.loads((straight / "genotype.json").read_text()) == json.loads((killed / "genotype.json").read_text())


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real = SearchStrategy.forward_loss
    calls = []

    def nan_from_epoch_two(self, model, batch):
        calls.append(1)
        loss, logits = real(self, model, batch)
        return (loss * float("nan") if len(calls) > 2 else loss), logits

    monkeypatch.setattr(SearchStrategy, "forward_loss", nan_from_epoch_two)
    out = tmp_path / "run"
    assert run(out, "--epochs", "3") == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("sdarts-search: error: non-finite loss at epoch 2, step 1")
    assert f"last good checkpoint is {out / 'checkpoint.pt'} (epoch 1)" in last_line
    assert checkpoint(out)["epoch"] == 1 and len(metrics(out)) == 1
    assert all(torch.isfinite(t).all() for t in checkpoint(out)["model"].values() if t.is_floating_point())


def write_bad_table(path):
    path.write_text("arch_str,cifar10_test\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,10.0\n")
    return path


@pytest.mark.parametrize("case", ["no-out", "dataset", "data-dir", "table-columns", "table-missing", "table-space",
                                  "backend", "resume-empty", "resume-garbage", "resume-flag", "out-taken", "epochs",
                                  "cuda-graph-cpu", "cuda-graph-second", "recompute-name",
                                  "eval-batch"])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, capsys, case):
    base = [*TINY, "--out", str(tmp_path / "run")]
    if case in ("resume-garbage", "resume-flag", "out-taken"):
        assert cli.main([*base, "--epochs", "1"]) == 0
        capsys.readouterr()
    argv, expected = {
        "no-out": (TINY, "--out RUN_DIR is required"),
        "dataset": ([*base, "--dataset", "mnist"], "unknown dataset 'mnist'"),
        "data-dir": ([*base, "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere")], "does not exist"),
        "table-columns": ([*base, "--nb201-table", str(write_bad_table(tmp_path / "t.csv"))], "lacks the column"),
        "table-missing": ([*base, "--nb201-table", str(tmp_path / "none.csv")], "no such NAS-Bench-201 table"),
        "table-space": ([*base, "--space", "darts", "--nb201-table", "x.csv"], "--nb201-table needs --space nb201"),
        "backend": ([*base, "--backend", "cuda"], "not available"),
        "resume-empty": (["--resume", str(tmp_path)], "no checkpoint.pt"),
        "resume-garbage": (["--resume", str(tmp_path / "run")], "cannot read checkpoint"),
        "resume-flag": (["--resume", str(tmp_path / "run"), "--seed", "3"], "--seed 3 differs from the resumed run's 0"),
        "out-taken": (base, "already holds a run"),
        "epochs": ([*base, "--epochs", "0"], "--epochs must be at least 1"),
        "cuda-graph-cpu": ([*base, "--cuda-graph"], "--cuda-graph needs a CUDA device, got --device cpu"),
        "cuda-graph-second": ([*base, "--cuda-graph", "--optimizer-level", "bilevel-second"],
                              "--cuda-graph does not support --optimizer-level bilevel-second"),
        "eval-batch": ([*base, "--eval-batch-size", "0"], "--eval-batch-size must be at least 1"),
        "recompute-name": ([*base, "--recompute", "sep_conv_3x3"], "--recompute sep_conv_3x3: not a candidate of the nb201"),
    }[case]
    if case == "resume-garbage":
        (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sdarts-search: error: ") and expected in err[0], err


@pytest.mark.parametrize("flags,ops,expected", [
    # On the CPU: NB201's 1x1 convolutions and the DARTS SepConvs, unless told otherwise.
    ([], ("nor_conv_1x1", "nor_conv_3x3"), (True, False)),
    (["--no-recompute"], ("nor_conv_1x1", "nor_conv_3x3"), (False, False)),
    (["--recompute"], ("nor_conv_1x1", "nor_conv_3x3"), (True, True)),
    (["--recompute", "nor_conv_3x3"], ("nor_conv_1x1", "nor_conv_3x3"), (False, True)),
    (["--space", "darts"], ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3"), (True, True, False)),
    (["--space", "darts", "--no-recompute"], ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3"), (False, False, False)),
], ids=["nb201-cpu-default", "nb201-no-recompute", "all", "named", "darts-cpu-default", "darts-no-recompute"])
def test_recompute_flag_reaches_every_mixed_op(tmp_path, monkeypatch, flags, ops, expected):
    """--recompute: every candidate; --recompute OP...: those only; --no-recompute: none."""
    built = []
    original = assembly.build_model
    monkeypatch.setattr(assembly, "build_model", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    assert run(tmp_path / "run", "--epochs", "1", *flags) == 0
    edges = [m for m in built[0].modules() if type(m).__name__ == "MixedOp"]
    names = edges[0].primitives.names
    assert {tuple(e._recomputed[names.index(n)] for n in ops) for e in edges} == {expected}
    # The saved setting (what --resume uses) is the resolved one, not the "default" marker.
    saved = recompute_setting(json.loads((tmp_path / "run" / "config.json").read_text())["args"]["recompute"])
    assert tuple(saved if isinstance(saved, bool) else n in saved for n in ops) == expected


def test_unknown_space_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--space", "nasnet", "--out", "x"])
    assert exit_info.value.code == 2 and "invalid choice: 'nasnet'" in capsys.readouterr().err


def test_two_process_gloo_search_keeps_alpha_identical_on_every_rank(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sdarts.cli.search", *TINY, "--out", str(out), "--epochs", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["batch_per_process"] == 8
    records = metrics(out)
    assert [r["alpha_rank_spread"] for r in records] == [0.0, 0.0]
    assert (torch.tensor(records[-1]["p"]["alpha"]) - 0.2).abs().max() > 1e-5
    assert done.stdout.count("derived cell:") == 1  # only rank 0 prints
