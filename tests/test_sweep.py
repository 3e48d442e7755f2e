"""sdarts-sweep: a grid of searches, resumable, with the paper's tables as output."""

import csv
import json
import statistics

import numpy as np
import pytest

from sdarts.cli import sweep as sweep_cli
from sdarts.search import loop as search_loop
from sdarts.sweep import runner
from sdarts.sweep.presets import PRESETS, preset
from sdarts.sweep.report import ACCURACY_COLUMNS, write_report
from sdarts.sweep.runner import Sweep, run_state, run_sweep
from sdarts.sweep.spec import Scale, SpecError, SweepSpec
from sdarts.spaces.nb201.table import NB201Table

TINY = {"space": "nb201", "dataset": "synthetic", "device": "cpu", "init_channels": 4, "layers": 1, "batch_size": 8,
        "eval_batch_size": 16, "max_steps_per_epoch": 2, "epochs": 1}
METHODS = [{"name": "darts", "optimizer_level": "bilevel", "activation": "softmax"},
           {"name": "single", "optimizer_level": "single"}]


def tiny_spec(**base):
    return SweepSpec.from_dict({"name": "tiny", "base": {**TINY, **base}, "axes": {"method": METHODS, "seed": [0, 1]}})


def quiet(_):
    pass


def test_the_grid_is_the_axes_product_in_order(tmp_path):
    runs = tiny_spec().runs(str(tmp_path))
    assert [r.name for r in runs] == ["darts_seed0", "darts_seed1", "single_seed0", "single_seed1"]
    assert [r.group for r in runs] == ["darts", "darts", "single", "single"]
    assert [(r.config.optimizer_level, r.config.activation, r.config.seed) for r in runs] == [
        ("bilevel", "softmax", 0), ("bilevel", "softmax", 1), ("single", "sigmoid", 0), ("single", "sigmoid", 1)]
    assert runs[0].config.out == str(tmp_path / "runs" / "darts_seed0")


def test_scale_overrides_fraction_and_epochs_and_says_so(tmp_path):
    scale = Scale.parse("0.05,3")
    runs = tiny_spec().runs(str(tmp_path), scale=scale)
    assert {(r.config.data_fraction, r.config.epochs) for r in runs} == {(0.05, 3)}
    assert "NOT THE PAPER'S PROTOCOL" in scale.banner() and "5%" in scale.banner()
    for bad in ("0.05", "0,3", "1.5,3", "0.1,0", "a,b", "0.1,2,3"):
        with pytest.raises(SpecError, match="--scale"):
            Scale.parse(bad)


@pytest.mark.parametrize("raw,expected", [
    ({"axes": {"seed": [0]}, "bogus": 1}, "unknown key 'bogus'"),
    ({"axes": {}}, "'axes' must be a non-empty table"),
    ({"axes": {"seed": []}}, "axes.seed: must be a non-empty list"),
    ({"axes": {"seed": [0]}, "base": {"learning_rate": 0.1}}, "unknown search setting 'learning_rate'"),
    ({"axes": {"seed": [0]}, "base": {"out": "x"}}, "set by the sweep"),
    ({"axes": {"seed": [0]}, "base": {"epochs": "ten"}}, "epochs must be an integer, got 'ten'"),
    ({"axes": {"seed": [0]}, "base": {"lr": -1.0}}, "run seed0: --lr must be positive"),
    ({"axes": {"method": [0, 1]}}, "'method' is not one"),
    ({"axes": {"method": [{"name": "a b", "lr": 0.1}]}}, "level name 'a b'"),
    ({"axes": {"m": [{"name": "x", "lr": 0.1}, {"name": "x", "lr": 0.2}]}}, "both named 'x'"),
])
def test_bad_specs_are_one_line_naming_the_key(tmp_path, raw, expected):
    with pytest.raises(SpecError, match=expected) as err:
        SweepSpec.from_dict({"name": "t", **raw}).runs(str(tmp_path))
    assert "\n" not in str(err.value)


def test_spec_files_json_and_toml(tmp_path):
    (tmp_path / "s.toml").write_text('name = "t"\n[base]\nspace = "nb201"\nepochs = 2\n[axes]\nseed = [0, 1]\n')
    assert [r.name for r in SweepSpec.from_file(str(tmp_path / "s.toml")).runs(str(tmp_path))] == ["seed0", "seed1"]
    (tmp_path / "s.json").write_text('{"axes": {"seed": [0]}, }')
    with pytest.raises(SpecError, match="not valid JSON"):
        SweepSpec.from_file(str(tmp_path / "s.json"))
    with pytest.raises(SpecError, match="cannot read it"):
        SweepSpec.from_file(str(tmp_path / "missing.json"))


