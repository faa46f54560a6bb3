"""Tests for keras_cam.boxes: golden boxes on hand-written maps, loud input checks.

Box convention: half-open pixel boxes [xmin, ymin, xmax, ymax]; a block
``m[y0:y1, x0:x1]`` above tau gives the box ``[x0, y0, x1, y1]``. Foreground is
``value > tau`` (strict), regions are 8-connected, largest region first.
"""

import re

import numpy as np
import pytest


from keras_cam.boxes import (  # noqa: E402
    DEFAULT_TAU,
    boxes_from_cam,
    check_box,
    iou,
    normalized_to_pixel,
    scale_boxes,
)

# One graded blob on a 6 x 8 map (rows are y, columns are x).
ONE_BLOB = np.array([
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.3, 0.3, 0.3, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.3, 0.9, 0.6, 0.3, 0.0, 0.0, 0.0],
    [0.0, 0.3, 0.6, 0.6, 0.3, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.3, 0.3, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
], np.float32)

# Two blobs: a small one (2 px) first in scan order, a large one (9 px) after it.
TWO_BLOBS = np.zeros((6, 8), np.float32)
TWO_BLOBS[0, 0:2] = 0.5
TWO_BLOBS[3:6, 4:7] = 1.0


def _boxes(cam, tau=DEFAULT_TAU, all_regions=False):
    boxes, scores = boxes_from_cam(cam, tau=tau, all_regions=all_regions)
    assert boxes.dtype == np.int32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert scores.dtype == np.float32 and scores.shape == (len(boxes),)
    return boxes.tolist(), scores


@pytest.mark.parametrize("tau, expected", [
    (0.0, [[1, 1, 5, 5]]),
    (0.2, [[1, 1, 5, 5]]),
    (0.3, [[2, 2, 4, 4]]),   # strict: the 0.3 ring is not foreground at tau=0.3
    (0.5, [[2, 2, 4, 4]]),
    (0.6, [[2, 2, 3, 3]]),   # only the 0.9 peak at (x=2, y=2)
    (0.8, [[2, 2, 3, 3]]),
    (0.95, []),
])
def test_one_blob_at_several_thresholds(tau, expected):
    boxes, scores = _boxes(ONE_BLOB, tau)
    assert boxes == expected
    np.testing.assert_allclose(scores, [1.0] * len(expected))


def test_two_blobs_largest_first():
    boxes, scores = _boxes(TWO_BLOBS, 0.2)
    assert boxes == [[4, 3, 7, 6]]
    np.testing.assert_allclose(scores, [9 / 11])  # share of all foreground, not of the kept box


def test_two_blobs_all_regions_scores_sum_to_one():
    boxes, scores = _boxes(TWO_BLOBS, 0.2, all_regions=True)
    assert boxes == [[4, 3, 7, 6], [0, 0, 2, 1]]
    np.testing.assert_allclose(scores, [9 / 11, 2 / 11])
    assert scores.sum() == pytest.approx(1.0)


def test_two_blobs_threshold_drops_the_weaker_one():
    boxes, scores = _boxes(TWO_BLOBS, 0.5, all_regions=True)  # 0.5 is not > 0.5
    assert boxes == [[4, 3, 7, 6]]
    np.testing.assert_allclose(scores, [1.0])


def test_equal_regions_tie_break_topmost_then_leftmost():
    # Ties in size go by ymin, then xmin (the order keras_cam.graph_boxes reproduces).
    cam = np.zeros((5, 9), np.float32)
    cam[1:3, 6:8] = 1.0
    cam[2:4, 1:3] = 1.0
    boxes, scores = _boxes(cam, all_regions=True)
    assert boxes == [[6, 1, 8, 3], [1, 2, 3, 4]]
    np.testing.assert_allclose(scores, [0.5, 0.5])
    cam = np.zeros((5, 9), np.float32)
    cam[1:3, 6:8] = 1.0
    cam[1:3, 1:3] = 1.0
    boxes, _ = _boxes(cam, all_regions=True)
    assert boxes == [[1, 1, 3, 3], [6, 1, 8, 3]]


def test_diagonal_neighbours_are_one_region():
    cam = np.zeros((4, 4), np.float32)
    cam[0, 0] = cam[1, 1] = cam[2, 2] = 1.0
    boxes, scores = _boxes(cam, all_regions=True)
    assert boxes == [[0, 0, 3, 3]]
    np.testing.assert_allclose(scores, [1.0])


