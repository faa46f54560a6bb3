"""The levers of the wsol6 recipe: moment boxes (both forms), the atrous last stage, the centred head.

Moment boxes are checked against boxes worked out by hand, and the TF form
(``graph_boxes``, served) against the OpenCV reference (``boxes``) exactly, as
``test_graph_boxes.py`` does for bounding rectangles. The atrous backbone is checked
with the identity that makes it "the same network at a finer grid": its features at
every other position are the original features. The centred head changes no
probability; train.py starts the head at zero.
"""

import numpy as np
import pytest
import tensorflow as tf
from conftest import CLASS_NAMES, IMAGE_SIZE

from keras_cam import cli, synthetic, training
from keras_cam.boxes import boxes_from_cam, moment_box, normalized_to_pixel
from keras_cam.export import export_saved_model, export_with_tau
from keras_cam.graph_boxes import boxes_from_cams_tf
from keras_cam.inference import load_saved_model
from keras_cam.model import HEAD_NAME, build_cam_model, center_head, load_cam_model, zero_head

SQRT3 = float(np.sqrt(3.0))


def _square_with_tail():
    """A 4x4 square (x, y in 2..5) with a 1-pixel tail along y = 3, x in 6..11."""
    cam = np.zeros((10, 14), np.float32)
    cam[2:6, 2:6] = 1.0
    cam[3, 6:12] = 1.0
    return cam


# ---------------------------------------------------------------- golden boxes

@pytest.mark.parametrize("extent, expected", [
    # x: 2,3,4,5 -> mean 4.0 (centres), sd sqrt(1.25) = 1.118; y: 3,4 -> mean 4.0, sd 0.5.
    (SQRT3, [2, 3, 6, 5]),   # k = sqrt(3): a filled rectangle is its own box
    (1.0, [2, 3, 6, 5]),     # x: floor(2.88) = 2, ceil(5.12) = 6; y: floor(3.5) = 3, ceil(4.5) = 5
    (0.5, [3, 3, 5, 5]),     # x: floor(3.44) = 3, ceil(4.56) = 5; y: floor(3.75) = 3, ceil(4.25) = 5
    (3.0, [2, 3, 6, 5]),     # never beyond the bounding rectangle
])
def test_moment_box_of_a_rectangle(extent, expected):
    cam = np.zeros((10, 10), np.float32)
    cam[3:5, 2:6] = 0.9
    boxes, scores = boxes_from_cam(cam, 0.5, box_extent=extent)
    assert boxes.tolist() == [expected]
    assert scores.tolist() == [1.0]


def test_moment_box_trims_a_thin_tail():
    # 22 pixels. x: sum 107, sum of squares 667 -> mean 107/22 + 0.5 = 5.364, sd 2.581;
    # 1.5 sd = 3.872 -> [floor(1.49), ceil(9.24)] = [1, 10], clipped to the region: [2, 10].
    # y: sum 74, squares 270 -> mean 3.864, sd 0.979 -> [floor(2.40), ceil(5.33)] = [2, 6].
    cam = _square_with_tail()
    assert boxes_from_cam(cam, 0.5)[0].tolist() == [[2, 2, 12, 6]]  # bounding rectangle
    assert boxes_from_cam(cam, 0.5, box_extent=1.5)[0].tolist() == [[2, 2, 10, 6]]


def test_one_pixel_region_keeps_a_one_pixel_box():
    cam = np.zeros((6, 6), np.float32)
    cam[4, 1] = 1.0
    assert boxes_from_cam(cam, 0.5, box_extent=1.5)[0].tolist() == [[1, 4, 2, 5]]
    assert moment_box([1], [4], 1.5, (1, 4, 2, 5)).tolist() == [1, 4, 2, 5]


def test_regions_order_and_scores_do_not_depend_on_the_extent():
    cam = _square_with_tail()
    cam[7:9, 10:13] = 0.8  # a second, smaller region
    plain, plain_scores = boxes_from_cam(cam, 0.5, all_regions=True)
    moment, moment_scores = boxes_from_cam(cam, 0.5, all_regions=True, box_extent=1.5)
    assert plain.tolist() == [[2, 2, 12, 6], [10, 7, 13, 9]]
    assert moment.tolist() == [[2, 2, 10, 6], [10, 7, 13, 9]]
    np.testing.assert_array_equal(plain_scores, moment_scores)


