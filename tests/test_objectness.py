"""The objectness head: pseudo-labels from the CAM, its fit, the map it makes, and its export.

The pseudo-labels and the combined map are checked on hand-made CAMs; the fit on
data whose answer is known; the head inside a real (tiny) model on its own CAMs;
and the served boxes against the library's box rule applied to the library's map,
so the serving graph and the reference cannot drift apart.
"""

import os
import shlex
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomize_batchnorm

from keras_cam import cam as cam_ops
from keras_cam import calibration, cli, data, inference, objectness, synthetic, training
from keras_cam.boxes import boxes_from_cam, normalized_to_pixel
from keras_cam.export import export_saved_model
from keras_cam.inference import load_saved_model, localize_files
from keras_cam.model import (
    HEAD_NAME,
    OBJECTNESS_NAME,
    build_cam_model,
    classifier_view,
    load_cam_model,
    set_trainable,
)

SIZE = 32

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- pseudo-labels

def test_pseudo_labels_follow_the_normalized_cam():
    # Raw values 2..12: normalized (v - 2) / 10 -> 0, 0.05, 0.3, 0.6, 1.0.
    cams = np.array([[[2.0, 2.5, 5.0, 8.0, 12.0]]], np.float32)
    np.testing.assert_array_equal(objectness.pseudo_labels(cams), [[[0, 0, -1, 1, 1]]])
    np.testing.assert_array_equal(objectness.pseudo_labels(cams, foreground=0.9, background=0.01),
                                  [[[0, -1, -1, -1, 1]]])


@pytest.mark.parametrize("background, foreground", [(0.6, 0.6), (0.7, 0.2), (-0.1, 0.5), (0.1, 1.5)])
def test_pseudo_labels_refuse_crossed_thresholds(background, foreground):
    with pytest.raises(ValueError, match="0 <= background < foreground <= 1"):
        objectness.pseudo_labels(np.zeros((1, 2, 2)), foreground, background)


# ---------------------------------------------------------------- the fit

def test_fit_logistic_separates_unbalanced_classes():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.1).astype(np.float32)  # 10% object
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    x[:, 3] += np.where(y > 0, 2.5, -2.5)
    kernel, bias = objectness.fit_logistic(x, y)
    predicted = x @ kernel + bias > 0
    # Balanced: both classes are found, not just the majority.
    assert np.mean(predicted[y > 0]) > 0.95 and np.mean(~predicted[y == 0]) > 0.95
    assert np.argmax(np.abs(kernel)) == 3


def test_fit_logistic_needs_both_classes():
    with pytest.raises(ValueError, match="both object and background"):
        objectness.fit_logistic(np.ones((5, 2), np.float32), np.ones(5, np.float32))


# ---------------------------------------------------------------- the map

def test_all_ones_objectness_gives_the_plain_cams_map():
    cams = np.random.default_rng(1).normal(size=(3, 7, 7)).astype(np.float32)
    plain = cam_ops.maps_from_cams(cams, None, (56, 56)).numpy()
    np.testing.assert_allclose(cam_ops.maps_from_cams(cams, np.ones_like(cams), (56, 56)).numpy(), plain, atol=1e-5)
    np.testing.assert_allclose(plain, cam_ops.normalize_cams(cam_ops.upsample_cams(cams, (56, 56))).numpy(),
                               atol=1e-6)


def test_objectness_removes_a_region_from_the_boxes():
    cams = np.zeros((1, 8, 8), np.float32)
    cams[0, 1:3, 1:3] = 1.0   # two equal blobs
    cams[0, 5:7, 5:7] = 1.0
    plain = cam_ops.maps_from_cams(cams, None, (64, 64)).numpy()[0]
    assert len(boxes_from_cam(plain, 0.5, all_regions=True)[0]) == 2
    keep_lower_right = np.zeros((1, 8, 8), np.float32)
    keep_lower_right[0, 4:, 4:] = 1.0
    combined = cam_ops.maps_from_cams(cams, keep_lower_right, (64, 64)).numpy()[0]
    found, _ = boxes_from_cam(combined, 0.5, all_regions=True)
    assert len(found) == 1 and found[0][0] >= 32 and found[0][1] >= 32


# ---------------------------------------------------------------- the model

