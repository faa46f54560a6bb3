"""Weakly-supervised object localization (WSOL) metrics.

Semantics follow Choe et al., "Evaluating Weakly Supervised Object Localization
Methods Right", CVPR 2020 (reference code: clovaai/wsolevaluation):

* Each score map is min-max normalized per image to [0, 1] (a constant map
  becomes all zeros and so yields no box), then the box rule of
  ``keras_cam.boxes.boxes_from_cam`` is applied at every threshold ``tau`` of
  ``thresholds`` (default ``0.00, 0.01, ..., 0.99``).
* ``BoxAcc(tau, delta)`` is the share of images whose best IoU over all
  (predicted box, ground-truth box) pairs is ``>= delta``. An image may carry
  several ground-truth boxes; an image with no predicted box has IoU 0.
* ``MaxBoxAcc``: only the box of the largest region, ``delta = 0.5``, at the
  best ``tau``. ``MaxBoxAccV2``: the boxes of all regions, the mean over
  ``delta`` in {0.3, 0.5, 0.7} of ``max_tau BoxAcc(tau, delta)``, so each delta
  at its own best ``tau``.
* Top-1 Loc: predicted class right and IoU ``>= 0.5``; GT-known Loc: IoU
  ``>= 0.5`` with the map of the true class; both with the largest-region box
  at a fixed ``tau``. Top-1 Cls: predicted class right.

All accuracies are fractions in [0, 1], not percentages.

IoU convention:
    Boxes are the half-open pixel boxes of ``keras_cam.boxes``: ``[xmin, ymin,
    xmax, ymax]`` covers the pixels ``xmin <= x < xmax``, ``ymin <= y < ymax``, so
    ``area = (xmax - xmin) * (ymax - ymin)`` with no ``+ 1``. Predicted boxes come
    from ``cv2.boundingRect`` and are already in this form. Ground-truth boxes
    must be given in the same pixel frame as the score map (the caller scales
    them, e.g. with ``keras_cam.boxes.scale_boxes``). Annotations with inclusive
    corners -- Pascal VOC XML (1-based: pixels ``xmin..xmax`` inclusive, counted
    from 1) or 0-based inclusive CSV -- name the last covered pixel, not the edge
    after it; ``inclusive_to_half_open`` converts them exactly (VOC:
    ``[xmin - 1, ymin - 1, xmax, ymax]``; 0-based: ``[xmin, ymin, xmax + 1,
    ymax + 1]``). Annotations that are already ``x, y, x + w, y + h`` (CUB's
    ``bounding_boxes.txt``, most CSV exports from ``x, y, w, h``) are half-open
    and need no conversion.

Known differences from the reference code, all small and all deliberate:
    * The reference uses inclusive areas (``+ 1``) for every box and clips
      predicted ``xmax``/``ymax`` to ``width - 1``; here areas are half-open on
      both sides, so a perfect box has IoU exactly 1.
    * The reference stands in ``[0, 0, 0, 0]`` (area 1 under ``+ 1``) for "no
      box"; here an image without a predicted box has IoU exactly 0.
    * The reference thresholds a uint8-quantized map; here the float map is
      thresholded (``value > tau``), as the serving graph does: the map normalized
      in float32 and compared with tau in float32.
    * Regions are the external contours of the mask ranked by pixel count (the
      rule of ``boxes_from_cam``); the reference ranks by ``cv2.contourArea``
      and, for all regions, uses ``RETR_TREE``, which also boxes the holes.
"""

import numpy as np

from keras_cam.boxes import boxes_from_cam, check_box_extent

# The IoU at which a box counts as a hit for MaxBoxAcc, Top-1 Loc and GT-known
# Loc; fixed by the definitions, not a tuning knob.
LOC_IOU_THRESHOLD = 0.5
DEFAULT_DELTAS = (0.3, 0.5, 0.7)


