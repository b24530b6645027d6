"""Shared set-up of the Android demo's tests: the bundled models and the native libraries,
built once per run into android_demo/build (the folder build_apk.sh packs from)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "android_demo"
BUILD = DEMO / "build"


@pytest.fixture(scope="session")
def demo_assets() -> Path:
    """android_demo/build/assets: the classifier (fp32, int8), its features model, models.json
    and 20 test images (make_models.py; trained once, kept)."""
    subprocess.run([sys.executable, str(DEMO / "make_models.py"), "--out", str(BUILD / "assets")],
                   check=True, capture_output=True, text=True, cwd=ROOT)
    return BUILD / "assets"


@pytest.fixture(scope="session")
def native_libs() -> Path:
    """android_demo/build/lib/{arm64-v8a,armeabi-v7a,host}/libtether_jni.so."""
    for tool in ("clang", "ld.lld", "javac", "arm-linux-gnueabihf-gcc"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: `make test` installs it (see the Makefile's sysdeps)")
    run = subprocess.run(["bash", str(DEMO / "build_native.sh")], check=False,
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    return BUILD / "lib"
