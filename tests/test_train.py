"""Retraining: recipes and schedules, cutout, and short real runs of ``sdarts-train`` on the
built-in synthetic data (kill-and-resume, two gloo ranks, checkpoint evaluation)."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sdarts.cli.train import main as train_main
from sdarts.train import TrainConfig, cutout, evaluate_checkpoint, fit, make_config
from sdarts.train.recipes import drop_path_prob, learning_rate

GENOTYPE = {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1], ["max_pool_3x3", 0], ["dil_conv_3x3", 2],
                       ["skip_connect", 2], ["avg_pool_3x3", 1], ["sep_conv_5x5", 3], ["skip_connect", 0]],
            "normal_concat": [2, 3, 4, 5],
            "reduce": [["max_pool_3x3", 0], ["sep_conv_3x3", 1], ["skip_connect", 2], ["avg_pool_3x3", 1],
                       ["dil_conv_5x5", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
            "reduce_concat": [2, 3, 4, 5]}
# A tiny network (3 cells, C=4, auxiliary head on) and 2 steps of 32 synthetic images per epoch.
TINY = ["--dataset", "synthetic", "--layers", "3", "--init-channels", "4", "--batch-size", "32",
        "--max-steps-per-epoch", "2", "--seed", "3"]


def tiny_config(epochs: int) -> TrainConfig:
    return make_config(GENOTYPE, "synthetic", layers=3, init_channels=4, batch_size=32, max_steps_per_epoch=2, seed=3, epochs=epochs)


def single_thread_env():
    # One thread per process: the runs are tiny, and equal thread counts keep CPU results bitwise equal.
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_cutout_zeroes_one_clipped_square_per_image():
    torch.manual_seed(0)
    out = cutout(torch.ones(200, 2, 20, 20), 6)
    holes = out == 0
    assert torch.equal(holes[:, 0], holes[:, 1])  # the same square in every channel
    for hole in holes[:, 0]:
        rows, cols = hole.any(1), hole.any(0)
        assert torch.equal(hole, rows[:, None] & cols[None, :])  # a rectangle
        for axis in (rows, cols):
            idx = axis.nonzero().flatten()
            assert 3 <= len(idx) <= 6 and idx[-1] - idx[0] + 1 == len(idx)
    sizes = holes[:, 0].sum((1, 2))
    assert (sizes == 36).any() and (sizes < 36).any()  # some inside, some clipped at a border
    x = torch.randn(2, 3, 8, 8)
    assert cutout(x, 0) is x


def test_cosine_schedule_and_linear_drop_path():
    c = tiny_config(epochs=10)
    lrs = [learning_rate(c, e, 0.1) for e in range(10)]
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.9)))
    assert [drop_path_prob(c, e) for e in (0, 5)] == [0.0, pytest.approx(0.15)]


def test_imagenet_recipe_linear_schedule_warmup_and_lr_scaling():
    c = make_config(GENOTYPE, "imagenet", epochs=100)
    assert (c.layers, c.init_channels, c.label_smoothing, c.weight_decay, c.warmup_epochs) == (14, 48, 0.1, 3e-5, 5)
    peak = c.resolved_lr(world_size=8)
    assert peak == pytest.approx(0.5)  # 8 x 128 = 1024 images at lr 0.5
    assert c.resolved_lr(world_size=1) == pytest.approx(0.0625)
    assert make_config(GENOTYPE, "imagenet", lr=0.2).resolved_lr(world_size=8) == 0.2
    warm = [learning_rate(c, e, peak) for e in range(5)]
    assert warm == [pytest.approx(peak * (1 - e / 100) * (e + 1) / 5) for e in range(5)]
    assert learning_rate(c, 50, peak) == pytest.approx(peak / 2)
    cifar = make_config(GENOTYPE, "cifar10")
    assert (cifar.layers, cifar.init_channels, cifar.cutout, cifar.drop_path, cifar.epochs) == (20, 36, 16, 0.3, 600)
    assert cifar.resolved_lr(world_size=1) == pytest.approx(0.025)


@pytest.mark.parametrize("field, value", [("drop_path", 1.0), ("lr_schedule", "step"), ("epochs", 0), ("lr", -1.0)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config(epochs=1).__class__(**{**tiny_config(epochs=1).to_json(), field: value})


def test_cli_needs_exactly_one_mode(capsys):
    with pytest.raises(SystemExit):
        train_main([])
    with pytest.raises(SystemExit):
        train_main(["--genotype", "DARTS_V2"])  # no --out
    with pytest.raises(SystemExit):
        train_main(["--genotype", "NOT_A_GENOTYPE", "--out", "x"])
    assert "NOT_A_GENOTYPE" in capsys.readouterr().err


def fit_single_thread(config, out, **kwargs):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fit(config, out, log=lambda _: None, **kwargs)
    finally:
        torch.set_num_threads(threads)


def test_kill_and_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    epochs = 3
    fit_single_thread(tiny_config(epochs), tmp_path / "straight")
    with pytest.raises(FileExistsError, match="--resume"):
        fit_single_thread(tiny_config(epochs), tmp_path / "straight")

    # The CLI in its own process, SIGKILLed as soon as its first checkpoint is on disk.
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sdarts.cli.train", "--genotype", json.dumps(GENOTYPE), "--out", str(killed),
           "--epochs", str(epochs), *TINY]
    proc = subprocess.Popen(cmd, env=single_thread_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "checkpoint.pt").exists(), proc.stderr.read().decode()[-2000:]
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["epoch"] < epochs  # killed mid-run
    with open(killed / "config.json") as f:
        config = TrainConfig.from_json(json.load(f)["train"])
    assert config == tiny_config(epochs)
    fit_single_thread(config, killed, resume=True)

    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == epochs
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "straight" / "metrics.jsonl")) == strip(read_jsonl(killed / "metrics.jsonl"))

    last = read_jsonl(killed / "metrics.jsonl")[-1]
    result = evaluate_checkpoint(killed / "checkpoint.pt")
    assert result["epoch"] == epochs
    assert result["test_top1"] == pytest.approx(last["test_top1"]) and result["test_top5"] == pytest.approx(last["test_top5"])


def test_two_gloo_ranks_keep_identical_parameters(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "sdarts.cli.train",
           "--genotype", "DARTS_V2", "--out", str(out), "--epochs", "1", *TINY]
    done = subprocess.run(cmd, env=single_thread_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = read_jsonl(out / "metrics.jsonl")  # one line: only rank 0 writes
    assert record["rank_param_spread"] == 0.0
    with open(out / "config.json") as f:
        config = json.load(f)
    assert config["world_size"] == 2 and config["global_batch"] == 64
    assert config["peak_lr"] == pytest.approx(0.025 * 64 / 128)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and not any(k.startswith("module.") for k in state["model"])
