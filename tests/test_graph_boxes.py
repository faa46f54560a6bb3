"""Tests for keras_cam.graph_boxes: the TF box rule held to the OpenCV reference.

``keras_cam.boxes.boxes_from_cam(cam, tau, all_regions=True)`` is the reference.
The TF form must give the same pixel boxes, the same order and the same scores,
eagerly and inside a ``tf.function`` with unknown shapes (as in the SavedModel).
Maps are hand-written (golden boxes stated here, independent of both forms) or
made by the tests (Gaussian blobs, smoothed noise, upsampled low-res maps, binary
noise) at several sizes and thresholds.
"""


import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


from keras_cam.boxes import boxes_from_cam, iou, normalized_to_pixel  # noqa: E402
from keras_cam.graph_boxes import boxes_from_cams_tf  # noqa: E402

K = 8  # box slots in most tests; more regions than this exercise truncation
TAUS = [0.0, 0.2, 0.5, 0.8]


@tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32), tf.TensorSpec([], tf.float32)])
def _graph_rule(cams, tau):
    # Unknown B, H and W, like a serving signature that is traced once.
    return boxes_from_cams_tf(cams, tau, K)


def _run(cams, tau, graph=True, k=K):
    """Applies the TF rule to a batch; returns NumPy boxes, scores, num_boxes."""
    cams = tf.constant(np.asarray(cams, np.float32))
    tau = tf.constant(tau, tf.float32)
    if graph and k == K:
        out = _graph_rule(cams, tau)
    else:
        out = boxes_from_cams_tf(cams, tau, k)
    return tuple(t.numpy() for t in out)


def _reference(cam, tau, k=K):
    # The reference compares a float32 map with tau; give it the float32 tau the
    # graph sees, so both threshold at exactly the same value.
    boxes, scores = boxes_from_cam(cam, np.float32(tau), all_regions=True)
    return boxes[:k], scores[:k]


def _pixel_boxes(boxes, num, height, width):
    return normalized_to_pixel(boxes[:num], height, width)


def _same_as_reference(cam, tau, boxes, scores, num, k=K):
    """True iff one map's TF output equals the reference exactly (padding zero)."""
    ref_boxes, ref_scores = _reference(cam, tau, k)
    h, w = cam.shape
    return (num == len(ref_boxes)
            and np.array_equal(_pixel_boxes(boxes, num, h, w), ref_boxes)
            and np.array_equal(scores[:num], ref_scores)
            and not boxes[num:].any() and not scores[num:].any())


def _assert_matches_reference(cams, tau, graph=True, k=K):
    boxes, scores, num = _run(cams, tau, graph, k)
    assert boxes.shape == (len(cams), k, 4) and scores.shape == (len(cams), k) and num.shape == (len(cams),)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and num.dtype == np.int32
    for i, cam in enumerate(cams):
        ref_boxes, ref_scores = _reference(cam, tau, k)
        h, w = cam.shape
        assert num[i] == len(ref_boxes), (i, tau)
        assert _pixel_boxes(boxes[i], num[i], h, w).tolist() == ref_boxes.tolist(), (i, tau)
        np.testing.assert_array_equal(scores[i, :num[i]], ref_scores)
        assert not boxes[i, num[i]:].any() and not scores[i, num[i]:].any()
    return boxes, scores, num


# ---------------------------------------------------------------- hand-written maps

def _blank(h=12, w=14):
    return np.zeros((h, w), np.float32)


def _one_blob():
    m = _blank()
    m[3:8, 4:10] = 0.4
    m[4:7, 5:8] = 0.9  # a brighter core: its own box above tau 0.4
    return m


def _two_blobs():
    m = _blank()
    m[0:2, 0:2] = 0.95      # small (4 px), first in raster order
    m[5:11, 6:13] = 0.6     # large (42 px)
    return m


def _ring(island=False):
    m = _blank()
    m[2:10, 3:11] = 0.7
    m[4:8, 5:9] = 0.0       # hole of 16 px
    if island:
        m[5:7, 6:8] = 0.9   # inside the hole: counts toward the ring, no box of its own
    return m


def _diagonal():
    m = _blank()
    for i in range(8):
        m[2 + i, 3 + i] = 0.9   # touching only at corners: one 8-connected region
    m[10, 0] = 0.9              # a lone pixel, 2 px away from the line
    return m


def _ones():
    return np.ones((12, 14), np.float32)


HAND_MAPS = {
    "one_blob": _one_blob,
    "two_blobs": _two_blobs,
    "ring": _ring,
    "ring_island": lambda: _ring(island=True),
    "diagonal": _diagonal,
    "zeros": _blank,
    "ones": _ones,
}


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("tau", TAUS + [0.95])
@pytest.mark.parametrize("name", sorted(HAND_MAPS))
def test_hand_written_maps_match_reference(name, tau, graph):
    _assert_matches_reference(HAND_MAPS[name]()[None], tau, graph)


