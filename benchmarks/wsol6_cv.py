"""The wsol6 recipe through train.py itself, cross-validated on the dev images.

    python benchmarks/wsol6_cv.py [--shared ../shared] [--out /tmp/wsol6_cv] [--folds 5]

``wsol6_ablation.py`` compares levers on cached features with a quick head; this script
checks what the product does: for each of ``--folds`` folds of the 514 dev images (the
same folds as the ablation; the 130 validation images are never touched), it runs
``train.py`` with the recipe's flags (``wsol6.RECIPE_FLAGS``) on the other folds (which
it splits 80/20 into training and validation images itself, as for any folder), then
scores the held-out fold's true-class maps of the trained model twice: as the recipe
draws them (CAM x objectness) and with the objectness head ignored (the plain CAM of
the same model). tau is the one with the best mean BoxAcc over all out-of-fold maps,
as ``evaluate.py --calibrate`` chooses it (and, for comparison, the one with the best
GT-known Loc, ``--calibrate-for loc``). Boxes and scores as in the ablation (224-px
frame, moment boxes, ``keras_cam.metrics``), with the centre box on the same images and
paired standard errors. A finished fold is kept in ``--out`` and not run again.
About 2.5 minutes a fold on 2 cores. Skips (exit 0) without ../shared.
"""

import argparse
import glob
import multiprocessing
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from wsol6 import RECIPE_FLAGS, paired_margin, summarize  # noqa: E402
from wsol6_ablation import RECIPE_EXTENT, SIZE, TAUS, Bench, best_mean_box_acc_tau, best_tau, curves  # noqa: E402


def fold_maps(bench, train, test, folder, quiet=True):
    """Trains the recipe on ``train`` (dev indices) and returns the true-class maps of
    ``test``: ``(recipe maps, plain CAM maps)``, each float32 (N, 224, 224)."""
    import tensorflow as tf

    from keras_cam import cam, cli, data
    from keras_cam.model import HEAD_NAME, load_cam_model
    names = bench.class_names
    # Only the training folds: train.py carves its own validation split from them
    # (--val-split 0.2), so the scored fold chooses neither the epoch nor anything else.
    shutil.rmtree(folder, ignore_errors=True)  # an interrupted fold starts again
    for i in train:
        target = os.path.join(folder, "data", names[bench.labels[i]], os.path.basename(bench.paths[i]))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.path.abspath(bench.paths[i]), target)
    status = cli.command_main("train", ["--data", os.path.join(folder, "data"), "--classes", str(len(names)),
                                        "--weights", bench.weights, *RECIPE_FLAGS,
                                        "--experiments-dir", os.path.join(folder, "runs"),
                                        "--saved-models-dir", os.path.join(folder, "saved"),
                                        *(["--quiet"] if quiet else [])], prog="train")
    if status:
        raise SystemExit(status)
    (best,) = glob.glob(os.path.join(folder, "runs", "*", "checkpoints", "best.keras"))
    model = load_cam_model(best)
    kernel = model.get_layer(HEAD_NAME).kernel
    recipe, plain = [], []
    for i in range(0, len(test), 32):
        index = test[i:i + 32]
        images = tf.stack([data.decode_and_resize(tf.io.read_file(bench.paths[j]), SIZE)[0] for j in index])
        outputs = model(images, training=False)
        classes = bench.labels[index]
        recipe.append(cam.localization_maps(outputs["features"], kernel, classes, (SIZE, SIZE),
                                            cam.objectness_of(outputs)).numpy())
        plain.append(cam.localization_maps(outputs["features"], kernel, classes, (SIZE, SIZE)).numpy())
    return np.concatenate(recipe), np.concatenate(plain)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=_common.DEFAULT_SHARED)
    parser.add_argument("--out", default=os.path.join("/tmp", "wsol6_cv"), help="work folder (kept between runs)")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    if _common.photos_or_skip(args.shared) is None:
        return 0
    from concurrent.futures import ProcessPoolExecutor

    from keras_cam import data, metrics
    bench = Bench(args.shared, os.path.join(args.out, "cache"))
    bench.class_names = data.scan_folder(os.path.join(args.shared, _common.PHOTOS)).class_names
    parts = np.array_split(np.random.default_rng(0).permutation(bench.dev), args.folds)
    print(_common.machine_line())
    print(f"wsol6: {len(bench.dev)} dev images, {args.folds} folds of train.py {' '.join(RECIPE_FLAGS)}", flush=True)
    order, recipe, plain = [], [], []
    for k, test in enumerate(parts):
        folder = os.path.join(args.out, f"fold{k}")
        done = os.path.join(folder, "maps.npz")
        if not os.path.exists(done):
            start = time.time()
            train = np.concatenate([p for j, p in enumerate(parts) if j != k])
            maps = fold_maps(bench, train, test, folder)
            np.savez(done, test=test, recipe=maps[0], plain=maps[1])
            print(f"  fold {k}: train.py on {len(train)} (its own 80/20 split), maps of {len(test)} ({time.time() - start:.0f} s)", flush=True)
        saved = np.load(done)
        order.append(saved["test"])
        recipe.append(saved["recipe"])
        plain.append(saved["plain"])
    order = np.concatenate(order)
    gts = [bench.gts[i] for i in order]
    centre = np.array([metrics.best_iou(bench.centre[i], bench.gts[i]) for i in order])
    prior = summarize(centre, centre)
    print(f"\n{len(order)} dev images, out of fold; tau = best mean BoxAcc over them (evaluate.py --calibrate), "
          "[loc]: best GT-known Loc (--calibrate-for loc)")
    print(f"  {'centre box (50% of the area)':<44} Loc {prior['gt_known_loc']:.3f} / BoxAcc {prior['mean_box_acc']:.3f}")
    results = {}
    # spawn, not fork: TensorFlow's threads are running by now.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for name, maps in (("plain CAM of the same models", plain), ("recipe (CAM x objectness)", recipe)):
            first, every = curves(pool, np.concatenate(maps), gts, RECIPE_EXTENT, None)
            for criterion, t in (("", best_mean_box_acc_tau(every)), (" [loc]", best_tau(first))):
                s = summarize(first[:, t], every[:, t])
                if not criterion:
                    results[name] = (first[:, t], every[:, t])
                per = " ".join(f"{v:.2f}" for v in s["box_acc"].values())
                margin = paired_margin(first[:, t], every[:, t], centre)
                print(f"  {name + criterion:<44} Loc {s['gt_known_loc']:.3f} +- {s['gt_known_loc_se']:.3f} / BoxAcc "
                      f"{s['mean_box_acc']:.3f} +- {s['mean_box_acc_se']:.3f} ({per}) at tau {TAUS[t]:.2f}; over "
                      "the centre box {:+.3f} +- {:.3f} / {:+.3f} +- {:.3f}".format(*margin["gt_known_loc"],
                                                                                   *margin["mean_box_acc"]))
    (f0, e0), (f1, e1) = results.values()
    hits = [np.stack([e >= d for d in (0.3, 0.5, 0.7)]).mean(0) for e in (e0, e1)]
    loc = [(f >= 0.5).astype(float) for f in (f0, f1)]
    se = [np.std(b - a, ddof=1) / np.sqrt(len(a)) for a, b in (loc, hits)]
    print(f"  objectness over plain (same images, paired): Loc {np.mean(loc[1] - loc[0]):+.3f} +- {se[0]:.3f}, "
          f"BoxAcc {np.mean(hits[1] - hits[0]):+.3f} +- {se[1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
