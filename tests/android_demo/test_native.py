"""The Android native libraries built without the NDK (android_demo/build_native.sh): the
loader's rules, checked with readelf, and both libraries run under qemu (aarch64, arm) through
a fake JNIEnv, classifying as the Python engine does."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tether.device import Engine

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "android_demo"
ABIS = {"arm64-v8a": "AArch64", "armeabi-v7a": "ARM"}


def _readelf(flags: str, path: Path) -> str:
    return subprocess.run(["readelf", flags, "-W", str(path)], check=True, capture_output=True,
                          text=True).stdout


@pytest.mark.parametrize("abi", sorted(ABIS))
def test_android_loader_rules(native_libs: Path, abi: str) -> None:
    lib = native_libs / abi / "libtether_jni.so"
    header, dynamic = _readelf("-h", lib), _readelf("-d", lib)
    segments, sections = _readelf("-l", lib), _readelf("-S", lib)
    symbols = _readelf("--dyn-syms", lib)
    assert re.search(rf"Machine:\s+{ABIS[abi]}", header), header
    assert re.search(r"Type:\s+DYN", header)
    assert "(SONAME)" in dynamic and "[libtether_jni.so]" in dynamic
    assert "(NEEDED)" not in dynamic, "the library must not depend on any other"
    assert "TEXTREL" not in dynamic, "text relocations are refused by Android's loader"
    loads = [line.split() for line in segments.splitlines() if line.strip().startswith("LOAD")]
    assert loads
    for seg in loads:
        flags, align = " ".join(seg[6:-1]), int(seg[-1], 16)
        assert not ("W" in flags and "E" in flags), f"writable and executable segment: {seg}"
        assert align % 16384 == 0, f"LOAD aligned to {align}, not 16 KB pages: {seg}"
    assert "There are no sections" not in sections and ".dynsym" in sections
    exported = {line.split()[-1] for line in symbols.splitlines()
                if re.search(r"\b(FUNC|OBJECT)\s+GLOBAL\s+DEFAULT\s+\d+", line)}
    assert exported and all(s.startswith("Java_dev_tether_Tether_") for s in exported), exported


# ABI -> (cross compiler of the harness, qemu and its sysroot). The armhf harness calls the
# softfp library safely: no float crosses the calls by value, only integers and pointers.
HARNESS = {"arm64-v8a": ("aarch64-linux-gnu-gcc", ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]),
           "armeabi-v7a": ("arm-linux-gnueabihf-gcc",
                           ["qemu-arm", "-L", "/usr/arm-linux-gnueabihf"])}


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory):
    """android_demo/tests/jni_harness.c for ARM Linux (run under qemu), per ABI."""
    javac = Path(shutil.which("javac") or "javac").resolve()
    include = javac.parent.parent / "include"
    built: dict[str, Path] = {}

    def get(abi: str) -> Path:
        if abi not in built:
            cc, qemu = HARNESS[abi]
            if shutil.which(cc) is None or shutil.which(qemu[0]) is None:
                pytest.fail(f"{cc} and {qemu[0]} are missing: `make test` installs them")
            out = tmp_path_factory.mktemp("harness") / f"jni_harness-{abi}"
            subprocess.run([cc, "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O1", "-Wall",
                            "-Wextra", "-Werror", f"-I{include}", f"-I{include / 'linux'}", "-o",
                            str(out), str(DEMO / "tests" / "jni_harness.c"), "-ldl"],
                           check=True, capture_output=True, text=True)
            built[abi] = out
        return built[abi]
    return get


@pytest.mark.parametrize("abi", sorted(HARNESS))
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_arm_library_under_qemu_classifies_as_the_engine(native_libs: Path, demo_assets: Path,
                                                         harness, tmp_path: Path,
                                                         precision: str, abi: str) -> None:
    # Prepare
    x = np.load(demo_assets / "test_inputs.npy")
    x.astype("<f4").tofile(tmp_path / "x.f32")
    model = demo_assets / f"digits_{precision}.tmodel"
    # Execute: the Android library in a Linux process under qemu, through the fake JNIEnv
    run = subprocess.run([*HARNESS[abi][1], str(harness(abi)),
                          str(native_libs / abi / "libtether_jni.so"), str(model),
                          str(tmp_path / "x.f32")], check=False, capture_output=True, text=True,
                         timeout=300)
    with Engine(model.read_bytes()) as engine:
        reference = np.stack([np.asarray(engine.run(image[None])).reshape(-1) for image in x])
    # Assert: NEON kernels chosen, the same classes as the engine on this machine, close
    # probabilities (other kernels: float sums in another order), a damaged file refused
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "isa neon"
    rows = lines[1:21]
    assert [int(r.split()[0]) for r in rows] == list(reference.argmax(1))
    got = np.array([[float(v) for v in r.split()[1:]] for r in rows], np.float32)
    np.testing.assert_allclose(got, reference, atol=1e-4 if precision == "fp32" else 1e-6)
    assert lines[21].startswith("damaged dev/tether/TetherException: format_error: checksum")
