"""The serving SavedModel: signatures, agreement with the Keras model, REST format, bad bytes."""

import base64
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from conftest import CLASS_NAMES, IMAGE_SIZE, encode
from keras_cam import boxes as box_rule
from keras_cam import cam as cam_ops
from keras_cam import data
from keras_cam.export import export_saved_model, next_version_dir

OUTPUTS = {"probabilities", "class_ids", "class_names", "scores", "cams", "objectness", "boxes", "box_scores",
           "num_boxes", "image_sizes"}


def _fresh_process(code, *args):
    """Runs code in a new Python that has not imported keras_cam; returns its JSON result."""
    prelude = "import os, sys, json; os.environ['TF_CPP_MIN_LOG_LEVEL']='2'\n"
    out = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_layout_and_version_folders(tmp_path, cam_model):
    base = tmp_path / "m"
    first = next_version_dir(str(base))
    assert first.endswith(os.path.join("m", "1"))
    export_saved_model(cam_model, CLASS_NAMES, first)
    assert next_version_dir(str(base)).endswith(os.path.join("m", "2"))
    with pytest.raises(FileExistsError, match="exists already"):
        export_saved_model(cam_model, CLASS_NAMES, first)
    # no temporary folders are left beside the versions
    assert sorted(os.listdir(base)) == ["1"]


@pytest.mark.parametrize("max_boxes", [0, 2.5, True])
def test_max_boxes_must_be_a_positive_integer(tmp_path, cam_model, max_boxes):
    with pytest.raises(ValueError, match=f"max_boxes must be a positive integer. Received: max_boxes={max_boxes!r}$"):
        export_saved_model(cam_model, CLASS_NAMES, str(tmp_path / "x" / "1"), max_boxes=max_boxes)
    assert not (tmp_path / "x").exists()


def test_class_name_count_must_match(tmp_path, cam_model):
    with pytest.raises(ValueError, match="3 classes but 2 class names"):
        export_saved_model(cam_model, ["a", "b"], str(tmp_path / "x" / "1"))


def test_fresh_process_matches_keras_model(exported, cam_model, sample_images, tmp_path):
    """Loads the export where keras_cam was never imported and compares with the Keras model."""
    images = np.stack([data.resize_image(im, IMAGE_SIZE).numpy() for im in sample_images])
    np.save(tmp_path / "images.npy", images)
    blobs = [encode(im) for im in sample_images]
    (tmp_path / "bytes.json").write_text(json.dumps([base64.b64encode(b).decode() for b in blobs]))
    result = _fresh_process("""
        import base64, numpy as np, tensorflow as tf
        assert "keras_cam" not in sys.modules
        m = tf.saved_model.load(sys.argv[1])
        images = np.load(sys.argv[2] + "/images.npy")
        blobs = [base64.b64decode(b) for b in json.load(open(sys.argv[2] + "/bytes.json"))]
        a = m.signatures["predict_images"](images=tf.constant(images))
        b = m.signatures["serving_default"](image_bytes=tf.constant(blobs))
        conv = lambda d: {k: (v.numpy().astype(str) if v.dtype == tf.string else v.numpy()).tolist() for k, v in d.items()}
        print(json.dumps({"images": conv(a), "bytes": conv(b), "leaked": "keras_cam" in sys.modules}))
    """, exported, str(tmp_path))
    assert not result["leaked"]
    outputs = cam_model(images, training=False)
    logits, features = outputs["logits"].numpy(), outputs["features"]
    class_ids = logits.argmax(-1)
    cams = cam_ops.normalize_cams(cam_ops.class_activation_maps(
        features, cam_model.get_layer("logits").kernel, class_ids)).numpy()
    for name in ("images", "bytes"):
        got = {k: np.asarray(v) for k, v in result[name].items()}
        assert set(got) == OUTPUTS
        np.testing.assert_allclose(got["probabilities"], tf.nn.softmax(logits).numpy(), atol=1e-5)
        np.testing.assert_array_equal(got["class_ids"], class_ids)
        assert list(got["class_names"]) == [CLASS_NAMES[i] for i in class_ids]
        np.testing.assert_allclose(got["cams"], cams, atol=1e-4)
        assert got["boxes"].shape[1:] == (5, 4)
        assert np.all((got["boxes"] >= 0) & (got["boxes"] <= 1))
    # image_sizes are the original sizes for bytes, the model size for tensors
    assert result["bytes"]["image_sizes"] == [list(im.shape[:2]) for im in sample_images]
    assert result["images"]["image_sizes"] == [[IMAGE_SIZE, IMAGE_SIZE]] * len(sample_images)


