"""The JNI bridge (android_demo/bridge, android_demo/jni) on the desktop JVM against the host
build of the engine: the same classes as `tether run`, the refusals, and fine-tuning that
matches tether.device.Trainer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tether.device import Engine, Trainer

from tether.data import mnist5k

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "android_demo"


@pytest.fixture(scope="module")
def java(tmp_path_factory: pytest.TempPathFactory, native_libs: Path):
    """Runs BridgeCheck (android_demo/tests/BridgeCheck.java) with the bridge's classes."""
    classes = tmp_path_factory.mktemp("classes")
    sources = sorted(str(p) for p in (DEMO / "bridge" / "src").rglob("*.java"))
    subprocess.run(["javac", "-Xlint:all", "-Werror", "--release", "8", "-d", str(classes),
                    *sources, str(DEMO / "tests" / "BridgeCheck.java")],
                   check=True, capture_output=True, text=True)

    def run(*args: str) -> list[str]:
        out = subprocess.run(["java", f"-Djava.library.path={native_libs / 'host'}", "-cp",
                              str(classes), "BridgeCheck", *args], check=False, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.splitlines()

    return run


def _tether_run(tmp: Path, model: Path, x: np.ndarray) -> np.ndarray:
    """Each image through `tether run` (the CLI), as a user would check a model."""
    outs = []
    for i, image in enumerate(x):
        np.save(tmp / f"x{i}.npy", image[None])
        subprocess.run([str(ROOT / ".venv" / "bin" / "tether"), "run", str(model), "--input",
                        str(tmp / f"x{i}.npy"), "--output", str(tmp / f"y{i}.npy")],
                       check=True, capture_output=True, text=True)
        outs.append(np.load(tmp / f"y{i}.npy").reshape(-1))
    return np.stack(outs)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_host_jvm_classifies_as_tether_run(java, demo_assets: Path, tmp_path: Path,
                                           precision: str) -> None:
    # Prepare: the 20 test images the models were shipped with
    x = np.load(demo_assets / "test_inputs.npy")
    x.astype("<f4").tofile(tmp_path / "x.f32")
    model = demo_assets / f"digits_{precision}.tmodel"
    # Execute
    lines = java("classify", str(model), str(tmp_path / "x.f32"))
    reference = _tether_run(tmp_path, model, x)
    # Assert: the same class for each of the 20, the same probabilities
    assert len(lines) == 20
    got = np.array([[float(v) for v in line.split()[1:]] for line in lines], np.float32)
    assert [int(line.split()[0]) for line in lines] == list(reference.argmax(1))
    np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-7)


def test_bridge_refuses_bad_input_and_closed_handles(java, demo_assets: Path) -> None:
    lines = dict(line.split(": ", 1) for line in java("errors",
                                                      str(demo_assets / "digits_fp32.tmodel")))
    assert "ACCEPTED" not in " ".join(lines.values())
    assert lines["truncated"].startswith("TetherException: format_error: truncated")
    assert "checksum mismatch" in lines["corrupted"]
    assert lines["short input"].startswith("IllegalArgumentException")
    for what in ("closed session", "closed model", "session of closed model",
                 "trainer of closed model"):
        assert lines[what].startswith("IllegalStateException"), (what, lines[what])
    assert "no_such_tensor" in lines["unknown head input"]


def _splitmix_orders(n: int, epochs: int, seed: int) -> list[np.ndarray]:
    """HeadTuner's batches: per epoch a Fisher-Yates pass driven by SplitMix64."""
    mask, state, order, out = (1 << 64) - 1, seed & ((1 << 64) - 1), list(range(n)), []
    for _ in range(epochs):
        for i in range(n - 1, 0, -1):
            state = (state + 0x9E3779B97F4A7C15) & mask
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
            j = (z ^ (z >> 31)) % (i + 1)
            order[i], order[j] = order[j], order[i]
        out.append(np.array(order))
    return out


def test_host_jvm_fine_tuning_matches_the_engine_trainer(java, demo_assets: Path,
                                                         tmp_path: Path) -> None:
    # Prepare: a phone user's drawings stand-in: held-out digits with finger-thick strokes
    # (3x3 dilation, where the shipped model drops to ~0.8), 200 to adapt on, 300 to score on
    from scipy import ndimage

    def thick(x: np.ndarray) -> np.ndarray:
        return np.stack([ndimage.grey_dilation(i[..., 0], size=(3, 3))[..., None] for i in x])

    ds = mnist5k()
    x_train, y_train = thick(ds.x_test[:200]), ds.y_test[:200].astype(np.int32)
    x_eval, y_eval = thick(ds.x_test[200:500]), ds.y_test[200:500].astype(np.int32)
    for name, a in {"xt": x_train, "yt": y_train, "xe": x_eval, "ye": y_eval}.items():
        a.astype("<f4" if a.dtype == np.float32 else "<i4").tofile(tmp_path / name)
    head = json.loads((demo_assets / "models.json").read_text())["head_input"]
    full, features = demo_assets / "digits_fp32.tmodel", demo_assets / "digits_features.tmodel"
    epochs, lr, seed = 8, 1e-3, 7
    # Execute: the app's path on the JVM
    lines = java("finetune", str(full), str(features), head, *(str(tmp_path / n) for n in
                 ("xt", "yt", "xe", "ye")), str(epochs), str(lr), str(seed),
                 str(tmp_path / "tuned.tmodel"))
    before, after = float(lines[0].split()[1]), float(lines[2].split()[1])
    loss = lines[1].split()[1:]
    # ... and the same head trained through tether.device.Trainer on the same batches
    with Engine(features.read_bytes()) as engine:
        f_train = np.stack([np.asarray(engine.run(x[None])).reshape(-1) for x in x_train])
        f_eval = np.stack([np.asarray(engine.run(x[None])).reshape(-1) for x in x_eval])
    with Trainer(full.read_bytes(), head_input=head, batch_size=32, learning_rate=lr,
                 seed=seed) as trainer:
        ref_before = trainer.evaluate(f_eval, y_eval)
        ref_loss = []
        for order in _splitmix_orders(len(x_train), epochs, seed):
            total = sum(trainer.step(f_train[order[i:i + 32]], y_train[order[i:i + 32]]) *
                        len(order[i:i + 32]) for i in range(0, len(order), 32))
            ref_loss.append(total / len(order))
        ref_after = trainer.evaluate(f_eval, y_eval)
    # Assert: the JVM's fine-tuning reaches the engine trainer's accuracy (within 1 point),
    # and the exported classifier scores what the tuner reported
    assert abs(after - ref_after) <= 0.01, (after, ref_after)
    assert before == pytest.approx(ref_before, abs=1e-6)
    np.testing.assert_allclose([float(v) for v in loss], ref_loss, rtol=1e-4)
    assert after >= before + 0.05, (before, after)
    with Engine((tmp_path / "tuned.tmodel").read_bytes()) as engine:
        tuned = np.stack([np.asarray(engine.run(x[None])).reshape(-1) for x in x_eval])
    assert float(np.mean(tuned.argmax(1) == y_eval)) == pytest.approx(after, abs=1e-6)
