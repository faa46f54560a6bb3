"""Evaluation of an exported keras-cam SavedModel on images with true boxes.

Only the SavedModel is used (the artifact TF Serving serves). Each batch goes to its
``localize_classes`` signature with the *true* classes, which returns in one call
the class probabilities (Top-1 Cls), the true class's CAM (the curves, GT-known)
and the true class's boxes at the model's own tau. When the prediction is right,
the true class's boxes are the boxes ``infer.py`` lists, so Top-1 Loc needs no
second call.

Two kinds of figures (metric semantics: ``keras_cam.metrics``, after Choe et al.,
CVPR 2020):

* At the model's tau, on the served boxes in the original image's pixels, exactly
  what ``infer.py`` and TF Serving give: Top-1 Cls, Top-1 Loc and GT-known Loc on
  the first (largest-region) box, BoxAcc at each delta on all served boxes
  (at most ``max_boxes``), and their mean.
* Over all thresholds, on the map the box rule uses: ``cam.maps_from_cams`` of the
  served CAM and objectness (the normalized CAM, times the objectness when the model
  has that head, upsampled to the model input and min-max normalized: the serving
  graph's map), with the true boxes scaled to that S x S frame: the BoxAcc
  curves, MaxBoxAcc and MaxBoxAccV2, and the calibrated tau
  (``calibration.choose_tau``).
"""

import collections
import concurrent.futures
import os

import numpy as np
import tensorflow as tf

from keras_cam import annotations, calibration, export, inference, metrics
from keras_cam import boxes as box_rule
from keras_cam import cam as cam_ops
from keras_cam.checks import check_int

SIGNATURE = "localize_classes"


def model_metadata(loaded):
    """What a keras-cam SavedModel carries.

    Args:
        loaded: from ``keras_cam.inference.load_saved_model``.

    Returns:
        dict ``class_names`` (list of str), ``tau`` (float, rounded to 6 places, as
        the variable is float32), ``image_size`` and ``max_boxes`` (int), and
        ``box_extent`` (float; 0, bounding rectangles, for exports without it).
    """
    meta = {k: v.numpy() for k, v in loaded.metadata().items()}
    return {"class_names": [n.decode("utf-8") for n in meta["class_names"]],
            "tau": round(float(meta["tau"]), 6),
            "image_size": int(meta["image_size"]), "max_boxes": int(meta["max_boxes"]),
            # float32 variable: keep its exact value, the box rule rounds it the same way.
            "box_extent": float(meta.get("box_extent", 0.0))}


def class_lookup(class_names):
    """Maps annotation class names to the model's class ids.

    A name matches a model class exactly, or else by ``annotations.class_key``
    (ignoring case, surrounding spaces and a leading ``NNN.`` numbering, as in CUB's
    folder names), when that is unambiguous.

    Args:
        class_names: the model's class names.

    Returns:
        A function ``name -> int class id or None``.
    """
    exact = {n: i for i, n in enumerate(class_names)}
    keys = collections.Counter(annotations.class_key(n) for n in class_names)
    loose = {annotations.class_key(n): i for i, n in enumerate(class_names) if keys[annotations.class_key(n)] == 1}
    return lambda name: exact.get(name, loose.get(annotations.class_key(name)))


def _with_bytes(examples, workers=4, ahead=64):
    """Yields ``(example, bytes or None, error or None)``, reading files ahead in threads.

    At most ``ahead`` images are held, so a long stream (TFDS) is never loaded whole.
    """
    def load(example):
        if example.image_bytes is not None:
            return example.image_bytes, None
        return inference.read_image_bytes(example.image)

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pending = collections.deque()
        for example in examples:
            pending.append((example, pool.submit(load, example)))
            if len(pending) >= ahead:
                example, future = pending.popleft()
                yield (example, *future.result())
        while pending:
            example, future = pending.popleft()
            yield (example, *future.result())


def _localize(serve, batch, size):
    """Calls the signature on ``[(example, bytes, class_id)]``; yields ``(item, outputs, error)``.

    A failing batch is retried without its bad images (``inference.call_batch``), so
    one bad file costs one error.
    """
    answers = inference.call_batch(serve, [content for _, content, _ in batch],
                                   class_ids=[np.int32(class_id) for *_, class_id in batch])
    done = [out for out, _ in answers if out is not None]
    # The map the serving graph thresholded (SavedModels older than objectness heads
    # serve no "objectness": their map is the CAM's).
    objectness = np.stack([out["objectness"] for out in done]) if done and "objectness" in done[0] else None
    maps = iter(cam_ops.maps_from_cams(np.stack([out["cams"] for out in done]), objectness,
                                       (size, size)).numpy() if done else ())
    for item, (out, error) in zip(batch, answers):
        yield item, (None if out is None else {"map": next(maps), **out}), error


