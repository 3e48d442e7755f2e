"""``sdarts-plot`` on the run directory of a tiny real search."""

import csv
import itertools
import json

import pytest
import torch
from PIL import Image

from sdarts.benchmark_table import ACCURACY_COLUMNS
from sdarts.cli import plot, search
from sdarts.primitives import NB201
from sdarts.spaces.nb201_genotype import NB201Cell


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
    assert names == ["benchmark.png", "dLdp_alpha.png", "loss_acc.png", "p_alpha.png"]
    for name in names:
        assert_png(out / name)
    assert capsys.readouterr().out.split() == [str(out / n) for n in ("p_alpha.png", "dLdp_alpha.png", "loss_acc.png", "benchmark.png")]


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
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["dLdp_alpha.png", "loss_acc.png", "p_alpha.png"]


@pytest.mark.parametrize("case", ["no-run", "bad-edge"])
def test_bad_input_is_one_clear_line(run_dir, tmp_path, capsys, case):
    argv, expected = {
        "no-run": ([str(tmp_path / "nothing")], "no metrics.jsonl"),
        "bad-edge": ([str(run_dir), "--out", str(tmp_path), "--edges", "9<-7"], "unknown edge '9<-7'"),
    }[case]
    assert plot.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sdarts-plot: error:") and expected in err[0]
