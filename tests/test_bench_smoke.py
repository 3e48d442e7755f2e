"""The benchmark scripts still run: each main() on CPU with tiny settings, its figures sane.

Timings themselves are not asserted (they depend on the machine); what is asserted is
what must hold anywhere: every implementation was timed and agrees with eager PyTorch, the
fused MixedOp saves less for backward than the plain sum, the JSON carries the machine facts.
"""

import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
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


def test_search_step_streams_rows_and_its_worker_survives_raise_crash_and_hang(bench, monkeypatch, tmp_path, capsys):
    """The GPU isolation (one worker process, replaced after a failure), run here on the CPU:
    a plain Exception subclass (as Triton's compile errors are), a dying process and a hang
    each fail their own row only; every row is printed and the JSON rewritten as it is measured."""
    search_step = bench("search_step")
    monkeypatch.setenv("SDARTS_BENCH_FAIL", "engine:raise,engine-cpu:exit,channels-last:hang")
    saved_rows = []
    real_write = search_step.write_json
    monkeypatch.setattr(search_step, "write_json", lambda path, payload: saved_rows.append(len(payload["rows"])) or real_write(path, payload))
    names = ["plain", "engine", "engine-cpu", "channels-last", "cuda-graph", "fused-opt"]
    result = search_step.main(["--device", "cpu", "--layers", "1", "--batch-size", "2", "--image-size", "8", "--steps", "1",
                               "--warmup", "1", "--threads", "1", "--isolate", "worker", "--variant-timeout", "20",
                               "--json", str(tmp_path / "step.json"), "--variants", *names])
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["engine"]["failed"] == "InjectedFailure: injected failure (SDARTS_BENCH_FAIL=engine:raise)"
    assert rows["engine-cpu"]["failed"].startswith("exit 3: injected failure")
    assert rows["channels-last"]["failed"] == "timed out after 20 s"
    assert rows["cuda-graph"]["skipped"].startswith("needs a CUDA device")
    for name in ("plain", "fused-opt"):  # before and after the failures: measured
        assert rows[name]["ms"] > 0 and math.isfinite(rows[name]["loss"]), rows[name]
    assert result["failed"] == ["engine", "engine-cpu", "channels-last"]
    assert saved_rows[:len(names)] == list(range(1, len(names) + 1))  # saved after every row
    assert json.loads((tmp_path / "step.json").read_text())["failed"] == result["failed"]
    out = capsys.readouterr().out.splitlines()
    table = [line for line in out if line.startswith("| ")]
    assert table[0].startswith("| variant | backend |") and [line.split(" | ")[0][2:] for line in table[2:]] == names
    assert out[-1] == "FAILED variants: engine, engine-cpu, channels-last"


def test_search_step_default_order_puts_the_design_deciding_variants_first(bench):
    search_step = bench("search_step")
    assert list(search_step.all_variants())[:4] == ["plain", "engine", "cuda-graph", "plain-cuda-graph"]
    order = list(search_step.all_variants())
    assert max(order.index(n) for n in ("engine-cuda", "recompute", "all-fast")) < order.index("cuda-graph-edge")
    assert order.index("cuda-graph-edge") < order.index("triton-edge") < order.index("compile")
    cpu = search_step.default_variants(CPU)
    assert cpu[:2] == ["plain", "engine"] and "engine-cpu" not in cpu  # engine is engine-cpu here


