"""The library's search: a SearchConfig value and run_search, with no command line."""

import json

import pytest

from sdarts.search import ConfigError, SearchConfig, run_search
from sdarts.search.assembly import load_run_config

TINY = dict(dataset="synthetic", device="cpu", batch_size=16, max_steps_per_epoch=2, init_channels=4, layers=1)


def test_run_search_returns_the_run_directorys_result(tmp_path):
    config = SearchConfig(out=str(tmp_path / "run"), epochs=2, **TINY)
    result = run_search(config, progress=False)
    saved = json.loads((tmp_path / "run" / "genotype.json").read_text())
    assert result.genotype == saved["genotype_str"] and result.decided is saved["decided"] is False
    assert [r["epoch"] for r in result.history] == [1, 2] and len(result.decisions) == 6
    # The run directory's config is the resolved config: it reloads as one and resumes.
    again = load_run_config(str(tmp_path / "run"))
    assert again == config.replace(lr=0.005, channels_last=True, recompute=["nor_conv_1x1"], alpha_lr=3e-4)
    assert run_search(again, resume=True, progress=False).genotype == result.genotype


def test_the_defaults_are_the_papers():
    c = SearchConfig()
    assert (c.space, c.optimizer_level, c.activation, c.epochs, c.batch_size) == ("nb201", "single", "sigmoid", 50, 64)
    assert c.hyperparameters()["alpha"] == {"optimizer": "Adam", "lr": 3e-4, "betas": [0.5, 0.999], "weight_decay": 0.0}
    w = c.replace(lr=None).resolved(__import__("torch").device("cuda")).hyperparameters()["w"]
    assert (w["lr"], w["momentum"], w["weight_decay"], w["grad_clip"]) == (0.005, 0.9, 3e-4, 5.0)


@pytest.mark.parametrize("changes,expected", [
    (dict(out=None), "--out RUN_DIR is required"),
    (dict(epochs=0), "--epochs must be at least 1, got 0"),
    (dict(lr=float("nan")), "--lr must be a finite number, got nan"),
    (dict(space="nasnet"), "--space must be one of darts, nb201"),
    (dict(recompute=["sep_conv_3x3"]), "--recompute sep_conv_3x3: not a candidate of the nb201 space"),
    (dict(cuda_graph_strict=True, optimizer_level="bilevel-second"), "--cuda-graph does not support"),
])
def test_bad_settings_are_one_line_config_errors(tmp_path, changes, expected):
    with pytest.raises(ConfigError, match="^" + expected.replace("(", r"\(").replace(")", r"\)")):
        run_search(SearchConfig(**{"out": str(tmp_path / "run"), **TINY, **changes}))
    assert not (tmp_path / "run").exists()


def test_a_saved_run_from_before_a_setting_existed_reloads_with_its_default():
    old = {"space": "nb201", "dataset": "digits", "resume": None, "recompute": None, "epochs": 3}  # no cuda_graph_strict
    config = SearchConfig.from_saved(old)
    assert config.epochs == 3 and config.recompute is False and config.cuda_graph_strict is False
