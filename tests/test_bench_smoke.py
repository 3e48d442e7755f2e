"""The benchmark scripts still run: each main() on CPU with tiny settings, its figures sane.

Timings themselves are not asserted (they depend on the machine); what is asserted is
what must hold anywhere: every implementation was timed and agrees with eager PyTorch, the
fused MixedOp saves less for backward than the plain sum, the JSON carries the machine facts.
"""

import importlib
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
CPU = torch.device("cpu")


@pytest.fixture
def bench(monkeypatch):
    """Import a bench script as a module (they import their helpers as top-level `common`).

    Runs on one torch thread (restored afterwards): tiny ops on a busy 2-core machine are
    many times slower with two threads waiting on each other.
    """
    monkeypatch.syspath_prepend(str(BENCH))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield importlib.import_module
    torch.set_num_threads(threads)


def test_saved_bytes_counts_unique_storages(bench):
    common = bench("common")
    x = torch.randn(256, requires_grad=True)
    # x * x saves x twice (one storage); exp saves its output; sin saves x again.
    counted = common.saved_bytes(lambda: ((x * x).exp() + x.sin()).sum())
    assert counted == {"bytes": 2 * 256 * 4, "tensors": 2}
    assert common.saved_bytes(lambda: (x * x).sum(), ignore=[x])["bytes"] == 0


def test_time_calls_rotates_and_rejects_bad_repeat(bench):
    common = bench("common")
    seen = []
    times = common.time_calls(seen.append, CPU, warmup=2, repeat=3)
    assert seen == [0, 1, 2, 3, 4] and len(times) == 3 and all(t >= 0 for t in times)
    with pytest.raises(ValueError, match="repeat"):
        common.time_calls(seen.append, CPU, warmup=0, repeat=0)


def test_markdown_table_escapes_pipes(bench):
    table = bench("common").markdown_table([{"a": "|x~0|", "b": 1.234}], [("a", "A"), ("b", "B", 1), ("c", "C")])
    assert table.splitlines()[-1] == "| \\|x~0\\| | 1.2 | - |"


