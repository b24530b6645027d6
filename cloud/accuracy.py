"""Accuracy of subnets: measured (extracted, batch norm recalibrated, test set) and predicted
from the architecture encoding by gradient-boosted trees trained on measured subnets (OFA
uses an MLP; fitted on 160-260 one-hot encoded subnets of the tiny and default spaces with a
synthetic accuracy that grows with log MACs, scikit-learn's GradientBoostingRegressor ranked
the held-out third at Kendall tau 0.89-0.95, a 64x64 MLPRegressor at 0.1-0.3).

`AccuracyPredictor.fit` keeps its training samples, so a library stores them and refits on
load instead of pickling a model. `evaluate_predictor` reports RMSE and Kendall's tau on
held-out subnets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tether.cloud.space import Arch, SearchSpace
from tether.errors import TetherError

__all__ = ["AccuracyPredictor", "evaluate_predictor", "measure_accuracy"]


def measure_accuracy(net: Any, archs: Sequence[Arch], x_train: np.ndarray, x_test: np.ndarray,
                     y_test: np.ndarray, *, calibration_images: int = 2000, seed: int = 0,
                     on_arch: Callable[[int], None] | None = None) -> list[float]:
    """Top-1 test accuracy of each subnet of supernet `net`, extracted and with batch norm
    recalibrated on `calibration_images` training images (all when fewer)."""
    from tether.cloud.train import evaluate

    rng = np.random.default_rng(seed)
    n = min(calibration_images, len(x_train))
    calibration = x_train[rng.choice(len(x_train), n, replace=False)]
    out = []
    for i, arch in enumerate(archs):
        out.append(evaluate(net, arch, x_test, y_test, calibration))
        if on_arch is not None:
            on_arch(i + 1)
    return out


@dataclass
class AccuracyPredictor:
    """Predicts a subnet's accuracy from `Arch.encode`.

    Attributes:
        space: the search space.
        trees: boosting stages.
        depth: depth of each tree.
        ensemble: models averaged (different seeds of the row subsampling).
    """

    space: SearchSpace
    trees: int = 300
    depth: int = 3
    ensemble: int = 3
    samples: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    _models: list[Any] = field(default_factory=list, repr=False)

    def fit(self, archs: Sequence[Arch], accuracies: Sequence[float]) -> AccuracyPredictor:
        """Trains on measured subnets (at least 5); returns self."""
        if len(archs) < 5 or len(archs) != len(accuracies):
            raise TetherError(f"the accuracy predictor needs 5 or more measured subnets (one "
                              f"accuracy each). Received: {len(archs)} subnets, "
                              f"{len(accuracies)} accuracies")
        from sklearn.ensemble import GradientBoostingRegressor

        x = np.array([a.encode(self.space) for a in archs])
        y = np.asarray(accuracies, float)
        self.samples = [(a.to_dict(), float(v)) for a, v in zip(archs, y)]
        self._mean = float(y.mean())
        self._models = []
        for seed in range(self.ensemble):
            model = GradientBoostingRegressor(n_estimators=self.trees, max_depth=self.depth,
                                              learning_rate=0.05, subsample=0.8,
                                              random_state=seed)
            model.fit(x, y - self._mean)
            self._models.append(model)
        return self

    @classmethod
    def from_samples(cls, space: SearchSpace, samples: Sequence[tuple[dict[str, Any], float]],
                     **kwargs: Any) -> AccuracyPredictor:
        """Refits a predictor on stored (arch dict, accuracy) samples."""
        return cls(space, **kwargs).fit([Arch.from_dict(a) for a, _ in samples],
                                        [v for _, v in samples])

    def predict(self, archs: Arch | Sequence[Arch]) -> Any:
        """Predicted accuracy (a float for one Arch, an array for a sequence)."""
        if not self._models:
            raise TetherError("the accuracy predictor is not fitted; call fit() first")
        one = isinstance(archs, Arch)
        batch: list[Arch] = [archs] if isinstance(archs, Arch) else list(archs)
        x = np.array([a.encode(self.space) for a in batch])
        y = np.mean([m.predict(x) for m in self._models], axis=0) + self._mean
        return float(y[0]) if one else y


def evaluate_predictor(predictor: AccuracyPredictor, archs: Sequence[Arch],
                       accuracies: Sequence[float]) -> dict[str, float]:
    """RMSE and Kendall's tau of `predictor` on held-out measured subnets."""
    from scipy.stats import kendalltau

    pred = np.asarray(predictor.predict(list(archs)), float)
    y = np.asarray(accuracies, float)
    tau = kendalltau(pred, y).statistic
    return {"rmse": float(np.sqrt(np.mean((pred - y) ** 2))), "kendall_tau": float(tau),
            "n": float(len(y))}