def test_every_preset_expands_and_validates(tmp_path):
    sizes = {name: len(SweepSpec.from_dict(preset(name)).runs(str(tmp_path))) for name in PRESETS}
    assert sizes == {"table1": 10, "table4": 12, "table5": 36, "darts-cifar": 3}
    t1 = {r.name: r.config for r in SweepSpec.from_dict(preset("table1")).runs(str(tmp_path))}
    single, darts = t1["single-darts_seed0"], t1["darts_seed0"]
    assert (single.optimizer_level, single.activation, single.lr, single.alpha_optimizer, single.alpha_lr,
            single.batch_size, single.epochs) == ("single", "sigmoid", 0.005, "adam", 3e-4, 64, 50)
    assert (darts.optimizer_level, darts.activation) == ("bilevel", "softmax")
    t4 = SweepSpec.from_dict(preset("table4")).runs(str(tmp_path))
    assert {(r.config.activation, r.config.alpha_optimizer, r.config.alpha_lr, r.config.lr) for r in t4} == {("softmax", "sgd", 0.005, 0.005)}
    assert [r.config.optimizer_level for r in t4[::3]] == ["bilevel", "single-diff-subsets", "single-diff-batches", "single"]


@pytest.fixture(scope="module")
def stand_in_table(tmp_path_factory):
    """Every NB201 cell with made-up but distinct accuracies: the report's arithmetic needs a
    table, not the benchmark's figures (so this test runs where the shared data is absent)."""
    import itertools

    from sdarts.spaces.nb201.genotype import NB201Cell, OPS

    path = tmp_path_factory.mktemp("table") / "stand_in.csv"
    lines = ["index,arch_str," + ",".join(ACCURACY_COLUMNS)]
    for index, ops in enumerate(itertools.product(OPS, repeat=6)):
        arch = NB201Cell.from_ops(list(ops)).tostr()
        lines.append(f"{index},{arch}," + ",".join(f"{(index * (7 + c)) % 9001 / 100:.6f}" for c in range(len(ACCURACY_COLUMNS))))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _accuracies(run_dir, rule):
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    return last["benchmarks"][rule]


def test_tiny_sweep_end_to_end_table_equals_a_direct_computation(tmp_path, stand_in_table):
    table = stand_in_table
    sweep = Sweep.create_or_open(str(tmp_path / "sw"), tiny_spec(nb201_table=table), None, {})
    states = run_sweep(sweep, say=quiet)
    assert states == dict.fromkeys(["darts_seed0", "darts_seed1", "single_seed0", "single_seed1"], "finished")
    write_report(sweep, figures=False)
    rows = list(csv.DictReader((tmp_path / "sw" / "report" / "table.csv").open()))
    best = NB201Table.from_csv(table)
    optimum = [r for r in rows if r["method"] == "optimum (benchmark)" and r["derive"] == "argmax"][0]
    assert float(optimum["C10 test"]) == pytest.approx(best.best("cifar10_test")["cifar10_test"], abs=0.005)
    for rule in ("argmax", "exclude-none"):
        for group in ("darts", "single"):
            row = [r for r in rows if r["method"] == group and r["derive"] == rule][0]
            assert row["seeds done"] == "2/2"
            for column, title in zip(ACCURACY_COLUMNS, ("C10 valid", "C10 test", "C100 valid", "C100 test", "IN16 valid", "IN16 test")):
                values = [_accuracies(tmp_path / "sw" / "runs" / f"{group}_seed{s}", rule)[column] for s in (0, 1)]
                mean, std = statistics.fmean(values), statistics.stdev(values)
                assert row[title] == f"{mean:.2f} ± {std:.2f}"
    runs = list(csv.DictReader((tmp_path / "sw" / "report" / "runs.csv").open()))
    assert [r["run"] for r in runs] == list(states) and all(r["state"] == "finished" for r in runs)


class Killed(BaseException):
    """Stands for kill -9: nothing below catches it."""