def test_in_graph_boxes_follow_the_opencv_rule(exported, cam_model, sample_images):
    """The served top box agrees with the OpenCV reference on the same map."""
    loaded = tf.saved_model.load(exported)
    images = np.stack([data.resize_image(im, IMAGE_SIZE).numpy() for im in sample_images])
    served = loaded.signatures["predict_images"](images=tf.constant(images))
    outputs = cam_model(images, training=False)
    maps = cam_ops.localization_maps(outputs["features"], cam_model.get_layer("logits").kernel,
                                     served["class_ids"], (IMAGE_SIZE, IMAGE_SIZE)).numpy()
    for i in range(len(images)):
        reference, _ = box_rule.boxes_from_cam(maps[i], box_rule.DEFAULT_TAU, all_regions=True)
        n = int(served["num_boxes"][i])
        assert n == min(len(reference), 5)
        got = box_rule.normalized_to_pixel(served["boxes"][i, :n].numpy(), IMAGE_SIZE, IMAGE_SIZE)
        assert box_rule.iou(got[0], reference[0]) >= 0.9
        assert np.all(served["box_scores"][i, n:].numpy() == 0)


def test_signatures_as_saved_model_cli_reports(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli not installed")
    text = subprocess.run([cli, "show", "--dir", exported, "--all"], capture_output=True, text=True,
                          timeout=300, check=True).stdout
    default = text[text.index("signature_def['serving_default']"):]
    assert "inputs['image_bytes'] tensor_info:" in default
    assert "dtype: DT_STRING" in default.split("outputs[")[0]
    assert "shape: (-1)" in default.split("outputs[")[0]
    predict = text[text.index("signature_def['predict_images']"):text.index("signature_def['serving_default']")]
    assert "inputs['images'] tensor_info:" in predict
    assert f"shape: (-1, {IMAGE_SIZE}, {IMAGE_SIZE}, 3)" in predict
    for name, dtype, shape in [("probabilities", "DT_FLOAT", "(-1, 3)"), ("class_ids", "DT_INT32", "(-1)"),
                               ("class_names", "DT_STRING", "(-1)"), ("scores", "DT_FLOAT", "(-1)"),
                               ("boxes", "DT_FLOAT", "(-1, 5, 4)"), ("box_scores", "DT_FLOAT", "(-1, 5)"),
                               ("num_boxes", "DT_INT32", "(-1)")]:
        block = default[default.index(f"outputs['{name}']"):]
        block = block[:block.index("name:")]
        assert f"dtype: {dtype}" in block and f"shape: {shape}" in block, (name, block)
    cams = default[default.index("outputs['cams']"):]
    assert "shape: (-1, 8, 8)" in cams[:cams.index("name:")]


def _rest_request_to_tensor(body):
    """Decodes a TF Serving REST ``instances`` body the way the server does.

    The REST API maps ``{"b64": "..."}`` objects to the bytes they encode for
    DT_STRING inputs; an instance may be the bare value or ``{input_name: value}``.
    """
    request = json.loads(body)
    values = []
    for instance in request["instances"]:
        if "b64" not in instance:
            instance = instance["image_bytes"]
        values.append(base64.b64decode(instance["b64"]))
    return request.get("signature_name", "serving_default"), tf.constant(values)


def test_rest_request_format(exported, sample_images):
    loaded = tf.saved_model.load(exported)
    blobs = [encode(im, ".jpg") for im in sample_images[:2]]
    for instances in ([{"b64": base64.b64encode(b).decode()} for b in blobs],
                      [{"image_bytes": {"b64": base64.b64encode(b).decode()}} for b in blobs]):
        body = json.dumps({"signature_name": "serving_default", "instances": instances})
        signature, tensor = _rest_request_to_tensor(body)
        out = loaded.signatures[signature](image_bytes=tensor)
        assert out["probabilities"].shape == (2, 3)


def test_the_readmes_request_body_is_what_the_server_decodes(exported, tmp_path):
    """The README's shell lines that write request.json, run as written on a photo too
    large for one command-line argument once base64-encoded (the reason for the file)."""
    readme = open(os.path.join(os.path.dirname(__file__), os.pardir, "README.md")).read()
    start = readme.index("(printf '{\"signature_name\"")
    script = readme[start:readme.index("request.json", start) + len("request.json")]
    rng = np.random.default_rng(0)
    photo = encode(rng.integers(0, 256, (400, 600, 3), dtype=np.uint8), ".png")
    assert len(photo) > 200_000  # base64 of it exceeds Linux's 128 KiB per argument
    (tmp_path / "photo.jpg").write_bytes(photo)
    subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True, timeout=60)
    signature, tensor = _rest_request_to_tensor((tmp_path / "request.json").read_text())
    assert signature == "serving_default" and tensor.numpy().tolist() == [photo]
    out = tf.saved_model.load(exported).signatures[signature](image_bytes=tensor)
    assert out["image_sizes"].numpy().tolist() == [[400, 600]]


