"""WSOL on real photos: the wsol6 recipe end to end, beside the centre-box prior.

    python benchmarks/wsol6.py --data ../shared/data/wsol6/train --boxes ../shared/data/wsol6/boxes.csv \\
        --weights ../shared/weights/mobilenet_v2_imagenet.weights.h5 --out /tmp/wsol6_run

Runs the recipe of BENCHMARKS.md ("WSOL on wsol6") through the commands a user runs:
``train`` (train.py) with the recipe's flags, which trains, keeps the validation split
(``--val-split 0.2 --seed 0``: ``data.split_folder(scan_folder(DATA), 0.2, seed=0)``) in
``RUN_DIR/val_images.txt`` and exports version 1; then ``evaluate --calibrate`` on exactly
those validation images, which writes version 2 carrying the chosen tau. The final
SavedModel is ``OUT/saved_model/2``. It then scores that SavedModel on the validation
images (what infer.py and TF Serving return) and prints the figures with their standard
errors beside the centre box (centred, half the image area, the image's aspect) on the
same images. Exits 0 with a SKIP line when the data, boxes or weights are absent.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

# The recipe (BENCHMARKS.md): MobileNetV2 ImageNet backbone with its last stage dilated
# (stride 16, a 14x14 CAM), head-only training, centred head (train.py always does it),
# an objectness head on blocks 12-13 fitted on the CAM's confident regions (boxes on CAM x
# objectness), moment boxes with 1.5 standard deviations, tau calibrated on the validation split.
RECIPE_FLAGS = ["--backbone", "mobilenet_v2", "--image-size", "224", "--feature-stride", "16",
                "--objectness-layers", "block_12_add,block_13_project_BN",
                "--train-layers", "head", "--epochs", "12", "--box-extent", "1.5", "--tau", "0.2",
                "--val-split", "0.2", "--seed", "0"]
DELTAS = (0.3, 0.5, 0.7)


def centre_box(width, height):
    """The image-blind prior: centred, half the image area, the image's aspect.

    Returns:
        float64 (1, 4) half-open pixel box ``[xmin, ymin, xmax, ymax]``.
    """
    side = np.sqrt(0.5)
    w, h = width * side, height * side
    return np.array([[(width - w) / 2, (height - h) / 2, (width + w) / 2, (height + h) / 2]])


def summarize(first_iou, all_iou):
    """GT-known Loc (first box) and mean BoxAcc (all boxes) with standard errors.

    Args:
        first_iou: float (N,) best IoU of each image's first box with its true boxes.
        all_iou: float (N,) best IoU over all of the image's boxes.

    Returns:
        dict of floats: ``gt_known_loc``, ``gt_known_loc_se``, ``box_acc`` (per delta),
        ``mean_box_acc`` and ``mean_box_acc_se`` (standard error of the per-image mean
        of hits over the deltas).
    """
    first_iou, all_iou = np.asarray(first_iou), np.asarray(all_iou)
    n = len(first_iou)
    loc = float(np.mean(first_iou >= 0.5))
    hits = np.stack([all_iou >= d for d in DELTAS]).astype(float)
    return {"gt_known_loc": loc, "gt_known_loc_se": float(np.sqrt(loc * (1 - loc) / n)),
            "box_acc": {str(d): float(h.mean()) for d, h in zip(DELTAS, hits)},
            "mean_box_acc": float(hits.mean()), "mean_box_acc_se": float(hits.mean(0).std(ddof=1) / np.sqrt(n))}


def paired_margin(ours_first, ours_all, prior_iou):
    """The recipe's margin over the prior on the same images, with its paired standard error.

    Returns:
        dict ``gt_known_loc`` and ``mean_box_acc``: each ``(margin, standard error)``.
    """
    def per_image(first, every):
        hits = np.stack([np.asarray(every) >= d for d in DELTAS]).astype(float)
        return (np.asarray(first) >= 0.5).astype(float), hits.mean(0)

    (loc_a, acc_a), (loc_b, acc_b) = per_image(ours_first, ours_all), per_image(prior_iou, prior_iou)
    n = len(loc_a)
    return {name: (float(np.mean(a - b)), float(np.std(a - b, ddof=1) / np.sqrt(n)))
            for name, a, b in (("gt_known_loc", loc_a, loc_b), ("mean_box_acc", acc_a, acc_b))}


def _line(name, s):
    per = " ".join(f"{d}: {v:.3f}" for d, v in s["box_acc"].items())
    return (f"  {name:<34} GT-known Loc {s['gt_known_loc']:.3f} +- {s['gt_known_loc_se']:.3f}   "
            f"mean BoxAcc {s['mean_box_acc']:.3f} +- {s['mean_box_acc_se']:.3f}   ({per})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="class sub-folders of images (wsol6/train)")
    parser.add_argument("--boxes", required=True, help="boxes CSV (wsol6/boxes.csv)")
    parser.add_argument("--weights", required=True, help="stock Keras MobileNetV2 ImageNet weights file")
    parser.add_argument("--out", required=True, help="work folder; must not hold a saved_model yet")
    args = parser.parse_args(argv)
    missing = [p for p in (args.data, args.boxes, args.weights) if not os.path.exists(p)]
    if missing:
        print(f"SKIP: not found: {', '.join(missing)}")
        return 0
    saved_model = os.path.join(args.out, "saved_model")
    if os.path.exists(saved_model):
        print(f"error: {saved_model} exists already; give a fresh --out", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_cam import annotations, cli, data, evaluation, inference, metrics

    start = time.time()
    classes = data.scan_folder(args.data).class_names
    experiments = os.path.join(args.out, "experiments")
    before = set(os.listdir(experiments)) if os.path.isdir(experiments) else set()
    status = cli.command_main("train", ["--data", args.data, "--classes", str(len(classes)), "--weights", args.weights,
                                        *RECIPE_FLAGS, "--experiments-dir", experiments,
                                        "--saved-models-dir", args.out, "--quiet"], prog="train")
    if status:
        return status
    (run_name,) = set(os.listdir(experiments)) - before
    run_dir = os.path.join(experiments, run_name)
    os.replace(os.path.join(args.out, run_name), saved_model)
    trained = time.time() - start

    val_list = os.path.join(run_dir, "val_images.txt")
    status = cli.command_main("evaluate", ["--saved_model", os.path.join(saved_model, "1"), "--boxes", args.boxes,
                                           "--images-list", val_list, "--calibrate", "--quiet"], prog="evaluate")
    if status:
        return status
    final = inference.resolve_version_dir(saved_model)
    records, errors = annotations.images_list_boxes(annotations.read_images_list(val_list),
                                                    annotations.read_boxes_csv(args.boxes))
    if errors:
        print(f"error: {len(errors)} validation images without boxes, e.g. {errors[0]}", file=sys.stderr)
        return 1
    report = evaluation.evaluate_saved_model(inference.load_saved_model(final), records)
    rows = report["images"]
    ours = summarize([r["iou"] for r in rows], [r["iou_all_boxes"] for r in rows])
    centre = {}
    for record in records:
        height, width = record.frame
        centre[record.image] = metrics.best_iou(centre_box(width, height), record.boxes)
    centre = [centre[r["image"]] for r in rows]
    prior = summarize(centre, centre)
    margin = paired_margin([r["iou"] for r in rows], [r["iou_all_boxes"] for r in rows], centre)
    at = report["at_model_tau"]
    elapsed = time.time() - start

    print(f"\nwsol6 validation split: {len(rows)} images (train.py --val-split 0.2 --seed 0), "
          f"final SavedModel {final} (tau {at['tau']:.2f}, box_extent {report['model']['box_extent']:g})")
    print(_line(f"keras-cam recipe (tau {at['tau']:.2f})", ours))
    print(_line("centre box (50% of the area)", prior))
    print("  margin over the centre box (same images, paired standard error): GT-known Loc "
          "{:+.3f} +- {:.3f}, mean BoxAcc {:+.3f} +- {:.3f}".format(*margin["gt_known_loc"], *margin["mean_box_acc"]))
    print(f"  Top-1 Cls {at['top1_cls']:.3f}, Top-1 Loc {at['top1_loc']:.3f}, "
          f"MaxBoxAccV2 {report['max_box_acc_v2']:.3f}")
    print(f"  time: {trained:.0f} s training and export, {elapsed:.0f} s in all")
    with open(os.path.join(args.out, "wsol6_report.json"), "w") as f:
        json.dump({"saved_model": final, "run_dir": run_dir, "recipe_flags": RECIPE_FLAGS, "recipe": ours,
                   "centre_box": prior, "margin": margin, "at_model_tau": at, "max_box_acc_v2": report["max_box_acc_v2"],
                   "seconds": {"train_and_export": trained, "total": elapsed}}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