def test_a_killed_sweep_finishes_without_redoing_finished_runs(tmp_path, monkeypatch):
    spec = tiny_spec(epochs=2)
    reference = Sweep.create_or_open(str(tmp_path / "ref"), spec, None, {})
    run_sweep(reference, say=quiet)

    sweep = Sweep.create_or_open(str(tmp_path / "sw"), spec, None, {})
    real_record = search_loop.Searcher.epoch_record
    calls = {"n": 0}

    def dies_in_the_third_runs_second_epoch(self, epoch, *args):
        calls["n"] += 1
        if calls["n"] == 6:  # runs 1 and 2 finished (2 epochs each), run 3 has checkpointed epoch 1
            raise Killed()
        return real_record(self, epoch, *args)

    monkeypatch.setattr(search_loop.Searcher, "epoch_record", dies_in_the_third_runs_second_epoch)
    with pytest.raises(Killed):
        run_sweep(sweep, say=quiet)
    monkeypatch.setattr(search_loop.Searcher, "epoch_record", real_record)
    planned = sweep.plan()
    assert [run_state(r) for r in planned] == ["finished", "finished", "partial", "new"]
    finished_before = {r.name: (tmp_path / "sw" / "runs" / r.name / "checkpoint.pt").stat().st_mtime_ns for r in planned[:2]}

    said = []
    again = Sweep.create_or_open(str(tmp_path / "sw"), spec, None, {})
    assert set(run_sweep(again, say=said.append).values()) == {"finished"}
    assert "darts_seed0: finished, skipped" in said and "[1/2] resuming single_seed0" in said
    for name, mtime in finished_before.items():
        assert (tmp_path / "sw" / "runs" / name / "checkpoint.pt").stat().st_mtime_ns == mtime
    for r in planned:  # the resumed run ends exactly where the uninterrupted one did
        got = json.loads((tmp_path / "sw" / "runs" / r.name / "genotype.json").read_text())
        want = json.loads((tmp_path / "ref" / "runs" / r.name / "genotype.json").read_text())
        assert got["p"] == want["p"] and got["genotype_str"] == want["genotype_str"]


def test_jobs_run_searches_in_parallel_processes_with_the_same_results(tmp_path):
    spec = tiny_spec()
    serial = Sweep.create_or_open(str(tmp_path / "serial"), spec, None, {})
    run_sweep(serial, say=quiet)
    parallel = Sweep.create_or_open(str(tmp_path / "parallel"), spec, None, {})
    said = []
    assert set(run_sweep(parallel, jobs=2, say=said.append).values()) == {"finished"}
    assert "4 runs, 4 to run, 2 at a time" in said
    for run in serial.plan():
        a = json.loads((tmp_path / "serial" / "runs" / run.name / "genotype.json").read_text())
        b = json.loads((tmp_path / "parallel" / "runs" / run.name / "genotype.json").read_text())
        # Other thread counts may round differently; p moves ~1e-4 from 1/K in these two steps.
        assert np.allclose(a["p"]["alpha"], b["p"]["alpha"], rtol=0, atol=1e-6)


def test_a_failed_run_is_recorded_skipped_and_retried_on_request(tmp_path, monkeypatch):
    sweep = Sweep.create_or_open(str(tmp_path / "sw"), tiny_spec(), None, {})
    real = runner.run_one
    monkeypatch.setattr(runner, "run_one", lambda cfg, resume, threads=None: real({**cfg, "dataset": "nosuch"}, resume, threads)
                        if cfg["seed"] == 1 and cfg["optimizer_level"] == "single" else real(cfg, resume, threads))
    states = run_sweep(sweep, say=quiet)
    assert states["single_seed1"] == "failed" and list(states.values()).count("finished") == 3
    assert "unknown dataset 'nosuch'" in (tmp_path / "sw" / "runs" / "single_seed1" / "sweep_error.txt").read_text()
    write_report(sweep, figures=False)
    md = (tmp_path / "sw" / "report" / "table.md").read_text()
    assert "## Not finished (not in the means)" in md and "| single_seed1 | failed | 0/1 |" in md
    monkeypatch.setattr(runner, "run_one", real)
    said = []
    assert run_sweep(sweep, say=said.append)["single_seed1"] == "failed"
    assert any("single_seed1: failed, skipped" in s for s in said)
    assert run_sweep(sweep, retry_failed=True, say=quiet)["single_seed1"] == "finished"


def test_cli_dry_run_resume_report_and_errors(tmp_path, capsys):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps({"name": "tiny", "base": TINY, "axes": {"method": METHODS, "seed": [0]}}))
    out = tmp_path / "sw"
    assert sweep_cli.main([str(spec), "--out", str(out), "--dry-run", "--scale", "0.5,1"]) == 0
    text = capsys.readouterr().out
    assert "NOT THE PAPER'S PROTOCOL" in text and "darts_seed0" in text and "single_seed0" in text and "new" in text
    assert not (out / "runs").exists()
    assert sweep_cli.main([str(spec), "--out", str(out), "--scale", "0.5,1", "--no-report"]) == 0
    assert sweep_cli.main(["--report", str(out)]) == 0
    assert "NOT THE PAPER'S PROTOCOL" in (out / "report" / "table.md").read_text()
    capsys.readouterr()
    assert sweep_cli.main(["--resume", str(out), "--no-report"]) == 0
    assert "finished, skipped" in capsys.readouterr().err
    for argv, expected in [
        ([str(spec), "--out", str(out)], "holds another sweep (scale differs"),
        (["nosuch"], "neither a preset"),
        ([str(spec)], "--out SWEEP is required"),
        (["--resume", str(tmp_path)], "not a sweep directory"),
        (["--resume", str(out), "--scale", "0.1,1"], "keeps its own spec and scale"),
        ([str(spec), "--out", str(tmp_path / "o2"), "--jobs", "0"], "--jobs must be at least 1"),
        ([str(spec), "--out", str(tmp_path / "o3"), "--set", "bogus=1"], "unknown search setting 'bogus'"),
    ]:
        assert sweep_cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, (argv, err)