def test_objectness_head_is_an_output_outside_the_classifier():
    model = build_cam_model(3, "tiny", "none", SIZE, objectness_layers="tiny_relu5")
    out = model(np.zeros((2, SIZE, SIZE, 3), np.float32), training=False)
    assert out["objectness"].shape == (2, 4, 4, 1)
    np.testing.assert_allclose(out["objectness"], 0.5)  # zero-initialized: no effect on the map until fitted
    assert OBJECTNESS_NAME not in [layer.name for layer in classifier_view(model).layers]
    set_trainable(model, "head")
    assert [layer.name for layer in model.layers if layer.trainable_weights] == [HEAD_NAME]


@pytest.mark.parametrize("name, reason", [("no_such_layer", "no such layer"), ("tiny_relu1", "another resolution")])
def test_objectness_layers_must_exist_at_the_feature_resolution(name, reason):
    with pytest.raises(ValueError, match=rf"no 4x4 layer '{name}' \({reason}\).*tiny_relu5.*Received"):
        build_cam_model(3, "tiny", "none", SIZE, objectness_layers=[name])


def _fitted_model(tmp_path, per_class=8):
    # A random tiny backbone separates its own CAM's confident regions better for some
    # initializations than for others: a fixed seed keeps the test independent of the
    # tests that ran before it.
    keras.utils.set_random_seed(0)
    model = build_cam_model(3, "tiny", "none", SIZE, objectness_layers=["tiny_bn5", "tiny_relu5"])
    randomize_batchnorm(model)
    synthetic.write_dataset(str(tmp_path / "data"), {"train": per_class}, size=SIZE, seed=5)
    folder = data.scan_folder(str(tmp_path / "data" / "train"))
    fit = objectness.fit_objectness(model, folder.paths, folder.labels, batch_size=8)
    return model, folder.paths, np.asarray(folder.labels), fit


def test_fit_objectness_learns_the_cams_confident_regions(tmp_path):
    model, paths, labels, fit = _fitted_model(tmp_path)
    assert fit["positions"] > 0 and 0 < fit["object_share"] < 1
    assert fit["train_accuracy"] > 0.8
    images = tf.stack([tf.io.decode_png(tf.io.read_file(p), channels=3) for p in paths])
    out = model(tf.cast(images, tf.float32), training=False)
    targets = objectness.pseudo_labels(
        cam_ops.class_activation_maps(out["features"], model.get_layer(HEAD_NAME).kernel, labels))
    probability = out["objectness"].numpy()[..., 0]
    assert probability[targets == 1].mean() > probability[targets == 0].mean() + 0.3


def test_served_boxes_follow_the_library_map(tmp_path):
    model, paths, _, _ = _fitted_model(tmp_path)
    export_dir = export_saved_model(model, ["a", "b", "c"], str(tmp_path / "m" / "1"), tau=0.3, box_extent=1.5)
    serve = load_saved_model(export_dir).signatures["serving_default"]
    out = serve(image_bytes=tf.constant([open(p, "rb").read() for p in paths[:8]]))
    assert not np.allclose(out["objectness"].numpy(), out["objectness"].numpy().mean())  # fitted, not constant
    maps = cam_ops.maps_from_cams(out["cams"], out["objectness"], (SIZE, SIZE)).numpy()
    # The Keras model's path (calibration, evaluation of .keras files) gives the same maps.
    library = [m for _, m, _, _ in calibration.localization_maps_for_files(model, paths[:8])]
    np.testing.assert_allclose(np.stack(library), maps, atol=1e-5)
    for i, score_map in enumerate(maps):
        reference, _ = boxes_from_cam(score_map, 0.3, all_regions=True, box_extent=1.5)
        n = int(out["num_boxes"][i])
        assert n == min(len(reference), 5)
        served = normalized_to_pixel(out["boxes"][i, :n].numpy(), SIZE, SIZE)
        np.testing.assert_allclose(served, reference[:n], atol=1e-4)


def test_pictures_show_the_map_the_boxes_come_from(tmp_path):
    model, paths, _, _ = _fitted_model(tmp_path)
    loaded = load_saved_model(export_saved_model(model, ["a", "b", "c"], str(tmp_path / "m" / "1")))
    records = list(localize_files(loaded, paths[:4]))
    served = loaded.signatures["serving_default"](image_bytes=tf.constant([open(p, "rb").read() for p in paths[:4]]))
    served_maps = cam_ops.maps_from_cams(served["cams"], served["objectness"], (SIZE, SIZE)).numpy()
    for record, served_map in zip(records, served_maps):
        shown = cam_ops.normalize_cams(cam_ops.upsample_cams(inference.box_map(record)[None], (SIZE, SIZE)))[0]
        np.testing.assert_allclose(shown, served_map, atol=1e-5)
        assert not np.allclose(inference.box_map(record), record["cam"], atol=1e-3)  # not the plain CAM
        assert "objectness" not in inference.to_json_record(record)