def test_thin_line_outranks_a_smaller_square():
    # A 1-pixel-wide line has zero contour area but 6 pixels; it must rank above a 2x2 block.
    cam = np.zeros((6, 10), np.float32)
    cam[0:2, 0:2] = 1.0
    cam[4, 2:8] = 1.0
    boxes, scores = _boxes(cam, all_regions=True)
    assert boxes == [[2, 4, 8, 5], [0, 0, 2, 2]]
    np.testing.assert_allclose(scores, [0.6, 0.4])


def test_ring_is_one_region_with_its_pixels_counted():
    cam = np.zeros((7, 7), np.float32)
    cam[1:6, 1:6] = 1.0
    cam[2:5, 2:5] = 0.0  # hole: 25 - 9 = 16 pixels of ring
    cam[3, 3] = 1.0      # an island inside the hole
    boxes, scores = _boxes(cam, all_regions=True)
    assert boxes == [[1, 1, 6, 6]]
    np.testing.assert_allclose(scores, [1.0])


def test_all_zero_map_gives_no_box():
    boxes, scores = _boxes(np.zeros((5, 7), np.float32), 0.0, all_regions=True)
    assert boxes == [] and scores.shape == (0,)


def test_full_map_gives_the_image_box():
    boxes, _ = _boxes(np.ones((5, 7), np.float32), 0.5)
    assert boxes == [[0, 0, 7, 5]]  # half-open: xmax = width, ymax = height


@pytest.mark.parametrize("x, y", [(3, 2), (0, 0), (6, 4)])
def test_single_pixel_half_open(x, y):
    cam = np.zeros((5, 7), np.float32)
    cam[y, x] = 1.0
    boxes, scores = _boxes(cam)
    assert boxes == [[x, y, x + 1, y + 1]]
    np.testing.assert_allclose(scores, [1.0])
    check_box(boxes[0], width=7, height=5)


def test_input_map_not_mutated():
    cam = TWO_BLOBS.copy()
    boxes_from_cam(cam, 0.2, all_regions=True)
    np.testing.assert_array_equal(cam, TWO_BLOBS)


def test_random_maps_boxes_are_tight_and_cover_the_foreground():
    rng = np.random.default_rng(0)
    for _ in range(30):
        h, w = rng.integers(3, 20, size=2)
        cam = (rng.uniform(size=(h, w)) ** 3).astype(np.float32)
        tau = float(rng.uniform(0.1, 0.9))
        boxes, scores = boxes_from_cam(cam, tau, all_regions=True)
        mask = cam > tau
        if not mask.any():
            assert len(boxes) == 0
            continue
        assert scores.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.all(np.diff(scores) <= 1e-7)  # largest first
        covered = np.zeros_like(mask)
        for x0, y0, x1, y1 in boxes:
            check_box([x0, y0, x1, y1], width=w, height=h)
            assert x1 > x0 and y1 > y0
            covered[y0:y1, x0:x1] = True
            sub = mask[y0:y1, x0:x1]
            # Tight: every edge row and column of the box holds a foreground pixel.
            assert sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any()
        assert not (mask & ~covered).any()
        top, _ = boxes_from_cam(cam, tau)
        np.testing.assert_array_equal(top, boxes[:1])


