import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits():
    from tether import data

    return data.digits()


@pytest.fixture(scope="session")
def trained_demo_cnn(digits):
    """The demo CNN trained briefly on digits (enough for non-trivial BN statistics)."""
    import keras

    from tether.models import demo_cnn

    model = demo_cnn(digits.input_shape, digits.num_classes, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(digits.x_train, digits.y_train, epochs=4, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="session")
def demo_tmodel_bytes(trained_demo_cnn):
    from tether.converter import convert

    return convert(trained_demo_cnn).to_bytes()

