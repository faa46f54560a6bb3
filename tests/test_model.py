"""Tests for keras_cam.model: graph shape, loud arguments, weights, trainability, saving.

Everything runs offline with random weights at 64 px, except ResNet50, which is
built once at 224 and never run. The ImageNet download is replaced by a function
that fails, so the offline error path is tested the same way on every machine.
The optional ``shared`` check compares our model with the stock Keras MobileNetV2
on a real photo with real ImageNet weights from ``../shared``.
"""

import re
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import randomize_batchnorm


from keras_cam import model as kmodel  # noqa: E402
from keras_cam.model import (  # noqa: E402
    HEAD_NAME,
    Preprocess,
    WeightsUnavailableError,
    build_cam_model,
    classifier_view,
    load_cam_model,
    set_trainable,
)

SIZE = 64
NUM_CLASSES = 4
SHARED = Path(__file__).resolve().parents[2] / "shared"

# backbone -> (feature layer, features shape at 64 px)
SHAPES_64 = {
    "tiny": ("tiny_out", (None, 8, 8, 128)),
    "mobilenet_v2": ("out_relu", (None, 2, 2, 1280)),
    "resnet18": ("conv5_block2_out", (None, 2, 2, 512)),
}


def _images(n=2, size=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _randomize(model, seed=0):
    """Non-trivial BN statistics and head bias, so copies and reloads are really checked."""
    rng = randomize_batchnorm(model, seed)
    if HEAD_NAME in [layer.name for layer in model.layers]:
        bias = model.get_layer(HEAD_NAME).bias
        bias.assign(rng.normal(0.0, 1.0, bias.shape).astype("float32"))


def _check_graph(model, feature_layer, features_shape, num_classes):
    out = model.output
    assert isinstance(out, dict) and set(out) == {"logits", "features"}
    assert tuple(out["logits"].shape) == (None, num_classes)
    assert tuple(out["features"].shape) == features_shape
    # The features are the backbone's own named layer, not something after it.
    assert out["features"] is model.get_layer(feature_layer).output
    # Flat: no nested Model among the layers (no "Graph disconnected" on reload/export).
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    assert nested == []
    head = model.get_layer(HEAD_NAME)
    assert isinstance(head, keras.layers.Dense) and head.units == num_classes
    assert head.activation is keras.activations.linear
    assert out["logits"] is head.output
    assert isinstance(model.get_layer("preprocess"), Preprocess)


# --- graph ---------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", sorted(SHAPES_64))
def test_named_outputs_shapes_and_flat_graph(backbone):
    model = build_cam_model(NUM_CLASSES, backbone=backbone, weights="none", image_size=SIZE)
    feature_layer, shape = SHAPES_64[backbone]
    _check_graph(model, feature_layer, shape, NUM_CLASSES)
    assert tuple(model.input.shape) == (None, SIZE, SIZE, 3)
    out = model(_images(), training=False)
    assert set(out) == {"logits", "features"}
    assert out["logits"].shape == (2, NUM_CLASSES)
    assert out["features"].shape == (2,) + shape[1:]
    # The stride the --feature-stride check goes by is the one the graph has.
    assert kmodel.BACKBONES[backbone].stride == SIZE // shape[1]


def test_resnet50_at_224_build_only():
    model = build_cam_model(1000, backbone="resnet50", weights=None, image_size=224)
    _check_graph(model, "conv5_block3_out", (None, 7, 7, 2048), 1000)
    assert kmodel.BACKBONES["resnet50"].stride == 224 // 7
    assert model.get_layer("preprocess").mode == "caffe"


# --- argument checks ---------------------------------------------------------------

@pytest.mark.parametrize("kwargs, fragment", [
    ({"backbone": "resnet101"}, "Received: backbone='resnet101'"),
    ({"backbone": "ResNet50"}, "Received: backbone='ResNet50'"),
    ({"num_classes": 1}, "Received: num_classes=1"),
    ({"num_classes": 0}, "Received: num_classes=0"),
    ({"weights": "imagent"}, "Received: weights='imagent'"),
    ({"weights": ""}, "Received: weights=''"),
    ({"weights": "no/such/dir/x.weights.h5"}, "Received: weights='no/such/dir/x.weights.h5'"),
    ({"weights": 3}, "Received: weights=3"),
    ({"image_size": 16}, "Received: image_size=16"),
    # int() would quietly make 2.7 classes 2 and True one class
    ({"num_classes": 2.7}, "num_classes must be an integer >= 2. Received: num_classes=2.7"),
    ({"num_classes": "3"}, "num_classes must be an integer >= 2. Received: num_classes='3'"),
    ({"image_size": 64.5}, "image_size must be an integer >= 32. Received: image_size=64.5"),
    ({"num_classes": 2.0}, "num_classes must be an integer >= 2. Received: num_classes=2.0"),
    ({"weights": "imagenet", "backbone": "tiny"}, "no ImageNet weights for backbone 'tiny'"),
    ({"weights": "imagenet", "backbone": "resnet18"}, "no ImageNet weights for backbone 'resnet18'"),
])
def test_bad_arguments_raise_value_error(kwargs, fragment):
    args = {"num_classes": NUM_CLASSES, "backbone": "tiny", "weights": None, "image_size": SIZE, **kwargs}
    with pytest.raises(ValueError, match=re.escape(fragment)):
        build_cam_model(**args)


def test_numpy_integers_are_integers():
    # The other side of the integer checks: they must not refuse NumPy integers.
    model = build_cam_model(np.int64(NUM_CLASSES), backbone="tiny", weights=None, image_size=np.int32(SIZE))
    assert model.output["logits"].shape[-1] == NUM_CLASSES and model.inputs[0].shape[1] == SIZE


def test_weights_directory_is_not_a_weights_file(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"Received: weights={str(tmp_path)!r}")):
        build_cam_model(NUM_CLASSES, backbone="tiny", weights=str(tmp_path), image_size=SIZE)


