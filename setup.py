"""Build sdarts: the Python package, the Triton kernels (``kernels/`` installed as
``sdarts.kernels``) and, when a C++ compiler is present, the ``sdarts._C`` extension
(CPU kernels always, CUDA kernels when nvcc and a CUDA build of torch are present).

Environment:
  SDARTS_NO_EXTENSION=1   skip the C++/CUDA extension (Triton and reference still work)
  SDARTS_NO_CUDA=1        build the extension without its CUDA kernels
  CUDA_HOME               default /usr/local/cuda
  TORCH_CUDA_ARCH_LIST    default 9.0 (H100/H200)
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def extension_modules():
    """The sdarts._C extension and a sentence saying what was built."""
    if _flag("SDARTS_NO_EXTENSION"):
        return [], {}, "sdarts: C++/CUDA extension skipped (SDARTS_NO_EXTENSION=1)"
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        return [], {}, "sdarts: torch not importable at build time: extension skipped"

    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cu_sources = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    if not cpp_sources:
        return [], {}, "sdarts: no csrc/*.cpp sources: extension skipped"
    nvcc = os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
    have_nvcc = os.path.exists(nvcc) or shutil.which("nvcc") is not None
    with_cuda = bool(cu_sources) and have_nvcc and torch.version.cuda is not None and not _flag("SDARTS_NO_CUDA")
    # C++20: the headers of recent torch releases require it (and 2.11 accepts it).
    cxx = ["-O3", "-std=c++20"]
    if sys.platform != "win32":
        cxx += ["-fopenmp"]
    if with_cuda:
        ext = CUDAExtension(
            "sdarts._C",
            cpp_sources + cu_sources,
            define_macros=[("SDARTS_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo"]},
            extra_link_args=["-fopenmp"],
        )
        what = f"CPU + CUDA kernels (arch {os.environ['TORCH_CUDA_ARCH_LIST']})"
    else:
        ext = CppExtension("sdarts._C", cpp_sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
        what = "CPU kernels only (no nvcc or CPU-only torch)"
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}, f"sdarts: building extension sdarts._C with {what}"


ext_modules, cmdclass, message = extension_modules()
print(message, file=sys.stderr)

setup(
    name="sdarts",
    version="0.1.0",
    description="Single-DARTS neural architecture search with a fused mixed-op engine (Triton, CUDA, C++)",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists(os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sdarts", "sdarts.*"]) + ["sdarts.kernels"],
    package_dir={"sdarts.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=[
        "torch>=2.11,<2.15",
        "torchvision>=0.26",
        "numpy",
        "tqdm",
        "matplotlib",
        "scikit-learn",
        "pillow",
    ],
    extras_require={"test": ["pytest", "hypothesis"], "tensorboard": ["tensorboard"]},
    entry_points={
        "console_scripts": [
            "sdarts-search=sdarts.cli.search:main",
            "sdarts-train=sdarts.cli.train:main",
            "sdarts-plot=sdarts.cli.plot:main",
            "sdarts-sweep=sdarts.cli.sweep:main",
        ]
    },
)