def _check_frame(frame, height, width):
    if tuple(frame) == annotations.NORMALIZED_FRAME:
        return
    frame_height, frame_width = frame
    # Scaling boxes between frames is right for a resized copy of the annotated
    # image, not for a rotated (EXIF) or different one.
    if abs(frame_width / frame_height - width / height) > 0.02 * (width / height):
        raise ValueError(f"the boxes are for a {frame_width}x{frame_height} image but the image is "
                         f"{width}x{height} (another aspect ratio)")


def _score(example, class_id, out, size, accumulator):
    """Adds one image to the accumulator; returns its row of per-image results."""
    height, width = (int(v) for v in out["image_sizes"])
    frame_height, frame_width = example.frame
    truth = metrics.check_boxes(example.boxes, height=frame_height, width=frame_width,
                                name="ground-truth boxes", allow_empty=False)
    # A true box with no area can never be matched: it is left out, and an image with
    # nothing else fails (TFDS VOC turns a one-pixel-wide XML box into such a box).
    has_area = (truth[:, 2] > truth[:, 0]) & (truth[:, 3] > truth[:, 1])
    if not has_area.any():
        raise ValueError(f"every ground-truth box has no area (xmin == xmax or ymin == ymax). "
                         f"Received: {truth.tolist()}")
    truth = truth[has_area]
    _check_frame(example.frame, height, width)
    n = int(out["num_boxes"])
    served = box_rule.normalized_to_pixel(out["boxes"][:n], height, width)
    truth_pixels = box_rule.scale_boxes(truth, example.frame, (height, width))
    predicted = int(np.argmax(out["probabilities"]))
    accumulator.update(out["map"], box_rule.scale_boxes(truth, example.frame, (size, size)),
                       pred_class=predicted, true_class=class_id)
    found = metrics.iou_matrix(served, truth_pixels).max(axis=0) >= metrics.LOC_IOU_THRESHOLD if n else []
    return {"image": example.image, "true_class": class_id, "predicted_class": predicted,
            "iou": metrics.best_iou(served[:1], truth_pixels),
            "iou_all_boxes": metrics.best_iou(served, truth_pixels), "num_boxes": n,
            "num_true_boxes": len(truth_pixels), "objects_found": int(np.sum(found))}


class NothingEvaluatedError(ValueError):
    """No image could be scored; ``errors`` holds why, as ``{"image", "error"}`` records.
    ``source`` names what listed the images, for the message when it listed none."""

    def __init__(self, errors, source="the source"):
        self.errors = list(errors)
        if self.errors:
            first = self.errors[0]
            message = (f"No image could be evaluated ({len(self.errors)} failed); "
                       f"first error: {first['image']}: {first['error']}")
        else:
            message = f"No image to evaluate: {source} lists none"
        super().__init__(message)