@pytest.mark.parametrize("tau, expected", [
    (0.0, [[4, 3, 10, 8]]),
    (0.4, [[5, 4, 8, 7]]),   # strict >: the 0.4 rim is background at tau 0.4
    (0.9, []),
])
def test_one_blob_golden(tau, expected):
    boxes, scores, num = _run(_one_blob()[None], tau)
    assert _pixel_boxes(boxes[0], num[0], 12, 14).tolist() == expected
    np.testing.assert_array_equal(scores[0, :num[0]], [1.0] * len(expected))


def test_two_blobs_golden_order_and_normalized_values():
    boxes, scores, num = _run(_two_blobs()[None], 0.5)
    assert num.tolist() == [2]
    # Larger region first although it comes later in raster order; TF order,
    # each pixel edge divided by H=12 or W=14.
    np.testing.assert_array_equal(boxes[0, :2], np.array(
        [[5 / 12, 6 / 14, 11 / 12, 13 / 14], [0, 0, 2 / 12, 2 / 14]], np.float32))
    np.testing.assert_allclose(scores[0, :2], [42 / 46, 4 / 46], rtol=1e-7)
    assert not boxes[0, 2:].any() and not scores[0, 2:].any()
    boxes, scores, num = _run(_two_blobs()[None], 0.6)  # 0.6 is not > 0.6
    assert num.tolist() == [1] and _pixel_boxes(boxes[0], 1, 12, 14).tolist() == [[0, 0, 2, 2]]


def test_ring_with_island_is_one_region_counting_the_island():
    # RETR_EXTERNAL: the island has no contour of its own; its 4 px count toward
    # the ring's area, so the score of the only box is 1 over 48 + 4 px.
    boxes, scores, num = _run(_ring(island=True)[None], 0.5)
    assert num.tolist() == [1]
    assert _pixel_boxes(boxes[0], 1, 12, 14).tolist() == [[3, 2, 11, 10]]
    assert scores[0, 0] == 1.0
    # Above 0.7 only the island is left, and then it is a region.
    boxes, scores, num = _run(_ring(island=True)[None], 0.8)
    assert num.tolist() == [1] and _pixel_boxes(boxes[0], 1, 12, 14).tolist() == [[6, 5, 8, 7]]


def test_diagonal_pixels_join_by_8_connectivity():
    boxes, scores, num = _run(_diagonal()[None], 0.5)
    assert num.tolist() == [2]
    assert _pixel_boxes(boxes[0], 2, 12, 14).tolist() == [[3, 2, 11, 10], [0, 10, 1, 11]]
    np.testing.assert_allclose(scores[0, :2], [8 / 9, 1 / 9], rtol=1e-7)


def test_empty_and_full_maps():
    cams = np.stack([_blank(), _ones(), _blank()])
    boxes, scores, num = _run(cams, 0.2)
    assert num.tolist() == [0, 1, 0]
    assert not boxes[[0, 2]].any() and not scores[[0, 2]].any()
    np.testing.assert_array_equal(boxes[1, 0], [0, 0, 1, 1])
    assert scores[1, 0] == 1.0
    # tau 0 keeps every positive pixel, still none of an all-zero map.
    assert _run(_blank()[None], 0.0)[2].tolist() == [0]


def test_ties_break_like_the_reference():
    m = _blank(9, 9)
    for y, x in [(0, 4), (3, 0), (0, 1), (6, 6), (3, 3)]:
        m[y, x] = 1.0  # equal areas: by ymin, then xmin
    # Two regions with equal area, ymin and xmin: an anti-diagonal and a corner
    # blob; OpenCV lists the one whose first raster pixel comes later first.
    t = _blank(9, 9)
    for i in range(7):
        t[i, 6 - i] = 1.0
    for y, x in [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (1, 1), (0, 3)]:
        t[y, x] = 1.0
    _assert_matches_reference(np.stack([m, t]), 0.5)
    boxes, _, num = _run(t[None], 0.5)
    assert _pixel_boxes(boxes[0], num[0], 9, 9).tolist() == [[0, 0, 7, 7], [0, 0, 4, 3]]


def test_more_regions_than_slots_keeps_the_largest():
    m = _blank(20, 20)
    for i in range(10):  # areas 1..10, one per row pair
        m[2 * i, 0:i + 1] = 1.0
    boxes, scores, num = _run(m[None], 0.5, k=3)
    assert num.tolist() == [3]
    assert _pixel_boxes(boxes[0], 3, 20, 20).tolist() == [[0, 18, 10, 19], [0, 16, 9, 17], [0, 14, 8, 15]]
    np.testing.assert_allclose(scores[0], [10 / 55, 9 / 55, 8 / 55], rtol=1e-7)