@pytest.mark.slow
def test_train_flag_fits_saves_and_exports_the_head(tmp_path):
    synthetic.write_dataset(str(tmp_path / "data"), {"train": 6}, size=SIZE, seed=3)
    code = cli.command_main("train", [
        "--data", str(tmp_path / "data" / "train"), "--classes", "3", "--backbone", "tiny", "--weights", "none",
        "--image-size", str(SIZE), "--epochs", "1", "--batch-size", "8", "--objectness-layers", "tiny_relu5",
        "--experiments-dir", str(tmp_path / "runs"), "--saved-models-dir", str(tmp_path / "saved"), "--quiet"])
    assert code == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert training.TrainConfig.from_json((run / "config.json").read_text()).objectness_layers == ["tiny_relu5"]
    best = load_cam_model(str(run / "checkpoints" / "best.keras")).get_layer(OBJECTNESS_NAME)
    assert np.any(best.kernel.numpy() != 0)  # the checkpoint carries the fitted head
    served = load_saved_model(str(tmp_path / "saved" / run.name / "1")).signatures["predict_images"](
        images=tf.zeros([1, SIZE, SIZE, 3]))
    assert served["objectness"].shape == (1, 4, 4)


def test_train_flag_names_bad_layers(tmp_path, capsys):
    synthetic.write_dataset(str(tmp_path / "data"), {"train": 2}, size=SIZE, seed=3)
    code = cli.command_main("train", [
        "--data", str(tmp_path / "data" / "train"), "--classes", "3", "--backbone", "tiny", "--weights", "none",
        "--image-size", str(SIZE), "--epochs", "1", "--objectness-layers", "nope",
        "--experiments-dir", str(tmp_path / "runs"), "--saved-models-dir", str(tmp_path / "saved"), "--quiet"])
    assert code == 2
    assert "--objectness-layers: backbone 'tiny' has no 4x4 layer 'nope'" in capsys.readouterr().err


def test_fit_objectness_on_maps_without_contrast_says_why(tmp_path):
    model = build_cam_model(3, "tiny", "none", SIZE, objectness_layers=["tiny_relu5"])
    model.get_layer(HEAD_NAME).kernel.assign(np.zeros((model.get_layer(HEAD_NAME).kernel.shape), np.float32))
    synthetic.write_dataset(str(tmp_path / "data"), {"train": 2}, size=SIZE, seed=5)
    folder = data.scan_folder(str(tmp_path / "data" / "train"))
    with pytest.raises(ValueError, match=r"CAMs of the 6 training images give 0 object and \d+ background"):
        objectness.fit_objectness(model, folder.paths, folder.labels, batch_size=4)


def test_a_run_killed_during_the_objectness_fit_resumes_with_a_fitted_head(tmp_path, monkeypatch, capsys):
    synthetic.write_dataset(str(tmp_path / "data"), {"train": 6}, size=SIZE, seed=3)
    argv = ["--data", str(tmp_path / "data" / "train"), "--classes", "3", "--backbone", "tiny", "--weights", "none",
            "--image-size", str(SIZE), "--epochs", "1", "--batch-size", "8", "--objectness-layers", "tiny_relu5",
            "--experiments-dir", str(tmp_path / "runs"), "--saved-models-dir", str(tmp_path / "saved"), "--quiet"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(objectness, "fit_objectness", killed)
    script = os.path.join(REPO, "train.py")
    monkeypatch.setattr(sys, "argv", [script])  # as `python /path/to/train.py ...` runs it
    assert cli.command_main("train", argv, prog="train.py") == 130
    monkeypatch.undo()
    (run,) = (tmp_path / "runs").iterdir()
    assert not list((tmp_path / "saved" / run.name).iterdir())  # nothing exported with an unfitted head
    # The printed command runs as written, from any folder (train.py is no executable on the PATH).
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"train.py: interrupted; continue with: python {script} --resume {run}"
    command = shlex.split(line.split("continue with: ", 1)[1])
    resumed = subprocess.run([sys.executable, *command[1:], "--quiet"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    best = load_cam_model(str(run / "checkpoints" / "best.keras")).get_layer(OBJECTNESS_NAME)
    assert np.any(best.kernel.numpy() != 0)
    served = load_saved_model(str(tmp_path / "saved" / run.name / "1")).signatures["predict_images"](
        images=tf.zeros([1, SIZE, SIZE, 3]))
    assert not np.allclose(served["objectness"].numpy(), 0.5)  # the fitted head, not the initial one