@pytest.mark.parametrize("cam, tau, message", [
    (np.array([[0.0, np.nan], [0.5, 1.0]]), 0.2, "holds NaN or infinite values"),
    (np.array([[0.0, np.inf], [0.5, 1.0]]), 0.2, "holds NaN or infinite values"),
    (np.zeros(5), 0.2, "takes one (H, W) map. Received shape (5,)"),
    (np.zeros((1, 4, 4)), 0.2, "takes one (H, W) map. Received shape (1, 4, 4)"),
    (np.zeros(()), 0.2, "takes one (H, W) map. Received shape ()"),
    (np.zeros((4, 4)), 1.0, "tau must be a number in [0, 1). Received: tau=1.0"),
    (np.zeros((4, 4)), 1.5, "tau must be a number in [0, 1). Received: tau=1.5"),
    (np.zeros((4, 4)), -0.1, "tau must be a number in [0, 1). Received: tau=-0.1"),
    (np.zeros((4, 4)), float("nan"), "tau must be a number in [0, 1)"),
    (np.zeros((4, 4)), None, "tau must be a number in [0, 1). Received: tau=None"),
    (np.zeros((4, 4)), "0.5", "tau must be a number in [0, 1). Received: tau='0.5'"),
])
def test_boxes_from_cam_bad_inputs(cam, tau, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        boxes_from_cam(cam, tau)


@pytest.mark.parametrize("box_extent", [-1.0, float("nan"), float("inf"), "1", None, True])
def test_a_bad_box_extent_is_refused_by_the_rule_and_the_accumulator(box_extent):
    from keras_cam.metrics import BoxAccumulator
    with pytest.raises(ValueError, match=re.escape(f"box_extent must be 0 or a positive number. Received: "
                                                   f"box_extent={box_extent!r}")):
        boxes_from_cam(np.zeros((4, 4)), 0.2, box_extent=box_extent)
    with pytest.raises(ValueError, match="box_extent must be 0 or a positive number"):
        BoxAccumulator(box_extent=box_extent)  # at once, not at the first update


# --- scale_boxes and normalized_to_pixel ---------------------------------------------

@pytest.mark.parametrize("boxes, from_size, to_size, expected", [
    ([[8, 16, 32, 48]], (64, 64), (128, 256), [[32, 32, 128, 96]]),  # sx=4, sy=2
    ([[10, 5, 20, 15]], (32, 64), (64, 64), [[10, 10, 20, 30]]),     # (height, width) order
    ([[1, 1, 3, 3]], (64, 64), (100, 100), [[2, 2, 5, 5]]),          # 1.5625 -> rounded
    ([[60, 60, 70, 70]], (64, 64), (64, 64), [[60, 60, 64, 64]]),    # clipped to the frame
    ([[0, 0, 64, 64]], (64, 64), (480, 640), [[0, 0, 640, 480]]),    # whole image -> whole image
    # A box that rounding would empty keeps one pixel, inside the image:
    ([[130, 130, 200, 200]], (224, 224), (1, 1), [[0, 0, 1, 1]]),    # a 1x1 image (0.58 .. 0.89 -> 1 .. 1)
    ([[130, 10, 200, 60]], (224, 224), (3, 3), [[2, 0, 3, 1]]),      # 1.74 .. 2.68 -> 2 .. 3; 0.13 .. 0.80 -> 0 .. 1
    ([[0, 100, 224, 110]], (224, 224), (1, 3000), [[0, 0, 3000, 1]]),  # 3000 x 1: 0.45 .. 0.49 -> 0 .. 1
    ([[5, 5, 5, 9]], (64, 64), (128, 128), [[10, 10, 10, 18]]),      # an empty box stays empty
])
def test_scale_boxes_golden(boxes, from_size, to_size, expected):
    out = scale_boxes(boxes, from_size, to_size)
    assert out.dtype == np.int32
    assert out.tolist() == expected


def test_scale_boxes_round_trip_on_integer_ratios():
    boxes = np.array([[0, 0, 5, 7], [3, 2, 4, 3], [10, 12, 32, 16]])
    up = scale_boxes(boxes, (16, 32), (64, 96))  # sy=4, sx=3: exact
    np.testing.assert_array_equal(up, boxes * [3, 4, 3, 4])
    np.testing.assert_array_equal(scale_boxes(up, (64, 96), (16, 32)), boxes)


def test_scale_boxes_empty():
    assert scale_boxes(np.zeros((0, 4)), (10, 10), (20, 20)).shape == (0, 4)


def test_normalized_to_pixel_golden():
    # TF order [ymin, xmin, ymax, xmax] on a 40 x 100 (height x width) image.
    out = normalized_to_pixel([[0.25, 0.1, 0.75, 0.5]], height=40, width=100)
    assert out.dtype == np.int32
    assert out.tolist() == [[10, 10, 50, 30]]
    assert normalized_to_pixel([[0.0, 0.0, 1.0, 1.0]], 40, 100).tolist() == [[0, 0, 100, 40]]
    # On an image of a few pixels every box keeps at least one of them.
    assert normalized_to_pixel([[0.6, 0.6, 0.9, 0.9], [0.0, 0.2, 0.4, 0.45]], 1, 1).tolist() == [[0, 0, 1, 1]] * 2
    assert normalized_to_pixel([[0.7, 0.1, 0.9, 0.2]], 2, 3000).tolist() == [[300, 1, 600, 2]]


@pytest.mark.parametrize("call, message", [
    (lambda: normalized_to_pixel([[0.5, 0.5, 0.1, 0.1]], 100, 50), "min <= max"),
    (lambda: normalized_to_pixel([[0.1, np.nan, 0.5, 0.5]], 100, 50), "finite"),
    (lambda: normalized_to_pixel([[0.1, 0.1, 0.5, 0.5]], 0, 50), "positive height and width"),
    (lambda: scale_boxes([[0, 0, np.inf, 4]], (8, 8), (16, 16)), "finite"),
    (lambda: scale_boxes([[4, 0, 2, 4]], (8, 8), (16, 16)), "min <= max"),
    (lambda: scale_boxes([[0, 0, 2, 4]], (0, 10), (16, 16)), "from_size needs a positive height and width"),
    (lambda: scale_boxes([[0, 0, 2, 4]], (8, 8), (0, 0)), "positive height and width"),
])
def test_box_conversions_refuse_what_is_not_a_box(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_normalized_to_pixel_round_trip():
    rng = np.random.default_rng(3)
    height, width = 37, 91
    x = np.sort(rng.integers(0, width + 1, size=(20, 2)), axis=1)
    y = np.sort(rng.integers(0, height + 1, size=(20, 2)), axis=1)
    pixel = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
    normalized = np.stack([y[:, 0] / height, x[:, 0] / width, y[:, 1] / height, x[:, 1] / width], axis=1)
    np.testing.assert_array_equal(normalized_to_pixel(normalized, height, width), pixel)
    assert normalized_to_pixel(np.zeros((0, 4)), height, width).shape == (0, 4)


# --- iou ---------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 4, 4], [0, 0, 4, 4], 1.0),          # identical
    ([3, 2, 4, 3], [3, 2, 4, 3], 1.0),          # one pixel has area 1 in the half-open convention
    ([0, 0, 2, 2], [5, 5, 7, 7], 0.0),          # disjoint
    ([0, 0, 2, 2], [2, 0, 4, 2], 0.0),          # sharing an edge shares no pixel
    ([0, 0, 4, 2], [2, 0, 6, 2], 4 / 12),       # half overlap: inter 2*2, union 8+8-4
    ([0, 0, 4, 4], [1, 1, 3, 3], 4 / 16),       # contained
    ([0, 0, 10, 10], [5, 5, 15, 15], 25 / 175),  # corner overlap
    ([2, 2, 2, 2], [2, 2, 2, 2], 0.0),          # both empty
])
def test_iou_hand_cases(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)


