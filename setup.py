"""Builds the C engine (device/runtime, CMake) into the tether.device package.

Everything else about the package lives in pyproject.toml. The engine is built as an
extension-like artefact so that `pip install .` and `pip install -e .` both produce it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
RUNTIME = ROOT / "device" / "runtime"


class CMakeBuild(build_ext):
    """Configures and builds device/runtime with CMake, then places libtether.so; other
    extensions (device/_run.c) build the usual way."""

    def build_extension(self, ext: Extension) -> None:
        if ext.name != "tether.device._libtether":
            super().build_extension(ext)
            return
        cmake = shutil.which("cmake")
        if cmake is None:
            raise RuntimeError(
                "cmake not found: the tether engine needs CMake >= 3.20 and a C11 compiler "
                "(Debian: apt-get install cmake gcc)"
            )
        build_dir = RUNTIME / "build-py"
        build_type = os.environ.get("TETHER_BUILD_TYPE", "Release")
        subprocess.run(
            [cmake, "-S", str(RUNTIME), "-B", str(build_dir),
             f"-DCMAKE_BUILD_TYPE={build_type}", "-DTETHER_BUILD_TESTS=OFF"],
            check=True,
        )
        subprocess.run(
            [cmake, "--build", str(build_dir), "--target", "tether", "tether-run", "tether-probe",
             "-j", str(os.cpu_count() or 2)],
            check=True,
        )
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(build_dir / "libtether.so", target)
        # The command-line runner and the latency probe travel next to the library.
        for tool in ("tether-run", "tether-probe"):
            if (build_dir / tool).exists():
                shutil.copyfile(build_dir / tool, target.parent / tool)
                os.chmod(target.parent / tool, 0o755)


if sys.platform.startswith("win"):
    raise RuntimeError("tether's engine builds on Linux and macOS hosts")

# TETHER_SKIP_ENGINE=1 installs the Python side only (tether.device will not load).
SKIP_ENGINE = os.environ.get("TETHER_SKIP_ENGINE") == "1"

setup(
    ext_modules=[] if SKIP_ENGINE else [
        Extension("tether.device._libtether", sources=[]),
        # Engine.run's one-step call for small models (optional: run() falls back to ctypes).
        Extension("tether.device._run", sources=["device/_run.c"], optional=True),
    ],
    cmdclass={"build_ext": CMakeBuild},
)
