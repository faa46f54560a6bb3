"""The benchmarks' own scoring helpers (benchmarks/wsol6.py, wsol6_ablation.py), on
hand-worked cases: the figures in BENCHMARKS.md are computed by them."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
import wsol6  # noqa: E402
import wsol6_ablation  # noqa: E402

from keras_cam import calibration, metrics  # noqa: E402


def test_centre_box_is_centred_with_half_the_area_and_the_images_aspect():
    (box,) = wsol6.centre_box(200, 100)
    w, h = box[2] - box[0], box[3] - box[1]
    assert w * h == pytest.approx(0.5 * 200 * 100)
    assert w / h == pytest.approx(2.0)
    assert (box[0] + box[2]) / 2 == pytest.approx(100) and (box[1] + box[3]) / 2 == pytest.approx(50)
    # The whole image as the true box: IoU = the area share, 0.5.
    assert metrics.best_iou(wsol6.centre_box(200, 100), np.array([[0, 0, 200, 100]])) == pytest.approx(0.5)


def test_summarize_on_four_images():
    # first box IoUs: two hits at 0.5 of four; all-box IoUs: 0.8 hits 0.3/0.5/0.7, 0.6 hits two,
    # 0.4 one, 0.1 none -> per-image means 1, 2/3, 1/3, 0.
    s = wsol6.summarize([0.5, 0.49, 0.9, 0.0], [0.8, 0.6, 0.4, 0.1])
    assert s["gt_known_loc"] == 0.5 and s["gt_known_loc_se"] == pytest.approx(np.sqrt(0.25 / 4))
    assert s["box_acc"] == {"0.3": 0.75, "0.5": 0.5, "0.7": 0.25}
    assert s["mean_box_acc"] == pytest.approx(0.5)
    per_image = np.array([1, 2 / 3, 1 / 3, 0])
    assert s["mean_box_acc_se"] == pytest.approx(per_image.std(ddof=1) / 2)


def test_paired_margin_on_three_images():
    # ours: Loc hits 1, 1, 0 and per-image BoxAcc 1, 2/3, 0; the prior: 0, 1, 0 and 1/3, 1, 0.
    margin = wsol6.paired_margin([0.9, 0.6, 0.2], [0.9, 0.6, 0.2], [0.4, 0.75, 0.1])
    loc, acc = np.array([1, 0, 0]), np.array([2 / 3, -1 / 3, 0])
    assert margin["gt_known_loc"] == pytest.approx((loc.mean(), loc.std(ddof=1) / np.sqrt(3)))
    assert margin["mean_box_acc"] == pytest.approx((acc.mean(), acc.std(ddof=1) / np.sqrt(3)))


@pytest.mark.parametrize("seed", range(4))
def test_the_ablations_tau_rules_are_evaluate_pys(seed):
    """wsol6_ablation's best_mean_box_acc_tau / best_tau against calibration.choose_tau
    (``evaluate.py --calibrate`` / ``--calibrate-for loc``) on the same maps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    accumulator = metrics.BoxAccumulator(wsol6_ablation.TAUS, box_extent=1.5)
    first, every = [], []
    for _ in range(12):
        cx, cy, s = rng.uniform(6, 26), rng.uniform(6, 26), rng.uniform(2, 8)
        score = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s)) + rng.uniform(0, 0.3, (32, 32))
        # a true box near the blob, off by a few pixels: some taus hit, others miss
        half = 1.7 * s * rng.uniform(0.6, 1.4, 2)
        centre = np.array([cx, cy]) + rng.uniform(-3, 3, 2)
        gt = np.clip(np.round(np.concatenate([centre - half, centre + half])), 0, 32)[None]
        accumulator.update(score, gt)
        f, e = wsol6_ablation._curves((score, gt, 1.5, None))
        first.append(f)
        every.append(e)
    result = accumulator.result()
    first, every = np.stack(first), np.stack(every)
    for criterion, index in (("box_acc", wsol6_ablation.best_mean_box_acc_tau(every)),
                             ("loc", wsol6_ablation.best_tau(first))):
        chosen = calibration.choose_tau(result, criterion)
        assert chosen is not None and wsol6_ablation.TAUS[index] == chosen, criterion