# --- check_box ---------------------------------------------------------------------

def test_check_box_accepts_good_boxes():
    out = check_box([0, 0, 7, 5], width=7, height=5)
    assert out.dtype == np.float64 and out.tolist() == [0, 0, 7, 5]
    assert check_box((2, 2, 2, 2)).tolist() == [2, 2, 2, 2]  # empty but well-formed
    assert check_box(np.array([1, 2, 3, 4], np.int32)).tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("box, size, message", [
    ([1, 2, 3], {}, "4 finite numbers"),
    ([[0, 0, 1, 1]], {}, "4 finite numbers"),
    ([0, 0, np.nan, 1], {}, "4 finite numbers"),
    ([0, 0, np.inf, 1], {}, "4 finite numbers"),
    ([3, 0, 2, 1], {}, "xmin <= xmax and ymin <= ymax"),
    ([0, 3, 1, 2], {}, "xmin <= xmax and ymin <= ymax"),
    ([-1, 0, 2, 2], {}, "inside the image"),
    ([0, -1, 2, 2], {}, "inside the image"),
    ([0, 0, 8, 5], {"width": 7, "height": 5}, "inside the image (0, 0, 7, 5)"),
    ([0, 0, 7, 6], {"width": 7, "height": 5}, "inside the image (0, 0, 7, 5)"),
])
def test_check_box_bad_inputs(box, size, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        check_box(box, **size)
    assert "Received: box=" in str(info.value)
