"""android_demo: build_apk.sh makes a signed, reproducible APK; Digitizer runs on the desktop JVM.

The APK tests build with the real bundled models and native libraries (android_demo/build/assets
and lib/, made by make_models.py and build_native.sh through the fixtures of conftest.py).
A missing tool fails them: `make test` installs every one (the Makefile's sysdeps).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "android_demo"
SCRIPT = DEMO / "build_apk.sh"
JAVA_SRC = DEMO / "app" / "src" / "main" / "java" / "dev" / "tether" / "demo"
ABIS = ("arm64-v8a", "armeabi-v7a")
ASSETS = ("digits_fp32.tmodel", "digits_int8.tmodel", "digits_features.tmodel", "models.json")
EXIT_MISSING = 3  # build_apk.sh: a tool, package or input is missing


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"needs {', '.join(missing)} (Debian: apt-get install aapt apksigner zipalign "
                    "default-jdk-headless zip unzip android-framework-res; `make test` does)")


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,  # type: ignore[call-overload]
                          check=False, **kw)


# ----- the APK ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(demo_assets: Path) -> Path:
    """The build folder with assets/ (the bundled models)."""
    return demo_assets.parent


@pytest.fixture(scope="module")
def inputs(models: Path, native_libs: Path) -> Path:
    """The build folder with assets/ and lib/<abi>/libtether_jni.so."""
    _require("aapt", "aapt2", "apksigner", "zipalign", "javac", "java", "keytool", "zip",
                  "unzip")
    assert native_libs.parent == models
    return models


def _build(out: Path) -> subprocess.CompletedProcess[str]:
    run = _run(["bash", str(SCRIPT), "--out", str(out)], timeout=900)
    assert run.returncode == 0, f"build_apk.sh failed ({run.returncode}):\n{run.stderr[-4000:]}"
    return run


@pytest.fixture(scope="module")
def builds(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two builds from scratch in different folders (so no build path can hide in either)."""
    first, second = tmp_path_factory.mktemp("apk_a"), tmp_path_factory.mktemp("apk_b_longer_path")
    for out in (first, second):
        run = _build(out)
        assert run.stdout.strip().splitlines()[-1] == str(out / "tether-demo.apk")
    return first, second


@pytest.mark.slow
def test_signed_apk_verifies(builds: tuple[Path, Path]) -> None:
    run = _run(["apksigner", "verify", "--verbose", str(builds[0] / "tether-demo.apk")])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Verified using v2 scheme (APK Signature Scheme v2): true" in run.stdout
    assert _run(["zipalign", "-c", "-p", "4", str(builds[0] / "tether-demo.apk")]).returncode == 0


@pytest.mark.slow
def test_badging(builds: tuple[Path, Path]) -> None:
    run = _run(["aapt", "dump", "badging", str(builds[0] / "tether-demo.apk")])
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"^package: name='dev\.tether\.demo'", out, re.MULTILINE), out
    assert re.search(r"^launchable-activity: name='dev\.tether\.demo\.MainActivity'", out, re.MULTILINE), out
    assert "native-code: 'arm64-v8a' 'armeabi-v7a'" in out, out
    assert "sdkVersion:'24'" in out, out
    target = re.search(r"^targetSdkVersion:'(\d+)'", out, re.MULTILINE)
    assert target and int(target.group(1)) >= 29, out


@pytest.mark.slow
def test_unsigned_apk_is_reproducible(builds: tuple[Path, Path]) -> None:
    a, b = ((d / "tether-demo-unsigned.apk").read_bytes() for d in builds)
    assert a == b, "two builds gave different unsigned APKs"
    for d in builds:  # no build folder inside
        assert str(d).encode() not in a and str(ROOT).encode() not in a


