""".ci/run builds from scratch and runs the suite strict.

The script is run for real, in a copy of the tree, with ``python3`` faked on PATH: the fake
records every command, and the fake venv's ``pip`` records what build products the tree still
held when the package was installed, so the test sees what CI would do without installing
anything.
"""

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "run"

FAKE_PYTHON3 = textwrap.dedent('''\
    #!/usr/bin/env bash
    echo "python3 $*" >> "$FAKE_LOG"
    if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
        mkdir -p .venv-ci/bin
        cat > .venv-ci/bin/activate <<'EOF'
    python() { echo "python $* [CI=${CI:-}]" >> "$FAKE_LOG"; }
    pip() { echo "pip $* [CI=${CI:-}] [left: $(ls -d build dist *.egg-info sdarts/_C*.so 2>/dev/null | tr '\\n' ' ')]" >> "$FAKE_LOG"; }
    EOF
    fi
''')


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_script_is_valid_bash():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_installs_from_scratch_and_runs_strict(tmp_path):
    tree = tmp_path / "tree"
    (tree / ".ci").mkdir(parents=True)
    shutil.copy2(SCRIPT, tree / ".ci" / "run")
    # What earlier builds leave behind (see .gitignore and setup.py), and sources that must stay.
    for d in ("build/temp.linux-x86_64-cpython-311", "dist", "sdarts.egg-info", "sdarts/ops", "kernels"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    for f in ("build/temp.linux-x86_64-cpython-311/bindings.o", "dist/sdarts-0.1.0.tar.gz", "sdarts.egg-info/PKG-INFO",
              "sdarts/_C.cpython-311-x86_64-linux-gnu.so", "sdarts/__init__.py", "sdarts/ops/backends.py",
              "kernels/mixed_sum.py", "setup.py"):
        (tree / f).write_text("")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text(FAKE_PYTHON3)
    (fake_bin / "python3").chmod(0o755)
    log = tmp_path / "log"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "VIRTUAL_ENV")}
    env.update(PATH=f"{fake_bin}{os.pathsep}{env.get('PATH', '')}", FAKE_LOG=str(log))
    proc = subprocess.run(["bash", str(tree / ".ci" / "run")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "python3 -m venv --clear .venv-ci", lines  # a fresh venv, even over an old one
    install = next(line for line in lines if line.startswith("pip install") and "-e" in line.split())
    assert install.endswith("[left: ]"), f"build products reused by the install: {install}"
    pytest_line = next(line for line in lines if line.startswith("python -m pytest"))
    assert pytest_line.endswith("[CI=true]"), pytest_line
    for kept in ("sdarts/__init__.py", "sdarts/ops/backends.py", "kernels/mixed_sum.py", "setup.py"):
        assert (tree / kept).exists(), f".ci/run deleted a source file: {kept}"
