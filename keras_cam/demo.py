"""The offline demo: synthetic data, a short training from scratch, export, inference.

Everything runs on data made here at run time, so it needs no network and no
external files. The figure it reports is measured on held-out generated images
through the exported SavedModel, the artifact a user would serve.
"""

import os
import shutil

import numpy as np
import tensorflow as tf

from keras_cam import annotations, boxes, data, export, inference, synthetic, training, visualize
from keras_cam.calibration import calibrate_tau

DEMO_IMAGE_SIZE = 96


# Written into the data folder the demo generates: only a folder holding it is the demo's to replace.
DATA_MARKER = ".keras-cam-demo-data"


def _clear_previous_data(data_dir, log):
    """Removes the data of an earlier demo in the same folder, which new data must replace.

    Another run's images would stay beside the new ones (and be trained on) while its
    ``boxes.csv`` is rewritten. Only a folder the demo marked as its own is removed.

    Raises:
        ValueError: ``data_dir`` exists and is not the demo's.
    """
    if not os.path.lexists(data_dir):
        return
    if os.path.islink(data_dir) or not os.path.isfile(os.path.join(data_dir, DATA_MARKER)):
        raise ValueError(f"{data_dir} exists and is not the data of an earlier demo (it has no {DATA_MARKER}); "
                         f"give another --out, or remove it yourself")
    log(f"Replacing the data of an earlier demo in {data_dir}")
    shutil.rmtree(data_dir)


def run(out, epochs=12, train_per_class=500, test_per_class=50, verbose=True, log=lambda *_: None, seed=0):
    """Runs the whole demo in the folder ``out``.

    Args:
        out: work folder; data, run folder, SavedModel and pictures go below it.
        epochs: training epochs.
        train_per_class: generated training images per class (20% go to validation).
        test_per_class: generated held-out images per class.
        verbose: Keras' training output: 0 (or False) none, 1 (or True) progress bars,
            2 one line per epoch (for a log file).
        log: callable taking a line of text, for progress messages.
        seed: seed of data generation and training.

    Returns:
        dict with ``loc_accuracy`` (share of held-out images whose best box has IoU
        >= 0.5 with the true box), ``cls_accuracy``, ``test_images``,
        ``saved_model`` and ``pictures``.
    """
    # Absolute paths, so that the run folder's config.json and val_images.txt work from
    # any directory (--resume, evaluate.py --images-list).
    out = os.path.abspath(out)
    data_dir = os.path.join(out, "data")
    _clear_previous_data(data_dir, log)
    log(f"[1/4] Generating synthetic data in {data_dir}: {train_per_class} training and "
        f"{test_per_class} held-out images per class {synthetic.CLASSES}")
    os.makedirs(data_dir)
    with open(os.path.join(data_dir, DATA_MARKER), "w") as f:
        f.write("Made by keras-cam demo; the next demo run into this folder replaces it.\n")
    csv_path = synthetic.write_dataset(data_dir, {"train": train_per_class, "test": test_per_class},
                                       size=DEMO_IMAGE_SIZE, seed=seed)
    config = training.TrainConfig(
        data=os.path.join(data_dir, "train"), classes=len(synthetic.CLASSES), backbone="tiny", weights="none",
        image_size=DEMO_IMAGE_SIZE, epochs=epochs, batch_size=32, learning_rate=2e-3, checkpoint_every=4,
        seed=seed, saved_models_dir=os.path.join(out, "saved_models"))
    run_dir = training.make_run_dir(os.path.join(out, "experiments"), saved_models_dir=config.saved_models_dir)
    log(f"[2/4] Training a small CNN from scratch for {epochs} epoch{'s' if epochs != 1 else ''}; run folder "
        f"{run_dir}")
    result = training.train(config, run_dir, verbose=int(verbose))
    truth = annotations.read_boxes_csv(csv_path)
    val = result["val_set"]
    val_boxes = [truth[("train", result["class_names"][l], os.path.basename(p))]["boxes"]
                 for p, l in zip(val.paths, val.labels)]
    tau, calibration = calibrate_tau(result["cam_model"], val.paths, val.labels, val_boxes)
    target = export.next_version_dir(os.path.join(config.saved_models_dir, os.path.basename(run_dir)))
    if tau is None:
        tau = boxes.DEFAULT_TAU
        chosen = f"the default tau={tau:.2f}: no tau gives the {len(val.paths)} validation images a matching box"
    else:
        k = int(np.argmin(np.abs(calibration["thresholds"] - tau)))
        chosen = (f"box threshold tau={tau:.2f} chosen on the {len(val.paths)} validation images (mean BoxAcc "
                  f"{calibration['mean_box_acc'][k]:.3f}, GT-known Loc {calibration['gt_known_loc'][k]:.3f} there)")
    log(f"[3/4] {chosen[0].upper()}{chosen[1:]}; exporting the SavedModel to {target}")
    export.export_saved_model(result["cam_model"], result["class_names"], target, tau=tau)
    log("[4/4] Localizing the held-out images through the SavedModel")
    test = data.scan_folder(os.path.join(data_dir, "test"), class_names=result["class_names"])
    loaded = inference.load_saved_model(target)
    pictures_dir = os.path.join(out, "pictures")
    os.makedirs(pictures_dir, exist_ok=True)
    hits, correct, pictures = [], [], []
    for record, label in zip(inference.localize_files(loaded, test.paths, batch_size=32), test.labels):
        name = result["class_names"][label]
        true_boxes = truth[("test", name, os.path.basename(record["image"]))]["boxes"]
        best = max((boxes.iou(record["boxes"][0], t) for t in true_boxes), default=0.0) if record["boxes"] else 0.0
        hits.append(best >= 0.5)
        correct.append(record["class_id"] == label)
        # Twelve pictures spread over the held-out images (all of them when there are fewer).
        if len(pictures) < 12 and (len(hits) - 1) % max(1, len(test.paths) // 12) == 0:
            image = data.decode_image(tf.io.read_file(record["image"])).numpy()
            picture = visualize.overlay(image, inference.box_map(record), record["boxes"][:1], true_boxes)
            picture = visualize.label(cv_upscale(picture, 3), f"{record['class_name']} IoU {best:.2f}")
            path = os.path.join(pictures_dir, os.path.basename(record["image"]))
            visualize.write_rgb(path, picture)
            pictures.append(picture)
    grid_path = os.path.join(out, "demo_grid.png")
    if pictures:
        visualize.write_rgb(grid_path, grid(pictures, columns=6))
    return {"loc_accuracy": float(np.mean(hits)), "cls_accuracy": float(np.mean(correct)), "tau": tau,
            "test_images": len(hits), "saved_model": target, "pictures": pictures_dir, "grid": grid_path}


def cv_upscale(picture, factor=2):
    """Nearest-neighbour upscale so small demo images stay legible."""
    return np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


def grid(pictures, columns):
    """Tiles same-sized pictures into one image, row by row."""
    rows = [pictures[i:i + columns] for i in range(0, len(pictures), columns)]
    blank = np.zeros_like(pictures[0])
    return np.concatenate([np.concatenate(r + [blank] * (columns - len(r)), axis=1) for r in rows], axis=0)