def test_imagenet_download_failure_names_the_offline_options(monkeypatch):
    from keras.src.applications import mobilenet_v2 as keras_mobilenet_v2

    calls = []

    def no_network(*args, **kwargs):
        calls.append(args[0] if args else kwargs.get("fname"))
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- offline")

    # The module-level name MobileNetV2 uses for its download.
    monkeypatch.setattr(keras_mobilenet_v2.file_utils, "get_file", no_network)
    with pytest.raises(WeightsUnavailableError) as info:
        build_cam_model(NUM_CLASSES, backbone="mobilenet_v2", weights="imagenet", image_size=SIZE)
    assert calls, "the failure must come from the download, not from an argument check"
    message = str(info.value)
    assert "--weights none" in message and "--weights PATH" in message
    assert "URL fetch failure" in message and "'mobilenet_v2'" in message
    assert not isinstance(info.value, ValueError)
    assert "URL fetch failure" in str(info.value.__cause__)


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_bad_weights_file_is_a_value_error_naming_the_file(tmp_path):
    # A valid weights file, but of another architecture.
    other = tmp_path / "tiny.weights.h5"
    build_cam_model(NUM_CLASSES, backbone="tiny", weights=None, image_size=SIZE).save_weights(other)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=re.escape(f"Could not load weights file {str(other)!r}")) as error:
            build_cam_model(NUM_CLASSES, backbone="mobilenet_v2", weights=other, image_size=SIZE)
    # One short message: no warning per unmatched layer, no list of every layer.
    assert [str(w.message) for w in caught if "Skipping" in str(w.message)] == []
    assert len(str(error.value)) < 800 and "\n" not in str(error.value)


# --- weights from a file -----------------------------------------------------------

