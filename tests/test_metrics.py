"""Tests for keras_cam.metrics: hand-worked WSOL answers and loud input checks.

Box convention throughout: half-open [xmin, ymin, xmax, ymax], area = w * h.
A block ``m[y0:y1, x0:x1] = 1`` thresholds to the box ``[x0, y0, x1, y1]``.
"""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


from keras_cam import boxes as kboxes  # noqa: E402
from keras_cam.metrics import (  # noqa: E402
    BoxAccumulator,
    best_iou,
    best_ious_over_thresholds,
    check_boxes,
    check_thresholds,
    default_thresholds,
    inclusive_to_half_open,
    iou_matrix,
    localization_accuracies,
    normalize_map,
)


def block_map(shape, *blocks):
    """Zeros with ``value`` painted on each (y0, y1, x0, x1, value) block, in order."""
    m = np.zeros(shape, np.float32)
    for y0, y1, x0, x1, v in blocks:
        m[y0:y1, x0:x1] = v
    return m


# A 10x10 map with a 4x4 block of ones at rows 2..5, cols 3..6: box [3, 2, 7, 6].
SQUARE = block_map((10, 10), (2, 6, 3, 7, 1.0))

# Three nested levels in a 12x12 map (rows/cols 10, 11 stay 0 so min is 0):
#   O = [0, 0, 10, 10] at 0.3 (area 100), M = [0, 0, 10, 5] at 0.6 (area 50),
#   C = [0, 0, 5, 5] at 1.0 (area 25). With thresholds (0, 0.4, 0.8) the box is
#   O at tau 0 (every pixel > 0), M at tau 0.4, C at tau 0.8.
NESTED = block_map((12, 12), (0, 10, 0, 10, 0.3), (0, 5, 0, 10, 0.6), (0, 5, 0, 5, 1.0))
NESTED_TAUS = (0.0, 0.4, 0.8)


# --------------------------------------------------------------------------- IoU


