"""The box rule of ``keras_cam.boxes`` in pure TF ops, for the serving graph.

``keras_cam.boxes.boxes_from_cam`` (OpenCV) is the reference; this module gives the
same boxes, scores and order from TF ops only (no NumPy, no ``py_function``), on a
batch, so it can live inside a ``tf.function`` exported as a SavedModel signature.

What the reference computes, stated so that it can be done without contours:
``cv2.findContours(..., RETR_EXTERNAL)`` reports only *outer* boundaries, and the
area of a region is counted over its filled outer contour. So a foreground island
lying inside a hole of another region is not a region of its own: its pixels count
towards the enclosing region. Here that is done by filling holes first: a hole is
a 4-connected background area (background is 4-connected when the foreground is
8-connected) that does not reach the image border. The regions are then the
8-connected components of foreground-plus-holes, and each region's area is the
number of *foreground* pixels in it.

How: all labelling is done on horizontal runs, not on pixels. The only per-pixel
work is the threshold, a 1-pixel background frame and one ``tf.where`` over the
places where the mask changes; runs come out of that as sorted start/end
positions. Two runs in neighbouring rows touch iff a pixel above/below the start
of one of them lies in the other (probing from both runs' starts covers every
overlap), which is found with ``tf.searchsorted``. Components are then labelled
on that small run graph by max-label propagation with tree hooking and pointer
jumping (FastSV-style), which ends in a handful of iterations instead of one
per pixel of region diameter.

Speed: the cost follows the number of runs, not of pixels, so maps of a few blobs
(what serving sees) are cheap and pure noise maps with many regions are the slow
case. What CAM and boxes together cost next to the classifier's forward pass is
measured by ``benchmarks/infer_speed.py`` (side ``predict``; BENCHMARKS.md, "Speed").
Pixel-level max-pool propagation, the first design tried during development, was
one to two orders of magnitude slower on blob maps (one 3x3 max-pool over the batch
per step of region diameter).
"""

import tensorflow as tf

_INT = tf.int64


def _connected_labels(labels, src, dst):
    """Labels connected components of a graph with the largest node id in each.

    Args:
        labels: int64 (N,) initial labels; ``labels[i] >= i`` must hold (a node may
            start with a larger label to seed it with a known component).
        src: int64 (E,) one end of each undirected edge.
        dst: int64 (E,) the other end.

    Returns:
        int64 (N,) labels; nodes are in one component iff their labels are equal,
        and the label is the largest initial label reachable in the component.
    """
    n = tf.size(labels, out_type=_INT)

    def body(lab, _):
        lab_src = tf.gather(lab, src)
        lab_dst = tf.gather(lab, dst)
        new = tf.maximum(lab, tf.math.unsorted_segment_max(lab_dst, src, n))
        new = tf.maximum(new, tf.math.unsorted_segment_max(lab_src, dst, n))
        # Hooking the node a label points at, not only the node itself, merges
        # whole trees per step; with pointer jumping the loop then ends in a few
        # steps where plain propagation needs one per run along a region (without
        # it, noise maps took ~5x longer).
        new = tf.maximum(new, tf.math.unsorted_segment_max(
            tf.concat([lab_dst, lab_src], 0), tf.concat([lab_src, lab_dst], 0), n))
        # Labels keep lab[x] >= x, so jumping never lowers one and labels stay
        # inside their component; at the fixed point each component holds its max.
        new = tf.gather(new, new)
        return new, tf.reduce_any(tf.not_equal(new, lab))

    labels, _ = tf.while_loop(lambda lab, changed: changed, body, (labels, tf.constant(True)))
    return labels


def _run_containing(starts, ends, queries):
    """Finds, for flat pixel positions, the run that holds each of them.

    Args:
        starts: int64 (R,) sorted run starts (flat positions).
        ends: int64 (R,) inclusive run ends, ``starts[i] <= ends[i] < starts[i + 1]``.
        queries: int64 (Q,) flat positions.

    Returns:
        A tuple ``(index, found)``: int64 (Q,) run index (0 where not found) and
        bool (Q,) whether the position lies in a run.
    """
    idx = tf.searchsorted(starts, queries, side="right", out_type=_INT) - 1
    safe = tf.maximum(idx, 0)
    found = tf.logical_and(idx >= 0, queries <= tf.gather(ends, safe))
    return safe, found