@pytest.mark.parametrize("extent", [-0.5, float("nan"), float("inf")])
def test_bad_extent_is_refused(extent):
    with pytest.raises(ValueError, match="box_extent must be 0 or a positive number"):
        boxes_from_cam(np.ones((4, 4), np.float32), 0.5, box_extent=extent)


# ---------------------------------------------------------------- TF form == reference

@tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32), tf.TensorSpec([], tf.float32),
                              tf.TensorSpec([], tf.float32)])
def _graph_rule(cams, tau, extent):
    return boxes_from_cams_tf(cams, tau, 6, extent)


def _maps(rng):
    """Hand-made, smooth random and upsampled low-resolution maps, as serving sees them."""
    tail = _square_with_tail()
    smooth = []
    for _ in range(6):
        low = rng.random((7, 7)).astype(np.float32)
        up = tf.image.resize(low[None, ..., None], (56, 56), method="bilinear")[0, ..., 0].numpy()
        smooth.append((up - up.min()) / (up.max() - up.min()))
    blobs = []
    yy, xx = np.mgrid[:56, :56]
    for _ in range(4):
        m = sum(np.exp(-((xx - rng.uniform(0, 56)) ** 2 + (yy - rng.uniform(0, 56)) ** 2) / rng.uniform(20, 200))
                for _ in range(3))
        blobs.append((m / m.max()).astype(np.float32))
    return [np.pad(tail, ((0, 46), (0, 42)))] + smooth + blobs


@pytest.mark.parametrize("extent", [0.0, 0.7, 1.5, SQRT3])
@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_graph_moment_boxes_equal_the_reference(extent, tau):
    maps = np.stack(_maps(np.random.default_rng(7)))
    boxes, scores, num = (t.numpy() for t in _graph_rule(maps, tf.constant(tau), tf.constant(extent)))
    for i, cam in enumerate(maps):
        ref_boxes, ref_scores = boxes_from_cam(cam, np.float32(tau), all_regions=True, box_extent=extent)
        assert num[i] == min(len(ref_boxes), 6)
        assert normalized_to_pixel(boxes[i, :num[i]], *cam.shape).tolist() == ref_boxes[:6].tolist(), (i, tau)
        np.testing.assert_array_equal(scores[i, :num[i]], ref_scores[:6])


# ---------------------------------------------------------------- the export carries the rule

def test_export_carries_box_extent_and_serves_moment_boxes(cam_model, sample_images, tmp_path):
    target = export_saved_model(cam_model, CLASS_NAMES, str(tmp_path / "m" / "1"), tau=0.3, box_extent=1.5)
    loaded = load_saved_model(target)
    meta = loaded.metadata()
    assert float(meta["box_extent"]) == 1.5 and float(meta["tau"]) == pytest.approx(0.3)
    images = np.stack([tf.image.resize(im, (IMAGE_SIZE, IMAGE_SIZE)).numpy() for im in sample_images])
    out = loaded.signatures["predict_images"](images=tf.constant(images, tf.float32))
    maps = tf.image.resize(out["cams"][..., None], (IMAGE_SIZE, IMAGE_SIZE), method="bilinear")[..., 0].numpy()
    for i, cam in enumerate(maps):
        cam = (cam - cam.min()) / (cam.max() - cam.min())
        ref, _ = boxes_from_cam(cam, np.float32(0.3), all_regions=True, box_extent=1.5)
        n = int(out["num_boxes"][i])
        assert normalized_to_pixel(out["boxes"][i, :n].numpy(), IMAGE_SIZE, IMAGE_SIZE).tolist() == ref[:n].tolist()
    # Calibration writes a new version with another tau: the box rule goes with it.
    again = load_saved_model(export_with_tau(loaded, 0.4, str(tmp_path / "m" / "2")))
    assert float(again.metadata()["box_extent"]) == 1.5 and float(again.metadata()["tau"]) == pytest.approx(0.4)