@pytest.mark.parametrize(
    "gt, expected",
    [
        # Same box: IoU 1 exactly (no +1 in the areas).
        ([3, 2, 7, 6], 1.0),
        # Shifted right by 2: inter 2x4 = 8, union 16 + 16 - 8 = 24.
        ([5, 2, 9, 6], 8 / 24),
        # Taller GT 4x6 = 24 containing the box: inter 16, union 24.
        ([3, 2, 7, 8], 16 / 24),
        # Lower half of the box, 4x2 = 8: inter 8, union 16 -> exactly 0.5.
        ([3, 4, 7, 6], 0.5),
        # Disjoint.
        ([0, 0, 2, 2], 0.0),
        # Touching edge (x = 7 is outside the half-open box): no overlap.
        ([7, 2, 9, 6], 0.0),
    ],
)
def test_square_block_iou_at_tau_half(gt, expected):
    boxes, _ = kboxes.boxes_from_cam(normalize_map(SQUARE), 0.5)
    np.testing.assert_array_equal(boxes, [[3, 2, 7, 6]])
    assert best_iou(boxes, [gt]) == pytest.approx(expected, abs=1e-12)
    largest, every = best_ious_over_thresholds(SQUARE, [gt], thresholds=[0.5])
    assert largest[0] == pytest.approx(expected, abs=1e-12)
    assert every[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("none", [[], np.zeros(0), np.zeros((0, 4))])
def test_best_iou_of_no_box_is_zero_however_spelled(none):
    assert best_iou(none, [[0, 0, 2, 2]]) == 0.0 and best_iou([[0, 0, 2, 2]], none) == 0.0


def test_two_gt_boxes_best_of():
    # Box [3, 2, 7, 6] against a disjoint GT (IoU 0) and the shifted GT (1/3):
    # the image scores the better pair, 1/3.
    largest, every = best_ious_over_thresholds(SQUARE, [[0, 0, 2, 2], [5, 2, 9, 6]], thresholds=[0.5])
    assert largest[0] == pytest.approx(1 / 3)
    assert every[0] == pytest.approx(1 / 3)


def test_iou_matrix_matches_boxes_iou():
    rng = np.random.default_rng(0)

    def random_boxes(n):
        # Sorted pairs give xmin <= xmax and ymin <= ymax, zero-area boxes included.
        xs = np.sort(rng.integers(0, 12, size=(n, 2)), axis=1)
        ys = np.sort(rng.integers(0, 12, size=(n, 2)), axis=1)
        return np.c_[xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]]

    a, b = random_boxes(7), random_boxes(5)
    expected = np.array([[kboxes.iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(iou_matrix(a, b), expected, rtol=0, atol=1e-15)


def test_iou_of_empty_boxes_is_zero():
    # Two zero-area boxes have an empty union: 0, not NaN.
    assert iou_matrix([[2, 2, 2, 2]], [[2, 2, 2, 2]])[0, 0] == 0.0
    # No predicted box at all: the image is a miss.
    assert best_iou(np.zeros((0, 4)), [[0, 0, 5, 5]]) == 0.0
    assert iou_matrix(np.zeros((0, 4)), [[0, 0, 5, 5]]).shape == (0, 1)


# ------------------------------------------------------------- per-image curves


def test_multimodal_largest_vs_all_regions():
    # 12x12: region A = rows/cols 0..3 at 1.0 (16 px), region B = rows/cols 8..9
    # at 0.8 (4 px). GT is B's box [8, 8, 10, 10].
    #   tau 0.0 and 0.5: both regions; largest is A (IoU 0), all regions include
    #   B's box (IoU 1).  tau 0.9: only A (0.8 is not > 0.9), IoU 0 either way.
    m = block_map((12, 12), (0, 4, 0, 4, 1.0), (8, 10, 8, 10, 0.8))
    largest, every = best_ious_over_thresholds(m, [[8, 8, 10, 10]], thresholds=[0.0, 0.5, 0.9])
    np.testing.assert_array_equal(largest, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(every, [1.0, 1.0, 0.0])

    acc = BoxAccumulator(thresholds=[0.0, 0.5, 0.9])
    acc.update(m, [[8, 8, 10, 10]])
    r = acc.result()
    assert r["max_box_acc"] == 0.0  # largest region only
    assert r["max_box_acc_v2"] == 1.0  # all regions: hit at every delta
    np.testing.assert_array_equal(r["box_acc"]["all"][0.7], [1.0, 1.0, 0.0])


def test_nested_levels_curve():
    # GT = M [0, 0, 10, 5] (area 50): O gives 50/100, M gives 1, C gives 25/50.
    largest, every = best_ious_over_thresholds(NESTED, [[0, 0, 10, 5]], thresholds=NESTED_TAUS)
    np.testing.assert_allclose(largest, [0.5, 1.0, 0.5])
    np.testing.assert_array_equal(largest, every)  # one region at each tau


@pytest.mark.parametrize("value", [0.0, 5.0, -3.25])
def test_constant_map_gives_no_box(value):
    # Min-max normalization turns a constant map into zeros, and no pixel is
    # > tau >= 0, so there is no box: IoU 0 even with a GT covering the image
    # (the reference's [0, 0, 0, 0] stand-in box would score 1/100 here).
    m = np.full((10, 10), value)
    largest, every = best_ious_over_thresholds(m, [[0, 0, 10, 10]])
    assert not largest.any() and not every.any()
    assert kboxes.boxes_from_cam(normalize_map(m), 0.0)[0].shape == (0, 4)
    acc = BoxAccumulator()
    acc.update(m, [[0, 0, 10, 10]])
    r = acc.result()
    assert r["max_box_acc"] == 0.0 and r["max_box_acc_v2"] == 0.0


def test_map_is_min_max_normalized_per_image():
    # SQUARE scaled to [-7, 5]: after normalization it is SQUARE again, so the
    # same boxes and IoUs come out.
    gt = [[5, 2, 9, 6]]
    a = best_ious_over_thresholds(SQUARE, gt, thresholds=[0.2, 0.5])
    b = best_ious_over_thresholds(SQUARE * 12.0 - 7.0, gt, thresholds=[0.2, 0.5])
    np.testing.assert_array_equal(a, b)


def test_normalize_map_matches_tf_normalize_cams():
    # Same float32 arithmetic, so bit-identical values and masks.
    from keras_cam.cam import normalize_cams

    rng = np.random.default_rng(3)
    maps = rng.normal(size=(4, 9, 13)).astype(np.float32) * [[[0.01]], [[1.0]], [[300.0]], [[0.0]]]
    tf_out = normalize_cams(maps).numpy()
    for m, t in zip(maps, tf_out):
        np.testing.assert_array_equal(normalize_map(m), t)


def test_a_pixel_equal_to_tau_is_background_as_in_the_serving_graph():
    # A uint8 map (a saved heatmap): the object 255 at [0:2, 0:2], a larger blob of 51 = 0.2 x 255.
    # By hand: 51/255 is not > 0.2, so at tau 0.2 the only region is the object: box [0, 0, 2, 2],
    # IoU 1. (In float64, float32(51/255) = 0.2000000030 > 0.2 and the blob would be the first box.)
    import tensorflow as tf

    from keras_cam.graph_boxes import boxes_from_cams_tf
    m = np.zeros((10, 10), np.uint8)
    m[0:2, 0:2], m[5:9, 5:9] = 255, 51
    gt = [[0, 0, 2, 2]]
    taus = np.array([0.19, 0.2, 0.21])
    largest, every = best_ious_over_thresholds(m, gt, thresholds=taus)
    assert largest.tolist() == [0.0, 1.0, 1.0] and every.tolist() == [1.0, 1.0, 1.0]
    served, _, count = boxes_from_cams_tf(tf.constant(normalize_map(m)[None]), 0.2, 5)
    assert int(count[0]) == 1 and np.allclose(served[0, 0].numpy(), [0, 0, 0.2, 0.2])  # [ymin, xmin, ymax, xmax]
    acc = BoxAccumulator(thresholds=taus)
    acc.update(m, gt, pred_class=0, true_class=0)
    assert acc.localization_at(0.2)["gt_known_loc"] == 1.0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), levels=st.integers(2, 12))
def test_dedup_matches_brute_force(seed, levels):
    # The per-distinct-mask shortcut must equal running the rule at every tau.
    rng = np.random.default_rng(seed)
    m = rng.integers(0, levels, size=(9, 11)).astype(np.float32)
    gt = np.array([[1, 2, 6, 8], [4, 0, 11, 5]])
    taus = default_thresholds()[::3]
    largest, every = best_ious_over_thresholds(m, gt, thresholds=taus)
    cam = normalize_map(m)
    for t, tau in enumerate(taus):
        boxes, _ = kboxes.boxes_from_cam(cam, np.float32(tau), all_regions=True)  # as the serving graph compares
        ious = [max(kboxes.iou(b, g) for g in gt) for b in boxes]
        assert largest[t] == pytest.approx(ious[0] if ious else 0.0, abs=1e-12)
        assert every[t] == pytest.approx(max(ious) if ious else 0.0, abs=1e-12)


# ------------------------------------------------------------------ accumulator


def nested_accumulator(deltas=(0.3, 0.5, 0.7)):
    # Three images of NESTED with different GT boxes. IoU of (O, M, C):
    #   img1 GT = C [0,0,5,5]   (25): 25/100 = .25, 25/50 = .5,   1
    #   img2 GT = O [0,0,10,10] (100): 1,           50/100 = .5,  25/100 = .25
    #   img3 GT = [0,0,10,7]    (70): 70/100 = .7,  50/70 = .714, 25/70 = .357
    acc = BoxAccumulator(thresholds=NESTED_TAUS, deltas=deltas)
    for gt in ([0, 0, 5, 5], [0, 0, 10, 10], [0, 0, 10, 7]):
        acc.update(NESTED, [gt])
    return acc


def test_max_box_acc_v2_each_delta_at_its_own_best_tau():
    # Hits per tau (0, 0.4, 0.8), images 1..3:
    #   delta .3: [F,T,T] [T,T,F] [T,T,T] -> 2,3,2 -> max 1   at tau 0.4
    #   delta .5: [F,T,T] [T,T,F] [T,T,F] -> 2,3,1 -> max 1   at tau 0.4
    #   delta .7: [F,F,T] [T,F,F] [T,T,F] -> 2,1,1 -> max 2/3 at tau 0.0
    # V2 = (1 + 1 + 2/3) / 3 = 8/9, above any single tau's mean (tau 0.4: 7/9).
    r = nested_accumulator().result()
    assert r["num_images"] == 3
    np.testing.assert_allclose(r["box_acc"]["all"][0.3], [2 / 3, 1, 2 / 3])
    np.testing.assert_allclose(r["box_acc"]["all"][0.5], [2 / 3, 1, 1 / 3])
    np.testing.assert_allclose(r["box_acc"]["all"][0.7], [2 / 3, 1 / 3, 1 / 3])
    assert r["best_tau"]["all"] == {0.3: 0.4, 0.5: 0.4, 0.7: 0.0}
    assert r["max_box_acc_per_delta"]["all"] == pytest.approx({0.3: 1.0, 0.5: 1.0, 0.7: 2 / 3})
    assert r["max_box_acc_v2"] == pytest.approx(8 / 9)
    # One region per tau, so largest-only gives the same; MaxBoxAcc is delta .5.
    assert r["max_box_acc"] == 1.0 and r["max_box_acc_tau"] == 0.4
    assert "top1_loc" not in r  # no classes given


def test_calibration_criteria_each_pick_their_own_tau():
    # Images C, O, [0,0,10,7], O, O (IoU of O, M, C as in nested_accumulator):
    #   delta .3: tau 0: [F,T,T,T,T] = 4, tau .4: all 5, tau .8: [T,F,T,F,F] = 2
    #   delta .5: 4, 5, [T,F,F,F,F] = 1;  delta .7: 4, [F,F,T,F,F] = 1, 1
    # mean BoxAcc (12, 11, 4) / 15 is best at tau 0; GT-known Loc (delta .5) at 0.4.
    from keras_cam.calibration import choose_tau
    acc = BoxAccumulator(thresholds=NESTED_TAUS)
    for gt in ([0, 0, 5, 5], [0, 0, 10, 10], [0, 0, 10, 7], [0, 0, 10, 10], [0, 0, 10, 10]):
        acc.update(NESTED, [gt])
    r = acc.result()
    np.testing.assert_allclose(r["mean_box_acc"], [12 / 15, 11 / 15, 4 / 15])
    assert choose_tau(r) == choose_tau(r, "box_acc") == 0.0
    assert choose_tau(r, "loc") == 0.4 == r["max_box_acc_tau"]
    with pytest.raises(ValueError, match=r"criterion must be one of box_acc, loc\. Received: criterion='iou'"):
        choose_tau(r, "iou")
    none = BoxAccumulator(thresholds=NESTED_TAUS)
    none.update(NESTED, [[11, 11, 12, 12]])  # a zero corner: no region ever touches it
    assert choose_tau(none.result()) is None and choose_tau(none.result(), "loc") is None


def test_max_box_acc_tracks_half_even_without_it_in_deltas():
    r = nested_accumulator(deltas=(0.7,)).result()
    assert r["max_box_acc"] == 1.0
    assert r["max_box_acc_v2"] == pytest.approx(2 / 3)


def test_merge_equals_one_stream():
    a = BoxAccumulator(thresholds=NESTED_TAUS)
    b = BoxAccumulator(thresholds=NESTED_TAUS)
    a.update(NESTED, [[0, 0, 5, 5]])
    b.update(NESTED, [[0, 0, 10, 10]])
    b.update(NESTED, [[0, 0, 10, 7]])
    a.merge(b)
    whole = nested_accumulator().result()
    merged = a.result()
    assert merged["max_box_acc_v2"] == whole["max_box_acc_v2"]
    for d in (0.3, 0.5, 0.7):
        np.testing.assert_array_equal(merged["box_acc"]["all"][d], whole["box_acc"]["all"][d])


def test_top1_loc_needs_right_class():
    # Both images localize perfectly (box = GT), only the first is classified right:
    # GT-known Loc 1, Top-1 Loc 1/2, Top-1 Cls 1/2.
    acc = BoxAccumulator(thresholds=[0.2, 0.5])
    acc.update(SQUARE, [[3, 2, 7, 6]], pred_class=4, true_class=4)
    acc.update(SQUARE, [[3, 2, 7, 6]], pred_class=1, true_class=4)
    assert acc.localization_at(0.2) == {"top1_cls": 0.5, "top1_loc": 0.5, "gt_known_loc": 1.0, "num_images": 2}
    r = acc.result()
    np.testing.assert_array_equal(r["top1_loc"], [0.5, 0.5])
    np.testing.assert_array_equal(r["gt_known_loc"], [1.0, 1.0])
    assert r["top1_cls"] == 0.5


def test_localization_accuracies_by_hand():
    # correct = [T, T, F, T]; hit (IoU >= .5) = [T, F, T, T] (0.5 counts);
    # top-1 loc needs both: [T, F, F, T].
    out = localization_accuracies([1, 2, 3, 4], [1, 2, 0, 4], [0.9, 0.4, 0.8, 0.5])
    assert out == {"top1_cls": 0.75, "top1_loc": 0.5, "gt_known_loc": 0.75, "num_images": 4}
    # Integral float labels (e.g. read from a CSV) are accepted.
    assert localization_accuracies(np.array([1.0]), [1], [1.0])["top1_loc"] == 1.0


def test_bad_image_leaves_accumulator_unchanged():
    acc = BoxAccumulator(thresholds=[0.5])
    acc.update(SQUARE, [[3, 2, 7, 6]])
    with pytest.raises(ValueError):
        acc.update(SQUARE, [[3, 2, 70, 6]])
    assert acc.num_images == 1 and acc.result()["max_box_acc"] == 1.0


# ------------------------------------------------------------ conversions, defaults


def test_default_thresholds_are_clean_hundredths():
    t = default_thresholds()
    assert t.shape == (100,) and t[0] == 0.0 and t[-1] == 0.99
    assert t[7] == 0.07  # np.arange(0, 1, 0.01)[7] is 0.07000000000000001
    np.testing.assert_array_equal(check_thresholds(None), t)


@pytest.mark.parametrize(
    "boxes, one_based, expected",
    [
        # VOC [2, 3, 5, 7] covers pixels 2..5 x 3..7 counted from 1, i.e. 0-based
        # 1..4 x 2..6: half-open [1, 2, 5, 7], width 4 = 5 - 2 + 1.
        ([[2, 3, 5, 7]], True, [[1, 2, 5, 7]]),
        # One VOC pixel at (1, 1) is the top-left pixel: [0, 0, 1, 1].
        ([[1, 1, 1, 1]], True, [[0, 0, 1, 1]]),
        # 0-based inclusive one-pixel box [3, 3, 3, 3] has area 1: [3, 3, 4, 4].
        ([[3, 3, 3, 3]], False, [[3, 3, 4, 4]]),
        ([[0, 0, 9, 4], [2, 2, 2, 5]], False, [[0, 0, 10, 5], [2, 2, 3, 6]]),
    ],
)
def test_inclusive_to_half_open(boxes, one_based, expected):
    np.testing.assert_array_equal(inclusive_to_half_open(boxes, one_based=one_based), expected)


# -------------------------------------------------------------------- bad inputs

NAN_MAP = SQUARE.copy()
NAN_MAP[1, 2] = np.nan
INF_MAP = SQUARE.copy()
INF_MAP[0, 0] = -np.inf
GOOD_GT = [[3, 2, 7, 6]]


@pytest.mark.parametrize(
    "score_map, gt_boxes, thresholds, message",
    [
        (NAN_MAP, GOOD_GT, None, "score_map holds 1 NaN or infinite values, e.g. nan at (y=1, x=2)."),
        (INF_MAP, GOOD_GT, None, "score_map holds 1 NaN or infinite values, e.g. -inf at (y=0, x=0)."),
        (np.zeros(10), GOOD_GT, None, "score_map must be one non-empty (H, W) map. Received shape (10,)"),
        (np.zeros((1, 10, 10)), GOOD_GT, None,
         "score_map must be one non-empty (H, W) map. Received shape (1, 10, 10)"),
        (np.zeros((0, 5)), GOOD_GT, None, "score_map must be one non-empty (H, W) map. Received shape (0, 5)"),
        (np.full((2, 2), "a"), GOOD_GT, None, "score_map must be real-valued. Received dtype <U1"),
        (SQUARE, [[5, 0, 3, 4]], None, "gt_boxes[0] needs xmin <= xmax. Received: [5.0, 0.0, 3.0, 4.0]"),
        (SQUARE, [[0, 6, 3, 4]], None, "gt_boxes[0] needs ymin <= ymax. Received: [0.0, 6.0, 3.0, 4.0]"),
        (SQUARE, [[0, 0, 3, 4], [1, 1, 0, 2]], None,
         "gt_boxes[1] needs xmin <= xmax. Received: [1.0, 1.0, 0.0, 2.0]"),
        (SQUARE, [3, 2, 7, 6], None,
         "gt_boxes must have shape (N, 4) [xmin, ymin, xmax, ymax]. Received shape (4,)"),
        (SQUARE, [[3, 2, 7]], None,
         "gt_boxes must have shape (N, 4) [xmin, ymin, xmax, ymax]. Received shape (1, 3)"),
        (SQUARE, np.zeros((0, 4)), None, "gt_boxes must hold at least one box. Received shape (0, 4)"),
        (SQUARE, [[0, 0, 11, 4]], None,
         "gt_boxes[0] must lie inside the frame width 10 (xmax <= 10). Received: [0.0, 0.0, 11.0, 4.0]"),
        (SQUARE, [[0, 0, 4, 10.5]], None,
         "gt_boxes[0] must lie inside the frame height 10 (ymax <= 10). Received: [0.0, 0.0, 4.0, 10.5]"),
        (SQUARE, [[-1, 0, 4, 4]], None,
         "gt_boxes[0] needs non-negative coordinates. Received: [-1.0, 0.0, 4.0, 4.0]"),
        (SQUARE, [[0, np.nan, 4, 4]], None, "gt_boxes[0] must be finite. Received: [0.0, nan, 4.0, 4.0]"),
        (SQUARE, GOOD_GT, [1.0], "thresholds must lie in [0, 1). Received: [1.0] in [1.0]"),
        (SQUARE, GOOD_GT, [0.1, -0.1], "thresholds must lie in [0, 1). Received: [-0.1] in [0.1, -0.1]"),
        (SQUARE, GOOD_GT, [np.nan], "thresholds must lie in [0, 1). Received: [nan] in [nan]"),
        (SQUARE, GOOD_GT, [], "thresholds must be a non-empty 1-D sequence. Received shape (0,): []"),
        (SQUARE, GOOD_GT, [[0.1]], "thresholds must be a non-empty 1-D sequence. Received shape (1, 1): [[0.1]]"),
        (SQUARE, GOOD_GT, [0.5, 0.2], "thresholds must be strictly increasing. Received: [0.5, 0.2]"),
        (SQUARE, GOOD_GT, [0.2, 0.2], "thresholds must be strictly increasing. Received: [0.2, 0.2]"),
    ],
)
def test_bad_inputs_raise(score_map, gt_boxes, thresholds, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        best_ious_over_thresholds(score_map, gt_boxes, thresholds=thresholds)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"deltas": [0.0]}, "deltas (IoU thresholds) must lie in (0, 1]. Received: [0.0] in [0.0]"),
        ({"deltas": [0.5, 1.5]}, "deltas (IoU thresholds) must lie in (0, 1]. Received: [1.5] in [0.5, 1.5]"),
        ({"deltas": []}, "deltas must be a non-empty 1-D sequence. Received shape (0,): []"),
        ({"deltas": [0.5, 0.5]}, "deltas must be distinct. Received: [0.5, 0.5]"),
        ({"thresholds": [0.3, 1.2]}, "thresholds must lie in [0, 1). Received: [1.2] in [0.3, 1.2]"),
    ],
)
def test_bad_accumulator_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        BoxAccumulator(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pred_class": 1}, "Give both pred_class and true_class or neither. Received pred_class=1, true_class=None"),
        ({"pred_class": 2.5, "true_class": 1},
         "pred_class must be integer class ids. Received dtype float64: 2.5"),
        ({"pred_class": [1, 2], "true_class": 1},
         "pred_class and true_class must be scalars. Received [1, 2], 1"),
    ],
)
def test_bad_update_classes_raise(kwargs, message):
    acc = BoxAccumulator(thresholds=[0.5])
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        acc.update(SQUARE, GOOD_GT, **kwargs)


