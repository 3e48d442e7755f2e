"""``sdarts-search`` never corrupts a run: one writer per run directory, only finite
checkpoints, no temporary files left behind, finite settings, no silently dropped flags, a
failed write that keeps the previous checkpoint, and a derived cell that says how decided
it is."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from sdarts.cli import search as cli
from sdarts.search import assembly
from sdarts.search.decision import UNDECIDED_MARGIN, edge_decisions, verdict
from sdarts.search.loop import Searcher
from sdarts.run.run_dir import RunDir, RunDirBusy
from sdarts.search.strategies import SearchStrategy

TINY = ["--dataset", "synthetic", "--device", "cpu", "--batch-size", "16", "--max-steps-per-epoch", "2",
        "--init-channels", "4", "--layers", "1"]


def run(out, *extra):
    return cli.main([*TINY, "--out", str(out), *extra])


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing on stderr"
    return err[-1]


def checkpoint(run_dir):
    return torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# -- one writer per run directory ---------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from sdarts.run.run_dir import RunDir
    RunDir(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


@pytest.fixture
def holder(tmp_path):
    """Another process that owns tmp_path/run (a live search, as far as the lock can tell)."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield out, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_run_into_a_live_run_directory_fails_naming_the_holder(holder, capsys, monkeypatch):
    out, proc = holder
    # The lock is checked before the data are loaded: a second run fails in a moment.
    monkeypatch.setattr(assembly, "build_data", lambda *a: pytest.fail("data loaded before the run directory was owned"))
    assert run(out, "--epochs", "1") == 2
    line = error_line(capsys)
    assert line.startswith(f"sdarts-search: error: --out: run directory {out} is in use by another run (PID {proc.pid})")
    assert not (out / "config.json").exists() and not (out / "metrics.jsonl").exists()


def test_resume_while_the_run_is_alive_fails_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(out, "--epochs", "1") == 0
    before = (out / "metrics.jsonl").read_text()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        capsys.readouterr()
        assert cli.main(["--resume", str(out)]) == 2
        assert f"--resume: run directory {out} is in use by another run (PID {proc.pid})" in error_line(capsys)
        assert (out / "metrics.jsonl").read_text() == before
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_dies_with_its_process_even_under_kill_9(holder):
    out, proc = holder
    with pytest.raises(RunDirBusy):
        RunDir(out).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with RunDir(out) as run:  # free again
        assert (out / ".lock").read_text().strip() == str(os.getpid())
        assert run.path == out


def test_an_uncreatable_out_is_one_line_before_any_data(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setattr(assembly, "build_data", lambda *a: pytest.fail("data loaded before --out was checked"))
    assert run(blocker / "run") == 2
    line = error_line(capsys)
    assert line.startswith("sdarts-search: error: --out: cannot create the run directory") and "Not a directory" in line


# -- temporary files, failed writes --------------------------------------------------------

def test_temporary_files_of_killed_writes_are_removed_on_start_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".checkpoint-dead1.tmp").write_bytes(b"x" * 100)
    assert run(out, "--epochs", "1") == 0
    assert "removed 1 temporary file(s)" in capsys.readouterr().err
    (out / ".checkpoint-dead2.tmp").write_bytes(b"x")
    (out / ".metrics.jsonl-dead3.tmp").write_bytes(b"x")
    assert cli.main(["--resume", str(out)]) == 0  # nothing left to train, but it owns and cleans the directory
    assert "removed 2 temporary file(s)" in capsys.readouterr().err
    assert not list(out.glob(".*.tmp"))


def test_a_failed_checkpoint_write_says_the_previous_one_is_intact(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save, saves = torch.save, []

    def disk_full_on_second_save(obj, f, *a, **k):
        saves.append(1)
        if len(saves) == 2:  # torch's zip writer reports a full disk like this
            raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/3: file write failed")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", disk_full_on_second_save)
    assert run(out, "--epochs", "3") == 2
    line = error_line(capsys)
    assert line.startswith(f"sdarts-search: error: cannot write checkpoint {out / 'checkpoint.pt'}")
    assert line.endswith("the previous checkpoint there is intact")
    monkeypatch.setattr(torch, "save", real_save)
    assert checkpoint(out)["epoch"] == 1 and len(metrics(out)) == 1
    assert not list(out.glob(".*.tmp"))
    assert cli.main(["--resume", str(out)]) == 0 and checkpoint(out)["epoch"] == 3


# -- finite or nothing ---------------------------------------------------------------------

def test_a_non_finite_batchnorm_statistic_is_never_checkpointed(tmp_path, capsys, monkeypatch):
    """A finite loss can leave inf BatchNorm statistics (--lr 3e4 does): that state must not
    become the "last good" checkpoint."""
    real, calls = Searcher.evaluate, []

    def poison_running_var_in_epoch_two(self):
        calls.append(1)
        if len(calls) == 2:
            bn = next(m for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.running_var is not None)
            bn.running_var.fill_(float("inf"))
        return real(self)

    monkeypatch.setattr(Searcher, "evaluate", poison_running_var_in_epoch_two)
    out = tmp_path / "run"
    assert run(out, "--epochs", "3") == 2
    line = error_line(capsys)
    assert "non-finite value at the end of epoch 2 in model." in line and "running_var" in line
    assert f"last good checkpoint is {out / 'checkpoint.pt'} (epoch 1)" in line
    state = checkpoint(out)
    assert state["epoch"] == 1 and len(metrics(out)) == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_resuming_a_non_finite_checkpoint_is_refused(tmp_path, capsys):
    """(Older versions wrote such checkpoints.)"""
    out = tmp_path / "run"
    assert run(out, "--epochs", "1") == 0
    state = checkpoint(out)
    state["model"]["alpha"][0, 0] = float("nan")
    torch.save(state, out / "checkpoint.pt")
    capsys.readouterr()
    assert cli.main(["--resume", str(out)]) == 2
    assert "holds a non-finite value in model.alpha" in error_line(capsys)