def evaluate_saved_model(loaded, examples, thresholds=None, deltas=metrics.DEFAULT_DELTAS, batch_size=16,
                         progress=None, criterion=calibration.DEFAULT_CRITERION):
    """Scores a keras-cam SavedModel on images with true boxes.

    Args:
        loaded: from ``keras_cam.inference.load_saved_model``.
        examples: iterable of ``annotations.ImageBoxes``; streamed, not held.
        thresholds: float (T,) taus for the curves, in [0, 1), strictly increasing;
            None for ``0.00, 0.01, ..., 0.99``.
        deltas: IoU thresholds for BoxAcc and MaxBoxAccV2.
        batch_size: images per call of the signature.
        progress: optional callable ``(images done, images failed)``, called after
            each batch.
        criterion: what the calibrated tau maximizes, ``"box_acc"`` (mean BoxAcc
            over ``deltas``, all boxes) or ``"loc"`` (GT-known Loc); see
            ``keras_cam.calibration``.

    Returns:
        A JSON-serializable dict (accuracies are fractions in [0, 1]; dicts keyed by
        delta use ``str(delta)``):
          * ``num_images``, ``num_failed``; ``model``: ``model_metadata``.
          * ``at_model_tau``: ``tau``, ``top1_cls``, ``top1_loc``, ``gt_known_loc``,
            ``box_acc`` per delta and ``mean_box_acc`` (their mean), on the served boxes;
            ``by_true_boxes``: for the images with ``one`` true box and with
            ``several``, ``num_images``, ``gt_known_loc``, ``mean_box_acc``,
            ``true_boxes``, ``objects_found`` (true boxes some served box matches at
            IoU >= 0.5) and ``object_recall`` (their share); ``num_images`` alone
            when there is no such image.
          * ``max_box_acc`` (+ ``max_box_acc_tau``), ``max_box_acc_v2``,
            ``max_box_acc_per_delta`` and ``best_tau`` (``{"largest"|"all": {delta: ...}}``).
          * ``calibrated_tau``: the tau ``calibration.choose_tau`` picks on these images
            with ``criterion`` (``calibration_criterion``); None when the criterion's
            figure is 0 at every tau.
          * ``curves``: ``thresholds`` and, per tau, ``largest`` / ``all`` ``{delta:
            BoxAcc}``, ``mean_box_acc``, ``top1_loc`` and ``gt_known_loc``.
          * ``images``: per image ``image``, ``true_class``, ``predicted_class``,
            ``iou`` (first served box), ``iou_all_boxes``, ``num_boxes``,
            ``num_true_boxes`` and ``objects_found``.
          * ``errors``: per failed image ``image`` and ``error``.

    Raises:
        inference.NotASavedModelError: the SavedModel has no ``localize_classes``.
        ValueError: bad thresholds, deltas or batch size.
        NothingEvaluatedError: no image could be scored (a ``ValueError``).
    """
    if SIGNATURE not in loaded.signatures:
        raise inference.NotASavedModelError(
            f"The SavedModel has no {SIGNATURE!r} signature (exported by an older keras-cam); "
            f"export it again to evaluate it.")
    batch_size = check_int(batch_size, "batch_size")
    calibration.check_criterion(criterion)
    info = model_metadata(loaded)
    size = info["image_size"]
    serve = loaded.signatures[SIGNATURE]
    lookup = class_lookup(info["class_names"])
    known = ", ".join(info["class_names"][:10]) + (", ..." if len(info["class_names"]) > 10 else "")
    accumulator = metrics.BoxAccumulator(thresholds, deltas, box_extent=info["box_extent"])
    rows, errors = [], []

    def run(batch):
        for (example, _, class_id), out, error in _localize(serve, batch, size):
            if error is None:
                try:
                    rows.append(_score(example, class_id, out, size, accumulator))
                except ValueError as bad:
                    error = str(bad)
            if error is not None:
                errors.append({"image": example.image, "error": error})
        if progress is not None:
            progress(len(rows), len(errors))

    batch = []
    for example, content, error in _with_bytes(examples):
        class_id = lookup(example.class_name)
        if class_id is None:  # before a read error: the image could not be scored even if it were there
            error = f"class {example.class_name!r} is not one of the model's classes ({known})"
        if error is not None:
            errors.append({"image": example.image, "error": error})
            continue
        batch.append((example, content, class_id))
        if len(batch) == batch_size:
            run(batch)
            batch = []
    if batch:
        run(batch)
    if not rows:
        raise NothingEvaluatedError(errors)
    return _report(info, accumulator, rows, errors, criterion)