def test_batch_results_do_not_depend_on_neighbours():
    cams = np.stack([HAND_MAPS[n]() for n in sorted(HAND_MAPS)])
    together = _run(cams, 0.5)
    for i in range(len(cams)):
        alone = _run(cams[i:i + 1], 0.5)
        for a, b in zip(together, alone):
            np.testing.assert_array_equal(a[i], b[0])


def test_empty_batch():
    boxes, scores, num = _run(np.zeros((0, 16, 16), np.float32), 0.2)
    assert boxes.shape == (0, K, 4) and scores.shape == (0, K) and num.shape == (0,)


def test_static_shapes_and_savedmodel_style_inputs():
    tau = tf.Variable(0.5, trainable=False)  # export.py passes a variable

    @tf.function(input_signature=[tf.TensorSpec([None, 12, 14], tf.float32)])
    def serve(cams):
        boxes, scores, num = boxes_from_cams_tf(cams, tau, 5)
        assert boxes.shape.as_list() == [None, 5, 4]
        assert scores.shape.as_list() == [None, 5] and num.shape.as_list() == [None]
        return boxes, scores, num

    boxes, _, num = serve(tf.constant(_two_blobs()[None]))
    assert num.numpy().tolist() == [2]


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_max_boxes_raises(bad):
    with pytest.raises(ValueError, match="max_boxes"):
        boxes_from_cams_tf(np.zeros((1, 4, 4), np.float32), 0.2, bad)


def test_bad_rank_raises():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        boxes_from_cams_tf(np.zeros((4, 4), np.float32), 0.2, 3)


# ---------------------------------------------------------------- randomized agreement

def _normalize(maps):
    maps = np.asarray(maps, np.float64)
    lo = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - lo
    return ((maps - lo) / np.where(span > 0, span, 1.0)).astype(np.float32)


def _gaussian_blobs(rng, n, h, w):
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((n, h, w))
    for i in range(n):
        for _ in range(rng.integers(1, 5)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            s = rng.uniform(0.03, 0.3) * min(h, w)
            out[i] += rng.uniform(0.2, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return out


def _smoothed_noise(rng, n, h, w):
    noise = rng.uniform(size=(n, h, w, 1)).astype(np.float32)
    size = int(rng.integers(1, 4)) * 2 + 1
    return tf.nn.avg_pool2d(noise, size, 1, "SAME")[..., 0].numpy()


def _upsampled_low_res(rng, n, h, w):
    # What serving sees: a 7x7-ish CAM resized to the image size.
    low = rng.uniform(size=(n, int(rng.integers(3, 15)), int(rng.integers(3, 15)), 1)).astype(np.float32)
    method = str(rng.choice(["bilinear", "bicubic", "nearest"]))
    return tf.image.resize(low, (h, w), method=method)[..., 0].numpy()


GENERATORS = [_gaussian_blobs, _smoothed_noise, _upsampled_low_res]


def test_random_maps_agree_with_reference():
    rng = np.random.default_rng(20240611)
    total = exact = top_ok = 0
    mismatches = []
    for (h, w), per_gen in [((32, 32), 24), ((56, 56), 24), ((224, 224), 12), ((40, 72), 16)]:
        for gen in GENERATORS:
            cams = _normalize(gen(rng, per_gen, h, w))
            for tau in TAUS[1:] + [float(rng.uniform(0.05, 0.95))]:
                boxes, scores, num = _run(cams, tau, graph=True)
                for i, cam in enumerate(cams):
                    total += 1
                    ref_boxes, _ = _reference(cam, tau)
                    if len(ref_boxes) == 0:
                        top_ok += num[i] == 0
                    elif num[i] > 0:
                        top_ok += iou(_pixel_boxes(boxes[i], 1, h, w)[0], ref_boxes[0]) >= 0.9
                    if _same_as_reference(cam, tau, boxes[i], scores[i], num[i]):
                        exact += 1
                    else:
                        mismatches.append((gen.__name__, (h, w), tau, i))
    assert total >= 900
    # Fixed seed: every one of these maps agrees exactly (boxes, scores and order).
    assert exact == total and top_ok == total, (exact, top_ok, total, mismatches[:5])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(np.bool_, st.tuples(st.integers(1, 14), st.integers(1, 14))), st.integers(1, 20))
def test_binary_maps_agree_exactly(mask, k):
    # Binary maps are the hardest case: many regions, holes, nested islands,
    # 1-pixel lines and regions on the border. Eager mode, any shape and K.
    cam = mask.astype(np.float32)[None]
    boxes, scores, num = _run(cam, 0.5, graph=False, k=k)
    assert _same_as_reference(cam[0], 0.5, boxes[0], scores[0], num[0], k)


def test_random_binary_noise_batches_agree_exactly():
    rng = np.random.default_rng(7)
    for h, w in [(16, 16), (33, 20)]:
        for p in (0.3, 0.5, 0.7):
            cams = (rng.uniform(size=(8, h, w)) < p).astype(np.float32)
            _assert_matches_reference(cams, 0.5, graph=True)