def test_export_refuses_a_negative_extent(cam_model, tmp_path):
    with pytest.raises(ValueError, match="box_extent must be 0 or a positive number"):
        export_saved_model(cam_model, CLASS_NAMES, str(tmp_path / "m" / "1"), box_extent=-1.0)


# ---------------------------------------------------------------- atrous last stage

@pytest.mark.parametrize("backbone, size, stride, offset", [
    # TF "same" stride-2 convolutions (tiny) and MobileNetV2's pad-(0, 1) + "valid" ones
    # centre output i on input 2i + 1, so the dilated map matches at odd positions.
    ("tiny", 48, 4, 1),
    ("mobilenet_v2", 64, 16, 1),
])
def test_atrous_features_are_the_original_features_on_a_finer_grid(backbone, size, stride, offset):
    from conftest import randomize_batchnorm
    original = build_cam_model(3, backbone, "none", size)
    randomize_batchnorm(original)
    dilated = build_cam_model(3, backbone, "none", size, feature_stride=stride)
    for layer in dilated.layers:  # same names and shapes: copy everything over
        if layer.weights:
            layer.set_weights(original.get_layer(layer.name).get_weights())
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    coarse = original(images)["features"].numpy()
    fine = dilated(images)["features"].numpy()
    assert fine.shape[1:3] == (2 * coarse.shape[1], 2 * coarse.shape[2])
    np.testing.assert_allclose(fine[:, offset::2, offset::2], coarse, rtol=1e-4, atol=1e-4)


def test_atrous_model_keeps_weights_and_survives_a_keras_round_trip(tmp_path):
    model = build_cam_model(3, "tiny", "none", 32, feature_stride=4)
    path = str(tmp_path / "m.keras")
    model.save(path)
    again = load_cam_model(path)
    images = np.random.default_rng(1).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(again(images)["features"], model(images)["features"], rtol=1e-5, atol=1e-5)
    assert again.get_layer("tiny_conv6").dilation_rate == (2, 2)


@pytest.mark.parametrize("stride", [2, 8, 32])
def test_feature_stride_must_be_half_the_backbones(stride):
    with pytest.raises(ValueError, match=r"feature_stride must be None or 4 .*Received: feature_stride="):
        build_cam_model(3, "tiny", "none", 32, feature_stride=stride)


# ---------------------------------------------------------------- centred head