@pytest.mark.parametrize("payload", [b"", b"not an image at all", b"<html><body>hi</body></html>",
                                     b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_garbage_bytes_fail_the_request_not_the_model(exported, sample_images, payload):
    loaded = tf.saved_model.load(exported)
    serve = loaded.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve(image_bytes=tf.constant([payload]))
    good = serve(image_bytes=tf.constant([encode(sample_images[0])]))
    assert good["probabilities"].shape == (1, 3)


def test_an_empty_batch_gets_empty_outputs(exported):
    loaded = tf.saved_model.load(exported)
    outputs = [loaded.signatures["serving_default"](image_bytes=tf.constant([], tf.string)),
               loaded.signatures["predict_images"](images=tf.zeros([0, IMAGE_SIZE, IMAGE_SIZE, 3])),
               loaded.signatures["localize_classes"](image_bytes=tf.constant([], tf.string),
                                                     class_ids=tf.constant([], tf.int32))]
    for out in outputs:
        assert out["probabilities"].shape == (0, 3) and out["boxes"].shape == (0, 5, 4)
        assert out["cams"].shape[0] == 0 and out["image_sizes"].shape == (0, 2) and out["num_boxes"].shape == (0,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one class_id per image"):
        loaded.signatures["localize_classes"](image_bytes=tf.constant([], tf.string), class_ids=tf.constant([1]))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_predict_images_refuses_pixels_that_are_no_numbers(exported, bad):
    images = np.full((2, IMAGE_SIZE, IMAGE_SIZE, 3), 128.0, np.float32)
    images[1, 3, 4, 0] = bad
    predict = tf.saved_model.load(exported).signatures["predict_images"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="the images hold NaN or infinite values"):
        predict(images=tf.constant(images))
    assert np.isfinite(predict(images=tf.constant(images[:1]))["scores"].numpy()).all()


@pytest.mark.parametrize("shape", [(1, IMAGE_SIZE // 2, IMAGE_SIZE // 2, 3), (2, IMAGE_SIZE * 2, IMAGE_SIZE, 3)])
def test_predict_images_refuses_another_size(exported, shape):
    loaded = tf.saved_model.load(exported)
    predict = loaded.signatures["predict_images"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"predict_images takes images of {IMAGE_SIZE}x"
                                                             f"{IMAGE_SIZE} pixels"):
        predict(images=tf.zeros(shape))
    good = predict(images=tf.random.uniform((2, IMAGE_SIZE, IMAGE_SIZE, 3), 0, 255))
    assert np.isfinite(good["scores"].numpy()).all()
    assert good["image_sizes"].numpy().tolist() == [[IMAGE_SIZE, IMAGE_SIZE]] * 2
