"""``sdarts-plot`` on the run directory of a tiny real search."""

import csv
import itertools
import json
import os
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest
import torch
from PIL import Image

from sdarts.nb201 import ACCURACY_COLUMNS
from sdarts.cli import plot, search
from sdarts.primitives import NB201
from sdarts.nb201 import NB201Cell


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 2-epoch NB201 search on synthetic data, with a table of every cell (accuracy = f(index))."""
    root = tmp_path_factory.mktemp("plot")
    table = root / "nb201.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "arch_str", *ACCURACY_COLUMNS])
        for index, ops in enumerate(itertools.product(NB201.names, repeat=6)):
            writer.writerow([index, NB201Cell(ops).tostr(), *(40 + index % 50 + k for k in range(len(ACCURACY_COLUMNS)))])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add OpenMP overhead
    try:
        assert search.main(["--dataset", "synthetic", "--device", "cpu", "--batch-size", "16", "--max-steps-per-epoch", "2",
                            "--init-channels", "4", "--layers", "1", "--epochs", "2", "--nb201-table", str(table),
                            "--out", str(root / "run")]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "run"


def assert_png(path, min_side=100):
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= min_side
        # Not a blank canvas: the figure drew something.
        assert len(image.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 10


def test_writes_every_figure_as_png(run_dir, tmp_path, capsys):
    out = tmp_path / "figs"
    assert plot.main([str(run_dir), "--out", str(out), "--dpi", "50"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["benchmark.png", "cell.png", "dLdp_alpha.png", "loss_acc.png", "p_alpha.png"]
    for name in names:
        assert_png(out / name)
    assert capsys.readouterr().out.split() == [str(out / n) for n in ("p_alpha.png", "dLdp_alpha.png", "loss_acc.png", "benchmark.png",
                                                                      "cell.png")]


def test_chosen_edges_make_a_smaller_gradient_figure(run_dir, tmp_path):
    all_edges, two_edges = tmp_path / "all", tmp_path / "two"
    assert plot.main([str(run_dir), "--out", str(all_edges), "--dpi", "50"]) == 0
    assert plot.main([str(run_dir), "--out", str(two_edges), "--dpi", "50", "--edges", "1<-0", "5"]) == 0
    with Image.open(all_edges / "dLdp_alpha.png") as a, Image.open(two_edges / "dLdp_alpha.png") as b:
        assert b.size[1] < a.size[1]  # one row of panels instead of two


def test_without_a_table_there_is_no_benchmark_figure(run_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text((run_dir / "config.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "benchmark"}) + "\n" for r in records))
    assert plot.main([str(run), "--dpi", "50"]) == 0
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["cell.png", "dLdp_alpha.png", "loss_acc.png", "p_alpha.png"]


# -- bad input: one line naming the argument, exit status 2 -------------------------------

def one_record(run_dir, epoch=1, **changes):
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    return {**record, "epoch": epoch, **changes}


def make_run(root, run_dir, records=None, text=None):
    """A run directory with run_dir's config.json and the given records (or raw metrics text)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text((run_dir / "config.json").read_text())
    if text is None:
        text = "".join(json.dumps(r) + "\n" for r in records)
    (root / "metrics.jsonl").write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


def run_cli(argv, capsys):
    """(exit status, stderr lines) of plot.main, argparse's exits included."""
    try:
        code = plot.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


def assert_one_line(code, err, flag, expected):
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"sdarts-plot: error: {flag}: ") and expected in err[0], err[0]


def _bad_run(case, run_dir, tmp_path):
    good = one_record(run_dir)
    return {
        "missing": lambda: tmp_path / "nothing",
        "a-file": lambda: (tmp_path / "f.txt", (tmp_path / "f.txt").write_text("x"))[0],
        "no-metrics": lambda: (tmp_path / "empty", (tmp_path / "empty").mkdir())[0],
        "empty-metrics": lambda: make_run(tmp_path / "r", run_dir, text="\n\n"),
        "truncated-line": lambda: make_run(tmp_path / "r", run_dir, text=json.dumps(good) + "\n" + json.dumps(good)[:200]),
        "not-an-object": lambda: make_run(tmp_path / "r", run_dir, text="[1, 2]\n"),
        "no-p": lambda: make_run(tmp_path / "r", run_dir, [{"epoch": 1, "train_loss": 1.0}]),
        "ragged-p": lambda: make_run(tmp_path / "r", run_dir, [good, {**one_record(run_dir, 2), "p": {"alpha": [[0.2, 0.2]]}}]),
        "binary": lambda: make_run(tmp_path / "r", run_dir, text=b"\xff\xfe\x00\x81"),
    }[case]()


