"""The Triton kernels compile to cubins for sm_90 (H100/H200) in exactly the configurations the
search launches, checked without a GPU (``python -m sdarts.kernels.compile_check``).

The interpreter (which the other CPU tests use) runs kernels the compiler might reject; the
check lowers them through Triton's real pipeline with the ptxas Triton ships.  Its
configurations are recorded from the launchers themselves (fake CUDA tensors, 132 SMs), so
they must be what the launchers' own selection functions give at the search shapes.  A
subprocess, because this test session loaded the kernels for the interpreter.
"""

import json
import os
import re
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")

ENV = {**os.environ, "TRITON_INTERPRET": "0"}


def compile_check(*args, timeout=900):
    done = subprocess.run([sys.executable, "-m", "sdarts.kernels.compile_check", *args],
                          capture_output=True, text=True, env=ENV, timeout=timeout)
    if "No module named 'triton.backends.nvidia'" in done.stderr:
        pytest.skip("this Triton build has no NVIDIA backend")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("configs") / "configs.json"
    compile_check("--list", "--spaces", "nb201", "api", "--dtypes", "float32", "--layouts", "nchw", "channels_last",
                  "--json", str(path))
    return json.loads(path.read_text())["configs"]


def launched(configs, kernel, shape):
    return [c for c in configs if c["kernel"] == kernel and any(w.endswith(f": {shape}") for w in c["launched_at"])]


def test_the_recorded_configurations_are_what_the_launchers_choose_at_the_search_shapes(recorded):
    from sdarts.kernels.mixed_sum import _choose_blocks

    cases = {"64x16x32x32": (64, 16, 32, 32), "64x32x16x16": (64, 32, 16, 16), "64x64x8x8": (64, 64, 8, 8),
             "96x64x28x28": (96, 64, 28, 28)}
    for name, (n, c, h, w) in cases.items():
        for kernel in ("_mixed_fwd_kernel", "_mixed_bwd_kernel"):
            configs = launched(recorded, kernel, name)
            assert configs, (kernel, name)
            for config in configs:
                cl = config["constexprs"]["CL"]
                want = _choose_blocks(n, c, h * w, cl, None, 132)
                got = (config["constexprs"]["BLOCK_C"], config["constexprs"]["BLOCK_HW"], config["options"]["num_warps"])
                assert got == want, (kernel, name, cl, got, want)
    # The issue's two examples: 8x256 with 4 warps at NB201's first stage, 16x256 with 8 at 96x64x28x28.
    first = {(c["constexprs"]["BLOCK_C"], c["constexprs"]["BLOCK_HW"], c["options"]["num_warps"])
             for c in launched(recorded, "_mixed_fwd_kernel", "64x16x32x32") if not c["constexprs"]["CL"]}
    assert first == {(8, 256, 4)}
    big = {(c["constexprs"]["BLOCK_C"], c["constexprs"]["BLOCK_HW"], c["options"]["num_warps"])
           for c in launched(recorded, "_mixed_fwd_kernel", "96x64x28x28") if not c["constexprs"]["CL"]}
    assert big == {(16, 256, 8)}


def test_every_kernel_of_the_one_node_edge_is_recorded_with_real_flags_and_types(recorded):
    kernels = {c["kernel"] for c in recorded}
    assert kernels == {"_mixed_fwd_kernel", "_mixed_bwd_kernel", "_stats_partial_kernel", "_stats_final_kernel",
                       "_epilogue_kernel", "_apply_kernel"}
    # NB201 edges: 2 normalized branches (the convolutions), skip and pool from x; with the Triton
    # edge tail the mixed-sum backward only reduces (NEED_BG False), without it it writes them.
    nb201 = launched(recorded, "_mixed_bwd_kernel", "64x16x32x32")
    assert {(c["constexprs"]["NUM_BRANCHES"], c["constexprs"]["HAS_SKIP"], c["constexprs"]["HAS_POOL"])
            for c in nb201 if any(w.startswith("nb201") for w in c["launched_at"])} == {(2, True, True)}
    assert {c["constexprs"]["NEED_BG"] for c in nb201 if any(w.startswith("nb201") for w in c["launched_at"])} == {True, False}
    for c in recorded:  # pointer types come from the tensors: float32 data, float32 statistics here
        assert all(t in ("constexpr", "i32", "i64", "fp32", "i1", "*fp32") for t in c["signature"].values()), c


def test_every_launched_configuration_compiles_for_sm90():
    """--quick: the NB201 and DARTS supernets, float32, NCHW (what gpu_check's Triton variants run)."""
    out = compile_check("--quick")
    done = re.search(r"^(\d+)/(\d+) launched kernel configurations compiled for sm_90", out, re.M)
    assert done and done.group(1) == done.group(2) and int(done.group(2)) >= 30, out[-3000:]
    assert "FAIL" not in out
    assert "[nb201 float32 nchw" in out and "darts float32 nchw triton-edge: 64x32x16x16" in out