def test_mixed_op_bench(bench, tmp_path):
    mixed_op = bench("mixed_op")
    out = tmp_path / "mixed_op.json"
    result = mixed_op.main(["--device", "cpu", "--quick", "--batch-size", "2", "--shapes", "nb201-s3", "darts",
                            "--repeat", "1", "--warmup", "0", "--threads", "1", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["machine"]["cpu"] and saved["machine"]["torch"] == torch.__version__
    assert saved["copy_gbps"] > 0
    impls = set(mixed_op.engine_backends(CPU)) | {"eager"}
    for case in mixed_op.CASES:
        for shape in ("nb201-s3", "darts"):
            rows = {r["impl"]: r for r in saved["rows"] if r["case"] == case and r["shape"] == shape}
            assert set(rows) == impls, (case, shape)
            for impl, row in rows.items():
                assert row["ms"] > 0 and row["saved_mb"] > 0
                assert impl == "eager" or row["max_rel_err"] < 1e-4, (case, shape, impl)
                assert (row.get("gbps") is not None) == (case != "edge")
    # The fused MixedOp keeps less for backward than the plain sum(w * op(x)).
    assert result["saved_ratios"] and all(0 < r["ratio"] < 1 for r in result["saved_ratios"])


def test_search_step_bench(bench, tmp_path):
    search_step = bench("search_step")
    out = tmp_path / "step.json"
    common = ["--device", "cpu", "--layers", "1", "--batch-size", "2", "--image-size", "8", "--steps", "1", "--warmup", "1",
              "--threads", "1"]
    result = search_step.main(["--space", "nb201", *common, "--isolate", "never", "--json", str(out),
                               "--variants", "plain", "engine-reference", "channels-last", "fused-opt"])
    saved = json.loads(out.read_text())
    rows = {r["variant"]: r for r in saved["rows"]}
    assert list(rows) == ["plain", "engine-reference", "channels-last", "fused-opt"]
    table = search_step.all_variants()
    for name, row in rows.items():
        assert "failed" not in row, (name, row["failed"])
        # Skipped only when the variant cannot run here, for that reason (none of these four).
        assert row.get("skipped") == search_step.unavailable(table[name], CPU), (name, row)
        if "skipped" in row:
            continue
        assert row["ms"] > 0 and math.isfinite(row["loss"]) and row["peak_mb"] > 0
        assert row["step_mb"] is not None and row["step_mb"] <= row["peak_mb"]
        assert row["projected_min"] == pytest.approx(50 * 12500 * row["ms"] / 1e3 / 60)
        assert row["peak_vs_plain"] == pytest.approx(row["peak_mb"] / rows["plain"]["peak_mb"])
    assert rows["plain"]["speedup"] == pytest.approx(1.0)
    assert result["machine"]["device"] == "cpu" and result["failed"] == saved["failed"] == []
    # One variant through the fresh-process path, on the DARTS space.
    isolated = search_step.main(["--space", "darts", *common, "--layers", "3", "--isolate", "always", "--variants", "plain"])
    row = isolated["rows"][0]
    assert "skipped" not in row and "failed" not in row, row
    assert row["ms"] > 0 and row["peak_kind"].startswith("process peak RSS")


def test_conv_merge_bench(bench, capsys):
    """Both forms were checked equal before being timed; every row has both timings."""
    result = bench("conv_merge").main(["--device", "cpu", "--shapes", "nb201-s3", "--batch-size", "2", "--repeat", "1",
                                       "--warmup", "0", "--threads", "1"])
    rows = result["rows"]
    assert {(r["case"], r["layout"]) for r in rows} == {(c, l) for c in ("edges", "kernels") for l in ("contiguous", "channels_last")}
    for r in rows:
        assert r["separate_ms"] > 0 and r["merged_ms"] > 0
        assert r["merged_vs_separate"] == pytest.approx(r["merged_ms"] / r["separate_ms"])
    assert "| edges | nb201-s3 2x64x8x8 |" in capsys.readouterr().out


def test_search_step_variants_unknown_or_unavailable(bench):
    search_step = bench("search_step")
    with pytest.raises(ValueError, match="warp-speed"):
        search_step.main(["--device", "cpu", "--variants", "warp-speed"])
    result = search_step.main(["--device", "cpu", "--variants", "cuda-graph", "engine-cuda", "triton-edge"])
    assert [r["skipped"] for r in result["rows"]] == [
        "needs a CUDA device (CUDA graph capture); not available on cpu here",
        "backend 'cuda' not available on cpu here",
        "needs compiled Triton on a CUDA device; not available on cpu here",
    ]
    assert result["failed"] == [] and not any("failed" in r for r in result["rows"])


def test_search_step_records_a_crashing_variant_as_failed_not_skipped(bench, monkeypatch, capsys):
    """A variant that can run here but raises is a failure with its error (in process, in a
    child that dies, in a child that hangs), never a skipped row."""
    search_step = bench("search_step")

    def crash(args, variant, device):
        raise RuntimeError("engine exploded\nat step 1")

    monkeypatch.setattr(search_step, "run_variant", crash)
    result = search_step.main(["--device", "cpu", "--isolate", "never", "--variants", "plain", "engine-cpu", "cuda-graph"])
    rows = {r["variant"]: r for r in result["rows"]}
    for name in ("plain", "engine-cpu"):
        assert "skipped" not in rows[name] and rows[name]["failed"] == "RuntimeError: engine exploded", rows[name]
    assert "failed" not in rows["cuda-graph"] and rows["cuda-graph"]["skipped"].startswith("needs a CUDA device")
    assert result["failed"] == ["plain", "engine-cpu"]
    assert "FAILED: RuntimeError: engine exploded" in capsys.readouterr().out

    real_run = subprocess.run

    def child_dies(argv, **kwargs):
        if argv[1:2] != [search_step.__file__]:
            return real_run(argv, **kwargs)
        return subprocess.CompletedProcess(argv, 1, "", "Traceback (most recent call last):\nRuntimeError: engine exploded")

    monkeypatch.setattr(search_step.subprocess, "run", child_dies)
    row = search_step.main(["--device", "cpu", "--isolate", "always", "--variants", "plain"])["rows"][0]
    assert "skipped" not in row and row["failed"] == "exit 1: RuntimeError: engine exploded", row

    def child_hangs(argv, **kwargs):
        if argv[1:2] != [search_step.__file__]:
            return real_run(argv, **kwargs)
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    monkeypatch.setattr(search_step.subprocess, "run", child_hangs)
    row = search_step.main(["--device", "cpu", "--isolate", "always", "--variant-timeout", "7", "--variants", "plain"])["rows"][0]
    assert "skipped" not in row and row["failed"] == "timed out after 7 s", row


def test_search_e2e_bench(bench, tmp_path):
    search_e2e = bench("search_e2e")
    result = search_e2e.main(["--dataset", "synthetic", "--data-dir", str(tmp_path), "--device", "cpu", "--epochs", "1",
                              "--batch-size", "8", "--max-steps-per-epoch", "1", "--layers", "1", "--seeds", "0", "--data-fraction", "0.5",
                              "--out-root", str(tmp_path / "runs"), "--json", str(tmp_path / "e2e.json")])
    row = result["rows"][0]
    assert "error" not in row, row
    assert row["genotype"].startswith("|") and row["epochs"] == 1 and row["minutes"] > 0
    assert json.loads((tmp_path / "e2e.json").read_text())["summary"]["genotype"] == "1 of 1 runs"
    config = json.loads((tmp_path / "runs" / "seed0" / "config.json").read_text())
    assert config["args"]["data_fraction"] == 0.5


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_script_parses():
    """The GPU script cannot run here; at least it must stay valid bash."""
    proc = subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_op_count_engine_launches_fewer_ops_than_plain(bench, capsys):
    """The launch-count proxy of a GPU step: the engine must not dispatch more work than plain."""
    op_count = bench("op_count")
    counts = op_count.main(["--space", "nb201"])
    assert "| engine |" in capsys.readouterr().out
    assert 0 < counts["engine"] < 0.95 * counts["plain"]