@pytest.mark.slow
def test_apk_contents(inputs: Path, builds: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(builds[0] / "tether-demo-unsigned.apk") as apk:
        infos = {i.filename: i for i in apk.infolist()}
        assert apk.namelist()[0] == "AndroidManifest.xml"
        for name in ("classes.dex", "resources.arsc", "res/layout/activity_main.xml",
                     "res/layout/activity_teach.xml"):
            assert name in infos, sorted(infos)
        assert apk.read("classes.dex")[:4] == b"dex\n"
        assert infos["resources.arsc"].compress_type == zipfile.ZIP_STORED
        packed = sorted(n[len("assets/"):] for n in infos if n.startswith("assets/"))
        assert packed == sorted(ASSETS)  # the models and models.json, not the test images
        for asset in ASSETS:
            assert apk.read(f"assets/{asset}") == (inputs / "assets" / asset).read_bytes(), asset
        for abi in ABIS:
            lib = f"lib/{abi}/libtether_jni.so"
            assert apk.read(lib) == (inputs / "lib" / abi / "libtether_jni.so").read_bytes(), lib
        assert {i.date_time for i in infos.values()} == {(1980, 1, 1, 0, 0, 0)}


@pytest.mark.slow
def test_rebuild_skips_every_step(builds: tuple[Path, Path]) -> None:
    apk = builds[0] / "tether-demo.apk"
    before = apk.stat().st_mtime_ns
    run = _build(builds[0])
    steps = [line for line in run.stderr.splitlines() if line.startswith("build_apk: ")]
    assert steps and all(line.endswith("up to date") or "up to date (" in line for line in steps), \
        run.stderr
    assert apk.stat().st_mtime_ns == before


def test_missing_models_named(tmp_path: Path) -> None:
    _require("aapt2", "apksigner", "zipalign", "javac", "zip", "unzip")
    env = {**os.environ, "TETHER_ANDROID_BUILD": str(tmp_path / "empty")}
    run = _run(["bash", str(SCRIPT), "--out", str(tmp_path / "out")], env=env, timeout=60)
    assert run.returncode == EXIT_MISSING, run.stderr
    assert "make_models.py" in run.stderr and "digits_fp32.tmodel" in run.stderr


# ----- Digitizer and Ranking on the desktop JVM ----------------------------------------------

HARNESS = r"""
import dev.tether.demo.Digitizer;
import dev.tether.demo.Ranking;
import java.io.*;
import java.util.*;

/** argv[0] = digitize | argb | top | probs; numbers on stdin; results on stdout. */
public class Harness {
    public static void main(String[] args) throws IOException {
        StreamTokenizer in = new StreamTokenizer(new BufferedReader(new InputStreamReader(System.in)));
        in.resetSyntax(); in.wordChars('!', '~'); in.whitespaceChars(0, ' ');
        List<String> t = new ArrayList<String>();
        while (in.nextToken() != StreamTokenizer.TT_EOF) t.add(in.sval);
        StringBuilder sb = new StringBuilder();
        if (args[0].equals("digitize")) {
            int w = Integer.parseInt(t.get(0)), h = Integer.parseInt(t.get(1));
            float[] px = new float[w * h];
            for (int i = 0; i < px.length; i++) px[i] = Float.parseFloat(t.get(2 + i));
            for (float v : Digitizer.digitize(px, w, h)) sb.append(v).append(' ');
        } else if (args[0].equals("argb")) {
            int[] px = new int[t.size()];
            for (int i = 0; i < px.length; i++) px[i] = (int) Long.parseLong(t.get(i));
            for (float v : Digitizer.grayFromArgb(px)) sb.append(v).append(' ');
        } else {
            int k = Integer.parseInt(t.get(0));
            float[] s = new float[t.size() - 1];
            for (int i = 0; i < s.length; i++) s[i] = Float.parseFloat(t.get(1 + i));
            if (args[0].equals("top")) for (int i : Ranking.top(s, k)) sb.append(i).append(' ');
            else for (float v : Ranking.probabilities(s)) sb.append(v).append(' ');
        }
        System.out.println(sb.toString().trim());
    }
}
"""


@pytest.fixture(scope="module")
def jvm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digitizer.java and Ranking.java compiled for Java 8 with a small harness."""
    _require("javac", "java")
    out = tmp_path_factory.mktemp("digitizer")
    (out / "Harness.java").write_text(HARNESS)
    sources = [JAVA_SRC / "Digitizer.java", JAVA_SRC / "Ranking.java", out / "Harness.java"]
    for src in sources[:2]:  # the desktop JVM has no android.*
        assert "import android" not in src.read_text(), f"{src} must stay plain Java"
    run = subprocess.run(["javac", "--release", "8", "-Xlint:all,-options", "-d", str(out),
                          *map(str, sources)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    return out


def _java(jvm: Path, mode: str, numbers: str) -> np.ndarray:
    run = subprocess.run(["java", "-cp", str(jvm), "Harness", mode], input=numbers,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    return np.array(run.stdout.split(), dtype=np.float64)


def _digitize(jvm: Path, canvas: np.ndarray) -> np.ndarray:
    h, w = canvas.shape
    out = _java(jvm, "digitize", f"{w} {h} " + " ".join(f"{v:.6g}" for v in canvas.ravel()))
    assert out.shape == (28 * 28,), out.shape
    return out.reshape(28, 28)


def _centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]] + 0.5  # pixel centres
    return float((img * ys).sum() / img.sum()), float((img * xs).sum() / img.sum())


def _ink_box(img: np.ndarray, threshold: float = 0.05) -> tuple[int, int]:
    rows, cols = np.nonzero(img > threshold)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_digitizer_centred_disk_stays_centred(jvm: Path) -> None:
    yy, xx = np.mgrid[0:240, 0:240]
    disk = (((yy - 119.5) ** 2 + (xx - 119.5) ** 2) <= 40 ** 2).astype(np.float64)
    img = _digitize(jvm, disk)
    assert img.sum() > 0 and img.min() >= 0 and img.max() == pytest.approx(1.0)
    cy, cx = _centre_of_mass(img)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5, (cy, cx)
    assert _ink_box(img) == (20, 20)
    np.testing.assert_allclose(img, img.T, atol=1e-6)  # a disk stays symmetric


def test_digitizer_off_centre_bar_is_scaled_and_centred(jvm: Path) -> None:
    canvas = np.zeros((200, 300))
    canvas[10:130, 20:50] = 1.0  # a 120 x 30 bar in the top-left corner
    img = _digitize(jvm, canvas)
    assert img.min() >= 0 and img.max() <= 1 and img.sum() > 0
    cy, cx = _centre_of_mass(img)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5, (cy, cx)
    assert _ink_box(img) == (20, 5)  # longer side 20, aspect ratio 4:1 kept


def test_digitizer_grey_levels_and_blank(jvm: Path) -> None:
    canvas = np.zeros((50, 50))
    canvas[20:30, 24:26] = 0.4  # a faint thin stroke: brightest pixel scaled to 1
    img = _digitize(jvm, canvas)
    assert img.max() == pytest.approx(1.0) and img.min() >= 0
    assert not _digitize(jvm, np.zeros((30, 40))).any()


def test_gray_from_argb(jvm: Path) -> None:
    argb = [0xFFFFFFFF, 0xFF000000, 0xFF808080, 0x00FF0000]
    gray = _java(jvm, "argb", " ".join(str(v) for v in argb))
    np.testing.assert_allclose(gray, [1.0, 0.0, 128 / 255, 1.0], rtol=1e-6)


def test_ranking(jvm: Path) -> None:
    assert _java(jvm, "top", "3 0.1 0.5 0.05 0.3 0.05").tolist() == [1, 3, 0]
    probs = [0.1, 0.2, 0.7]
    np.testing.assert_allclose(_java(jvm, "probs", "0 " + " ".join(map(str, probs))), probs,
                               rtol=1e-6)
    logits = np.array([2.0, -1.0, 0.5])
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(_java(jvm, "probs", "0 " + " ".join(map(str, logits))), expected,
                               rtol=1e-5)


@pytest.mark.slow
def test_digitizer_keeps_the_classifiers_answers(jvm: Path, models: Path) -> None:
    """MNIST test images drawn 10x larger come back near the originals: same top-1 class."""
    from tether.device import Engine

    images = np.load(models / "assets" / "test_inputs.npy")[:10]
    with Engine(str(models / "assets" / "digits_fp32.tmodel")) as engine:
        for i, img in enumerate(images):
            drawn = _digitize(jvm, np.kron(img[..., 0], np.ones((10, 10))))
            assert np.abs(drawn - img[..., 0]).mean() < 0.15, i
            original = engine.run(img[None].astype(np.float32))
            redrawn = engine.run(drawn[None, ..., None].astype(np.float32))
            assert original.argmax() == redrawn.argmax(), (i, original, redrawn)
