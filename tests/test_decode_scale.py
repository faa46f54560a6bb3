"""Large JPEGs decode at libjpeg's reduced scale (``data.jpeg_scale``), still under one rule."""

import io

import cv2
import numpy as np
import pytest
import tensorflow as tf

from keras_cam import data


@pytest.mark.parametrize("height, width, scale", [
    (100, 100, 1), (447, 447, 1), (447, 5000, 1), (448, 448, 2), (448, 2000, 2), (895, 900, 2),
    (896, 896, 4), (1791, 1791, 4), (1792, 1792, 8), (3000, 4000, 8),
])
def test_the_scale_keeps_both_sides_at_least_the_model_size(height, width, scale):
    assert int(data.jpeg_scale(tf.constant([height, width, 3]), 224)) == scale


def _photo_like(height, width, seed=0):
    """A smooth picture with edges (gradients and discs), BGR uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1).astype(np.uint8)
    for _ in range(6):
        cx, cy, r = rng.integers(0, width), rng.integers(0, height), rng.integers(height // 10, height // 3)
        cv2.circle(image, (int(cx), int(cy)), int(r), [int(c) for c in rng.integers(0, 256, 3)], -1)
    return image


def _jpeg(image):
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def _full_decode_then_resize(blob, size=224):
    return data.resize_image(data.decode_image(tf.constant(blob)), size).numpy()


@pytest.mark.parametrize("height, width", [(700, 1000), (1500, 2000), (2400, 1800)])
def test_a_large_jpeg_gives_its_own_size_and_nearly_the_full_decode(height, width):
    blob = _jpeg(_photo_like(height, width))
    image, size = data.decode_and_resize(tf.constant(blob), 224)
    assert tuple(size.numpy()) == (height, width)
    assert image.shape == (224, 224, 3)
    diff = np.abs(image.numpy() - _full_decode_then_resize(blob))
    # Measured 0.7-1.4 levels on average (of 255): the reduced scale is the smoother downscale.
    assert diff.mean() < 3.0
    assert int(data.jpeg_scale(tf.image.extract_jpeg_shape(tf.constant(blob)), 224)) > 1


def test_the_batch_and_single_forms_agree_on_large_jpegs():
    blobs = [_jpeg(_photo_like(900, 1200, seed)) for seed in range(3)]
    images, sizes = data.decode_batch(tf.constant(blobs), 224)
    for blob, image, size in zip(blobs, images, sizes):
        one, one_size = data.decode_and_resize(tf.constant(blob), 224)
        np.testing.assert_array_equal(image.numpy(), one.numpy())
        np.testing.assert_array_equal(size.numpy(), one_size.numpy())
    np.testing.assert_array_equal(data.load_and_resize(tf.constant(blobs[0]), 224).numpy(), images[0].numpy())


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_greyscale_and_cmyk_jpegs_decode_to_rgb_at_reduced_scale(mode):
    from PIL import Image
    picture = Image.fromarray(_photo_like(1000, 1000)[..., ::-1]).convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=92)
    blob = buffer.getvalue()
    scaled = data.decode_image(tf.constant(blob), min_side=224)
    assert scaled.shape == (250, 250, 3)  # 1/4: 1000 // 8 = 125 < 224
    image, size = data.decode_and_resize(tf.constant(blob), 224)
    assert tuple(size.numpy()) == (1000, 1000)
    assert np.abs(image.numpy() - _full_decode_then_resize(blob)).mean() < 3.0


def test_small_jpegs_and_other_formats_decode_at_full_size():
    small = _jpeg(_photo_like(400, 447))
    np.testing.assert_array_equal(data.decode_image(tf.constant(small), min_side=224).numpy(),
                                  data.decode_image(tf.constant(small)).numpy())
    png = cv2.imencode(".png", _photo_like(1000, 1200))[1].tobytes()
    np.testing.assert_array_equal(data.decode_image(tf.constant(png), min_side=224).numpy(),
                                  data.decode_image(tf.constant(png)).numpy())
    assert tuple(data.decode_and_resize(tf.constant(png), 224)[1].numpy()) == (1000, 1200)


def test_bad_bytes_are_still_refused_with_a_reason():
    truncated = _jpeg(_photo_like(1000, 1000))[:5000]
    with pytest.raises(tf.errors.InvalidArgumentError):
        data.decode_and_resize(tf.constant(truncated), 224)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Not a JPEG"):
        data.decode_and_resize(tf.constant(b"not an image at all"), 224)


def test_training_and_evaluation_pipelines_ask_for_their_scales(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    path.write_bytes(_jpeg(_photo_like(1800, 2400)))
    asked = []
    real = data.decode_image

    def spy(image_bytes, min_side=None):
        asked.append(min_side)
        return real(image_bytes, min_side)

    monkeypatch.setattr(data, "decode_image", spy)
    ds = data.make_dataset([str(path)] * 4, [0, 0, 0, 0], 224, batch_size=4, training=True)
    images, labels = next(iter(ds))
    assert images.shape == (4, 224, 224, 3) and labels.shape == (4,)
    # Random crops keep about half of each side: training decodes at twice the input size.
    assert set(asked) == {448}
    asked.clear()
    next(iter(data.make_dataset([str(path)], [0], 224, batch_size=1, training=False)))
    assert set(asked) == {224}
    asked.clear()
    assert data.find_unreadable([str(path)], min_side=224) == [] and set(asked) == {224}
    # 1800 // 4 = 450 >= 448: 1/4 scale for training, where evaluation gets 1/8.
    assert real(tf.constant(path.read_bytes()), min_side=448).shape == (450, 600, 3)


def test_the_served_model_answers_in_the_stored_pixels_of_a_large_jpeg(exported, cam_model):
    """The serving graph takes the reduced-scale path (the test model's input is 64 px)."""
    from conftest import IMAGE_SIZE

    from keras_cam import cam as cam_ops
    blob = _jpeg(_photo_like(300, 400))
    assert int(data.jpeg_scale(tf.constant([300, 400]), IMAGE_SIZE)) == 4
    served = tf.saved_model.load(exported).signatures["serving_default"](image_bytes=tf.constant([blob]))
    assert served["image_sizes"].numpy().tolist() == [[300, 400]]
    image = data.load_and_resize(tf.constant(blob), IMAGE_SIZE)[None]
    outputs = cam_model(image, training=False)
    class_id = int(outputs["logits"].numpy().argmax())
    assert int(served["class_ids"][0]) == class_id
    cam = cam_ops.normalize_cams(cam_ops.class_activation_maps(
        outputs["features"], cam_model.get_layer("logits").kernel, [class_id])).numpy()
    np.testing.assert_allclose(served["cams"].numpy(), cam, atol=1e-4)
