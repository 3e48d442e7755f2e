"""``sdarts-train`` on bad input: one line on stderr (``sdarts-train: error: ...``, naming the
option and what it expected), exit status 2, no traceback, and no run's files lost or changed.

Most cases run the CLI in this process and fail before any data is read; the few real runs
are tiny (synthetic data, one 2-channel cell, one step), and training itself is stubbed out
where only the loop's bookkeeping is under test.  One case needs another process: a second
writer on a run directory held by this one.  Root ignores chmod, so when the tests run as root
the read-only directory is simulated at the system calls (EACCES, as the kernel answers a user).
"""

import contextlib
import errno
import io
import json
import math
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sdarts.cli.train import build_parser
from sdarts.cli.train import main as train_main
from sdarts.run import RunDir
from sdarts.train import loop

PROG = "sdarts-train: error: "
# One 2-channel cell without auxiliary head, one step of 8 synthetic images per epoch.
TINY = ["--dataset", "synthetic", "--layers", "1", "--init-channels", "2", "--auxiliary-weight", "0",
        "--batch-size", "8", "--max-steps-per-epoch", "1", "--seed", "1"]
FLOAT_FLAGS = {"--lr", "--auxiliary-weight", "--drop-path", "--label-smoothing", "--momentum", "--weight-decay", "--grad-clip"}
NB201_CELL = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"


# -- helpers ------------------------------------------------------------------------------


def cli(argv, capsys):
    """sdarts-train in this process: (exit status, the non-empty lines of its stderr)."""
    try:
        code = train_main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def error_line(argv, capsys, *needles) -> str:
    """The one error line of a failing sdarts-train, checked: status 2, one line, each needle in it."""
    code, lines = cli(argv, capsys)
    assert code == 2, (code, lines)
    assert len(lines) == 1, lines
    (line,) = lines
    assert line.startswith(PROG) and "Traceback" not in line, line
    for needle in needles:
        assert needle in line, line
    return line


def snapshot(directory: Path):
    """Every file of ``directory`` with its bytes (what a refused command must leave as it was)."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args)


@pytest.fixture
def no_data_loading(monkeypatch):
    """Fail the test if the data are read or a model is built (the cheap checks come first)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("data loaded / model built before the cheap checks")

    monkeypatch.setattr(loop, "load_train_data", forbidden)
    monkeypatch.setattr(loop, "network_for", forbidden)


