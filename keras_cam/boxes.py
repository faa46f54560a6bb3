"""The box rule: from a normalized class activation map to bounding boxes.

Box convention (used everywhere in keras-cam):
    A pixel box is ``[xmin, ymin, xmax, ymax]`` in integer pixel *edges* of one
    image: it covers the pixels with ``xmin <= x < xmax`` and ``ymin <= y < ymax``
    (half-open, so ``width = xmax - xmin`` and ``area = width * height``). This is
    what ``cv2.boundingRect`` gives as ``[x, y, x + w, y + h]``, and it scales
    between image sizes by plain multiplication. A normalized box, as served by the
    SavedModel, is TF's ``[ymin, xmin, ymax, xmax]`` with each value divided by the
    image height or width, so it is independent of the image size.

The rule (Zhou et al., "Learning Deep Features for Discriminative Localization",
CVPR 2016, Sec. 3; evaluated as in Choe et al., CVPR 2020): threshold the map,
normalized to [0, 1], at ``tau`` (keep pixels with value ``> tau``), find the
8-connected foreground regions with ``cv2.findContours`` (external contours), and
take the bounding rectangle of each region, largest region first. This module is
the reference form of the rule; ``keras_cam.graph_boxes`` holds the same rule in
TF ops for serving, and a test holds the two together.

Moment boxes (``box_extent`` k > 0): instead of a region's bounding rectangle, the
box centred on the region's foreground pixels' mean with k standard deviations on
each side, along x and along y, clipped to the bounding rectangle. A filled
rectangle has its own box at k = sqrt(3); a smaller k trims what a bounding
rectangle is most sensitive to, the thin tails and the halo that the blur of an
upsampled low-resolution CAM adds around an object. Pixel ``x`` has centre
``x + 0.5``; the box's edges are ``floor(mean - k * sd)`` and ``ceil(mean + k * sd)``,
so a one-pixel region keeps a one-pixel box.
"""

import cv2
import numpy as np

DEFAULT_TAU = 0.2
# 0 selects the bounding rectangle of each region (the CAM paper's rule).
DEFAULT_BOX_EXTENT = 0.0


def check_box(box, width=None, height=None):
    """Checks one pixel box against the convention above.

    Args:
        box: sequence of 4 numbers ``[xmin, ymin, xmax, ymax]``.
        width: optional image width; the box must lie inside it.
        height: optional image height.

    Returns:
        The box as a float64 array of shape (4,).

    Raises:
        ValueError: if the box is not of that form.
    """
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise ValueError(f"A box must be 4 finite numbers [xmin, ymin, xmax, ymax]. Received: box={box!r}")
    if b[0] > b[2] or b[1] > b[3]:
        raise ValueError(f"A box needs xmin <= xmax and ymin <= ymax. Received: box={box!r}")
    if b[0] < 0 or b[1] < 0 or (width is not None and b[2] > width) or (height is not None and b[3] > height):
        raise ValueError(
            f"A box must lie inside the image (0, 0, {width}, {height}). Received: box={box!r}")
    return b


def check_box_extent(box_extent):
    """Refuses a ``box_extent`` that is not 0 or a positive number.

    Raises:
        ValueError: naming the value.
    """
    if (isinstance(box_extent, bool) or not isinstance(box_extent, (int, float, np.number))
            or not (np.isfinite(float(box_extent)) and float(box_extent) >= 0.0)):
        raise ValueError(f"box_extent must be 0 or a positive number. Received: box_extent={box_extent!r}")


def moment_box(xs, ys, box_extent, bounds):
    """The moment box of a region's foreground pixels (see the module docstring).

    The sums are exact int64 and the variance is one float64 division of an exact
    integer, so ``keras_cam.graph_boxes`` gets the very same edges in TF ops.

    Args:
        xs: int (N,) column of each foreground pixel of the region, N >= 1.
        ys: int (N,) row of each pixel.
        box_extent: float k > 0, standard deviations on each side; it is rounded to
            float32, as the SavedModel variable holding it is.
        bounds: the region's bounding rectangle ``[xmin, ymin, xmax, ymax]``.

    Returns:
        int64 (4,) pixel box ``[xmin, ymin, xmax, ymax]`` inside ``bounds``.
    """
    k = float(np.float32(box_extent))
    n = np.int64(len(xs))
    edges = []
    for v in (np.asarray(xs, np.int64), np.asarray(ys, np.int64)):
        s1, s2 = v.sum(), (v * v).sum()
        sd = np.sqrt(float(n * s2 - s1 * s1) / float(n * n))
        mean = float(s1) / float(n) + 0.5
        edges.append((np.floor(mean - k * sd), np.ceil(mean + k * sd)))
    (x0, x1), (y0, y1) = edges
    box = np.array([x0, y0, x1, y1], np.int64)
    lo = np.asarray(bounds[:2], np.int64)
    hi = np.asarray(bounds[2:], np.int64)
    return np.clip(box, np.r_[lo, lo], np.r_[hi, hi])