def _report(info, accumulator, rows, errors, criterion):
    result = accumulator.result()
    deltas = accumulator.deltas
    iou = np.array([r["iou"] for r in rows])
    iou_all = np.array([r["iou_all_boxes"] for r in rows])
    at_tau = metrics.localization_accuracies([r["predicted_class"] for r in rows],
                                             [r["true_class"] for r in rows], iou)
    box_acc = {str(d): float(np.mean(iou_all >= d)) for d in deltas}
    several = np.array([r["num_true_boxes"] > 1 for r in rows])

    def subset(keep):
        """The model-tau figures of some images, and how many of their objects a box found."""
        if not keep.any():
            return {"num_images": 0}
        true_boxes = sum(r["num_true_boxes"] for r, k in zip(rows, keep) if k)
        found = sum(r["objects_found"] for r, k in zip(rows, keep) if k)
        return {"num_images": int(keep.sum()), "gt_known_loc": float(np.mean(iou[keep] >= metrics.LOC_IOU_THRESHOLD)),
                "mean_box_acc": float(np.mean([np.mean(iou_all[keep] >= d) for d in deltas])),
                "true_boxes": int(true_boxes), "objects_found": int(found), "object_recall": found / true_boxes}

    def by_delta(d):
        return {mode: {str(k): float(v) for k, v in per.items()} for mode, per in d.items()}

    return {
        "num_images": len(rows), "num_failed": len(errors), "model": info,
        "at_model_tau": {"tau": info["tau"], "top1_cls": at_tau["top1_cls"], "top1_loc": at_tau["top1_loc"],
                         "gt_known_loc": at_tau["gt_known_loc"], "box_acc": box_acc,
                         "mean_box_acc": float(np.mean(list(box_acc.values()))),
                         "by_true_boxes": {"one": subset(~several), "several": subset(several)}},
        "max_box_acc": result["max_box_acc"], "max_box_acc_tau": result["max_box_acc_tau"],
        "max_box_acc_v2": result["max_box_acc_v2"],
        "max_box_acc_per_delta": by_delta(result["max_box_acc_per_delta"]),
        "best_tau": by_delta(result["best_tau"]),
        "calibrated_tau": calibration.choose_tau(result, criterion), "calibration_criterion": criterion,
        "curves": {"thresholds": result["thresholds"].tolist(),
                   **{mode: {str(d): c.tolist() for d, c in curves.items()}
                      for mode, curves in result["box_acc"].items()},
                   "mean_box_acc": result["mean_box_acc"].tolist(),
                   "top1_loc": result["top1_loc"].tolist(), "gt_known_loc": result["gt_known_loc"].tolist()},
        "images": rows, "errors": errors,
    }


def save_calibrated_version(loaded, saved_model_path, tau):
    """Writes the next version of a SavedModel, carrying ``tau``.

    Args:
        loaded: the SavedModel loaded from ``saved_model_path``.
        saved_model_path: its version folder ``.../NAME/<int>``, or the base folder
            ``.../NAME`` (whose highest version was loaded).
        tau: float in [0, 1), e.g. ``report["calibrated_tau"]``.

    Returns:
        The new version folder ``.../NAME/<highest + 1>``; or, when the SavedModel
        carries ``tau`` already (calibrated twice on the same images), its own version
        folder, and nothing is written: a second copy would only be a duplicate version.

    Raises:
        ValueError: the SavedModel is not in a numbered version folder, or a bad tau
            (None: no tau to calibrate to).
    """
    if tau is None:
        raise ValueError("Nothing to calibrate: at no tau does any image score under the calibration "
                         "criterion (--calibrate-for) on these images.")
    target = calibrated_version_dir(saved_model_path)
    carried = getattr(loaded, "tau", None)
    if isinstance(carried, tf.Variable) and carried.numpy() == np.float32(tau):
        return os.path.normpath(inference.resolve_version_dir(saved_model_path))
    return export.export_with_tau(loaded, tau, target)


def calibrated_version_dir(saved_model_path):
    """Where calibration writes: the next version beside the SavedModel's numbered folder.

    Raises:
        ValueError: the SavedModel is not in a numbered version folder.
    """
    version_dir = os.path.normpath(inference.resolve_version_dir(saved_model_path))
    if not os.path.basename(version_dir).isdigit():
        raise ValueError(f"Calibration writes the next version beside the SavedModel, which must be in a "
                         f"numbered folder such as saved_models/NAME/1. Received: {saved_model_path!r}")
    return export.next_version_dir(os.path.dirname(version_dir))


CRITERION_NAMES = {"box_acc": "mean BoxAcc", "loc": "GT-known Loc"}
CRITERION_NONE = {"box_acc": "at no tau does any image get a box matching a true box",
                  "loc": "at no tau does any image's first box reach IoU 0.5 with a true box"}


