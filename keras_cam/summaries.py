"""Localization pictures from a Keras CAM model, and a TensorBoard callback that logs them.

``localize_images`` and ``draw_localizations`` turn a batch of images into the class,
the CAM (Zhou et al., CVPR 2016) and the box of each, drawn over the image; the
notebook and ``docs/make_pictures.py`` use them on their own. ``CamImagesCallback``
writes such pictures of a few validation images to TensorBoard at the checkpoint
epochs, so a run shows its localization improving while it trains
(``tensorboard --logdir experiments``, tab "Images").
"""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_cam import boxes as box_rule
from keras_cam import cam as cam_ops
from keras_cam import data, visualize
from keras_cam.model import HEAD_NAME

IMAGES_TAG = "val_images"


def localize_images(cam_model, images, tau=box_rule.DEFAULT_TAU, box_extent=box_rule.DEFAULT_BOX_EXTENT):
    """Classifies a batch and finds each image's CAM and boxes with the box rule.

    Args:
        cam_model: a model from ``keras_cam.model.build_cam_model``.
        images: float32 or uint8 (B, S, S, 3), RGB 0-255 at the model input size S.
        tau: box threshold in [0, 1).
        box_extent: the box rule's ``box_extent`` (``keras_cam.boxes``): 0 for
            bounding rectangles, k > 0 for moment boxes.

    Returns:
        dict with ``class_ids`` int32 (B,), ``scores`` float32 (B,) (softmax
        probability of the predicted class), ``maps`` float32 (B, S, S) in [0, 1]
        (CAM of the predicted class, upsampled and normalized) and ``boxes``, a
        list of B int32 (N, 4) pixel boxes ``[xmin, ymin, xmax, ymax]`` in the
        S x S frame, largest region first.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    size = int(images.shape[1])
    outputs = cam_model(images, training=False)
    probabilities = tf.nn.softmax(outputs["logits"], axis=-1).numpy()
    class_ids = probabilities.argmax(axis=-1).astype(np.int32)
    kernel = cam_model.get_layer(HEAD_NAME).kernel
    maps = cam_ops.localization_maps(outputs["features"], kernel, class_ids, (size, size),
                                    cam_ops.objectness_of(outputs)).numpy()
    return {
        "class_ids": class_ids,
        "scores": probabilities.max(axis=-1),
        "maps": maps,
        "boxes": [box_rule.boxes_from_cam(m, tau, all_regions=True, box_extent=box_extent)[0] for m in maps],
    }


def draw_localizations(images, localized, class_names, true_boxes=None, min_side=128):
    """Draws each image with its CAM heatmap, its boxes and a caption.

    Args:
        images: uint8 (B, S, S, 3) RGB, the images given to ``localize_images``.
        localized: the dict returned by ``localize_images``.
        class_names: list of C class names.
        true_boxes: optional list of B (G, 4) true pixel boxes in the S x S frame,
            drawn in white.
        min_side: small images are enlarged (nearest neighbour, by a whole factor)
            to at least this side, so boxes and captions stay legible.

    Returns:
        uint8 (B, S * f, S * f, 3) pictures; predicted boxes green, the best thick.
    """
    images = np.asarray(images)
    factor = max(1, math.ceil(min_side / images.shape[1]))
    pictures = []
    for i, image in enumerate(images.astype(np.uint8)):
        big = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
        truth = [] if true_boxes is None else np.asarray(true_boxes[i]).reshape(-1, 4) * factor
        picture = visualize.overlay(big, localized["maps"][i], localized["boxes"][i] * factor, truth)
        caption = f"{class_names[localized['class_ids'][i]]} {localized['scores'][i]:.2f}"
        pictures.append(visualize.label(picture, caption))
    return np.stack(pictures)


def load_images(paths, image_size):
    """Reads image files and resizes them to the model input (the serving rule).

    Returns:
        uint8 (N, image_size, image_size, 3) RGB: the served input rounded to whole
        grey levels (at most half a level off), so that the pictures drawn and the
        images localized are the same array.
    """
    resized = [data.load_and_resize(data.read_file(p), image_size) for p in paths]
    return np.stack([np.clip(np.rint(r.numpy()), 0, 255).astype(np.uint8) for r in resized])


class CamImagesCallback(keras.callbacks.Callback):
    """Logs a few images with their CAM and boxes to TensorBoard at checkpoint epochs.

    Pictures are written at every ``every``-th epoch and at the last one, under the
    tag ``val_images`` with the 0-based epoch as step (the step of Keras' epoch
    scalars).

    Args:
        cam_model: the multi-output model being trained (shares layers with the
            classifier that ``fit`` runs).
        paths: image files to show (a few validation images).
        class_names: list of C class names.
        log_dir: folder of the event file, e.g. ``RUN_DIR/tensorboard/val_images``.
        every: period in epochs (the checkpoint period).
        tau: box threshold for the drawn boxes.
        box_extent: the box rule's ``box_extent`` for the drawn boxes.
    """

    def __init__(self, cam_model, paths, class_names, log_dir, every=1, tau=box_rule.DEFAULT_TAU,
                 box_extent=box_rule.DEFAULT_BOX_EXTENT):
        super().__init__()
        self.cam_model = cam_model
        self.class_names = list(class_names)
        self.log_dir = log_dir
        self.every = max(1, int(every))
        self.tau = tau
        self.box_extent = box_extent
        self.images = load_images(paths, int(cam_model.inputs[0].shape[1])) if paths else None
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == (self.params or {}).get("epochs")
        if self.images is None or ((epoch + 1) % self.every and not last):
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        localized = localize_images(self.cam_model, self.images, self.tau, self.box_extent)
        pictures = draw_localizations(self.images, localized, self.class_names)
        with self._writer.as_default():
            tf.summary.image(IMAGES_TAG, pictures, step=epoch, max_outputs=len(pictures),
                             description="CAM of the predicted class; green: boxes at tau, best thick")
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def pick_spread(paths, count):
    """Up to ``count`` paths spread evenly over a list (e.g. over its classes)."""
    if len(paths) <= count:
        return list(paths)
    step = len(paths) / count
    return [paths[int(i * step)] for i in range(count)]