def test_accumulator_state_errors():
    acc = BoxAccumulator(thresholds=[0.5])
    with pytest.raises(ValueError, match=r"^No images accumulated; call update\(\) first\.$"):
        acc.result()
    acc.update(SQUARE, GOOD_GT)
    with pytest.raises(ValueError, match=r"^Every update must give classes or none do; earlier updates had "
                                         r"with_classes=False, this one True\.$"):
        acc.update(SQUARE, GOOD_GT, pred_class=1, true_class=1)
    with pytest.raises(ValueError, match=r"^localization_at needs pred_class and true_class in update\(\)"):
        acc.localization_at(0.5)
    with pytest.raises(ValueError, match=r"^Cannot merge accumulators with different thresholds or deltas"):
        acc.merge(BoxAccumulator(thresholds=[0.4]))
    acc2 = BoxAccumulator(thresholds=[0.5])
    acc2.update(SQUARE, GOOD_GT, pred_class=1, true_class=1)
    with pytest.raises(ValueError, match=r"^tau=0\.2 is not one of the accumulator's thresholds"):
        acc2.localization_at(0.2)
    with pytest.raises(ValueError, match=r"^Cannot merge an accumulator with classes and one without\.$"):
        acc.merge(acc2)


@pytest.mark.parametrize(
    "args, message",
    [
        (([1, 2], [1], [0.5, 0.5]),
         "pred_classes, true_classes and ious must be 1-D of one length. Received shapes "
         "{'pred_classes': (2,), 'true_classes': (1,), 'ious': (2,)}"),
        (([1], [1], [1.5]), "ious must lie in [0, 1]. Received ious[0]=1.5"),
        (([1, 1], [1, 1], [0.5, np.nan]), "ious must lie in [0, 1]. Received ious[1]=nan"),
        (([], [], []), "localization_accuracies needs at least one image. Received 0."),
        (([1.5], [1], [0.5]), "pred_classes must be integer class ids. Received dtype float64: [1.5]"),
    ],
)
def test_bad_localization_inputs_raise(args, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        localization_accuracies(*args)


def test_bad_iou_threshold_and_inclusive_boxes_raise():
    with pytest.raises(ValueError, match=r"^iou_threshold must lie in \(0, 1\]\. Received: iou_threshold=0$"):
        localization_accuracies([1], [1], [0.5], iou_threshold=0)
    with pytest.raises(ValueError, match=re.escape(
            "one-based inclusive boxes[0] counts pixels from 1, so no coordinate may be below 1. "
            "Received: [0.0, 1.0, 4.0, 4.0]")):
        inclusive_to_half_open([[0, 1, 4, 4]], one_based=True)
    with pytest.raises(ValueError, match=re.escape(
            "inclusive boxes[0] needs xmin <= xmax. Received: [5.0, 1.0, 4.0, 4.0]")):
        inclusive_to_half_open([[5, 1, 4, 4]])