def test_cli_list_names_every_preset(capsys):
    assert sweep_cli.main(["--list"]) == 0
    text = capsys.readouterr().out
    for name in PRESETS:
        assert f"{name}:" in text
    assert "our reading:" in text


def test_set_may_not_override_an_axis_and_settings_are_part_of_the_sweep(tmp_path):
    with pytest.raises(SpecError, match="--set seed: the spec's axis 'seed' sets it per run"):
        tiny_spec().runs(str(tmp_path), overrides={"seed": 3})
    Sweep.create_or_open(str(tmp_path / "sw"), tiny_spec(), None, {"max_steps_per_epoch": 1}).write()
    with pytest.raises(SpecError, match="settings differs"):
        Sweep.create_or_open(str(tmp_path / "sw"), tiny_spec(), None, {"max_steps_per_epoch": 2})
    # Where the data is may change (another machine), as with sdarts-search --resume.
    Sweep.create_or_open(str(tmp_path / "sw"), tiny_spec(), None, {"max_steps_per_epoch": 1, "data_dir": "/elsewhere"})


def test_shared_data_fills_only_what_each_run_leaves_unset(tmp_path):
    from sdarts.sweep.spec import fill_locations

    where = {"cifar10_dir": "/d/c10", "nb201_table": "/d/t.csv", "nb201_cifar_split": "/d/split.txt"}
    run = {"space": "nb201", "dataset": "cifar10"}
    fill_locations(run, where)
    assert run == {"space": "nb201", "dataset": "cifar10", "data_dir": "/d/c10", "nb201_table": "/d/t.csv",
                   "split_file": "/d/split.txt"}
    api = {"space": "nb201", "dataset": "cifar10", "benchmark_api": "auto", "data_dir": "/mine"}
    fill_locations(api, where)
    assert "nb201_table" not in api and api["data_dir"] == "/mine"
    for other in ({"space": "nb201", "dataset": "cifar100"}, {"space": "darts", "dataset": "cifar10"}):
        fill_locations(other, where)
        assert "nb201_table" not in other and "split_file" not in other
    assert other["data_dir"] == "/d/c10"  # the DARTS space on CIFAR-10 reads the same images


def test_a_run_resumed_by_a_sweep_must_have_its_own_settings(tmp_path):
    from sdarts.search.config import ConfigError
    from sdarts.sweep.runner import check_unchanged

    run = tiny_spec().runs(str(tmp_path))[0]
    assert runner.run_one(run.config.to_json(), resume=False) is None
    check_unchanged(run.config)  # unchanged: fine (None settings were resolved by the device)
    with pytest.raises(ConfigError, match="--lr is 0.1 in the sweep but 0.005 in the run started"):
        check_unchanged(run.config.replace(lr=0.1))
    check_unchanged(run.config.replace(data_dir="/elsewhere"))  # a location may change


def test_a_darts_space_sweep_reports_genotypes_and_their_parameters(tmp_path):
    spec = SweepSpec.from_dict({"name": "d", "base": {**TINY, "space": "darts", "layers": 2}, "axes": {"seed": [0]}})
    sweep = Sweep.create_or_open(str(tmp_path / "sw"), spec, None, {})
    assert run_sweep(sweep, say=quiet) == {"seed0": "finished"}
    write_report(sweep)
    md = (tmp_path / "sw" / "report" / "table.md").read_text()
    genotype = json.loads((tmp_path / "sw" / "runs" / "seed0" / "genotype.json").read_text())["genotype_str"]
    assert "## Genotypes" in md and f"`{genotype}`" in md
    row = list(csv.DictReader((tmp_path / "sw" / "report" / "table.csv").open()))[0]
    assert 1.0 < float(row["params (M), CIFAR-10 network"]) < 5.0  # a 20-cell, 36-channel DARTS network
    assert (tmp_path / "sw" / "report" / "best_cell_seed0.png").is_file()