def default_thresholds():
    """The default CAM thresholds ``0.00, 0.01, ..., 0.99``.

    Returns:
        float64 (100,). Each value is the double nearest to ``i / 100`` (unlike
        ``np.arange(0, 1, 0.01)``, whose accumulated steps give e.g.
        ``0.07000000000000001``), so thresholds print and compare cleanly.
    """
    return np.arange(100) / 100.0


def check_thresholds(thresholds):
    """Validates CAM thresholds.

    Args:
        thresholds: 1-D sequence of floats, or None for ``default_thresholds()``.

    Returns:
        float64 (T,) copy of the thresholds.

    Raises:
        ValueError: unless a non-empty, strictly increasing 1-D sequence of
            finite values in [0, 1).
    """
    if thresholds is None:
        return default_thresholds()
    t = np.array(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence. Received shape {t.shape}: {thresholds!r}")
    bad = ~(np.isfinite(t) & (t >= 0.0) & (t < 1.0))
    if bad.any():
        raise ValueError(f"thresholds must lie in [0, 1). Received: {t[bad].tolist()} in {thresholds!r}")
    # Strictly increasing, so that "best tau" (first maximum) is well defined.
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"thresholds must be strictly increasing. Received: {thresholds!r}")
    return t


def _check_deltas(deltas):
    d = np.array(deltas, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"deltas must be a non-empty 1-D sequence. Received shape {d.shape}: {deltas!r}")
    # delta = 0 would count every image, even one without a box, as a hit.
    bad = ~(np.isfinite(d) & (d > 0.0) & (d <= 1.0))
    if bad.any():
        raise ValueError(f"deltas (IoU thresholds) must lie in (0, 1]. Received: {d[bad].tolist()} in {deltas!r}")
    if len(set(d.tolist())) != d.size:
        raise ValueError(f"deltas must be distinct. Received: {deltas!r}")
    return tuple(float(x) for x in d)


def check_boxes(boxes, height=None, width=None, name="boxes", allow_empty=True):
    """Validates an array of half-open pixel boxes.

    Args:
        boxes: (N, 4) ``[xmin, ymin, xmax, ymax]``.
        height: optional frame height; boxes must satisfy ``ymax <= height``.
        width: optional frame width; boxes must satisfy ``xmax <= width``.
        name: what to call the boxes in error messages.
        allow_empty: whether N = 0 is acceptable.

    Returns:
        float64 (N, 4) copy of the boxes.

    Raises:
        ValueError: for a wrong shape, a non-finite value, ``xmin > xmax`` or
            ``ymin > ymax``, a negative coordinate, or a box outside the frame
            (zero-area boxes are valid); the message names the
            first offending box.
    """
    b = np.asarray(boxes)
    if b.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric. Received dtype {b.dtype}: {boxes!r}")
    b = b.astype(np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) [xmin, ymin, xmax, ymax]. Received shape {b.shape}")
    if b.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} must hold at least one box. Received shape {b.shape}")
    checks = (
        (~np.isfinite(b).all(axis=1), "must be finite"),
        (b[:, 0] > b[:, 2], "needs xmin <= xmax"),
        (b[:, 1] > b[:, 3], "needs ymin <= ymax"),
        ((b < 0).any(axis=1), "needs non-negative coordinates"),
    )
    if width is not None:
        checks += ((b[:, 2] > width, f"must lie inside the frame width {width} (xmax <= {width})"),)
    if height is not None:
        checks += ((b[:, 3] > height, f"must lie inside the frame height {height} (ymax <= {height})"),)
    for bad, what in checks:
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{name}[{i}] {what}. Received: {b[i].tolist()}")
    return b