@pytest.fixture
def stub_training(monkeypatch):
    """Training and evaluation as instant no-ops with finite metrics (the loop's bookkeeping stays)."""
    monkeypatch.setattr(loop, "train_one_epoch", lambda *a: {"train_loss": 1.0, "train_top1": 0.5})
    monkeypatch.setattr(loop, "evaluate", lambda *a: {"test_loss": 1.0, "test_top1": 0.5, "test_top5": 0.9})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real one-epoch sdarts-train run (treat as read-only: copy it to change it)."""
    out = tmp_path_factory.mktemp("train") / "run"
    try:
        code = quiet(train_main, ["--genotype", "DARTS_V2", "--out", str(out), "--epochs", "1", *TINY])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 0 and (out / "checkpoint.pt").is_file()
    return out


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> Path:
    """A real one-epoch ``sdarts-search --space nb201`` run: config.json, checkpoint.pt, genotype.json."""
    from sdarts.cli.search import main as search_main

    out = tmp_path_factory.mktemp("search") / "run"
    code = quiet(search_main, ["--space", "nb201", "--dataset", "synthetic", "--epochs", "1", "--max-steps-per-epoch", "1",
                               "--batch-size", "8", "--init-channels", "2", "--layers", "1", "--out", str(out)])
    assert code == 0 and (out / "genotype.json").is_file()
    assert json.loads((out / "genotype.json").read_text())["space"] == "nb201"
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def new_run_args(tmp_path, *extra):
    """A new run whose data directory is missing: it can never start training, fixed or not."""
    return ["--genotype", "DARTS_V2", "--out", tmp_path / "out", "--dataset", "cifar10", "--data-dir", tmp_path / "no-data", *extra]


# -- option values ------------------------------------------------------------------------


def test_every_float_option_is_covered():
    floats = {a.option_strings[0] for a in build_parser()._actions if getattr(a.type, "__name__", None) == "float"}
    assert floats == FLOAT_FLAGS


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("flag", sorted(FLOAT_FLAGS))
def test_float_options_reject_non_finite_numbers(flag, value, tmp_path, capsys):
    line = error_line(new_run_args(tmp_path, f"{flag}={value}"), capsys)  # "=": argparse takes -inf for an option
    assert line == f"{PROG}{flag} must be a finite number, got {value}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value, expected", [
    ("--epochs", "0", ">= 1"), ("--epochs", "-3", ">= 1"), ("--epochs", "2.5", "an integer"),
    ("--batch-size", "0", ">= 1"), ("--batch-size", "-8", ">= 1"),
    ("--layers", "0", ">= 1"), ("--init-channels", "0", ">= 1"), ("--init-channels", "-4", ">= 1"),
    ("--max-steps-per-epoch", "0", ">= 1"), ("--lr", "0", "> 0"), ("--lr", "-0.1", "> 0"), ("--lr", "fast", "finite number"),
    ("--cutout", "-1", ">= 0"), ("--warmup-epochs", "-1", ">= 0"), ("--workers", "-1", ">= 0"), ("--seed", "-1", ">= 0"),
    ("--auxiliary-weight", "-0.4", ">= 0"), ("--drop-path", "1", "below 1"), ("--drop-path", "-0.1", ">= 0"),
    ("--label-smoothing", "1.5", "below 1"), ("--momentum", "-0.9", ">= 0"), ("--momentum", "1", "below 1"),
    ("--weight-decay", "-1e-4", ">= 0"), ("--grad-clip", "-5", ">= 0"),
])
def test_nonsensical_numbers_are_rejected(flag, value, expected, tmp_path, capsys):
    error_line(new_run_args(tmp_path, f"{flag}={value}"), capsys, f"{flag} must be", expected, f"got {value}")
    assert not (tmp_path / "out").exists()


def test_too_few_layers_for_the_auxiliary_head(tmp_path, capsys):
    error_line(new_run_args(tmp_path, "--layers", "2"), capsys, "--layers", "--auxiliary-weight 0")
    # Without the head two cells are fine: the next problem is the missing data.
    error_line(new_run_args(tmp_path, "--layers", "2", "--auxiliary-weight", "0"), capsys, "--data-dir")


def test_empty_path_options(tmp_path, capsys):
    for flag in ("--out", "--data-dir"):
        args = new_run_args(tmp_path)
        args[args.index(flag) + 1] = ""
        error_line(args, capsys, f"{flag} is empty")
    error_line(["--resume", ""], capsys, "--resume is empty")
    error_line(["--evaluate", " "], capsys, "--evaluate is empty")


# -- device -------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["gpu", "mps", "cuda:99", "cuda:x"])
def test_device_that_is_not_one_here(device, tmp_path, capsys):
    line = error_line(new_run_args(tmp_path, "--device", device), capsys, "--device")
    assert device in line
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda(tmp_path, capsys, finished_run, no_data_loading):
    error_line(new_run_args(tmp_path, "--device", "cuda"), capsys, "--device cuda", "no CUDA device")
    error_line(["--resume", finished_run, "--device", "cuda"], capsys, "--device cuda")
    error_line(["--evaluate", finished_run / "checkpoint.pt", "--device", "cuda"], capsys, "--device cuda")


# -- data directory -----------------------------------------------------------------------


def test_missing_data_dir(tmp_path, capsys):
    error_line(new_run_args(tmp_path), capsys, f"--data-dir {tmp_path / 'no-data'} does not exist", "cifar-10-batches-py")
    assert not (tmp_path / "out").exists()  # nothing created for a run that cannot start


def test_empty_data_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = ["--genotype", "DARTS_V2", "--out", tmp_path / "out", "--data-dir", tmp_path / "empty"]
    error_line([*args, "--dataset", "cifar10"], capsys, f"--data-dir {tmp_path / 'empty'} holds no cifar10 data")
    error_line([*args, "--dataset", "cifar100"], capsys, "--data-dir", "cifar-100-python")
    error_line([*args, "--dataset", "imagenet"], capsys, "--data-dir", "train/ and val/")
    assert not (tmp_path / "out").exists()


def test_data_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    error_line(["--genotype", "DARTS_V2", "--out", tmp_path / "out", "--data-dir", tmp_path / "file"], capsys,
               "--data-dir", "is not a directory")


def test_missing_default_data_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SDARTS_DATA", str(tmp_path / "nowhere"))
    error_line(["--genotype", "DARTS_V2", "--out", tmp_path / "out"], capsys, "--data-dir", "SDARTS_DATA", "does not exist")


def test_imagenet_needs_data_dir(tmp_path, capsys):
    error_line(["--genotype", "DARTS_V2", "--out", tmp_path / "out", "--dataset", "imagenet"], capsys,
               "--data-dir is required for --dataset imagenet")


def test_corrupt_data_files(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        (data / f"{split}.npz").write_bytes(b"not an npz archive")
    error_line(["--genotype", "DARTS_V2", "--out", tmp_path / "out", "--data-dir", data, "--epochs", "1"], capsys,
               f"--data-dir {data}: cannot read cifar10")
    assert not (tmp_path / "out" / "config.json").exists()


def test_batch_larger_than_the_training_split(tmp_path, capsys):
    error_line(["--genotype", "DARTS_V2", "--out", tmp_path / "out", *TINY, "--batch-size", "100000"], capsys,
               "--batch-size 100000", "too few")


# -- the run directory: --out -------------------------------------------------------------


def test_existing_run_as_out_is_refused_and_left_alone(run_copy, capsys, no_data_loading):
    before = snapshot(run_copy)
    error_line(["--genotype", "DARTS_V2", "--out", run_copy, "--epochs", "1", *TINY], capsys,
               f"--out {run_copy} already holds a run", f"--resume {run_copy}")
    assert snapshot(run_copy) == before


def test_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    error_line(["--genotype", "DARTS_V2", "--out", tmp_path / "file", *TINY], capsys, "--out", "not a directory")
    assert (tmp_path / "file").read_text() == "mine"


def read_only_as_for_a_user(monkeypatch, directories):
    """Root writes anywhere: give it the kernel's answer for a user (EACCES) on creating
    anything in ``directories``, at the two calls that create files and directories."""
    directories = {Path(d) for d in directories}
    real_mkdir, real_open = os.mkdir, os.open

    def denied(path):
        return Path(path).parent in directories

    def mkdir(path, *args, **kwargs):
        if denied(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if denied(path) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


def test_unwritable_out(finished_run, tmp_path, capsys, monkeypatch):
    """chmod 555: a new run below such a directory, and a resume of a run in one."""
    parent = tmp_path / "ro"
    parent.mkdir()
    run = tmp_path / "ro-run"
    shutil.copytree(finished_run, run)
    (run / ".lock").unlink(missing_ok=True)
    before = snapshot(run)
    os.chmod(parent, 0o555)
    os.chmod(run, 0o555)
    try:
        if os.geteuid() == 0:
            read_only_as_for_a_user(monkeypatch, [parent, run])
        error_line(["--genotype", "DARTS_V2", "--out", parent / "run", *TINY], capsys,
                   f"--out: cannot create the run directory {parent / 'run'} (Permission denied)")
        error_line(["--resume", run], capsys, f"--resume: cannot write in the run directory {run} (Permission denied)")
    finally:
        os.chmod(parent, 0o755)
        os.chmod(run, 0o755)
    assert snapshot(run) == before and list(parent.iterdir()) == []


def test_second_writer_on_a_busy_out_fails_fast(tmp_path):
    """Two processes, one run directory: this process holds it, sdarts-train in another must stop at once."""
    out = tmp_path / "out"
    with RunDir(out):
        started = time.time()
        done = subprocess.run([sys.executable, "-m", "sdarts.cli.train", "--genotype", "DARTS_V2", "--out", str(out),
                               "--epochs", "50", *TINY], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        elapsed = time.time() - started
        assert (out / ".lock").read_text().strip() == str(os.getpid())  # the holder's lock is untouched
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(PROG) and f"--out: run directory {out} is in use by another run (PID {os.getpid()})" in lines[0]
    assert not (out / "config.json").exists() and not (out / "metrics.jsonl").exists()
    assert elapsed < 240


# -- --resume -----------------------------------------------------------------------------


def test_resume_of_what_is_not_a_run(tmp_path, capsys, no_data_loading):
    error_line(["--resume", tmp_path / "nowhere"], capsys, f"--resume {tmp_path / 'nowhere'} does not exist")
    (tmp_path / "file").write_text("x")
    error_line(["--resume", tmp_path / "file"], capsys, "--resume", "is not a directory")
    (tmp_path / "empty").mkdir()
    error_line(["--resume", tmp_path / "empty"], capsys, "--resume", "holds no config.json")
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize("content, needle", [
    ("{not json", "cannot read its config.json"),
    ("[1, 2]", 'no "train" settings'),
    ('{"train": {"dataset": "synthetic"}}', "invalid training settings"),
    ('{"train": {"genotype": {"normal": 5}, "dataset": "synthetic"}}', "invalid training settings"),
    ('{"train": {"genotype": "DARTS_V2", "dataset": "synthetic", "lr": NaN}}', "lr must be a finite number"),
    ('{"train": {"genotype": "DARTS_V2", "dataset": "synthetic", "epochs": "ten"}}', "invalid training settings"),
])
def test_resume_with_a_broken_config(content, needle, run_copy, capsys, no_data_loading):
    (run_copy / "config.json").write_text(content)
    before = snapshot(run_copy)
    error_line(["--resume", run_copy], capsys, f"--resume {run_copy}", needle)
    assert snapshot(run_copy) == before


def test_resume_without_checkpoint(run_copy, capsys, no_data_loading):
    (run_copy / "checkpoint.pt").unlink()
    error_line(["--resume", run_copy], capsys, f"--resume {run_copy} holds no checkpoint.pt")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_resume_with_a_corrupt_checkpoint_fails_before_loading_data(damage, run_copy, capsys, no_data_loading):
    ckpt = run_copy / "checkpoint.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "garbage":
        ckpt.write_bytes(b"\x00" * 100)
    else:
        torch.save({"weights": torch.zeros(3)}, ckpt)
    before = snapshot(run_copy)
    line = error_line(["--resume", run_copy], capsys, "--resume", str(ckpt))
    assert ("not a sdarts-train checkpoint" if damage == "foreign" else "cannot read checkpoint") in line
    assert {k: v for k, v in snapshot(run_copy).items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}


def test_resume_with_a_checkpoint_that_does_not_fit(run_copy, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    config["train"]["init_channels"] = 3
    (run_copy / "config.json").write_text(json.dumps(config))
    before = snapshot(run_copy)
    error_line(["--resume", run_copy], capsys, f"--resume {run_copy}", "does not fit")
    assert snapshot(run_copy)["checkpoint.pt"] == before["checkpoint.pt"]


def test_resume_of_a_search_run(search_run, capsys, no_data_loading):
    before = snapshot(search_run)
    error_line(["--resume", search_run], capsys, f"--resume {search_run} is a sdarts-search run",
               f"sdarts-search --resume {search_run}")
    assert snapshot(search_run) == before


def test_resume_of_a_busy_run_fails_before_loading_data(run_copy, capsys, no_data_loading):
    before = snapshot(run_copy)
    with RunDir(run_copy):  # another writer (here: this process, through its own descriptor)
        error_line(["--resume", run_copy], capsys, f"--resume: run directory {run_copy} is in use by another run (PID {os.getpid()})")
    assert snapshot(run_copy) == {**before, ".lock": f"{os.getpid()}\n".encode()}


def test_resume_removes_stale_temp_files(run_copy, capsys):
    stale = [run_copy / ".checkpoint-x1y2.tmp", run_copy / ".metrics.jsonl-abc.tmp"]
    for f in stale:
        f.write_bytes(b"half a write")
    before = snapshot(run_copy)
    code, _ = cli(["--resume", run_copy], capsys)  # all its epochs are done: nothing to train
    assert code == 0
    assert not any(f.exists() for f in stale)
    assert snapshot(run_copy)["checkpoint.pt"] == before["checkpoint.pt"]


def test_new_run_removes_stale_temp_files(tmp_path, capsys, stub_training):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".config.json-q.tmp").write_text("{")
    code, _ = cli(["--genotype", "DARTS_V2", "--out", out, "--epochs", "1", *TINY], capsys)
    assert code == 0 and not (out / ".config.json-q.tmp").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1


# -- --evaluate ---------------------------------------------------------------------------


def test_evaluate_missing_or_corrupt_checkpoint(tmp_path, run_copy, capsys, no_data_loading):
    error_line(["--evaluate", tmp_path / "nothing.pt"], capsys, "--evaluate", "no checkpoint at")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    error_line(["--evaluate", tmp_path / "bad.pt"], capsys, "--evaluate", "cannot read checkpoint")
    ckpt = run_copy / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    error_line(["--evaluate", ckpt], capsys, "--evaluate", "cannot read checkpoint")
    error_line(["--evaluate", run_copy], capsys, f"--evaluate {run_copy} is a directory", "checkpoint.pt")


def test_evaluate_of_a_search_checkpoint(search_run, capsys, no_data_loading):
    error_line(["--evaluate", search_run / "checkpoint.pt"], capsys, "--evaluate", "is a sdarts-search checkpoint",
               "not a sdarts-train one")


def test_evaluate_with_missing_data(finished_run, tmp_path, capsys):
    state = torch.load(finished_run / "checkpoint.pt", weights_only=True)
    state["config"]["dataset"] = "cifar10"
    torch.save(state, tmp_path / "cifar.pt")
    error_line(["--evaluate", tmp_path / "cifar.pt", "--data-dir", tmp_path / "nope"], capsys, "--data-dir", "does not exist")


# -- --genotype ---------------------------------------------------------------------------


def test_nb201_genotype_file_is_named_as_such(search_run, tmp_path, capsys):
    path = search_run / "genotype.json"
    line = error_line(["--genotype", path, "--out", tmp_path / "out"], capsys, "--genotype", str(path),
                      "is an NB201 cell, not a DARTS genotype", "NAS-Bench-201 table")
    assert "neither a file" not in line
    error_line(["--genotype", NB201_CELL, "--out", tmp_path / "out"], capsys, "--genotype", "is an NB201 cell")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, needle", [
    ('{"genotype": 5}', '"genotype" must be a DARTS genotype'),
    ('{"genotype": [1, 2]}', '"genotype" must be a DARTS genotype'),
    ('{"genotype": null}', '"genotype" must be a DARTS genotype'),
    ('{"normal": 5, "normal_concat": [2], "reduce": [], "reduce_concat": [2]}', "expected a list of (op, input) pairs"),
    ('{"normal": []}', "lacks"),
    ('{"genotype": ', "not valid JSON"),
    ("[1, 2]", "got a list"),
    ('{"space": "nb201", "genotype": "|x~0|"}', "NB201"),
])
def test_genotype_json_of_the_wrong_shape(text, needle, tmp_path, capsys):
    error_line(["--genotype", text, "--out", tmp_path / "out"], capsys, "--genotype", needle)


def test_genotype_files_that_hold_no_genotype(tmp_path, capsys):
    (tmp_path / "g.txt").write_text("hello")
    error_line(["--genotype", tmp_path / "g.txt", "--out", tmp_path / "out"], capsys, "--genotype", "holds neither")
    (tmp_path / "g.bin").write_bytes(b"\xff\xfe\x00\x81")
    error_line(["--genotype", tmp_path / "g.bin", "--out", tmp_path / "out"], capsys, "--genotype", "cannot read")
    error_line(["--genotype", tmp_path, "--out", tmp_path / "out"], capsys, "--genotype", "is a directory")


# -- during training: divergence, a full disk ---------------------------------------------


def test_nonfinite_state_is_not_saved(tmp_path, capsys, monkeypatch, stub_training):
    """Epoch 0 is fine, epoch 1 leaves a NaN in one buffer: the error names it, epoch 0's checkpoint stays."""
    poisoned = {}

    def epoch_that_diverges(model, data, optimizer, config, ctx, device, epoch):
        if epoch == 1:
            name, buffer = [(n, b) for n, b in model.named_buffers() if n.endswith("running_var")][1]
            buffer[0] = math.nan
            poisoned["name"] = f"model.{name}"
        return {"train_loss": 1.0, "train_top1": 0.5}

    monkeypatch.setattr(loop, "train_one_epoch", epoch_that_diverges)
    out = tmp_path / "out"
    line = error_line(["--genotype", "DARTS_V2", "--out", out, "--epochs", "3", *TINY], capsys, "is not finite",
                      "the last good checkpoint", "--lr")
    assert f"{poisoned['name']} is not finite after epoch 1" in line
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert not list(out.glob(".*.tmp"))