@pytest.mark.parametrize("case, expected", [
    ("missing", "does not exist"),
    ("a-file", "is not a directory"),
    ("no-metrics", "no metrics.jsonl in"),
    ("empty-metrics", "has no epochs yet"),
    ("truncated-line", "line 2 is not JSON"),
    ("not-an-object", "line 1 is not a JSON object"),
    ("no-p", "line 1 has no 'p'"),
    ("ragged-p", "line 2 has a p of shape"),
    ("binary", "is not text"),
])
def test_a_bad_run_directory_is_one_line_naming_run_dir(run_dir, tmp_path, capsys, case, expected):
    bad = _bad_run(case, run_dir, tmp_path)
    code, err = run_cli([str(bad), "--out", str(tmp_path / "figs")], capsys)
    assert_one_line(code, err, "RUN_DIR", expected)
    assert not (tmp_path / "figs").exists()


@pytest.mark.parametrize("dpi", ["0", "-5", "nan", "inf", "1e9", "100000", "72.5"])
def test_a_bad_dpi_is_one_line_naming_dpi(run_dir, tmp_path, capsys, dpi):
    code, err = run_cli([str(run_dir), "--out", str(tmp_path), f"--dpi={dpi}"], capsys)
    assert_one_line(code, err, "--dpi", f"got '{dpi}'")
    assert list(tmp_path.iterdir()) == []


def test_plot_run_rejects_a_bad_dpi_too(run_dir, tmp_path):
    for dpi in (0, -1, float("nan")):
        with pytest.raises(plot.PlotError, match="^--dpi: "):
            plot.plot_run(str(run_dir), str(tmp_path), dpi=dpi)


