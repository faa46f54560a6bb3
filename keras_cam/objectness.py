"""Objectness from the CAM's own confident regions (self-produced guidance).

A CAM head trained on a few classes weighs whatever separates those classes, and
the context around an object (grass around a kangaroo, sky around an airplane)
often does: maps spread past the object. The objectness head
(``build_cam_model(..., objectness_layers=...)``) is a second, class-agnostic
reading of the image: a logistic regression at each position of earlier backbone
layers, fitted after the classifier with no box labels. Its targets are the
trained CAM's confident positions on the training images (after Zhang et al.,
"Self-produced Guidance for Weakly-supervised Object Localization", ECCV 2018):
object where the true class's normalized CAM is at least ``FOREGROUND`` (0.6),
background where it is at most ``BACKGROUND`` (0.1), nothing in between. Earlier
layers see less context, so the head learns what object positions look like
rather than what the class's surroundings look like, and the map the box rule
thresholds becomes CAM x objectness (``keras_cam.cam.maps_from_cams``).
The CAM itself stays an output, unchanged; one forward pass gives class, CAM,
objectness and boxes.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_cam import cam as cam_ops
from keras_cam import data
from keras_cam.checks import check_int
from keras_cam.model import HEAD_NAME, OBJECTNESS_NAME

FOREGROUND = 0.6
BACKGROUND = 0.1
# Positions kept for the fit: all of them for a few thousand images; beyond that an
# even random share, so the fit's memory stays bounded.
MAX_POSITIONS = 400_000


def pseudo_labels(cams, foreground=FOREGROUND, background=BACKGROUND):
    """Object / background targets from CAMs.

    Args:
        cams: float (B, h, w) raw CAMs of the images' true classes.
        foreground: normalized CAM value at or above which a position is object.
        background: normalized CAM value at or below which a position is background.

    Returns:
        float32 (B, h, w): 1 object, 0 background, -1 unlabelled.
    """
    if not 0.0 <= background < foreground <= 1.0:
        raise ValueError(f"Need 0 <= background < foreground <= 1. Received: background={background!r}, "
                         f"foreground={foreground!r}")
    normalized = cam_ops.normalize_cams(cams).numpy()
    return np.where(normalized >= foreground, 1.0, np.where(normalized <= background, 0.0, -1.0)).astype(np.float32)


def fit_logistic(x, y, steps=200, learning_rate=1e-2):
    """Class-balanced logistic regression by full-batch Adam.

    Args:
        x: float32 (N, K) inputs.
        y: float32 (N,) targets in {0, 1}, both present.
        steps: Adam steps.
        learning_rate: Adam learning rate.

    Returns:
        ``(kernel (K,), bias)`` as NumPy float32 and a float.
    """
    y = np.asarray(y, np.float32)
    share = float(y.mean())
    if not 0.0 < share < 1.0:
        raise ValueError("The objectness fit needs both object and background positions.")
    x, target = tf.constant(x, tf.float32), tf.constant(y)
    weights = tf.where(target > 0.5, 0.5 / share, 0.5 / (1.0 - share))
    kernel = tf.Variable(tf.zeros([x.shape[1]]))
    bias = tf.Variable(0.0)
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = tf.linalg.matvec(x, kernel) + bias
            loss = tf.reduce_mean(weights * tf.nn.sigmoid_cross_entropy_with_logits(target, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, [kernel, bias]), [kernel, bias]))

    for _ in range(int(steps)):
        step()
    return kernel.numpy(), float(bias.numpy())


def fit_objectness(cam_model, paths, labels, batch_size=32, seed=0, foreground=FOREGROUND,
                   background=BACKGROUND, max_positions=MAX_POSITIONS):
    """Fits the model's objectness head on its own CAMs of (training) images, in place.

    Args:
        cam_model: a model from ``build_cam_model(..., objectness_layers=...)``, trained.
        paths: image paths (the training images; no box labels are used).
        labels: int (N,) their classes.
        batch_size: images per forward pass.
        seed: for the subsample of positions when there are more than ``max_positions``.
        foreground: see ``pseudo_labels``.
        background: see ``pseudo_labels``.
        max_positions: most labelled positions to fit on.

    Returns:
        dict: ``positions`` (fitted on), ``object_share`` (of them),
        ``train_accuracy`` (of the fitted head on them).
    """
    batch_size = check_int(batch_size, "batch_size")
    head = cam_model.get_layer(OBJECTNESS_NAME)
    probe = _probe(cam_model)
    size = int(cam_model.inputs[0].shape[1])
    kernel = cam_model.get_layer(HEAD_NAME).kernel
    keep = min(1.0, max_positions / max(1, len(paths) * _positions_per_image(cam_model)))
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    ds = tf.data.Dataset.from_tensor_slices(data.path_strings(paths)).map(
        lambda p: data.decode_and_resize(tf.io.read_file(p), size)[0], num_parallel_calls=tf.data.AUTOTUNE)
    start = 0
    for images in ds.batch(batch_size).prefetch(2):
        inputs, features = probe(images, training=False)
        classes = np.asarray(labels[start:start + len(images)], np.int32)
        start += len(images)
        target = pseudo_labels(cam_ops.class_activation_maps(features, kernel, classes), foreground, background)
        inputs = np.asarray(inputs).reshape(-1, inputs.shape[-1])
        target = target.reshape(-1)
        chosen = (target >= 0) & (rng.random(target.shape) < keep)
        xs.append(inputs[chosen])
        ys.append(target[chosen])
    x, y = np.concatenate(xs), np.concatenate(ys)
    if not 0 < y.sum() < len(y):
        raise ValueError(
            f"Cannot fit the objectness head: the CAMs of the {len(paths)} training images give "
            f"{int(y.sum())} object and {int(len(y) - y.sum())} background positions (need both; object: "
            f"normalized CAM >= {foreground}, background: <= {background}). The maps have no contrast: train "
            f"longer, or without --objectness-layers.")
    weights, bias = fit_logistic(x, y)
    head.set_weights([weights.reshape(1, 1, -1, 1), np.array([bias], np.float32)])
    accuracy = float(np.mean((x @ weights + bias > 0) == (y > 0.5)))
    return {"positions": int(len(y)), "object_share": float(y.mean()), "train_accuracy": accuracy}


def _positions_per_image(cam_model):
    shape = cam_model.get_layer(OBJECTNESS_NAME).output.shape
    return int(shape[1]) * int(shape[2])


def _probe(cam_model):
    """A model over the same layers: (the objectness head's input, the CAM features)."""
    return keras.Model(cam_model.inputs[0], [cam_model.get_layer(OBJECTNESS_NAME).input,
                                                cam_model.get_layer("gap").input])