def boxes_from_cam(cam, tau=DEFAULT_TAU, all_regions=False, box_extent=DEFAULT_BOX_EXTENT):
    """Applies the box rule to one normalized map.

    Args:
        cam: float (H, W), values in [0, 1] (see ``keras_cam.cam.normalize_cams``).
        tau: threshold in [0, 1); pixels with value ``> tau`` are foreground.
        all_regions: if False, only the box of the largest region; if True, the
            box of every region.
        box_extent: 0 for each region's bounding rectangle; k > 0 for its moment
            box with k standard deviations on each side (see the module docstring).
            The regions, their order and scores do not depend on it.

    Returns:
        A tuple ``(boxes, scores)``: int32 (N, 4) pixel boxes ``[xmin, ymin, xmax,
        ymax]`` in the map's own pixel frame, largest region first, and float32 (N,)
        scores, each region's share of the foreground area (largest first). N is 0
        when no pixel exceeds ``tau``.

    Raises:
        ValueError: for a map that is not 2-D, holds NaN, or a tau outside [0, 1).
    """
    cam = np.asarray(cam)
    if cam.ndim != 2:
        raise ValueError(f"boxes_from_cam takes one (H, W) map. Received shape {cam.shape}")
    if not np.all(np.isfinite(cam)):
        raise ValueError("The activation map holds NaN or infinite values; cannot compute boxes.")
    check_box_extent(box_extent)
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.number)) or not 0.0 <= float(tau) < 1.0:
        raise ValueError(f"tau must be a number in [0, 1). Received: tau={tau!r}")
    mask = (cam > tau).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 4), np.int32), np.zeros((0,), np.float32)
    rects = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        # Rank by the pixels of the region (its filled contour), the quantity the
        # in-graph rule can count; contourArea would rank 1-pixel-wide regions as 0.
        region = np.zeros((h, w), np.uint8)
        cv2.drawContours(region, [contour - [x, y]], -1, 1, thickness=cv2.FILLED)
        pixels = region & mask[y:y + h, x:x + w]
        area = int(np.count_nonzero(pixels))
        rects.append((area, x, y, x + w, y + h, pixels))
    rects.sort(key=lambda r: (-r[0], r[2], r[1]))
    if not all_regions:
        rects = rects[:1]
    total = float(mask.sum())
    if box_extent > 0:
        boxes = []
        for _, x, y, x1, y1, pixels in rects:
            ys, xs = np.nonzero(pixels)
            boxes.append(moment_box(xs + x, ys + y, box_extent, (x, y, x1, y1)))
        boxes = np.array(boxes, dtype=np.int32)
    else:
        boxes = np.array([r[1:5] for r in rects], dtype=np.int32)
    scores = np.array([r[0] / total for r in rects], dtype=np.float32)
    return boxes, scores


def _whole_pixels(boxes, height, width):
    """Rounds float pixel boxes to whole pixels inside a ``height`` x ``width`` image.

    Each edge goes to the nearest pixel edge; a box of some width and height that
    this would leave without one of them (an image of a few pixels, or a box under a
    pixel wide) keeps one pixel there, so that it still covers some of the image.

    Raises:
        ValueError: a size that is not positive, or a box that is not finite or has
            a min above its max.
    """
    if not (height > 0 and width > 0):
        raise ValueError(f"An image needs a positive height and width. Received: height={height!r}, width={width!r}")
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"Boxes must be finite numbers. Received: {boxes.tolist()!r}")
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise ValueError(f"A box needs min <= max on both axes. Received: {boxes.tolist()!r}")
    out = np.clip(np.rint(boxes), 0, [width, height, width, height])
    for lo, hi, side in ((0, 2, width), (1, 3, height)):
        empty = (out[:, hi] <= out[:, lo]) & (boxes[:, hi] > boxes[:, lo])
        out[empty, hi] = np.minimum(out[empty, lo] + 1, side)
        out[empty, lo] = out[empty, hi] - 1
    return out.astype(np.int32)


def scale_boxes(boxes, from_size, to_size):
    """Maps pixel boxes from one image frame to another of a different size.

    Args:
        boxes: (N, 4) ``[xmin, ymin, xmax, ymax]`` in the ``from_size`` frame.
        from_size: ``(height, width)`` of the frame the boxes are in.
        to_size: ``(height, width)`` of the target frame (e.g. the original image).

    Returns:
        int32 (N, 4) boxes in the target frame, rounded to whole pixels inside it;
        a box with some width and height keeps at least one pixel of each.

    Raises:
        ValueError: a size that is not positive, or a box that is not finite or has
            a min above its max.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not (from_size[0] > 0 and from_size[1] > 0):
        raise ValueError(f"from_size needs a positive height and width. Received: from_size={from_size!r}")
    sy = to_size[0] / from_size[0]
    sx = to_size[1] / from_size[1]
    return _whole_pixels(boxes * [sx, sy, sx, sy], to_size[0], to_size[1])


def normalized_to_pixel(boxes, height, width):
    """Converts normalized ``[ymin, xmin, ymax, xmax]`` boxes to pixel boxes.

    Args:
        boxes: float (N, 4) normalized boxes, TF order.
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        int32 (N, 4) pixel boxes ``[xmin, ymin, xmax, ymax]``, rounded to whole
        pixels inside the image; a box with some width and height keeps at least
        one pixel of each.

    Raises:
        ValueError: a size that is not positive, or a box that is not finite or has
            a min above its max.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return _whole_pixels(b[:, [1, 0, 3, 2]] * [width, height, width, height], height, width)


def iou(box_a, box_b):
    """Intersection over union of two pixel boxes in the half-open convention.

    Args:
        box_a: ``[xmin, ymin, xmax, ymax]``.
        box_b: ``[xmin, ymin, xmax, ymax]``.

    Returns:
        float in [0, 1]; 0 when both boxes are empty.
    """
    a = np.asarray(box_a, dtype=np.float64)
    b = np.asarray(box_b, dtype=np.float64)
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