def test_an_output_path_under_a_file_is_one_line_naming_out(run_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = run_cli([str(run_dir), "--out", str(tmp_path / "file" / "figs")], capsys)
    assert_one_line(code, err, "--out", "cannot create")
    code, err = run_cli([str(run_dir), "--out", str(tmp_path / "file")], capsys)
    assert_one_line(code, err, "--out", "is a file, not a folder")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into a chmod 555 folder anyway")
def test_a_read_only_output_folder_is_one_line_naming_out(run_dir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, err = run_cli([str(run_dir), "--out", str(locked)], capsys)
        assert_one_line(code, err, "--out", "not writable")
        code, err = run_cli([str(run_dir), "--out", str(locked / "sub")], capsys)
        assert_one_line(code, err, "--out", "cannot create")
    finally:
        locked.chmod(0o755)


def test_an_unwritable_output_folder_is_one_line_naming_out(run_dir, tmp_path, capsys, monkeypatch):
    """The chmod 555 case where the tests run as root: access says no, or the write itself fails."""
    real_access = os.access
    monkeypatch.setattr(plot.os, "access",
                        lambda path, mode, **kw: str(path) != str(tmp_path) and real_access(path, mode, **kw))
    code, err = run_cli([str(run_dir), "--out", str(tmp_path)], capsys)
    assert_one_line(code, err, "--out", f"{tmp_path} is not writable")
    monkeypatch.undo()

    def refuse(self, path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(plot.Figure, "savefig", refuse)
    code, err = run_cli([str(run_dir), "--out", str(tmp_path / "figs")], capsys)
    assert_one_line(code, err, "--out", "cannot write")
    assert "Permission denied" in err[0]


def test_a_bad_edge_is_one_line_naming_edges(run_dir, tmp_path, capsys):
    code, err = run_cli([str(run_dir), "--out", str(tmp_path / "figs"), "--edges", "9<-7"], capsys)
    assert_one_line(code, err, "--edges", "unknown edge '9<-7'")
    assert not (tmp_path / "figs").exists()  # checked before anything is created


def test_the_command_prints_no_traceback(run_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sdarts.cli.plot", str(run_dir), "--out", str(tmp_path), "--dpi", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sdarts-plot: error: --dpi: "), proc.stderr


# -- readable figures ----------------------------------------------------------------------

def data_lines(fig):
    """The plotted series (not the dL/dp zero line) of every visible panel."""
    return [line for ax in fig.axes if ax.get_visible() for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_a_one_epoch_run_has_visible_markers_and_one_integer_tick(run_dir):
    records = [one_record(run_dir)]
    figures = plot.build_figures(records, str(run_dir))
    try:
        assert sorted(figures) == ["benchmark.png", "dLdp_alpha.png", "loss_acc.png", "p_alpha.png"]
        for name, fig in figures.items():
            lines = data_lines(fig)
            assert lines, name
            for line in lines:
                assert line.get_marker() not in (None, "", " ", "None", "none"), (name, line.get_label())
                assert line.get_markersize() >= 5 and line.get_markeredgewidth() >= 1
            for ax in fig.axes:
                if ax.get_visible() and ax.get_lines():
                    assert list(ax.get_xticks()) == [1]
                    lo, hi = ax.get_xlim()
                    assert lo <= 0.6 and hi >= 1.4  # the point sits inside the frame, not on its edge
        # Ops that share a value stay apart: a different marker shape per op, hollow.
        p_lines = figures["p_alpha.png"].axes[0].get_lines()
        assert len({line.get_marker() for line in p_lines}) == len(p_lines) == len(NB201.names)
        assert all(line.get_markerfacecolor() == "none" for line in p_lines)
        # p of one epoch differs in the 4th digit: plain tick labels, no "+2e-1" offset.
        fig = figures["p_alpha.png"]
        fig.canvas.draw()
        assert all(ax.yaxis.get_major_formatter().get_offset() == "" for ax in fig.axes if ax.get_visible())
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_a_long_run_has_plain_lines_and_few_integer_ticks(run_dir):
    records = [one_record(run_dir, epoch) for epoch in range(1, 51)]
    figures = plot.build_figures(records, str(run_dir))
    try:
        for name in ("p_alpha.png", "loss_acc.png"):
            fig = figures[name]
            assert all(line.get_marker() in ("None", "none", None, "") for line in data_lines(fig)), name
            for ax in fig.axes:
                if ax.get_visible():
                    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                    assert 3 <= len(ticks) <= 9 and all(float(t).is_integer() for t in ticks), ticks
    finally:
        for fig in figures.values():
            plt.close(fig)


@pytest.mark.parametrize("epochs, expected", [(3, [1, 2, 3]), (12, list(range(1, 13)))])
def test_a_short_run_gets_a_tick_per_epoch(run_dir, epochs, expected):
    figures = plot.build_figures([one_record(run_dir, e) for e in range(1, epochs + 1)], str(run_dir))
    try:
        ax = figures["loss_acc.png"].axes[0]
        assert list(ax.get_xticks()) == expected
        assert all(line.get_marker() not in ("None", "") for line in data_lines(figures["loss_acc.png"]))
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_panels_above_an_empty_grid_cell_keep_their_epoch_labels(run_dir):
    """14 edges (the DARTS space) in a 4x4 grid: the two panels above the empty cells label the epochs."""
    record = one_record(run_dir)
    wide = {**record, "p": {"normal": [[0.125] * 8] * 14}, "dL_dp": {"normal": [[0.0] * 8] * 14}}
    figures = plot.build_figures([wide, {**wide, "epoch": 2}])
    try:
        fig = figures["p_normal.png"]
        visible = [ax for ax in fig.axes if ax.get_visible()]
        labelled = [i for i, ax in enumerate(visible) if ax.get_xlabel() == "epoch"]
        assert labelled == [10, 11, 12, 13]
        for i in labelled:
            assert visible[i].xaxis.get_tick_params()["labelbottom"]
        assert visible[0].get_title() == "edge 0"  # generic edge names without config.json
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_a_config_of_another_space_falls_back_to_generic_names(run_dir, tmp_path, capsys):
    run = make_run(tmp_path / "r", run_dir, [one_record(run_dir)])
    config = json.loads((run / "config.json").read_text())
    config["space"]["ops"] = config["space"]["ops"][:2]
    (run / "config.json").write_text(json.dumps(config))
    assert plot.main([str(run), "--dpi", "20"]) == 0
    assert "generic op and edge names" in capsys.readouterr().err