def format_report(report, source=""):
    """A readable table of a report from ``evaluate_saved_model``.

    Args:
        report: the dict.
        source: what was evaluated, for the title line.

    Returns:
        str, lines joined with newlines (no trailing newline).
    """
    at = report["at_model_tau"]
    model = report["model"]
    deltas = list(at["box_acc"])
    title = f"{report['num_images']} images" + (f" of {source}" if source else "")
    if report["num_failed"]:
        title += f" ({report['num_failed']} failed, not counted)"
    rows = [
        ("Top-1 Cls", f"{at['top1_cls']:.3f}", ""),
        ("Top-1 Loc (first box, IoU >= 0.5)", f"{at['top1_loc']:.3f}", f"at the model's tau {at['tau']:.2f}"),
        ("GT-known Loc (first box, IoU >= 0.5)", f"{at['gt_known_loc']:.3f}", f"at the model's tau {at['tau']:.2f}"),
    ]
    rows += [(f"BoxAcc delta {d} (all boxes)", f"{at['box_acc'][d]:.3f}", f"at the model's tau {at['tau']:.2f}")
             for d in deltas]
    rows += [
        ("mean BoxAcc over deltas", f"{at['mean_box_acc']:.3f}", f"at the model's tau {at['tau']:.2f}"),
        ("MaxBoxAcc (largest box, delta 0.5)", f"{report['max_box_acc']:.3f}",
         f"best tau {report['max_box_acc_tau']:.2f}"),
        ("MaxBoxAccV2 (all boxes, mean)", f"{report['max_box_acc_v2']:.3f}",
         ", ".join(f"{d}: {report['max_box_acc_per_delta']['all'][d]:.3f} at tau {report['best_tau']['all'][d]:.2f}"
                   for d in deltas)),
    ]
    criterion = report.get("calibration_criterion", "loc")  # reports written before the choice: loc
    if report["calibrated_tau"] is None:
        rows.append(("calibrated tau", "none", CRITERION_NONE[criterion]))
    else:
        rows.append(("calibrated tau", f"{report['calibrated_tau']:.2f}",
                     f"best {CRITERION_NAMES[criterion]} on these images"))
    width = max(len(r[0]) for r in rows)
    header = f"{title}; model: {len(model['class_names'])} classes, {model['image_size']} px, tau {model['tau']:.2f}"
    lines = [header]
    lines += [f"  {name:<{width}}  {value:>5}  {note}".rstrip() for name, value, note in rows]
    groups = at.get("by_true_boxes", {})  # reports written before it: none
    if groups.get("several", {}).get("num_images"):
        lines.append(f"  at the model's tau, by true boxes per image (objects found: true boxes a box matches "
                     f"at IoU >= 0.5):")
        for key, name in (("one", "one true box"), ("several", "several true boxes")):
            g = groups[key]
            if g["num_images"]:
                lines.append(f"    {g['num_images']} images with {name}: GT-known Loc {g['gt_known_loc']:.3f}, "
                             f"mean BoxAcc {g['mean_box_acc']:.3f}, objects found {g['objects_found']} of "
                             f"{g['true_boxes']}")
    return "\n".join(lines)


def plot_box_acc(report, path):
    """Writes a PNG of BoxAcc against tau, one curve per delta.

    Solid: all boxes (MaxBoxAccV2's curves) and, black, their mean (what the default
    calibration maximizes); dashed: the largest box at delta 0.5 (GT-known Loc,
    MaxBoxAcc; ``--calibrate-for loc``). Vertical lines: the model's and the calibrated tau.
    Uses Matplotlib's Agg canvas directly, so no display and no global backend.

    Args:
        report: from ``evaluate_saved_model``.
        path: PNG file to write.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = report["curves"]
    taus = curves["thresholds"]
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for delta in report["at_model_tau"]["box_acc"]:
        axes.plot(taus, curves["all"][delta], label=f"BoxAcc, all boxes, IoU >= {delta}")
    if "mean_box_acc" in curves:
        axes.plot(taus, curves["mean_box_acc"], "k-", label="mean BoxAcc, all boxes")
    axes.plot(taus, curves["gt_known_loc"], "k--", label="GT-known Loc (largest box, IoU >= 0.5)")
    axes.axvline(report["model"]["tau"], color="grey", linestyle=":",
                 label=f"model tau {report['model']['tau']:.2f}")
    if report["calibrated_tau"] is not None:
        best = CRITERION_NAMES[report.get("calibration_criterion", "loc")]
        axes.axvline(report["calibrated_tau"], color="red", linestyle=":",
                     label=f"calibrated tau {report['calibrated_tau']:.2f} (best {best})")
    axes.set(xlabel="CAM threshold tau", ylabel="share of images", xlim=(0, 1), ylim=(0, 1.02),
             title=f"BoxAcc over {report['num_images']} images (MaxBoxAccV2 {report['max_box_acc_v2']:.3f})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path, format="png")