def test_a_diverging_search_warns(tmp_path, capsys, monkeypatch):
    real = SearchStrategy.forward_loss

    def huge_loss(self, model, batch):
        loss, logits = real(self, model, batch)
        return loss * 1e4, logits  # finite, but far beyond any sane cross-entropy

    monkeypatch.setattr(SearchStrategy, "forward_loss", huge_loss)
    out = tmp_path / "run"
    assert run(out, "--epochs", "1") == 0
    err = capsys.readouterr()
    assert "sdarts: warning: epoch 1: the search is diverging (train loss" in err.err
    assert metrics(out)[0]["warning"].startswith("diverging: train loss")
    assert "warning: epoch 1: diverging" in err.out


# -- settings -------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,value", [("--lr", "nan"), ("--lr", "inf"), ("--lr", "-inf"), ("--alpha-init", "nan"),
                                        ("--data-fraction", "nan"), ("--lr", "fast")])
def test_non_finite_numbers_are_rejected(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        run(tmp_path / "run", f"{flag}={value}")  # "=": argparse takes a bare -inf for an option
    assert exc.value.code == 2
    line = error_line(capsys)
    assert f"argument {flag}: " in line and value in line
    assert not (tmp_path / "run").exists()


def test_resume_refuses_another_out_and_any_contradicting_flag(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(out, "--epochs", "1") == 0
    capsys.readouterr()
    assert cli.main(["--resume", str(out), "--out", str(tmp_path / "other")]) == 2
    assert "--out " in (line := error_line(capsys)) and "stays in its own directory" in line
    # --epochs 50 is the default value: before, it was dropped without a word.
    assert cli.main(["--resume", str(out), "--epochs", "50"]) == 2
    assert "--epochs 50 differs from the resumed run's 1" in error_line(capsys)
    # The same directory, and flags that agree with the run, are fine.
    assert cli.main(["--resume", str(out), "--out", str(out), "--epochs", "1", "--device", "cpu"]) == 0


# -- a derived cell that says how decided it is ----------------------------------------------

def test_a_barely_trained_cell_is_reported_as_not_decided(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(out, "--epochs", "1") == 0
    printed = capsys.readouterr().out
    assert "cell NOT decided: 6 of 6 edges lead by less than" in printed
    saved = json.loads((out / "genotype.json").read_text())
    assert saved["decided"] is False and saved["verdict"].startswith("cell NOT decided")
    assert len(saved["edges"]) == 6 and all(e["margin"] < UNDECIDED_MARGIN for e in saved["edges"])


def test_edge_decisions_margins_and_the_sigmoid_none_artefact():
    ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    init = -torch.log(torch.tensor(4.0)).item()  # p = 1/5 under sigmoid
    alpha = torch.full((3, 5), init)
    alpha[0, 3] = 2.0   # edge 0: conv3x3 clearly ahead
    alpha[1, 1:] = -3.0  # edge 1: everything but none fell below 1/5; none untouched
    alpha[2, 2] = init + 0.01  # edge 2: a hair ahead
    p = {"alpha": torch.sigmoid(alpha)}
    d = edge_decisions(p, {"alpha": alpha}, {"alpha": ("1<-0", "2<-0", "2<-1")}, ops,
                       skip_none=False, activation="sigmoid", initial_alpha=init)
    assert [x.op for x in d] == ["nor_conv_3x3", "none", "nor_conv_1x1"]
    assert d[0].decided and abs(d[0].margin - (float(p["alpha"][0, 3]) - float(p["alpha"][0, 0]))) < 1e-12
    assert d[1].none_by_default and not d[1].decided
    assert not d[2].decided and d[2].margin < 0.01
    text = verdict(d)
    assert text.startswith("cell NOT decided: 2 of 3 edges") and "'none' wins only because" in text
    # DARTS never derives none: it is neither winner nor runner-up.
    d = edge_decisions(p, {"alpha": alpha}, {"alpha": ("a", "b", "c")}, ops,
                       skip_none=True, activation="sigmoid", initial_alpha=init)
    assert all(x.op != "none" and x.runner_up != "none" for x in d)


# -- bad files: the flag and the file named, before the data are loaded -----------------------

@pytest.mark.parametrize("flag,expected", [("--split-file", "not a text split file"),
                                           ("--nb201-table", "not a text CSV table")])
def test_a_binary_split_file_or_table_names_flag_and_file(tmp_path, capsys, monkeypatch, flag, expected):
    binary = tmp_path / "binary"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    monkeypatch.setattr(assembly, "build_data", lambda *a: pytest.fail("data loaded before the small files were checked"))
    assert run(tmp_path / "run", flag, str(binary)) == 2
    line = error_line(capsys)
    assert line.startswith(f"sdarts-search: error: {flag}: ") and str(binary) in line and expected in line


def test_a_full_disk_while_writing_a_run_file_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    from sdarts.run import run_dir as run_dir_module

    with RunDir(tmp_path / "run") as run:
        run.write_config({"a": 1})

        def no_space(*a):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(run_dir_module.os, "replace", no_space)
        with pytest.raises(run_dir_module.RunDirError, match=r"config.json \(No space left on device\); its previous version is intact"):
            run.write_config({"a": 2})
        assert json.loads(run.config.read_text()) == {"a": 1} and not list(run.path.glob(".*.tmp"))
