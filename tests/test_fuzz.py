"""Hostile bytes: random and mutated images at the decoder, infer.py's path and serving_default.

The property everywhere: an input gives either an error (``InvalidArgumentError``, or
an error record for that image in infer.py) or a valid answer. Never a crash of the
process, a hang, or an allocation sized by a forged header.
"""

import faulthandler
import resource
import struct

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bad_images import animated, declaring, rgb, valid_images
from conftest import CLASS_NAMES
from keras_cam import data, inference

SEEDS = valid_images()
# mutations of an animated WebP (refused whole) reach the decoder once its flag bit flips
MUTATION_SEEDS = {**SEEDS, "webp_animated": animated("WEBP", [rgb(12, 17, seed=s) for s in (1, 2)])}
# No deadline: time is not what these tests check (the guards below turn a hang into a failure).
FUZZ = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _peak_memory():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes (ru_maxrss is KiB on Linux)


@pytest.fixture(scope="module", autouse=True)
def guards():
    """Turns a hang into a failure (the process dumps its stacks and exits after 10
    minutes) and checks that the whole file raised the peak memory by less than 1 GiB."""
    faulthandler.dump_traceback_later(600, exit=True)
    before = _peak_memory()
    yield
    faulthandler.cancel_dump_traceback_later()
    assert _peak_memory() - before < 2**30, "fuzzing raised the peak memory by more than 1 GiB"


@st.composite
def mutated(draw):
    """A valid image with a few random edits: flipped, inserted, deleted bytes, a
    truncation, or forged size fields in its header."""
    blob = bytearray(MUTATION_SEEDS[draw(st.sampled_from(sorted(MUTATION_SEEDS)))])
    for _ in range(draw(st.integers(1, 6))):
        edit = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "size"]))
        at = draw(st.integers(0, len(blob)))
        if edit == "flip" and at < len(blob):
            blob[at] ^= draw(st.integers(1, 255))
        elif edit == "insert":
            blob[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "delete":
            del blob[at:at + draw(st.integers(1, 16))]
        elif edit == "truncate":
            del blob[at:]
        elif edit == "size":
            try:
                blob = bytearray(declaring(bytes(blob), draw(st.integers(1, 16383)), draw(st.integers(1, 16383))))
            except (ValueError, struct.error):
                pass  # an earlier edit destroyed the header
    return bytes(blob)


HOSTILE = st.one_of(st.binary(max_size=300), mutated(), st.sampled_from(sorted(SEEDS.values())))
_decode = tf.function(data.decode_image, input_signature=[tf.TensorSpec([], tf.string)])


def _check_image(image):
    height, width, channels = image.shape
    assert channels == 3 and image.dtype == tf.uint8
    assert 0 < height * width <= data.MAX_IMAGE_PIXELS


@settings(FUZZ, max_examples=250)
@given(blob=HOSTILE)
def test_decode_image_errors_or_decodes(blob):
    try:
        image = _decode(tf.constant(blob))
    except tf.errors.InvalidArgumentError as error:
        assert data.error_reason(error)  # a readable reason, not an empty message
        return
    _check_image(image)


@settings(FUZZ, max_examples=25)
@given(blob=HOSTILE)
def test_eager_decode_image_errors_or_decodes(blob):
    try:
        image = data.decode_image(tf.constant(blob))
    except tf.errors.InvalidArgumentError:
        return
    _check_image(image)


@pytest.fixture(scope="module")
def serve(exported):
    return tf.saved_model.load(exported).signatures["serving_default"]


@settings(FUZZ, max_examples=80)
@given(blob=HOSTILE)
def test_serving_default_errors_or_answers_and_recovers(serve, blob):
    try:
        out = serve(image_bytes=tf.constant([blob]))
    except tf.errors.InvalidArgumentError:
        # the bad request failed alone: the next one is answered
        assert serve(image_bytes=tf.constant([SEEDS["png"]]))["class_ids"].shape == (1,)
        return
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (1, len(CLASS_NAMES)) and np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-4)
    boxes = out["boxes"].numpy()
    assert np.isfinite(boxes).all() and (boxes >= 0).all() and (boxes <= 1).all()
    height, width = out["image_sizes"].numpy()[0]
    assert 0 < height * width <= data.MAX_IMAGE_PIXELS


@pytest.fixture(scope="module")
def loaded(exported):
    return inference.load_saved_model(exported)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(FUZZ, max_examples=40)
@given(blob=HOSTILE)
def test_infer_path_gives_a_record_per_image(loaded, fuzz_dir, blob):
    """infer.py's path: files between two good ones; a bad one costs only its own record."""
    paths = [str(fuzz_dir / name) for name in ("a.png", "hostile.jpg", "z.png")]
    for path, content in zip(paths, [SEEDS["png"], blob, SEEDS["png"]]):
        with open(path, "wb") as f:
            f.write(content)
    records = list(inference.localize_files(loaded, paths, batch_size=3))
    assert [r["image"] for r in records] == paths
    assert "error" not in records[0] and "error" not in records[2]
    hostile = records[1]
    if "error" in hostile:
        assert isinstance(hostile["error"], str) and "\n" not in hostile["error"]
    else:
        assert 0 < hostile["width"] * hostile["height"] <= data.MAX_IMAGE_PIXELS
        for xmin, ymin, xmax, ymax in hostile["boxes"]:
            assert 0 <= xmin <= xmax <= hostile["width"] and 0 <= ymin <= ymax <= hostile["height"]


@pytest.mark.parametrize("name, width, height", [
    ("jpeg", 30000, 30000), ("png", 30000, 30000), ("png", 2**32 - 1, 2**32 - 1), ("gif", 30000, 30000),
    ("bmp", 30000, 30000), ("bmp", 30000, -30000), ("webp_lossless", 16384, 16384), ("webp_lossy", 16383, 16383),
    ("webp_alpha", 2**24, 2**24),
])
def test_huge_declared_sizes_are_refused_before_allocation(serve, name, width, height):
    blob = declaring(SEEDS[name], width, height)
    peak_before = _peak_memory()
    for call in (lambda: _decode(tf.constant(blob)), lambda: serve(image_bytes=tf.constant([blob]))):
        with pytest.raises(tf.errors.InvalidArgumentError, match="Image too large"):
            call()
    # 30000 x 30000 RGB would be 2.7 GB, above any earlier peak of this process (ru_maxrss
    # is a high-water mark, so this sees allocations that would exceed it): none was made.
    assert _peak_memory() - peak_before < 200 * 2**20


def test_declared_pixels_match_the_real_sizes():
    for name, blob in SEEDS.items():
        assert int(data.declared_pixels(tf.constant(blob))) == 12 * 17, name