def _edges(starts, ends, num_runs, offsets, needed=None):
    """Edges between runs that touch, probing fixed offsets from each run start.

    Args:
        starts: int64 (R,) sorted run starts.
        ends: int64 (R,) inclusive run ends.
        num_runs: int64 scalar R.
        offsets: list of int64 scalars, flat offsets to probe from each start.
        needed: optional bool (R,); an edge is kept only if one of its ends is
            needed (edges between runs already known to be connected cost time
            in every labelling step and tell nothing).

    Returns:
        A tuple ``(src, dst)`` of int64 (E,), the two ends of each undirected edge
        (a pair of runs may appear more than once, which is harmless).
    """
    own = tf.range(num_runs, dtype=_INT)
    queries = tf.reshape(starts[:, None] + tf.stack(offsets)[None, :], [-1])
    src = tf.repeat(own, len(offsets))
    dst, found = _run_containing(starts, ends, queries)
    if needed is not None:
        found = found & (tf.gather(needed, src) | tf.gather(needed, dst))
    # Offset-major order keeps src and dst sorted within each block: segment
    # reductions over sorted ids are faster than over shuffled ones.
    src = tf.reshape(tf.transpose(tf.reshape(src, [-1, len(offsets)])), [-1])
    dst = tf.reshape(tf.transpose(tf.reshape(dst, [-1, len(offsets)])), [-1])
    found = tf.reshape(tf.transpose(tf.reshape(found, [-1, len(offsets)])), [-1])
    keep = tf.where(found)[:, 0]
    return tf.gather(src, keep), tf.gather(dst, keep)


def _moment_edges(count, s1, s2, box_extent, lo, hi):
    """One axis of ``keras_cam.boxes.moment_box``, with the same float64 arithmetic.

    Args:
        count: int64 (R,) foreground pixels per region.
        s1: int64 (R,) sum of the pixel coordinates along the axis.
        s2: int64 (R,) sum of their squares.
        box_extent: float64 scalar k.
        lo: int64 (R,) the region's bounding-rectangle min edge on the axis.
        hi: int64 (R,) its max edge (exclusive).

    Returns:
        ``(lo, hi)`` int64 (R,) the moment box's edges, inside ``[lo, hi]``.
    """
    n = tf.cast(count, tf.float64)
    sd = tf.sqrt(tf.cast(count * s2 - s1 * s1, tf.float64) / tf.cast(count * count, tf.float64))
    mean = tf.cast(s1, tf.float64) / n + 0.5
    low = tf.cast(tf.floor(mean - box_extent * sd), _INT)
    high = tf.cast(tf.math.ceil(mean + box_extent * sd), _INT)
    return tf.clip_by_value(low, lo, hi), tf.clip_by_value(high, lo, hi)


