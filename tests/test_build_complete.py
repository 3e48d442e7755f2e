"""The build is complete: every kernel family this machine's build should have produced is here.

Elsewhere in the suite a missing backend only skips tests (the C++ tests skip without
``sdarts._C``, "cpu" drops out of ``backends.available``, the Triton tests skip when its probe
fails), which is right on a developer's laptop and a lie in CI.  So with CI=true in the
environment (``.ci/run`` exports it) the tests here FAIL, with the error the probe caught,
when a backend that should have been built is missing:

  C++ CPU kernels   sdarts._C, whenever setup.py builds the extension (csrc/*.cpp present,
                    SDARTS_NO_EXTENSION unset)
  CUDA kernels      sdarts._C.with_cuda(), whenever setup.py compiles csrc/*.cu: nvcc at
                    $CUDA_HOME/bin/nvcc or on PATH, a CUDA build of torch, SDARTS_NO_CUDA unset
                    (SDARTS_EXPECT_CUDA_BUILD=1 insists on it regardless)
  Triton            triton importable and sdarts.kernels.{mixed_sum,normalized_edge} loaded,
                    wherever torch's own requirements pull triton in (Linux); they must run
                    here (interpreted on a CPU-only machine, compiled on a GPU one)

Outside CI a missing backend skips these tests with the same reason, except an extension
that loaded without the CUDA kernels although nvcc was there: that fails everywhere.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Tuple

import pytest
import torch

from sdarts.ops import backends

ROOT = Path(__file__).resolve().parents[1]
SIMULATION_ENV = "SDARTS_BUILD_SIMULATION"  # set in the simulated broken-build runs below


def ci_strict() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _flag(name: str) -> bool:  # as setup.py reads its switches
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def missing(what: str, why: str) -> None:
    """A backend that should exist does not: fail under CI, skip elsewhere (with the reason)."""
    if ci_strict():
        pytest.fail(f"CI=true and {what} is missing: {why}", pytrace=False)
    pytest.skip(f"{what} is missing (CI=true would fail here): {why}")


def _probe_error(key: str) -> str:
    return backends.probe_errors().get(key, "no error was recorded by the probe")


def extension_expected() -> Tuple[bool, str]:
    """Whether setup.py builds sdarts._C on this machine (its `extension_modules`)."""
    if _flag("SDARTS_NO_EXTENSION"):
        return False, "SDARTS_NO_EXTENSION=1: the build skips the extension"
    if not glob.glob(str(ROOT / "csrc" / "*.cpp")):
        return False, "no csrc/*.cpp sources"
    return True, "setup.py builds sdarts._C from csrc/*.cpp"


def cuda_build_expected() -> Tuple[bool, str]:
    """Whether setup.py compiles the CUDA kernels into sdarts._C on this machine."""
    if _flag("SDARTS_EXPECT_CUDA_BUILD"):
        return True, "SDARTS_EXPECT_CUDA_BUILD=1"
    ok, why = extension_expected()
    if not ok:
        return False, why
    if _flag("SDARTS_NO_CUDA"):
        return False, "SDARTS_NO_CUDA=1: the build leaves the CUDA kernels out"
    if not glob.glob(str(ROOT / "csrc" / "*.cu")):
        return False, "no csrc/*.cu sources"
    if torch.version.cuda is None:
        return False, "torch is a CPU-only build"
    nvcc = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    if not (os.path.exists(nvcc) or shutil.which("nvcc")):
        return False, f"no nvcc ({nvcc} absent, none on PATH)"
    return True, f"nvcc ({nvcc if os.path.exists(nvcc) else shutil.which('nvcc')}) and CUDA {torch.version.cuda} torch"


def triton_expected() -> Tuple[bool, str]:
    """Whether triton belongs on this machine: torch's own requirements pull it in here."""
    try:
        requires = importlib.metadata.requires("torch") or []
    except importlib.metadata.PackageNotFoundError:
        return sys.platform.startswith("linux"), "torch has no distribution metadata; expected on Linux"
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging ships with pip/setuptools
        return sys.platform.startswith("linux"), "packaging not importable; expected on Linux"
    for line in requires:
        req = Requirement(line)
        if "triton" in req.name and (req.marker is None or req.marker.evaluate({"extra": ""})):
            return True, f"torch requires {line!r} here"
    return False, "torch does not require triton on this platform"


# ----------------------------------------------------------------------------- the checks


def test_cpp_cpu_kernels_were_built():
    expected, why = extension_expected()
    if not expected:
        pytest.skip(f"the C++ extension is not built here: {why}")
    if backends._extension() is None:
        missing("the C++ extension sdarts._C (CPU kernels)", _probe_error("extension"))
    ext = backends._extension()
    assert hasattr(ext, "mixed_forward_cpu") and hasattr(ext, "mixed_backward_cpu")
    assert "cpu" in backends.available("cpu")


def test_cuda_kernels_were_compiled():
    expected, why = cuda_build_expected()
    if not expected:
        pytest.skip(f"the CUDA kernels are not built here: {why}")
    ext = backends._extension()
    if ext is None:
        missing(f"sdarts._C (the build should have compiled its CUDA kernels: {why})", _probe_error("extension"))
    assert ext.with_cuda(), f"sdarts._C was built without its CUDA kernels although {why}"
    assert hasattr(ext, "mixed_forward_cuda") and hasattr(ext, "mixed_backward_cuda")