def test_gpu_smoke_runs_every_variant_it_can_on_the_cpu_one_line_each(bench, monkeypatch, capsys):
    """bench/gpu_smoke.py, the first stage of gpu_check.sh, at a tiny shape on the CPU: every
    variant that can run here takes one step (finite loss), every CUDA-only one says so, and a
    failing one is one FAILED line with its error's first line while the rest go on."""
    smoke = bench("gpu_smoke")
    search_step = bench("search_step")
    monkeypatch.setenv("SDARTS_BENCH_FAIL", "amp:raise")
    result = smoke.main(["--device", "cpu", "--layers", "1", "--batch-size", "2", "--image-size", "8", "--threads", "1",
                         "--spaces", "nb201", "darts:plain,engine,cuda-graph,recompute-1x1,recompute-sep-cl"])
    rows = {(r["space"], r["variant"]): r for r in result["rows"]}
    design = ["plain", "engine", "cuda-graph", "plain-cuda-graph"]
    nb201 = design + ["graphed-step"] + [v for v, variant in search_step.all_variants().items()
                                         if not variant.compile and v not in design]
    assert [v for s, v in rows if s == "nb201"] == nb201
    for (space, name), row in rows.items():
        variant = search_step.all_variants().get(name)
        cuda_only = name == "graphed-step" or search_step.unavailable(variant, CPU) is not None
        if name == "amp":
            assert row["status"] == "FAILED InjectedFailure: injected failure (SDARTS_BENCH_FAIL=amp:raise)"
        elif (space, name) in (("nb201", "recompute-sep-cl"), ("darts", "recompute-1x1")):
            assert row["status"].startswith("skipped: ") and "is not a candidate of the" in row["status"], row
        elif cuda_only:
            assert row["status"].startswith("skipped: needs CUDA ("), row
        else:
            assert row["status"] == "ok" and math.isfinite(row["loss"]) and row["seconds"] >= 0, row
    assert result["failed"] == ["nb201 amp"]
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in out if line.startswith("| ")]
    assert len(lines) == 2 + len(rows)  # header, rule, one line per item
    assert "| nb201 | cuda-graph | skipped: needs CUDA (CUDA graph capture) | - | - |" in lines
    assert out[-1].startswith("smoke: ") and out[-1].endswith("; FAILED: nb201 amp")
    assert smoke.items(smoke.specs_of(list(rows)), False) == list(rows)
    with pytest.raises(ValueError, match="unknown variants \\['warp'\\]"):
        smoke.items(["nb201:plain,warp"], False)


def test_search_e2e_bench(bench, tmp_path, monkeypatch):
    search_e2e = bench("search_e2e")
    written = []
    real_write = search_e2e.write_json
    monkeypatch.setattr(search_e2e, "write_json", lambda path, payload: written.append(
        (len(payload["rows"]), payload["progress"].get("0", {}).get("epochs_done"))) or real_write(path, payload))
    result = search_e2e.main(["--dataset", "synthetic", "--data-dir", str(tmp_path), "--device", "cpu", "--epochs", "2",
                              "--batch-size", "8", "--max-steps-per-epoch", "1", "--layers", "1", "--seeds", "0", "--data-fraction", "0.5",
                              "--progress-every", "0.05", "--eval-batch-size", "16", "--out-root", str(tmp_path / "runs"),
                              "--json", str(tmp_path / "e2e.json")])
    row = result["rows"][0]
    assert "error" not in row, row
    assert row["genotype"].startswith("|") and row["epochs"] == 2 and row["minutes"] > 0
    saved = json.loads((tmp_path / "e2e.json").read_text())
    assert saved["summary"]["genotype"] == "1 of 1 runs"
    # Written epoch by epoch while the seed ran (no row yet), so a cut-short run keeps its epochs.
    assert (0, 2) in written and written.index((0, 2)) < written.index((1, 2))
    assert saved["progress"]["0"]["epochs_done"] == 2 and saved["progress"]["0"]["last"]["epoch"] == 2
    config = json.loads((tmp_path / "runs" / "seed0" / "config.json").read_text())
    assert config["args"]["data_fraction"] == 0.5 and config["args"]["eval_batch_size"] == 16