def boxes_from_cams_tf(cams, tau, max_boxes, box_extent=0.0):
    """Applies the box rule to a batch of normalized maps, in TF ops.

    Same rule, boxes, scores and order as ``keras_cam.boxes.boxes_from_cam(cam,
    tau, all_regions=True)``: pixels ``> tau`` are foreground, regions are the
    8-connected foreground regions with islands inside holes counted towards the
    enclosing region, ranked by foreground pixel count (ties: smaller ymin, then
    smaller xmin, then the region whose first pixel in raster order comes later,
    as OpenCV lists contours), the score being the region's share of all
    foreground pixels of its map. With ``box_extent`` k > 0 each box is the
    region's moment box (``keras_cam.boxes.moment_box``): its pixel sums come
    from closed forms over each horizontal run, exact in int64.

    Args:
        cams: float32 (B, H, W) maps normalized to [0, 1]. NaN counts as
            background (the reference raises instead; a graph cannot).
        tau: float scalar (tensor, variable or python float), the threshold.
        max_boxes: python int K >= 1, the number of box slots per map.
        box_extent: float scalar (tensor, variable or python float): 0 for
            bounding rectangles, k > 0 for moment boxes with k standard
            deviations on each side. Regions, order and scores do not depend on it.

    Returns:
        A tuple ``(boxes, scores, num_boxes)``:
        boxes: float32 (B, K, 4) normalized ``[ymin, xmin, ymax, xmax]``, i.e. the
            reference's half-open pixel box ``[xmin, ymin, xmax, ymax]`` reordered
            and divided by H or W; zeros for padding slots.
        scores: float32 (B, K) each region's share of the foreground area, largest
            region first; 0 for padding slots.
        num_boxes: int32 (B,) number of filled slots, ``min(regions, K)``.

    Raises:
        ValueError: if ``max_boxes`` is not a positive int or ``cams`` is not 3-D.
    """
    if isinstance(max_boxes, bool) or not isinstance(max_boxes, int) or max_boxes < 1:
        raise ValueError(f"max_boxes must be a positive python int. Received: max_boxes={max_boxes!r}")
    k = max_boxes
    cams = tf.convert_to_tensor(cams, tf.float32)
    if cams.shape.rank is not None and cams.shape.rank != 3:
        raise ValueError(f"boxes_from_cams_tf takes (B, H, W) maps. Received shape {cams.shape}")
    tau = tf.cast(tf.convert_to_tensor(tau), tf.float32)

    shape = tf.shape(cams, out_type=_INT)
    batch, height, width = shape[0], shape[1], shape[2]
    # A background frame keeps runs from joining across rows or images (except
    # frame pixels, which are all outer background anyway) and gives every map a
    # border that the outer background is connected through, as OpenCV's
    # findContours pads its input with zeros.
    hp, wp = height + 2, width + 2
    mask = tf.pad(cams > tau, [[0, 0], [1, 1], [1, 1]], constant_values=False)
    flat = tf.reshape(mask, [-1])
    size = tf.size(flat, out_type=_INT)

    # The flat mask starts and ends with background, so change points alternate:
    # foreground start, background start, ... .
    changes = tf.where(tf.not_equal(flat[1:], flat[:-1]))[:, 0] + 1
    fg_starts = changes[0::2]
    fg_ends = changes[1::2] - 1
    num_fg = tf.size(fg_starts, out_type=_INT)
    # Background run i lies just before foreground run i; one more at the end.
    bg_starts = tf.concat([tf.zeros([1], _INT), changes[1::2]], 0)
    bg_ends = tf.concat([fg_starts - 1, tf.reshape(size - 1, [1])], 0)
    num_bg = num_fg + 1

    # --- Outer background: 4-connected background runs reaching the frame.
    start_row = bg_starts // wp
    frame = (tf.not_equal(start_row, bg_ends // wp)  # wraps a row end: holds frame pixels
             | tf.equal(bg_starts % wp, 0) | tf.equal(bg_ends % wp, wp - 1)
             | tf.equal(start_row % hp, 0) | tf.equal(start_row % hp, hp - 1))
    # Node num_bg stands for the outside; frame runs start attached to it.
    bg_labels = tf.concat([tf.where(frame, num_bg, tf.range(num_bg, dtype=_INT)), tf.reshape(num_bg, [1])], 0)
    # Out-of-range probes (above the first row, below the last) find no run,
    # because the clamped search still checks the position against the run end;
    # positions < 0 give index -1 and positions >= size lie past the last end.
    src, dst = _edges(bg_starts, bg_ends, num_bg, [-wp, wp], needed=tf.logical_not(frame))
    bg_labels = _connected_labels(bg_labels, src, dst)
    hole = tf.not_equal(bg_labels[:num_bg], num_bg)

    # --- Filled runs: foreground runs joined across the holes between them.
    # A hole run lies inside one row, so joined runs stay within a row.
    filled_id = tf.cumsum(tf.cast(tf.logical_not(hole[:num_fg]), _INT)) - 1
    num_filled = tf.reduce_sum(tf.cast(tf.logical_not(hole[:num_fg]), _INT))
    f_starts = tf.math.unsorted_segment_min(fg_starts, filled_id, num_filled)
    f_ends = tf.math.unsorted_segment_max(fg_ends, filled_id, num_filled)
    f_area = tf.math.unsorted_segment_sum(fg_ends - fg_starts + 1, filled_id, num_filled)
    # Pixel sums for moment boxes: a run covers columns x0..x1 of one row y, so
    # sum x = n (x0 + x1) / 2 and sum x^2 = T(x1) - T(x0 - 1), T(m) = m (m+1) (2m+1) / 6.
    run_x0 = fg_starts % wp - 1
    run_x1 = fg_ends % wp - 1
    run_y = (fg_starts // wp) % hp - 1
    run_n = run_x1 - run_x0 + 1

    def squares_to(m):
        return m * (m + 1) * (2 * m + 1) // 6

    run_sums = tf.stack([run_n * (run_x0 + run_x1) // 2, squares_to(run_x1) - squares_to(run_x0 - 1),
                         run_n * run_y, run_n * run_y * run_y], axis=1)
    f_sums = tf.math.unsorted_segment_sum(run_sums, filled_id, num_filled)

    # --- 8-connected regions of filled runs.
    src, dst = _edges(f_starts, f_ends, num_filled, [-wp - 1, -wp, -wp + 1, wp - 1, wp, wp + 1])
    f_labels = _connected_labels(tf.range(num_filled, dtype=_INT), src, dst)

    # Per region, keyed by its label (the index of its last run in raster order).
    area = tf.math.unsorted_segment_sum(f_area, f_labels, num_filled)
    first = tf.math.unsorted_segment_min(f_starts, f_labels, num_filled)
    xmin = tf.math.unsorted_segment_min(f_starts % wp, f_labels, num_filled)
    xmax = tf.math.unsorted_segment_max(f_ends % wp, f_labels, num_filled)
    roots = tf.where(tf.equal(f_labels, tf.range(num_filled, dtype=_INT)))[:, 0]
    sums = tf.gather(tf.math.unsorted_segment_sum(f_sums, f_labels, num_filled), roots)
    area = tf.gather(area, roots)
    first = tf.gather(first, roots)
    # Frame-padded coordinates: subtract 1 for pixel edges; the exclusive max
    # edge of a padded last column c is (c - 1) + 1 = c.
    xmin = tf.gather(xmin, roots) - 1
    xmax = tf.gather(xmax, roots)
    first_row = first // wp
    region_image = first_row // hp
    ymin = first_row % hp - 1
    # The label run is the region's last run, so its row is the bottom row.
    ymax = (tf.gather(f_starts, roots) // wp) % hp
    first_x = first % wp - 1
    extent = tf.cast(tf.cast(tf.convert_to_tensor(box_extent), tf.float32), tf.float64)
    mx0, mx1 = _moment_edges(area, sums[:, 0], sums[:, 1], extent, xmin, xmax)
    my0, my1 = _moment_edges(area, sums[:, 2], sums[:, 3], extent, ymin, ymax)
    moments = extent > 0
    box_x0, box_x1 = tf.where(moments, mx0, xmin), tf.where(moments, mx1, xmax)
    box_y0, box_y1 = tf.where(moments, my0, ymin), tf.where(moments, my1, ymax)

    # Rank within each map by one int64 key: area desc, ymin asc, xmin asc, then
    # the later first pixel first (OpenCV returns contours in reverse raster
    # order and the reference sort is stable). Fits int64 for maps up to 4096^2.
    key = (((area * hp + (hp - 1 - ymin)) * wp + (wp - 1 - xmin)) * wp) + first_x
    by_key = tf.argsort(key, direction="DESCENDING", stable=True)
    order = tf.gather(by_key, tf.argsort(tf.gather(region_image, by_key), stable=True))
    image = tf.gather(region_image, order)
    num_regions = tf.size(image, out_type=_INT)
    rank = tf.range(num_regions, dtype=_INT) - tf.searchsorted(image, image, side="left", out_type=_INT)
    keep = tf.where(rank < k)[:, 0]

    total = tf.math.unsorted_segment_sum(area, region_image, batch)
    slot = tf.stack([tf.gather(image, keep), tf.gather(rank, keep)], axis=1)
    sel = tf.gather(order, keep)
    h_f = tf.cast(height, tf.float32)
    w_f = tf.cast(width, tf.float32)
    box_values = tf.stack([
        tf.cast(tf.gather(box_y0, sel), tf.float32) / h_f,
        tf.cast(tf.gather(box_x0, sel), tf.float32) / w_f,
        tf.cast(tf.gather(box_y1, sel), tf.float32) / h_f,
        tf.cast(tf.gather(box_x1, sel), tf.float32) / w_f,
    ], axis=1)
    sel_image = tf.gather(image, keep)
    # Divide in float64 and round once, as the reference does (Python float).
    score_values = tf.cast(
        tf.cast(tf.gather(area, sel), tf.float64) / tf.cast(tf.gather(total, sel_image), tf.float64), tf.float32)
    boxes = tf.scatter_nd(slot, box_values, tf.stack([batch, k, 4]))
    scores = tf.scatter_nd(slot, score_values, tf.stack([batch, k]))
    num_boxes = tf.math.unsorted_segment_sum(tf.ones_like(keep, tf.int32), sel_image, batch)
    boxes.set_shape([cams.shape[0], k, 4])
    scores.set_shape([cams.shape[0], k])
    num_boxes.set_shape([cams.shape[0]])
    return boxes, scores, num_boxes