def test_center_head_keeps_probabilities_and_the_cam_identity():
    model = build_cam_model(3, "tiny", "none", 32)
    head = model.get_layer(HEAD_NAME)
    head.bias.assign([0.5, -1.0, 2.0])
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    before = tf.nn.softmax(model(images)["logits"]).numpy()
    center_head(model)
    out = model(images)
    np.testing.assert_allclose(tf.nn.softmax(out["logits"]).numpy(), before, rtol=1e-5, atol=1e-6)
    kernel, bias = head.kernel.numpy(), head.bias.numpy()
    np.testing.assert_allclose(kernel.sum(axis=1), 0.0, atol=1e-5)
    assert bias.sum() == pytest.approx(0.0, abs=1e-6)
    cams = np.einsum("bhwk,kc->bchw", out["features"].numpy(), kernel)
    np.testing.assert_allclose(cams.mean(axis=(2, 3)) + bias, out["logits"].numpy(), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- train.py flags

def test_checkpoints_carry_a_centred_head(tmp_path):
    model = build_cam_model(3, "tiny", "none", 32)
    model.get_layer(HEAD_NAME).bias.assign([1.0, 2.0, 4.0])
    training.CheckpointCallback(model, str(tmp_path), every=1).on_epoch_end(0, {"val_accuracy": 0.5})
    for name in ("best.keras", "epoch_001.keras"):
        head = load_cam_model(str(tmp_path / name)).get_layer(HEAD_NAME)
        np.testing.assert_allclose(head.kernel.numpy().sum(axis=1), 0.0, atol=1e-5)
        np.testing.assert_allclose(head.bias.numpy(), [-4 / 3, -1 / 3, 5 / 3], rtol=1e-6)


def test_best_checkpoint_breaks_accuracy_ties_by_the_lower_loss(tmp_path):
    model = build_cam_model(3, "tiny", "none", 32)
    callback = training.CheckpointCallback(model, str(tmp_path), every=100)
    epochs = [(0.5, 1.0), (1.0, 0.5), (1.0, 0.2), (1.0, 0.3), (0.9, 0.1)]
    for epoch, (accuracy, loss) in enumerate(epochs):
        callback.on_epoch_end(epoch, {"accuracy": 0.0, "loss": 9.0, "val_accuracy": accuracy, "val_loss": loss})
    assert training.read_best(str(tmp_path)) == ((1.0, 0.2), 3)
    # A resumed run carries on from the same best: a tie at a higher loss does not replace it.
    resumed = training.CheckpointCallback(model, str(tmp_path), every=100, best_so_far=training.read_best(str(tmp_path))[0])
    resumed.on_epoch_end(5, {"val_accuracy": 1.0, "val_loss": 0.25})
    assert training.read_best(str(tmp_path)) == ((1.0, 0.2), 3)
    resumed.on_epoch_end(6, {"val_accuracy": 1.0, "val_loss": 0.15})
    assert training.read_best(str(tmp_path)) == ((1.0, 0.15), 7)


def test_without_validation_the_training_scores_choose(tmp_path):
    model = build_cam_model(3, "tiny", "none", 32)
    callback = training.CheckpointCallback(model, str(tmp_path), every=100)
    callback.on_epoch_end(0, {"accuracy": 0.8, "loss": 0.4})
    callback.on_epoch_end(1, {"accuracy": 0.8, "loss": 0.3})
    callback.on_epoch_end(2, {"accuracy": 0.7, "loss": 0.1})
    assert training.read_best(str(tmp_path)) == ((0.8, 0.3), 2)


@pytest.mark.slow
def test_train_flags_reach_the_model_and_the_export(tmp_path):
    synthetic.write_dataset(str(tmp_path / "data"), {"train": 6}, size=32, seed=3)
    code = cli.command_main("train", [
        "--data", str(tmp_path / "data" / "train"), "--classes", "3", "--backbone", "tiny", "--weights", "none",
        "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--feature-stride", "4",
        "--box-extent", "1.5", "--experiments-dir", str(tmp_path / "runs"),
        "--saved-models-dir", str(tmp_path / "saved"), "--quiet"])
    assert code == 0
    (run,) = (tmp_path / "runs").iterdir()
    saved = training.TrainConfig.from_json((run / "config.json").read_text())  # what --resume rebuilds
    assert (saved.feature_stride, saved.box_extent) == (4, 1.5)
    loaded = load_saved_model(str(tmp_path / "saved" / run.name / "1"))
    assert float(loaded.metadata()["box_extent"]) == 1.5
    assert loaded.signatures["predict_images"](images=tf.zeros([1, 32, 32, 3]))["cams"].shape[1:] == (8, 8)


# ---------------------------------------------------------------- head from zero

def test_zero_head_zeroes_only_the_head():
    model = build_cam_model(3, "tiny", "none", 32)
    others = [w.numpy().copy() for w in model.weights if "logits" not in w.path]
    zero_head(model)
    head = model.get_layer(HEAD_NAME)
    assert not head.kernel.numpy().any() and not head.bias.numpy().any()
    for before, after in zip(others, [w.numpy() for w in model.weights if "logits" not in w.path]):
        np.testing.assert_array_equal(before, after)


def test_a_fresh_run_starts_the_head_at_zero(tmp_path):
    # With a learning rate of 0 the trained head is its start: zero, not Keras' random
    # start (which build_cam_model keeps, so untrained models give distinct maps).
    synthetic.write_dataset(str(tmp_path / "data"), {"train": 4}, size=32, seed=1)
    assert build_cam_model(3, "tiny", "none", 32).get_layer(HEAD_NAME).kernel.numpy().any()
    config = training.TrainConfig(data=str(tmp_path / "data" / "train"), classes=3, backbone="tiny",
                                  weights="none", image_size=32, epochs=1, batch_size=4, learning_rate=0.0)
    result = training.train(config, training.make_run_dir(str(tmp_path / "runs")), verbose=0)
    assert not result["cam_model"].get_layer(HEAD_NAME).kernel.numpy().any()