def inclusive_to_half_open(boxes, one_based=False):
    """Converts inclusive-corner boxes to the half-open convention used here.

    Args:
        boxes: (N, 4) ``[xmin, ymin, xmax, ymax]`` where ``xmax``/``ymax`` name the
            last pixel inside the box. ``one_based=True`` for Pascal VOC XML
            (pixels counted from 1), False for 0-based inclusive corners.
        one_based: whether the corners count pixels from 1.

    Returns:
        float64 (N, 4) half-open boxes: ``[xmin - 1, ymin - 1, xmax, ymax]`` if
        one-based, else ``[xmin, ymin, xmax + 1, ymax + 1]``. A one-pixel box
        ``[3, 3, 3, 3]`` (0-based) becomes ``[3, 3, 4, 4]``, area 1.

    Raises:
        ValueError: for a wrong shape, a non-finite value, ``xmin > xmax`` or
            ``ymin > ymax``, a negative coordinate, or, for one-based corners, a
            coordinate below 1.
    """
    name = "one-based inclusive boxes" if one_based else "inclusive boxes"
    b = check_boxes(boxes, name=name)
    if one_based:
        bad = (b < 1).any(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{name}[{i}] counts pixels from 1, so no coordinate may be below 1. Received: {b[i].tolist()}")
        return b - np.array([1.0, 1.0, 0.0, 0.0])
    return b + np.array([0.0, 0.0, 1.0, 1.0])


def iou_matrix(boxes_a, boxes_b):
    """Pairwise IoU of half-open pixel boxes (``keras_cam.boxes.iou``, vectorized).

    Args:
        boxes_a: (N, 4) ``[xmin, ymin, xmax, ymax]``.
        boxes_b: (M, 4) ``[xmin, ymin, xmax, ymax]``.

    Returns:
        float64 (N, M) with entries in [0, 1]; 0 where the union is empty (two
        zero-area boxes).

    Raises:
        ValueError: if either array is not of shape (K, 4).
    """
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    for name, x in (("boxes_a", a), ("boxes_b", b)):
        if x.ndim != 2 or x.shape[1] != 4:
            raise ValueError(f"{name} must have shape (N, 4). Received shape {x.shape}")
    a = a[:, None, :]
    b = b[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    out = np.zeros(np.broadcast_shapes(inter.shape, union.shape))
    np.divide(inter, union, out=out, where=union > 0)
    return out


def best_iou(pred_boxes, gt_boxes):
    """The best IoU over all (predicted box, ground-truth box) pairs.

    Args:
        pred_boxes: (P, 4) predicted half-open pixel boxes; P may be 0.
        gt_boxes: (G, 4) ground-truth boxes in the same frame; G may be 0.

    Returns:
        float in [0, 1]; 0.0 when either side has no box (an image without a
        predicted box is a miss at every delta).
    """
    # An empty list ([] or np.zeros(0)) is no box, as np.zeros((0, 4)) is.
    m = iou_matrix(*(np.zeros((0, 4)) if np.size(b) == 0 else b for b in (pred_boxes, gt_boxes)))
    return float(m.max()) if m.size else 0.0


def normalize_map(score_map):
    """Min-max normalizes one score map, as ``keras_cam.cam.normalize_cams``.

    The arithmetic is float32 like the TF version, so both give the same values
    and therefore the same masks at every threshold.

    Args:
        score_map: real (H, W) with H, W >= 1, all values finite.

    Returns:
        float32 (H, W) in [0, 1]; all zeros for a constant map.

    Raises:
        ValueError: for a map that is not a non-empty 2-D real array or holds NaN
            or infinite values.
    """
    m = np.asarray(score_map)
    if m.dtype.kind not in "biuf":
        raise ValueError(f"score_map must be real-valued. Received dtype {m.dtype}")
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"score_map must be one non-empty (H, W) map. Received shape {m.shape}")
    m = m.astype(np.float32)
    bad = ~np.isfinite(m)
    if bad.any():
        y, x = np.argwhere(bad)[0]
        raise ValueError(
            f"score_map holds {int(bad.sum())} NaN or infinite values, e.g. {m[y, x]} at (y={y}, x={x}).")
    lo = m.min()
    span = m.max() - lo
    if span == 0:
        return np.zeros_like(m)
    return (m - lo) / span


def best_ious_over_thresholds(score_map, gt_boxes, thresholds=None, box_extent=0.0):
    """Per-threshold best IoU of one image, for the largest region and all regions.

    Args:
        score_map: real (H, W) score map (normalized here per image).
        gt_boxes: (G, 4) half-open ground-truth boxes in the map's pixel frame,
            G >= 1.
        thresholds: float (T,) in [0, 1), strictly increasing; None for
            ``default_thresholds()``.
        box_extent: the box rule's ``box_extent`` (``keras_cam.boxes``): 0 for
            bounding rectangles, k > 0 for moment boxes.

    Returns:
        ``(largest, every)``, float64 (T,) each: at each ``tau``, the best IoU of
        the largest region's box, and of any region's box, with any ground-truth
        box. 0 where the map has no pixel above ``tau``. ``every >= largest``.

    Raises:
        ValueError: for a bad map, bad boxes (see ``check_boxes``) or bad
            thresholds.
    """
    # float32 map against float32 taus, as the serving graph compares them: in float64,
    # a pixel of 51/255 (float32 0.2000000030) would be above tau 0.2 here and not in
    # the graph. The counting below and the box rule compare the very same numbers.
    taus = check_thresholds(thresholds)
    taus32 = taus.astype(np.float32)
    cam = normalize_map(score_map)
    height, width = cam.shape
    gt = check_boxes(gt_boxes, height=height, width=width, name="gt_boxes", allow_empty=False)
    largest = np.zeros(taus.size)
    every = np.zeros(taus.size)

    # Masks are nested in tau, so thresholds with the same foreground count have
    # identical masks: run the (costly) contour search once per distinct mask.
    values = np.sort(cam, axis=None)
    fg_count = values.size - np.searchsorted(values, taus32, side="right")
    firsts = np.flatnonzero((fg_count > 0) & np.r_[True, fg_count[1:] != fg_count[:-1]])
    if firsts.size == 0:
        return largest, every
    seg_boxes = [boxes_from_cam(cam, taus32[i], all_regions=True, box_extent=box_extent)[0] for i in firsts]
    counts = np.array([len(b) for b in seg_boxes])
    if counts.min() == 0:  # Any foreground has a contour; a zero means the rule broke.
        tau = taus[firsts[counts.argmin()]]
        raise AssertionError(f"boxes_from_cam found no region in a non-empty mask at tau={tau}")
    # One IoU matrix for all boxes of all distinct masks, then per-mask reductions.
    box_best = iou_matrix(np.concatenate(seg_boxes), gt).max(axis=1)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    seg_largest = box_best[starts]  # boxes_from_cam puts the largest region first
    seg_every = np.maximum.reduceat(box_best, starts)
    # Each threshold with foreground inherits the last distinct mask at or below it.
    seg_of_tau = np.searchsorted(firsts, np.arange(taus.size), side="right") - 1
    has_fg = fg_count > 0
    largest[has_fg] = seg_largest[seg_of_tau[has_fg]]
    every[has_fg] = seg_every[seg_of_tau[has_fg]]
    return largest, every


def _check_class_ids(name, x):
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        # Allow integral floats (e.g. labels read from a CSV) but not 2.5.
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise ValueError(f"{name} must be integer class ids. Received dtype {a.dtype}: {x!r}")
    return a.astype(np.int64)


def localization_accuracies(pred_classes, true_classes, ious, iou_threshold=LOC_IOU_THRESHOLD):
    """Top-1 Cls, Top-1 Loc and GT-known Loc at one fixed ``tau``.

    Top-1 Loc is usually defined with the box from the map of the *predicted*
    class; but it only counts images whose prediction is right, where that map
    *is* the map of the true class. So one IoU per image, from the true class's
    map, gives both Top-1 Loc and GT-known Loc.

    Args:
        pred_classes: int (N,) predicted (top-1) class per image.
        true_classes: int (N,) true class per image.
        ious: float (N,) in [0, 1], per image the best IoU of the (largest-region)
            box from the true class's map with its ground-truth boxes; 0 for an
            image without a box (see ``best_ious_over_thresholds``).
        iou_threshold: IoU at which a box is a hit, in (0, 1].

    Returns:
        dict of floats in [0, 1]: ``top1_cls`` (share with the class right),
        ``top1_loc`` (class right and IoU >= threshold), ``gt_known_loc`` (IoU >=
        threshold), and ``num_images`` (int N).

    Raises:
        ValueError: for mismatched lengths, non-integer class ids, IoUs outside
            [0, 1], an empty input or an iou_threshold outside (0, 1].
    """
    pred = _check_class_ids("pred_classes", pred_classes)
    true = _check_class_ids("true_classes", true_classes)
    iou_arr = np.asarray(ious, dtype=np.float64)
    shapes = {"pred_classes": pred.shape, "true_classes": true.shape, "ious": iou_arr.shape}
    if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise ValueError(f"pred_classes, true_classes and ious must be 1-D of one length. Received shapes {shapes}")
    if iou_arr.size == 0:
        raise ValueError("localization_accuracies needs at least one image. Received 0.")
    bad = ~(np.isfinite(iou_arr) & (iou_arr >= 0.0) & (iou_arr <= 1.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"ious must lie in [0, 1]. Received ious[{i}]={float(iou_arr[i])}")
    threshold = float(iou_threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in (0, 1]. Received: iou_threshold={iou_threshold!r}")
    correct = pred == true
    hit = iou_arr >= threshold
    return {
        "top1_cls": float(correct.mean()),
        "top1_loc": float((correct & hit).mean()),
        "gt_known_loc": float(hit.mean()),
        "num_images": int(iou_arr.size),
    }


class BoxAccumulator:
    """Streams images into BoxAcc counts; memory O(len(deltas) * len(thresholds)).

    Per image, ``update`` finds the boxes at every threshold (once, all regions;
    the largest region is the first of them), reduces them to hit/miss per
    (delta, tau) and keeps only the counts, so no map is held.

    Example:
        acc = BoxAccumulator()
        for cam, boxes, pred, label in stream:
            acc.update(cam, boxes, pred_class=pred, true_class=label)
        r = acc.result()
        r["max_box_acc"], r["max_box_acc_v2"], acc.localization_at(0.2)

    Args:
        thresholds: float (T,) CAM thresholds in [0, 1), strictly increasing;
            None for ``0.00, 0.01, ..., 0.99``.
        deltas: IoU thresholds in (0, 1] averaged by MaxBoxAccV2. 0.5 is always
            tracked as well, for MaxBoxAcc and the Loc metrics.
        box_extent: the box rule's ``box_extent`` (``keras_cam.boxes``), so that
            the curves score the boxes the model serves.
    """

    def __init__(self, thresholds=None, deltas=DEFAULT_DELTAS, box_extent=0.0):
        self.thresholds = check_thresholds(thresholds)
        check_box_extent(box_extent)
        self.box_extent = float(box_extent)
        self.deltas = _check_deltas(deltas)
        self._tracked = tuple(sorted(set(self.deltas) | {LOC_IOU_THRESHOLD}))
        self._loc_index = self._tracked.index(LOC_IOU_THRESHOLD)
        self.reset()

    def reset(self):
        """Forgets all images."""
        shape = (len(self._tracked), self.thresholds.size)
        self.num_images = 0
        # int64 hit counts, [delta index, tau index].
        self._hits_largest = np.zeros(shape, np.int64)
        self._hits_all = np.zeros(shape, np.int64)
        self._top1_loc_hits = np.zeros(self.thresholds.size, np.int64)
        self._num_correct = 0
        self._with_classes = None  # None until the first update decides.

    def update(self, score_map, gt_boxes, pred_class=None, true_class=None):
        """Adds one image.

        Args:
            score_map: real (H, W) score map of the true class (normalized here).
            gt_boxes: (G, 4) half-open ground-truth boxes in the map's pixel
                frame, G >= 1.
            pred_class: optional int, the predicted (top-1) class.
            true_class: optional int, the true class. Give both or neither, and
                the same choice for every image, so that the class metrics cover
                all images.

        Returns:
            ``(largest, every)`` float64 (T,) best IoUs of this image (see
            ``best_ious_over_thresholds``), for per-image inspection.

        Raises:
            ValueError: for bad inputs (see ``best_ious_over_thresholds``), only
                one of the classes given, or a change in whether classes are
                given.
        """
        if (pred_class is None) != (true_class is None):
            raise ValueError(
                f"Give both pred_class and true_class or neither. Received pred_class={pred_class!r}, "
                f"true_class={true_class!r}")
        with_classes = pred_class is not None
        if self._with_classes is not None and with_classes != self._with_classes:
            raise ValueError(
                f"Every update must give classes or none do; earlier updates had with_classes={self._with_classes}, "
                f"this one {with_classes}.")
        if with_classes:
            pred = _check_class_ids("pred_class", pred_class)
            true = _check_class_ids("true_class", true_class)
            if pred.ndim != 0 or true.ndim != 0:
                raise ValueError(f"pred_class and true_class must be scalars. Received {pred_class!r}, {true_class!r}")
        largest, every = best_ious_over_thresholds(score_map, gt_boxes, self.thresholds, self.box_extent)
        # All validation is done: only now change state, so a bad image leaves
        # the accumulator as it was.
        deltas = np.array(self._tracked)[:, None]
        self._hits_largest += largest[None, :] >= deltas
        self._hits_all += every[None, :] >= deltas
        if with_classes and int(pred) == int(true):
            self._num_correct += 1
            self._top1_loc_hits += largest >= LOC_IOU_THRESHOLD
        self._with_classes = with_classes
        self.num_images += 1
        return largest, every

    def merge(self, other):
        """Adds the counts of another accumulator (e.g. from another worker).

        Args:
            other: a ``BoxAccumulator`` with the same thresholds and deltas.

        Raises:
            ValueError: if thresholds, deltas or the use of classes differ.
        """
        if not isinstance(other, BoxAccumulator):
            raise ValueError(f"Can only merge a BoxAccumulator. Received {type(other).__name__}")
        if (not np.array_equal(self.thresholds, other.thresholds) or self.deltas != other.deltas
                or self.box_extent != other.box_extent):
            raise ValueError(
                f"Cannot merge accumulators with different thresholds or deltas or box_extent: deltas {self.deltas} vs "
                f"{other.deltas}, {self.thresholds.size} vs {other.thresholds.size} thresholds, box_extent "
                f"{self.box_extent} vs {other.box_extent}.")
        if None not in (self._with_classes, other._with_classes) and self._with_classes != other._with_classes:
            raise ValueError("Cannot merge an accumulator with classes and one without.")
        self._hits_largest += other._hits_largest
        self._hits_all += other._hits_all
        self._top1_loc_hits += other._top1_loc_hits
        self._num_correct += other._num_correct
        self.num_images += other.num_images
        if self._with_classes is None:
            self._with_classes = other._with_classes

    def _check_nonempty(self):
        if self.num_images == 0:
            raise ValueError("No images accumulated; call update() first.")

    def result(self):
        """Computes the metrics over all images so far.

        Returns:
            dict with (accuracies are fractions in [0, 1]; curves are float64 (T,)
            over ``thresholds``; ``{delta: ...}`` dicts cover ``deltas`` and 0.5):
              * ``num_images``: int.
              * ``thresholds``: float64 (T,).
              * ``box_acc``: ``{"largest": {delta: curve}, "all": {delta: curve}}``,
                BoxAcc(tau, delta) with the largest region's box or all boxes.
              * ``max_box_acc_per_delta``: same nesting, ``max_tau`` of each curve.
              * ``best_tau``: same nesting, the first tau reaching that maximum.
              * ``max_box_acc``: float, largest region, delta 0.5.
              * ``max_box_acc_tau``: float, its best tau.
              * ``max_box_acc_v2``: float, all regions, mean over ``deltas`` of
                each delta's maximum.
              * ``mean_box_acc``: curve, all regions, BoxAcc averaged over ``deltas``
                at each tau (what one tau gives; MaxBoxAccV2 lets each delta
                have its own).
            and, if classes were given:
              * ``top1_cls``: float.
              * ``top1_loc``: curve, class right and largest-region IoU >= 0.5.
              * ``gt_known_loc``: curve, largest-region IoU >= 0.5 (the same curve
                as ``box_acc["largest"][0.5]``).

        Raises:
            ValueError: if no image was accumulated.
        """
        self._check_nonempty()
        n = float(self.num_images)
        out = {"num_images": self.num_images, "thresholds": self.thresholds.copy(),
               "box_acc": {}, "max_box_acc_per_delta": {}, "best_tau": {}}
        for mode, hits in (("largest", self._hits_largest), ("all", self._hits_all)):
            curves = {d: hits[i] / n for i, d in enumerate(self._tracked)}
            out["box_acc"][mode] = curves
            out["max_box_acc_per_delta"][mode] = {d: float(c.max()) for d, c in curves.items()}
            out["best_tau"][mode] = {d: float(self.thresholds[int(np.argmax(c))]) for d, c in curves.items()}
        out["max_box_acc"] = out["max_box_acc_per_delta"]["largest"][LOC_IOU_THRESHOLD]
        out["max_box_acc_tau"] = out["best_tau"]["largest"][LOC_IOU_THRESHOLD]
        out["max_box_acc_v2"] = float(np.mean([out["max_box_acc_per_delta"]["all"][d] for d in self.deltas]))
        out["mean_box_acc"] = np.mean([out["box_acc"]["all"][d] for d in self.deltas], axis=0)
        if self._with_classes:
            out["top1_cls"] = self._num_correct / n
            out["top1_loc"] = self._top1_loc_hits / n
            out["gt_known_loc"] = self._hits_largest[self._loc_index] / n
        return out

    def localization_at(self, tau):
        """Top-1 Cls, Top-1 Loc and GT-known Loc at one of the thresholds.

        Args:
            tau: a value of ``thresholds`` (matched to within 1e-9), e.g. 0.2 as in
                Zhou et al., or ``result()["max_box_acc_tau"]``.

        Returns:
            dict of floats ``top1_cls``, ``top1_loc``, ``gt_known_loc`` and int
            ``num_images``, as ``localization_accuracies``.

        Raises:
            ValueError: if no image was accumulated, the updates carried no
                classes, or tau is not one of the thresholds.
        """
        self._check_nonempty()
        if not self._with_classes:
            raise ValueError("localization_at needs pred_class and true_class in update(); none were given.")
        match = np.flatnonzero(np.abs(self.thresholds - float(tau)) <= 1e-9)
        if match.size == 0:
            raise ValueError(f"tau={tau!r} is not one of the accumulator's thresholds "
                             f"({self.thresholds.min()}..{self.thresholds.max()}, {self.thresholds.size} values).")
        t = int(match[0])
        n = float(self.num_images)
        return {
            "top1_cls": self._num_correct / n,
            "top1_loc": float(self._top1_loc_hits[t] / n),
            "gt_known_loc": float(self._hits_largest[self._loc_index, t] / n),
            "num_images": self.num_images,
        }
