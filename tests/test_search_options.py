"""The settings the paper's tables vary: alpha's optimizer and lr, the derivation rule, the
gradient-correlation probe, and where lookups and logs go."""

import json

import pytest
import torch

from sdarts.cli import search as cli
from sdarts.search import ConfigError, SearchConfig, run_search
from sdarts.search.assembly import build_alpha_optimizer, build_model
from sdarts.search.tensorboard_log import tensorboard_available
from sdarts.spaces import build_supernet

TINY = dict(dataset="synthetic", device="cpu", batch_size=8, max_steps_per_epoch=3, init_channels=4, layers=1, eval_batch_size=16)


def test_alpha_optimizer_adam_by_default_sgd_at_ws_lr_unless_given():
    model = build_model(SearchConfig(init_channels=4, layers=1).resolved(torch.device("cpu")), 10, torch.device("cpu"))
    adam = build_alpha_optimizer(SearchConfig().resolved(torch.device("cpu")), model)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 3e-4 and adam.defaults["betas"] == (0.5, 0.999)
    sgd_config = SearchConfig(alpha_optimizer="sgd", lr=0.025).resolved(torch.device("cpu"))
    sgd = build_alpha_optimizer(sgd_config, model)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["lr"] == 0.025 and sgd.defaults["momentum"] == 0.9
    assert sgd_config.hyperparameters()["alpha"] == {"optimizer": "SGD", "lr": 0.025, "schedule": "constant",
                                                     "momentum": 0.9, "weight_decay": 0.0}
    given = SearchConfig(alpha_optimizer="sgd", alpha_lr=0.001).resolved(torch.device("cpu"))
    assert build_alpha_optimizer(given, model).defaults["lr"] == 0.001


def test_an_sgd_alpha_search_moves_alpha_by_sgd(tmp_path):
    result = run_search(SearchConfig(out=str(tmp_path / "r"), epochs=1, alpha_optimizer="sgd", alpha_lr=0.05, **TINY), progress=False)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["hyperparameters"]["alpha"]["optimizer"] == "SGD" and saved["args"]["alpha_lr"] == 0.05
    init = torch.full((6, 5), -torch.log(torch.tensor(4.0)).item())
    p = torch.tensor(result.history[-1]["p"]["alpha"])
    assert not torch.allclose(p, torch.sigmoid(init))


def test_exclude_none_never_derives_none_and_both_cells_are_logged(tmp_path):
    model = build_supernet("nb201", 10, C=4, N=1)
    with torch.no_grad():
        model.alpha.zero_()
        model.alpha[:, 0] = 5.0  # none leads on every edge
        model.alpha[0, 3] = 6.0  # but not on edge 0
    assert str(model.genotype()).count("none~") == 5
    assert "none~" not in str(model.genotype("exclude-none"))
    with pytest.raises(ValueError, match="derive must be one of argmax, exclude-none"):
        model.genotype("best")
    result = run_search(SearchConfig(out=str(tmp_path / "r"), epochs=1, derive="exclude-none", **TINY), progress=False)
    last = result.history[-1]
    assert last["derive"] == "exclude-none" and set(last["cells"]) == {"argmax", "exclude-none"}
    assert last["genotype"] == last["cells"]["exclude-none"] == result.genotype and "none~" not in result.genotype
    saved = json.loads((tmp_path / "r" / "genotype.json").read_text())
    assert saved["derive"] == "exclude-none" and saved["cells"] == last["cells"]


def test_darts_space_derives_the_same_cell_by_both_rules():
    model = build_supernet("darts", 10, C=4, layers=2)
    with torch.no_grad():
        model.alpha_normal.normal_()
    assert model.genotype("argmax") == model.genotype("exclude-none") == model.genotype()


def test_grad_correlation_is_logged_every_n_steps_for_the_chosen_edges(tmp_path):
    result = run_search(SearchConfig(out=str(tmp_path / "r"), epochs=2, grad_correlation_every=2, **TINY), progress=False)
    for record in result.history:
        probes = record["grad_correlation"]
        assert [p["step"] for p in probes] == [0, 2]  # 3 steps per epoch: before steps 0 and 2
        edges = [k for k in probes[0] if k != "step"]
        assert len(edges) == 18 and edges[0] == "cell0/1<-0"  # every edge of the first, middle, last cell
        assert all(-1.0 <= p[k] <= 1.0 for p in probes for k in edges)
    quiet = run_search(SearchConfig(out=str(tmp_path / "q"), epochs=2, **TINY), progress=False)
    assert "grad_correlation" not in quiet.history[-1]
    # The probe changes nothing of the search itself.
    assert quiet.history[-1]["p"] == result.history[-1]["p"] and quiet.genotype == result.genotype