def test_nonfinite_training_loss(tmp_path, capsys, monkeypatch, stub_training):
    monkeypatch.setattr(loop, "train_one_epoch", lambda *a: {"train_loss": math.nan, "train_top1": 0.0})
    out = tmp_path / "out"
    error_line(["--genotype", "DARTS_V2", "--out", out, "--epochs", "2", *TINY], capsys, "training loss is nan", "--lr",
               "no checkpoint was written")
    assert not (out / "checkpoint.pt").exists()


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch, stub_training):
    real_save = torch.save
    calls = []

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) >= 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    out = tmp_path / "out"
    error_line(["--genotype", "DARTS_V2", "--out", out, "--epochs", "3", *TINY], capsys, f"--out {out}: cannot write checkpoint",
               "No space left on device", "the previous checkpoint there is intact", f"sdarts-train --resume {out}")
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not list(out.glob(".*.tmp"))


def test_errors_leave_the_lock_free_for_the_next_command(run_copy, capsys):
    ckpt = run_copy / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    error_line(["--resume", run_copy], capsys, "cannot read checkpoint")  # fails after taking the lock
    with RunDir(run_copy) as run:  # acquirable again: the refused command let go of it
        assert run.lock_file.read_text().strip() == str(os.getpid())
    assert stat.S_ISREG((run_copy / ".lock").stat().st_mode)