@pytest.mark.parametrize("include_top", [True, False])
def test_mobilenet_v2_weights_from_stock_file(tmp_path, include_top):
    if include_top:
        source = keras.applications.MobileNetV2(weights=None, include_top=True)  # 224, built only
    else:
        source = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    _randomize(source, seed=1)
    path = tmp_path / "x.weights.h5"
    source.save_weights(path)
    model = build_cam_model(NUM_CLASSES, backbone="mobilenet_v2", weights=path, image_size=SIZE)

    np.testing.assert_array_equal(model.get_layer("Conv1").kernel.numpy(), source.get_layer("Conv1").kernel.numpy())
    compared = 0
    for layer in source.layers:
        if layer.weights and layer.name != "predictions":
            target = model.get_layer(layer.name)
            for a, b in zip(layer.get_weights(), target.get_weights(), strict=True):
                np.testing.assert_array_equal(a, b, err_msg=layer.name)
            compared += 1
    assert compared > 100
    # Pretrained weights: BN frozen by default.
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and not any(layer.trainable for layer in bns)

    if not include_top:
        # Same backbone, same input size: our features are the stock model's on
        # Keras' own preprocessing, so the in-model Preprocess is right too.
        images = _images()
        ours = model(images, training=False)["features"].numpy()
        stock = source(keras.applications.mobilenet_v2.preprocess_input(images.copy()), training=False).numpy()
        np.testing.assert_allclose(ours, stock, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("weights, freeze, expected_trainable", [
    (None, None, True),       # random init: BN learns
    ("none", None, True),
    (None, True, False),      # explicit override
])
def test_freeze_batchnorm_defaults(weights, freeze, expected_trainable):
    model = build_cam_model(NUM_CLASSES, backbone="tiny", weights=weights, image_size=SIZE,
                            freeze_batchnorm=freeze)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 7
    assert all(layer.trainable is expected_trainable for layer in bns)


@pytest.mark.parametrize("backbone", ["tiny", "resnet18"])
def test_weights_from_file_for_backbones_without_imagenet(tmp_path, backbone):
    # The stand-alone backbone, as a user would save it after training it elsewhere.
    source = kmodel.BACKBONES[backbone].builder(input_shape=(SIZE, SIZE, 3), weights=None)
    _randomize(source, seed=3)
    path = tmp_path / f"{backbone}.weights.h5"
    source.save_weights(path)
    model = build_cam_model(NUM_CLASSES, backbone=backbone, weights=path, image_size=SIZE)
    compared = 0
    for layer in source.layers:
        if layer.weights:
            for a, b in zip(layer.get_weights(), model.get_layer(layer.name).get_weights(), strict=True):
                np.testing.assert_array_equal(a, b, err_msg=layer.name)
            compared += 1
    assert compared >= 14
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and not any(l.trainable for l in bns)  # pretrained: frozen by default
    model = build_cam_model(NUM_CLASSES, backbone=backbone, weights=path, image_size=SIZE,
                            freeze_batchnorm=False)
    assert all(l.trainable for l in model.layers if isinstance(l, keras.layers.BatchNormalization))


# --- set_trainable -----------------------------------------------------------------

def _trainable_names(model):
    return sorted(v.path for v in model.trainable_weights)


@pytest.mark.parametrize("backbone", sorted(SHAPES_64))
def test_set_trainable_head(backbone):
    model = build_cam_model(NUM_CLASSES, backbone=backbone, weights=None, image_size=SIZE)
    set_trainable(model, "head")
    assert _trainable_names(model) == ["logits/bias", "logits/kernel"]
    assert model.get_layer("gap").trainable and model.get_layer(HEAD_NAME).trainable


@pytest.mark.parametrize("backbone, first_trained, feature_stride", [
    ("tiny", "tiny_conv5", None),
    ("mobilenet_v2", "block_13_depthwise", None),
    # The atrous last stage has no strided convolution left: the same layers all the same.
    ("tiny", "tiny_conv5", 4),
    ("mobilenet_v2", "block_13_depthwise", 16),
])
def test_set_trainable_last_stage_trains_a_suffix(backbone, first_trained, feature_stride):
    model = build_cam_model(NUM_CLASSES, backbone=backbone, weights=None, image_size=SIZE,
                            feature_stride=feature_stride)
    set_trainable(model, "last_stage")
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    flags = [l.trainable for l in layers if not isinstance(l, keras.layers.BatchNormalization)]
    start = flags.index(True)
    assert all(flags[start:]) and not any(flags[:start]), "trainable layers must be a suffix"
    first = next(l for l in layers if l.trainable and not isinstance(l, keras.layers.BatchNormalization))
    assert first.name == first_trained and max(first.strides) == (2 if feature_stride is None else 1)
    assert model.get_layer(HEAD_NAME).trainable
    names = _trainable_names(model)
    assert "logits/kernel" in names and any(n.startswith(first_trained + "/") for n in names)
    # BN before the stage is frozen, BN inside it keeps build_cam_model's choice (trainable here).
    index = {l.name: i for i, l in enumerate(layers)}
    for l in layers:
        if isinstance(l, keras.layers.BatchNormalization):
            assert l.trainable is (index[l.name] >= index[first_trained]), l.name


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
@pytest.mark.parametrize("feature_stride", [None, 16])
def test_set_trainable_resnet_last_stage_is_all_of_conv5(backbone, feature_stride):
    model = build_cam_model(NUM_CLASSES, backbone=backbone, weights=None, image_size=SIZE,
                            feature_stride=feature_stride)
    set_trainable(model, "last_stage")
    trained = {l.name for l in model.layers if l.trainable and l.weights}
    conv5 = {l.name for l in model.layers if l.name.startswith("conv5_") and l.weights
             and not isinstance(l, keras.layers.BatchNormalization)}
    # Block 1's strided convolutions (main path and shortcut) and its 3x3 convolution included.
    assert {"conv5_block1_1_conv", "conv5_block1_2_conv", "conv5_block1_0_conv", "conv5_block2_2_conv"} <= conv5
    assert conv5 | {HEAD_NAME} <= trained
    assert not any(name.startswith(("conv1", "conv2_", "conv3_", "conv4_")) for name in trained)


def test_set_trainable_keeps_frozen_batchnorm_and_all_restores():
    model = build_cam_model(NUM_CLASSES, backbone="tiny", weights=None, image_size=SIZE,
                            freeze_batchnorm=True)
    set_trainable(model, "last_stage")
    assert not any(l.trainable for l in model.layers if isinstance(l, keras.layers.BatchNormalization))
    set_trainable(model, "all")
    assert all(l.trainable for l in model.layers if not isinstance(l, keras.layers.BatchNormalization))
    assert not any(l.trainable for l in model.layers if isinstance(l, keras.layers.BatchNormalization))


def test_set_trainable_bad_value():
    model = build_cam_model(NUM_CLASSES, backbone="tiny", weights=None, image_size=SIZE)
    with pytest.raises(ValueError, match=re.escape("Received: 'backbone'")):
        set_trainable(model, "backbone")


# --- two views, saving -------------------------------------------------------------

def test_classifier_view_shares_weights():
    model = build_cam_model(NUM_CLASSES, backbone="tiny", weights=None, image_size=SIZE)
    _randomize(model)
    clf = classifier_view(model)
    assert clf.get_layer(HEAD_NAME) is model.get_layer(HEAD_NAME)
    model_vars = {id(v) for v in model.weights}
    assert clf.weights and all(id(v) in model_vars for v in clf.weights)
    images = _images()
    np.testing.assert_allclose(clf(images, training=False).numpy(),
                               model(images, training=False)["logits"].numpy(), rtol=1e-5, atol=1e-5)
    # A change through one view is seen by the other.
    head = model.get_layer(HEAD_NAME)
    head.bias.assign(head.bias.numpy() + 10.0)
    np.testing.assert_allclose(clf(images, training=False).numpy(),
                               model(images, training=False)["logits"].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", ["tiny", "mobilenet_v2"])
def test_keras_round_trip(tmp_path, backbone):
    model = build_cam_model(NUM_CLASSES, backbone=backbone, weights=None, image_size=SIZE)
    _randomize(model)
    path = tmp_path / "cam.keras"
    model.save(path)
    loaded = load_cam_model(path)  # safe mode: Preprocess must be registered
    images = _images(seed=2)
    want = model(images, training=False)
    got = loaded(images, training=False)
    assert set(got) == {"logits", "features"}
    for key in ("logits", "features"):
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=1e-5, atol=1e-5, err_msg=key)
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert loaded.get_layer(HEAD_NAME).activation is keras.activations.linear
    np.testing.assert_allclose(classifier_view(loaded)(images, training=False).numpy(),
                               want["logits"].numpy(), rtol=1e-5, atol=1e-5)


def test_preprocess_modes():
    with pytest.raises(ValueError, match=re.escape("Received: mode='bgr'")):
        Preprocess("bgr")
    x = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    np.testing.assert_allclose(Preprocess("tf")(x).numpy(), [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)
    # caffe: RGB -> BGR, minus the ImageNet mean (103.939, 116.779, 123.68).
    np.testing.assert_allclose(Preprocess("caffe")(x).numpy(),
                               [[[[255.0 - 103.939, 127.5 - 116.779, 0.0 - 123.68]]]], atol=1e-4)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(Preprocess("torch")(x).numpy()[0, 0, 0],
                               (np.array([0.0, 0.5, 1.0]) - mean) / std, atol=1e-5)


# --- optional: real ImageNet weights and a real photo from ../shared -----------------

@pytest.mark.shared
def test_mobilenet_v2_imagenet_through_our_model_matches_stock():
    weights = SHARED / "weights" / "mobilenet_v2_imagenet.weights.h5"
    labels_file = SHARED / "weights" / "imagenet_labels.txt"
    photo = SHARED / "photos" / "cat.bmp"
    if not (weights.is_file() and labels_file.is_file() and photo.is_file()):
        pytest.skip(f"needs {SHARED} (weights, labels, photos)")
    import tensorflow as tf

    from keras_cam.data import decode_image, resize_image

    labels = labels_file.read_text().splitlines()
    assert len(labels) == 1000
    cat_ids = {281, 282, 285}
    assert labels[281].startswith("tabby") and labels[282].startswith("tiger cat")
    assert labels[285].startswith("Egyptian cat")

    stock = keras.applications.MobileNetV2(weights=None, include_top=True)
    stock.load_weights(weights)
    ours = build_cam_model(1000, backbone="mobilenet_v2", weights=weights, image_size=224)
    for layer in stock.layers:
        if layer.weights and layer.name != "predictions":
            for a, b in zip(layer.get_weights(), ours.get_layer(layer.name).get_weights(), strict=True):
                np.testing.assert_array_equal(a, b, err_msg=layer.name)
    ours.get_layer(HEAD_NAME).set_weights(stock.get_layer("predictions").get_weights())

    image = resize_image(decode_image(tf.io.read_file(str(photo))), 224)[None].numpy()  # RGB 0-255
    stock_probs = stock(keras.applications.mobilenet_v2.preprocess_input(image.copy()), training=False).numpy()
    top5 = np.argsort(stock_probs[0])[::-1][:5]
    assert cat_ids & set(top5.tolist()), [labels[i] for i in top5]

    logits = ours(image, training=False)["logits"]
    our_probs = keras.ops.softmax(logits, axis=-1).numpy()
    np.testing.assert_allclose(our_probs, stock_probs, atol=1e-4)
    assert int(np.argmax(our_probs)) == int(top5[0])
