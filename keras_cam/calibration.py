"""Calibration: choose the box threshold tau on validation images with true boxes.

On the maps of the true class (Choe et al., CVPR 2020), the chosen tau maximizes one of:

* ``"box_acc"`` (the default): mean BoxAcc over the IoU thresholds ``deltas``
  (0.3, 0.5, 0.7), scoring all boxes: how well the boxes as a whole fit, loose and
  tight. It is MaxBoxAccV2's quantity at one tau (MaxBoxAccV2 gives each delta its
  own tau, which a model serving one tau cannot do).
* ``"loc"``: GT-known Loc, BoxAcc at IoU 0.5 with the largest-region box (MaxBoxAcc's
  tau): only whether the first box is roughly right.

Choose it on a validation split, never on the images you report on.
"""

import numpy as np
import tensorflow as tf

from keras_cam import boxes as box_rule
from keras_cam import cam as cam_ops
from keras_cam import data, metrics
from keras_cam.checks import check_int
from keras_cam.model import HEAD_NAME


def localization_maps_for_files(cam_model, paths, class_ids=None, batch_size=32):
    """Runs the Keras CAM model over image files and yields their localization maps.

    Args:
        cam_model: a model from ``keras_cam.model.build_cam_model``.
        paths: list of image paths.
        class_ids: optional int (N,) classes whose maps are wanted (default: the
            predicted class).
        batch_size: images per forward pass.

    Yields:
        ``(index, map, predicted_class, (height, width))`` per image: the map float32
        (S, S) in [0, 1] at the model input size S, and the original image size.

    Raises:
        ValueError: a ``batch_size`` that is not a positive integer; or naming the
            images that cannot be read or decoded (checked before the first batch,
            so no work is lost to a bad file at the end).
    """
    batch_size = check_int(batch_size, "batch_size")
    unreadable = data.find_unreadable(list(paths), min_side=int(cam_model.inputs[0].shape[1]))
    if unreadable:
        listed = "; ".join(f"{path}: {reason}" for path, reason in unreadable[:5])
        more = f" (and {len(unreadable) - 5} more)" if len(unreadable) > 5 else ""
        raise ValueError(f"{len(unreadable)} of {len(paths)} images cannot be used: {listed}{more}")
    size = int(cam_model.inputs[0].shape[1])
    kernel = cam_model.get_layer(HEAD_NAME).kernel

    def load(path):
        return data.decode_and_resize(tf.io.read_file(path), size)

    ds = tf.data.Dataset.from_tensor_slices(data.path_strings(paths)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    start = 0
    for images, sizes in ds.batch(batch_size).prefetch(2):
        outputs = cam_model(images, training=False)
        predicted = tf.argmax(outputs["logits"], axis=-1, output_type=tf.int32)
        wanted = predicted if class_ids is None else tf.constant(np.asarray(class_ids[start:start + len(images)]), tf.int32)
        maps = cam_ops.localization_maps(outputs["features"], kernel, wanted, (size, size),
                                        cam_ops.objectness_of(outputs)).numpy()
        for i in range(len(maps)):
            yield start + i, maps[i], int(predicted[i]), tuple(int(v) for v in sizes[i])
        start += len(maps)


def evaluate_maps(cam_model, paths, labels, gt_boxes, thresholds=None, batch_size=32, box_extent=0.0):
    """WSOL metrics of a Keras CAM model over images with true boxes.

    Args:
        cam_model: the CAM model.
        paths: list of N image paths.
        labels: int (N,) true classes.
        gt_boxes: list of N int (G, 4) pixel boxes in each original image's frame.
        thresholds: taus to scan (default 0.00 .. 0.99).
        batch_size: images per forward pass.
        box_extent: the box rule's ``box_extent`` (``keras_cam.boxes``), as exported.

    Returns:
        A ``metrics.BoxAccumulator`` holding the results (``.result()``).
    """
    acc = metrics.BoxAccumulator(thresholds, box_extent=box_extent)
    size = int(cam_model.inputs[0].shape[1])
    for i, score_map, predicted, (height, width) in localization_maps_for_files(
            cam_model, paths, class_ids=labels, batch_size=batch_size):
        scaled = box_rule.scale_boxes(gt_boxes[i], (height, width), (size, size))
        acc.update(score_map, scaled, pred_class=predicted, true_class=int(labels[i]))
    return acc


CRITERIA = ("box_acc", "loc")
DEFAULT_CRITERION = "box_acc"


def calibrate_tau(cam_model, paths, labels, gt_boxes, thresholds=None, batch_size=32, box_extent=0.0,
                  criterion=DEFAULT_CRITERION):
    """Chooses tau on validation images.

    Args (besides those of ``evaluate_maps``):
        criterion: ``"box_acc"`` or ``"loc"`` (module docstring).

    Returns:
        ``(tau, result)``: the tau that ``choose_tau`` picks with ``criterion`` (a
        float, or None when no tau gives any image a matching box), and the full
        ``BoxAccumulator.result()`` dict.
    """
    check_criterion(criterion)
    result = evaluate_maps(cam_model, paths, labels, gt_boxes, thresholds, batch_size, box_extent).result()
    return choose_tau(result, criterion), result


def check_criterion(criterion):
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}. Received: criterion={criterion!r}")
    return criterion


def criterion_curve(result, criterion=DEFAULT_CRITERION):
    """The per-tau figure a criterion maximizes: ``result["mean_box_acc"]`` for
    ``"box_acc"``, ``result["box_acc"]["largest"][0.5]`` (GT-known Loc) for ``"loc"``."""
    check_criterion(criterion)
    if criterion == "loc":
        return result["box_acc"]["largest"][metrics.LOC_IOU_THRESHOLD]
    return result["mean_box_acc"]


def choose_tau(result, criterion=DEFAULT_CRITERION):
    """The calibration rule, on accumulated metrics.

    Args:
        result: ``metrics.BoxAccumulator.result()`` over validation images, computed
            on the maps of the true classes.
        criterion: ``"box_acc"`` or ``"loc"`` (module docstring).

    Returns:
        float, the first tau with the best ``criterion_curve``; None when that curve
        is 0 at every tau (no image has a matching box: no tau to prefer).
    """
    curve = criterion_curve(result, criterion)
    if not np.max(curve) > 0:
        return None
    return float(result["thresholds"][int(np.argmax(curve))])