def test_search_e2e_epoch_watcher_reports_each_new_epoch_while_the_run_goes_on(bench, tmp_path):
    import threading

    search_e2e = bench("search_e2e")
    seen, changed = [], threading.Event()

    def on_change(records):
        seen.append([r["epoch"] for r in records])
        changed.set()

    metrics = tmp_path / "metrics.jsonl"
    with search_e2e.EpochWatcher(tmp_path, on_change, every=0.01):
        for epoch in (1, 2):
            with metrics.open("a") as f:
                f.write(json.dumps({"epoch": epoch, "time_s": 1.0 * epoch}) + "\n")
            assert changed.wait(30), f"epoch {epoch} not reported"
            changed.clear()
        with metrics.open("a") as f:
            f.write('{"epoch": 3, "ti')  # a line being written: not a record yet
    assert seen == [[1], [1, 2]], seen  # each new epoch once; the half-written line is not one
    assert search_e2e.progress(search_e2e.read_epochs(tmp_path))["epochs_done"] == 2
    assert search_e2e.progress([])["epochs_done"] == 0


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_script_parses():
    """The GPU script cannot run here; at least it must stay valid bash."""
    proc = subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _gpu_check(env, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), **env}
    return subprocess.run(["bash", str(BENCH / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=300)


def _plan(stdout):
    rows = [line.split(" | ") for line in stdout.splitlines() if re.match(r"^\| \d+ \|", line)]
    return [(r[1], r[2], r[3], r[4].rstrip(" |")) for r in rows]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_dry_run_plans_both_calls_within_their_budgets(tmp_path):
    """DRY_RUN=1 prints the stage plan and runs nothing.  Call 1: the planned limits add up to at
    most BUDGET_S - RESERVE_S, in priority order (smoke and the go/no-go test before the tables);
    call 2 (STAGES=e2e): the build (skipped on a warm machine) and the e2e run, which gets the rest."""
    done = _gpu_check({"DRY_RUN": "1", "BUDGET_S": "345", "E2E_EPOCHS": "0"}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "out").exists()  # ran nothing, wrote nothing
    plan = _plan(done.stdout)
    names = [p[0] for p in plan]
    assert names[:6] == ["versions", "build", "smoke", "go-no-go", "step-nb201", "gpu-tests"]
    assert "e2e-single" not in names
    planned = [int(p[1]) for p in plan if p[3] == "planned"]
    assert sum(planned) <= 345 - 15 and planned == [int(p[1]) for p in plan[:len(planned)]]
    assert [int(p[2]) for p in plan if p[3] == "planned"][-1] == sum(planned)  # the cumulative column
    assert all(p[3] == "if time is left" for p in plan[len(planned):])

    done = _gpu_check({"DRY_RUN": "1", "BUDGET_S": "390", "STAGES": "e2e"}, tmp_path)
    plan = _plan(done.stdout)
    assert [p[0] for p in plan] == ["build", "e2e-single"] and all(p[3] == "planned" for p in plan)
    assert plan[1][1].startswith("rest (~275 s")
    done = _gpu_check({"DRY_RUN": "1", "BUDGET_S": "390", "STAGES": "e2e", "E2E_LEVELS": "single bilevel"}, tmp_path)
    assert [p[0] for p in _plan(done.stdout)] == ["build", "e2e-single", "e2e-bilevel"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_without_a_gpu_fails_fast_and_ends_with_the_summary(tmp_path):
    """The script's control flow on this CPU machine (BUILD=0: the package is installed): the
    smoke stage fails in seconds (no CUDA), the final block says why and ends with the stage
    summary, under the 12,000 characters that come back from the device."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the stages would run for real")
    done = _gpu_check({"BUILD": "0", "COPY_EXTENSION": "0", "STAGES": "smoke", "BUDGET_S": "120"}, tmp_path)
    assert done.returncode == 0, done.stderr
    block = done.stdout[done.stdout.index("################ results"):]
    assert len(block) < 10_500
    assert "## smoke did not pass: its last lines" in block and "torch sees no CUDA device" in block
    lines = block.rstrip().splitlines()
    assert lines[-2:] == ["| build | 100 | skipped: BUILD=0 | 0 |", lines[-1]] and lines[-1].startswith("| smoke | 60 | FAILED (exit 1) |")
    assert (tmp_path / "out" / "gpu_check.log").read_text().count("################ results") == 1


def test_op_count_engine_launches_fewer_ops_than_plain(bench, capsys):
    """The launch-count proxy of a GPU step: the engine must not dispatch more work than plain."""
    op_count = bench("op_count")
    counts = op_count.main(["--space", "nb201"])
    assert "| engine |" in capsys.readouterr().out
    assert 0 < counts["engine"] < 0.95 * counts["plain"]