def test_triton_kernels_load_and_run_here():
    expected, why = triton_expected()
    if not expected:
        pytest.skip(f"triton is not expected here: {why}")
    if backends._triton_module() is None:
        missing("Triton (sdarts.kernels.mixed_sum)", _probe_error("triton"))
    if backends.triton_edge_module() is None:
        missing("Triton (sdarts.kernels.normalized_edge)", _probe_error("triton_edge"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mode = "interpreted" if backends.triton_interpreted() else "compiled"
    assert backends.is_available("triton", device), f"the Triton kernels cannot run on {device} here ({mode})"


def test_triton_mode_matches_the_machine():
    """One Triton mode for the whole session (tests/conftest.py): compiled on CUDA tensors where
    torch sees a GPU, interpreted on CPU tensors elsewhere; backends and kernels agree on it."""
    gpu = torch.cuda.is_available()
    assert os.environ.get("TRITON_INTERPRET") == ("0" if gpu else "1")
    assert backends.triton_interpreted() is (not gpu)
    # What triton.jit made of the kernels when they were loaded (it reads the mode then).
    for module in (backends._triton_module(), backends.triton_edge_module()):
        if module is None:
            continue
        kinds = {type(f).__name__ for f in vars(module).values() if type(f).__name__.endswith("Function")
                 and type(f).__module__.startswith("triton")}
        assert kinds == {"JITFunction" if gpu else "InterpretedFunction"}, (module.__name__, kinds)


def test_no_test_file_changes_the_triton_mode():
    """Only conftest.py sets TRITON_INTERPRET for the session (a test file that set it for
    itself would mix interpreted kernels with compiled ones and CUDA tensors)."""
    setter = re.compile(r"os\.environ(\.setdefault\(|\[)\s*[\"']TRITON_INTERPRET|putenv\(\s*[\"']TRITON_INTERPRET")
    offenders = [p.name for p in sorted((ROOT / "tests").glob("*.py"))
                 if p.name != "conftest.py" and setter.search(p.read_text())]
    assert not offenders, f"these test files set TRITON_INTERPRET themselves: {offenders}"


def test_property_tests_are_derandomized():
    """Hypothesis draws the same examples on every run (tests/conftest.py's profile), so a
    property test cannot pass or fail in CI by luck; no test file turns that off."""
    hypothesis = pytest.importorskip("hypothesis")
    assert hypothesis.settings.default.derandomize is True
    assert hypothesis.settings.default.database is None
    offenders = [p.name for p in sorted((ROOT / "tests").glob("*.py"))
                 if re.search(r"derandomize\s*=\s*False|load_profile\(", p.read_text()) and p.name != "conftest.py"]
    assert not offenders, offenders


# ----------------------------------------------------------------------------- the checks checked

# A pytest plugin (loaded with -p before conftest.py and sdarts) that breaks the build on
# purpose: sdarts._C fails to import as a broken build's would, and the Triton kernels
# module raises a non-ImportError while loading (the kind the Triton probe swallows).
BREAK_PLUGIN = textwrap.dedent('''
    import sys

    class _Broken:
        def find_spec(self, name, path=None, target=None):
            if name == "sdarts._C":
                raise ImportError("simulated: undefined symbol _ZN2at4_ops in sdarts/_C.so")
            if name == "sdarts.kernels.mixed_sum":
                raise RuntimeError("simulated: triton backend failed to initialize")
            return None

    sys.meta_path.insert(0, _Broken())
''')


def _run_broken(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
    (tmp_path / "sdarts_break_build.py").write_text(BREAK_PLUGIN)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SDARTS_EXPECT_CUDA_BUILD")}
    env.update({"PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                SIMULATION_ENV: "1"})
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "sdarts_break_build", "-rfs",
                           "-k", "were_built or were_compiled or load_and_run", str(Path(__file__))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(os.environ.get(SIMULATION_ENV) == "1", reason="inside the simulation")
def test_a_broken_build_fails_under_ci_and_only_skips_elsewhere(tmp_path):
    strict = _run_broken(tmp_path, ci=True)
    out = strict.stdout + strict.stderr
    assert strict.returncode == 1, out
    # Each missing family failed, and the failure says why (the probes kept the error text).
    assert re.search(r"FAILED .*test_cpp_cpu_kernels_were_built .*simulated: undefined symbol", out), out
    assert re.search(r"FAILED .*test_triton_kernels_load_and_run_here .*simulated: triton backend failed", out), out
    if cuda_build_expected()[0]:
        assert re.search(r"FAILED .*test_cuda_kernels_were_compiled .*simulated: undefined symbol", out), out
    assert "sdarts: extension probe failed: ImportError: simulated" in out, out  # the session header
    relaxed = _run_broken(tmp_path, ci=False)
    out = relaxed.stdout + relaxed.stderr
    assert relaxed.returncode == 0, out
    assert not re.search(r"\d+ failed", out) and re.search(r"SKIPPED .*CI=true would fail here.*simulated", out), out
