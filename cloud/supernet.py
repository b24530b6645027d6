"""The elastic supernet in Keras 3 and the extraction of a subnet into a plain Keras model.

The supernet stores the largest network once. Which subnet runs is set by non-trainable
control variables (`Supernet.set_arch`): per block a 0/1 mask over the hidden channels (the
active expand ratio is a prefix of the largest), a one-hot choice of kernel size, and a 0/1
gate (a block past its stage's depth passes its input through). Masks keep every tensor at the
largest shape, so one traced graph per resolution serves every subnet: multiplying a channel by
0 gives exactly what slicing it away gives, and batch normalization is per channel.

Kernels: each block stores one depthwise kernel of the largest size. A smaller kernel is the
centre of the next larger one, transformed by a learned (k*k x k*k) matrix shared by the
block's channels (identity at start), as in Once-for-All; `kernel_transform=False` keeps the
plain centre crop.

`extract(supernet, arch)` builds a standalone Keras model of only the chosen blocks, channels
and kernels (weights sliced and transformed) whose output equals the supernet's in that
configuration; its parameter count is `arch.params(space)` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from tether.cloud.space import Arch, SearchSpace

__all__ = ["ElasticBlock", "Supernet", "block_layers", "classifier_layers", "extract",
           "head_layers", "resize_images", "stem_layers"]

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3


def _centre(kernel: Any, k: int) -> Any:
    big = kernel.shape[0]
    lo = (big - k) // 2
    return kernel[lo:lo + k, lo:lo + k]


@keras.saving.register_keras_serializable(package="tether")
class ElasticBlock(keras.layers.Layer):
    """An inverted-residual block at its largest: 1x1 expand, BN, ReLU6, depthwise (largest
    kernel), BN, ReLU6, 1x1 project, BN, plus the input when stride is 1 and widths match.

    Args:
        cin, cout: input and output channels.
        max_hidden: hidden channels at the largest expand ratio.
        kernel_sizes: the kernel choices (odd), any order.
        stride: 1 or 2.
        kernel_transform: learn the centre-to-smaller-kernel matrices (True) or crop only.
    """

    def __init__(self, cin: int, cout: int, max_hidden: int, kernel_sizes: Sequence[int],
                 stride: int, kernel_transform: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cin, self.cout, self.max_hidden = int(cin), int(cout), int(max_hidden)
        self.kernel_sizes = tuple(sorted(int(k) for k in kernel_sizes))
        self.stride = int(stride)
        self.kernel_transform = bool(kernel_transform)
        self.residual = self.stride == 1 and self.cin == self.cout
        self.bn_expand = keras.layers.BatchNormalization(momentum=BN_MOMENTUM,
                                                         epsilon=BN_EPSILON, name="bn_expand")
        self.bn_dw = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                                     name="bn_dw")
        self.bn_project = keras.layers.BatchNormalization(momentum=BN_MOMENTUM,
                                                          epsilon=BN_EPSILON, name="bn_project")

    def build(self, input_shape: Any) -> None:
        kmax, h = self.kernel_sizes[-1], self.max_hidden
        self.expand_kernel = self.add_weight(name="expand_kernel", shape=(1, 1, self.cin, h),
                                             initializer="he_normal")
        self.dw_kernel = self.add_weight(name="dw_kernel", shape=(kmax, kmax, h, 1),
                                         initializer="he_normal")
        self.project_kernel = self.add_weight(name="project_kernel",
                                              shape=(1, 1, h, self.cout),
                                              initializer="glorot_uniform")
        # transforms[i] maps the centre of kernel_sizes[i + 1]'s kernel to kernel_sizes[i]'s
        self.transforms = [
            self.add_weight(name=f"transform_{k}x{k}", shape=(k * k, k * k),
                            initializer="identity", trainable=self.kernel_transform)
            for k in self.kernel_sizes[:-1]]
        self.hidden_mask = self.add_weight(name="hidden_mask", shape=(h,), initializer="ones",
                                           trainable=False)
        self.kernel_choice = self.add_weight(name="kernel_choice",
                                             shape=(len(self.kernel_sizes),),
                                             initializer="zeros", trainable=False)
        self.gate = self.add_weight(name="gate", shape=(), initializer="ones", trainable=False)
        self.kernel_choice.assign(np.eye(len(self.kernel_sizes), dtype="float32")[-1])
        self.bn_expand.build((None, None, None, h))
        self.bn_dw.build((None, None, None, h))
        self.bn_project.build((None, None, None, self.cout))

    def kernels(self) -> list[Any]:
        """The depthwise kernel of each size, smallest first (k, k, hidden, 1)."""
        out = [self.dw_kernel]
        current = self.dw_kernel
        for i in range(len(self.kernel_sizes) - 2, -1, -1):
            k = self.kernel_sizes[i]
            centre = _centre(current, k)
            if self.kernel_transform:
                flat = ops.transpose(ops.reshape(centre, (k * k, self.max_hidden)))
                flat = ops.matmul(flat, self.transforms[i])
                centre = ops.reshape(ops.transpose(flat), (k, k, self.max_hidden, 1))
            out.append(centre)
            current = centre
        return out[::-1]

    def active_kernel(self) -> Any:
        """The chosen kernel, zero-padded to the largest size (a one-hot sum)."""
        kmax = self.kernel_sizes[-1]
        total = 0.0
        for i, kern in enumerate(self.kernels()):
            pad = (kmax - self.kernel_sizes[i]) // 2
            if pad:
                kern = ops.pad(kern, ((pad, pad), (pad, pad), (0, 0), (0, 0)))
            total = total + self.kernel_choice[i] * kern
        return total

    def call(self, x: Any, training: Any = None) -> Any:
        mask = ops.reshape(self.hidden_mask, (1, 1, 1, self.max_hidden))
        h = ops.conv(x, self.expand_kernel, strides=1, padding="same")
        h = ops.relu6(self.bn_expand(h, training=training)) * mask
        h = ops.depthwise_conv(h, self.active_kernel(), strides=self.stride, padding="same")
        h = ops.relu6(self.bn_dw(h, training=training)) * mask
        y = ops.conv(h, self.project_kernel, strides=1, padding="same")
        y = self.bn_project(y, training=training)
        if self.residual:
            return x + self.gate * y
        return y

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        n, hgt, wid, _ = input_shape
        s = self.stride

        def out(d: Any) -> Any:
            return None if d is None else -(-d // s)
        return (n, out(hgt), out(wid), self.cout)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "cin": self.cin, "cout": self.cout,
                "max_hidden": self.max_hidden, "kernel_sizes": list(self.kernel_sizes),
                "stride": self.stride, "kernel_transform": self.kernel_transform}


@keras.saving.register_keras_serializable(package="tether")
class Supernet(keras.Model):
    """The largest network of `space`, elastic in depth, expand ratio and kernel size (the
    resolution is the size of the images given). Outputs logits.

    Args:
        space: a `SearchSpace` (or its dict form).
        kernel_transform: see `ElasticBlock`.
    """

    def __init__(self, space: SearchSpace | dict[str, Any], kernel_transform: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.space = space if isinstance(space, SearchSpace) else SearchSpace.from_dict(space)
        self.kernel_transform = bool(kernel_transform)
        sp = self.space
        self.stem = keras.layers.Conv2D(sp.stem_channels, 3, strides=sp.stem_stride,
                                        padding="same", use_bias=False, name="stem")
        self.stem_bn = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                                       name="stem_bn")
        self.blocks: list[list[ElasticBlock]] = []
        cin = sp.stem_channels
        for i, stage in enumerate(sp.stages):
            row = []
            for j in range(stage.blocks):
                row.append(ElasticBlock(cin, stage.channels, sp.max_hidden(cin),
                                        sp.kernel_sizes, stage.stride if j == 0 else 1,
                                        kernel_transform, name=f"stage{i}_block{j}"))
                cin = stage.channels
            self.blocks.append(row)
        self.head = keras.layers.Conv2D(sp.head_channels, 1, use_bias=False, name="head")
        self.head_bn = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                                       name="head_bn")
        self.classifier = keras.layers.Dense(sp.num_classes, name="classifier")
        res = max(sp.resolutions)
        self.build((None, res, res, sp.input_channels))
        self.arch = sp.largest()

    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        self.stem.build(shape)
        shape = self.stem.compute_output_shape(shape)
        self.stem_bn.build(shape)
        for row in self.blocks:
            for block in row:
                block.build(shape)
                shape = block.compute_output_shape(shape)
        self.head.build(shape)
        self.head_bn.build(self.head.compute_output_shape(shape))
        self.classifier.build((None, self.space.head_channels))
        self.built = True

    def call(self, x: Any, training: Any = None) -> Any:
        x = ops.relu6(self.stem_bn(self.stem(x), training=training))
        for row in self.blocks:
            for block in row:
                x = block(x, training=training)
        x = ops.relu6(self.head_bn(self.head(x), training=training))
        return self.classifier(ops.mean(x, axis=(1, 2)))

    def set_arch(self, arch: Arch) -> None:
        """Makes `arch` the subnet that runs (its resolution is that of the images given)."""
        self.space.validate(arch)
        sp = self.space
        cin = sp.stem_channels
        for i, row in enumerate(self.blocks):
            active = arch.stages[i]
            for j, block in enumerate(row):
                if j < len(active):
                    choice = active[j]
                    mid = sp.hidden(cin, choice.expand)
                    mask = np.zeros(block.max_hidden, "float32")
                    mask[:mid] = 1.0
                    block.hidden_mask.assign(mask)
                    block.kernel_choice.assign(np.eye(len(block.kernel_sizes), dtype="float32")[
                        block.kernel_sizes.index(choice.kernel)])
                    block.gate.assign(1.0)
                else:
                    block.gate.assign(0.0)
                cin = sp.stages[i].channels
        self.arch = arch

    def sort_channels(self) -> None:
        """Reorders every block's hidden channels by importance (L1 norm of their projection
        weights, largest first), so that narrower expand ratios keep the most important
        prefix; the network computes the same function afterwards."""
        for row in self.blocks:
            for block in row:
                proj = block.project_kernel.numpy()
                order = np.argsort(-np.abs(proj[0, 0]).sum(axis=1), kind="stable")
                block.project_kernel.assign(proj[:, :, order, :])
                block.expand_kernel.assign(block.expand_kernel.numpy()[..., order])
                block.dw_kernel.assign(block.dw_kernel.numpy()[:, :, order, :])
                for bn in (block.bn_expand, block.bn_dw):
                    for var in bn.weights:
                        var.assign(var.numpy()[order])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "space": self.space.to_dict(),
                "kernel_transform": self.kernel_transform}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Supernet:
        config = dict(config)
        for k in ("trainable", "dtype"):
            config.pop(k, None)
        return cls(**config)


def resize_images(x: np.ndarray, resolution: int) -> np.ndarray:
    """Images (N, H, W, C) resized to (N, resolution, resolution, C), bilinear."""
    x = np.asarray(x, np.float32)
    if x.shape[1] == resolution and x.shape[2] == resolution:
        return x
    return np.asarray(ops.image.resize(x, (resolution, resolution), interpolation="bilinear",
                                       antialias=x.shape[1] > resolution), np.float32)


def _bn_weights(bn: keras.layers.BatchNormalization, n: int | None = None) -> list[np.ndarray]:
    return [w.numpy()[:n] if n is not None else w.numpy() for w in bn.weights]


def _new_bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def stem_layers(x: Any, space: SearchSpace) -> tuple[Any, list[Any]]:
    """The stem on Keras tensor `x`: 3x3 conv, BN, ReLU6. Returns (output, [conv, bn])."""
    L = keras.layers
    conv = L.Conv2D(space.stem_channels, 3, strides=space.stem_stride, padding="same",
                    use_bias=False, name="stem")
    bn = _new_bn("stem_bn")
    return L.ReLU(6.0, name="stem_relu6")(bn(conv(x))), [conv, bn]


def block_layers(x: Any, mid: int, cout: int, kernel: int, stride: int, residual: bool,
                 tag: str) -> tuple[Any, list[Any]]:
    """One inverted-residual block on Keras tensor `x` (1x1 expand to `mid`, BN, ReLU6,
    depthwise `kernel` at `stride`, BN, ReLU6, 1x1 project to `cout`, BN, plus `x` when
    `residual`). Returns (output, [expand, bn, dw, bn, project, bn])."""
    L = keras.layers
    expand = L.Conv2D(mid, 1, use_bias=False, name=f"{tag}_expand")
    bn1 = _new_bn(f"{tag}_expand_bn")
    dw = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                           name=f"{tag}_dw")
    bn2 = _new_bn(f"{tag}_dw_bn")
    project = L.Conv2D(cout, 1, use_bias=False, name=f"{tag}_project")
    bn3 = _new_bn(f"{tag}_project_bn")
    h = L.ReLU(6.0, name=f"{tag}_expand_relu6")(bn1(expand(x)))
    h = L.ReLU(6.0, name=f"{tag}_dw_relu6")(bn2(dw(h)))
    y = bn3(project(h))
    out = L.Add(name=f"{tag}_add")([x, y]) if residual else y
    return out, [expand, bn1, dw, bn2, project, bn3]


def head_layers(x: Any, space: SearchSpace) -> tuple[Any, list[Any]]:
    """The head on Keras tensor `x`: 1x1 conv, BN, ReLU6. Returns (output, [conv, bn])."""
    L = keras.layers
    conv = L.Conv2D(space.head_channels, 1, use_bias=False, name="head")
    bn = _new_bn("head_bn")
    return L.ReLU(6.0, name="head_relu6")(bn(conv(x))), [conv, bn]


def classifier_layers(x: Any, space: SearchSpace, softmax: bool) -> tuple[Any, list[Any]]:
    """Global average pooling and the dense classifier. Returns (output, [dense])."""
    L = keras.layers
    dense = L.Dense(space.num_classes, activation="softmax" if softmax else None,
                    name="classifier")
    return dense(L.GlobalAveragePooling2D(name="pool")(x)), [dense]


def extract(supernet: Supernet, arch: Arch, *, softmax: bool = True,
            name: str | None = None) -> keras.Model:
    """A plain Keras model of subnet `arch` (Conv2D, DepthwiseConv2D, BatchNormalization,
    ReLU6, Add, GlobalAveragePooling2D, Dense) with the supernet's weights sliced and its
    kernels transformed. Its input is (arch.resolution, arch.resolution, channels); its
    output is the class probabilities (`softmax=True`) or the logits.

    Raises:
        SpaceError: `arch` is not in the supernet's space.
    """
    sp = supernet.space
    sp.validate(arch)
    r = arch.resolution
    x_in = keras.Input((r, r, sp.input_channels), name="image")
    x, (stem, stem_bn) = stem_layers(x_in, sp)
    weights: list[tuple[Any, list[np.ndarray]]] = [
        (stem, [supernet.stem.kernel.numpy()]), (stem_bn, _bn_weights(supernet.stem_bn))]
    cin = sp.stem_channels
    for i, active in enumerate(arch.stages):
        for j, choice in enumerate(active):
            block = supernet.blocks[i][j]
            mid = sp.hidden(cin, choice.expand)
            x, (expand, bn1, dw, bn2, project, bn3) = block_layers(
                x, mid, block.cout, choice.kernel, block.stride, block.residual, f"s{i}b{j}")
            kern = np.asarray(block.kernels()[block.kernel_sizes.index(choice.kernel)])
            weights += [(expand, [block.expand_kernel.numpy()[..., :mid]]),
                        (bn1, _bn_weights(block.bn_expand, mid)),
                        (dw, [kern[:, :, :mid, :]]),
                        (bn2, _bn_weights(block.bn_dw, mid)),
                        (project, [block.project_kernel.numpy()[:, :, :mid, :]]),
                        (bn3, _bn_weights(block.bn_project))]
            cin = block.cout
    x, (head, head_bn) = head_layers(x, sp)
    out, (dense,) = classifier_layers(x, sp, softmax)
    weights += [(head, [supernet.head.kernel.numpy()]), (head_bn, _bn_weights(supernet.head_bn)),
                (dense, [w.numpy() for w in supernet.classifier.weights])]
    model = keras.Model(x_in, out, name=name or f"subnet_{arch.key()}")
    for layer, values in weights:
        layer.set_weights(values)
    return model