@pytest.mark.parametrize("changes,expected", [
    (dict(alpha_optimizer="rmsprop"), "--alpha-optimizer must be one of adam, sgd"),
    (dict(alpha_lr=0.0), "--alpha-lr must be positive"),
    (dict(alpha_lr=float("inf")), "--alpha-lr must be a finite number"),
    (dict(derive="best"), "--derive must be one of argmax, exclude-none"),
    (dict(grad_correlation_every=0), "--grad-correlation-every must be at least 1"),
    (dict(benchmark_api="nats_bench"), "--benchmark-api needs --benchmark-file"),
    (dict(benchmark_api="nats_bench", benchmark_file="f", space="darts"), "--benchmark-api needs --space nb201"),
    (dict(benchmark_api="nats_bench", benchmark_file="f", nb201_table="t.csv"), "give one"),
    (dict(benchmark_api="bogus", benchmark_file="f"), "--benchmark-api must be one of auto, nats_bench, nas_201_api"),
    (dict(benchmark_file="f"), "--benchmark-file needs --benchmark-api"),
])
def test_bad_new_settings_are_one_line_naming_the_flag(tmp_path, changes, expected):
    with pytest.raises(ConfigError, match=expected):
        SearchConfig(out=str(tmp_path / "r"), **changes).validate()


def test_a_run_saved_before_these_settings_reloads_with_the_papers_defaults():
    old = {k: v for k, v in SearchConfig(out="r").to_json().items()
           if k not in ("alpha_optimizer", "alpha_lr", "derive", "grad_correlation_every", "tensorboard", "benchmark_api",
                        "benchmark_file")}
    config = SearchConfig.from_saved(old)
    config.validate()
    assert (config.alpha_optimizer, config.derive, config.grad_correlation_every, config.tensorboard) == ("adam", "argmax", None, False)
    assert config.alpha_lr == config.resolved(torch.device("cpu")).alpha_lr == 3e-4


def test_resuming_a_run_saved_before_alpha_lr_accepts_its_default_given_again(tmp_path, capsys):
    out = tmp_path / "r"
    tiny = ["--dataset", "synthetic", "--device", "cpu", "--epochs", "1", "--batch-size", "8", "--max-steps-per-epoch", "2",
            "--init-channels", "4", "--layers", "1"]
    assert cli.main(["--out", str(out), *tiny]) == 0
    saved = json.loads((out / "config.json").read_text())
    del saved["args"]["alpha_lr"]  # as a run directory written before the setting existed
    (out / "config.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert cli.main(["--resume", str(out), "--alpha-lr", "0.0003"]) == 0
    assert cli.main(["--resume", str(out), "--alpha-lr", "0.001"]) == 2
    assert "--alpha-lr 0.001 differs from the resumed run's 0.0003" in capsys.readouterr().err


def test_cli_flags_reach_the_config(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["--out", str(out), "--dataset", "synthetic", "--device", "cpu", "--epochs", "1", "--batch-size", "8",
                     "--max-steps-per-epoch", "2", "--init-channels", "4", "--layers", "1", "--alpha-optimizer", "sgd",
                     "--alpha-lr", "0.01", "--derive", "exclude-none", "--grad-correlation-every", "5"]) == 0
    args = json.loads((out / "config.json").read_text())["args"]
    assert (args["alpha_optimizer"], args["alpha_lr"], args["derive"], args["grad_correlation_every"]) == ("sgd", 0.01, "exclude-none", 5)
    capsys.readouterr()
    assert cli.main(["--resume", str(out), "--derive", "argmax"]) == 2
    assert "--derive argmax differs from the resumed run's exclude-none" in capsys.readouterr().err


@pytest.mark.skipif(tensorboard_available(), reason="tensorboard is installed here: the missing-package error cannot show")
def test_tensorboard_without_the_package_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["--out", str(tmp_path / "r"), "--dataset", "synthetic", "--device", "cpu", "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "sdarts-search: error: --tensorboard needs the tensorboard package (pip install tensorboard)"
