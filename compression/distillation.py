"""Knowledge distillation (Hinton et al., 2015) for any Keras 3 teacher-student pair.

    loss = (1 - alpha) * CE(y, softmax(z_s)) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

The T^2 factor keeps the soft term's gradient scale independent of T. Models that end in
a softmax are read through `log(p)`, which equals the logits up to a per-sample constant,
and softmax ignores that constant, so probability outputs distil exactly like logits.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import numpy as np
from tether.compression._common import outputs_probabilities
from tether.compression._errors import CompressionError

__all__ = ["DistillationConfig", "Distiller", "distill", "distillation_loss",
           "pre_softmax_logits"]

logger = logging.getLogger(__name__)

_EPS = 1e-7


@dataclass(frozen=True)
class DistillationConfig:
    """Hinton's loss settings.

    Attributes:
        temperature: Softening temperature T > 0 (default 4.0).
        alpha: Weight in [0, 1] of the soft (teacher) term; 1 - alpha weighs the hard
            label cross-entropy (default 0.9). alpha=0 is plain training.
    """

    temperature: float = 4.0
    alpha: float = 0.9

    def __post_init__(self) -> None:
        if not self.temperature > 0 or math.isinf(self.temperature):
            raise CompressionError(
                "DistillationConfig.temperature must be a finite number > 0. "
                f"Received: temperature={self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise CompressionError(
                f"DistillationConfig.alpha must be in [0, 1]. Received: alpha={self.alpha}")


def _as_logits(out: Any, probabilities: bool) -> Any:
    from keras import ops

    return ops.log(ops.clip(out, _EPS, 1.0)) if probabilities else out


def distillation_loss(y_true: Any, student_logits: Any, teacher_logits: Any,
                      temperature: float = 4.0, alpha: float = 0.9) -> Any:
    """Mean over the batch of (1-alpha)·CE(y, s) + alpha·T²·KL(softmax(t/T) ‖ softmax(s/T)).

    Args:
        y_true: Integer labels, shape (N,).
        student_logits, teacher_logits: (N, K) logits (keras.ops tensors or arrays).
        temperature: T > 0 (default 4.0).
        alpha: Soft-term weight in [0, 1] (default 0.9).

    Returns:
        A scalar tensor.

    >>> import numpy as np
    >>> s = np.array([[1.0, 0.0]], "float32"); t = np.array([[1.0, 0.0]], "float32")
    >>> round(float(distillation_loss(np.array([0]), s, t, 2.0, 1.0)), 6)  # same logits
    0.0
    """
    from keras import ops

    t = float(temperature)
    y = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    log_p_s = ops.log_softmax(student_logits, axis=-1)
    k = ops.shape(student_logits)[-1]
    hard = -ops.sum(ops.one_hot(y, k) * log_p_s, axis=-1)
    log_p_t_soft = ops.log_softmax(ops.divide(teacher_logits, t), axis=-1)
    log_p_s_soft = ops.log_softmax(ops.divide(student_logits, t), axis=-1)
    kl = ops.sum(ops.exp(log_p_t_soft) * (log_p_t_soft - log_p_s_soft), axis=-1)
    return ops.mean((1.0 - alpha) * hard + alpha * (t * t) * kl)


class Distiller:
    """Builds a trainable Keras model that distils `teacher` into `student`.

    Use `model = Distiller(teacher, student, config).model`, then `model.compile(optimizer)`
    and `model.fit(x, y)`; the student's weights are trained in place (the teacher is
    frozen, `teacher.trainable = False`, and runs in inference mode; set it back to train
    the teacher later — `distill` does). `Distiller.student` is the plain student.
    """

    def __init__(self, teacher: Any, student: Any,
                 config: DistillationConfig = DistillationConfig()) -> None:
        t_out, s_out = tuple(teacher.outputs[0].shape), tuple(student.outputs[0].shape)
        if t_out[-1] != s_out[-1]:
            raise CompressionError(
                f"Distiller: teacher '{teacher.name}' has {t_out[-1]} outputs but student "
                f"'{student.name}' has {s_out[-1]}; both must predict the same classes")
        self.teacher = teacher
        self.student = student
        self.config = config
        self.model = _make_distill_model(teacher, student, config)


def pre_softmax_logits(model: Any) -> Any | None:
    """A function `x -> z` giving the logits a softmax-ended model feeds its softmax, or None.

    Reading a confident teacher through `log(p)` loses its soft targets: float32
    probabilities of the wrong classes fall below the clip (1e-7) and become equal, which
    is what T > 1 was meant to reveal. For a last layer that is `Dense(...,
    activation="softmax")`, `Activation("softmax")` or `Softmax`, this returns the exact
    pre-softmax values instead; other models (nested, or not softmax-ended) give None.
    """
    import keras
    from keras import ops

    last = model.layers[-1] if getattr(model, "layers", None) else None
    if last is None or not getattr(model, "inputs", None):
        return None
    cls = type(last).__name__
    act = getattr(getattr(last, "activation", None), "__name__", None)
    if not (cls == "Softmax" or (cls in ("Dense", "Activation") and act == "softmax")):
        return None
    try:
        features = keras.Model(model.inputs, last.input)
    except Exception:  # noqa: BLE001 - a layer used twice or a subclassed model: fall back
        return None
    if cls != "Dense":
        return lambda x: features(x, training=False)

    def dense_logits(x: Any) -> Any:
        z = ops.matmul(features(x, training=False), last.kernel)
        return z + last.bias if last.use_bias else z

    return dense_logits


def _make_distill_model(teacher: Any, student: Any, config: DistillationConfig) -> Any:
    import keras

    t_prob = outputs_probabilities(teacher)
    s_prob = outputs_probabilities(student)
    teacher_logits = pre_softmax_logits(teacher) if t_prob else None

    class _DistillModel(keras.Model):
        def __init__(self) -> None:
            super().__init__(name=f"distill_{student.name}")
            self.student = student
            self.teacher = teacher
            self.teacher.trainable = False

        def call(self, x: Any, training: bool = False) -> Any:
            return self.student(x, training=training)

        def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None,
                         sample_weight: Any = None, training: bool = True) -> Any:
            if teacher_logits is not None:
                t_logits = teacher_logits(x)
            else:
                t_logits = _as_logits(self.teacher(x, training=False), t_prob)
            loss = distillation_loss(y, _as_logits(y_pred, s_prob), t_logits,
                                     config.temperature, config.alpha)
            return loss

    return _DistillModel()


def distill(teacher: Any, student: Any, x: np.ndarray, y: np.ndarray, *,
            config: DistillationConfig = DistillationConfig(), epochs: int = 5,
            batch_size: int = 64, learning_rate: float | Any = 1e-3,
            validation_data: tuple | None = None, callbacks: Sequence[Any] = (),
            verbose: int = 0) -> Any:
    """Trains `student` in place against `teacher` with Adam; returns the Keras History.

    `learning_rate` is a float or a Keras `LearningRateSchedule` (e.g. cosine decay over the
    run); `callbacks` are Keras callbacks for the fit (progress bars, early stopping).

    Raises:
        CompressionError: mismatched class counts, or x/y of different lengths.
    """
    import keras

    if len(x) != len(y):
        raise CompressionError(
            f"distill: x has {len(x)} samples but y has {len(y)}; pass matching arrays")
    was_trainable = teacher.trainable
    try:
        d = Distiller(teacher, student, config)
        d.model.compile(optimizer=keras.optimizers.Adam(learning_rate), metrics=None)
        return d.model.fit(x, y, epochs=epochs, batch_size=batch_size,
                           validation_data=validation_data, callbacks=list(callbacks),
                           verbose=verbose)
    finally:
        teacher.trainable = was_trainable  # the teacher is frozen only while distilling
