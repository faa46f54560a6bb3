"""The fast paths of issue 4: the infer pipeline (order, errors, bounded read-ahead,
same answers as the serving graph) and the ``--precision`` option.

Speed itself is shown by ``benchmarks/`` (``make bench``), never by timed tests.
"""

import json
import re

import numpy as np
import pytest
import tensorflow as tf

from conftest import CLASS_NAMES, encode
from keras_cam import boxes as box_rule
from keras_cam import cli, inference, precision

HAS_BFLOAT16 = bool(precision.cpu_flags() & set(precision.BFLOAT16_CPU_FLAGS))
needs_bfloat16 = pytest.mark.skipif(not HAS_BFLOAT16, reason="this CPU has no avx512_bf16 / amx_bf16")


@pytest.fixture(scope="module")
def folder(sample_images, tmp_path_factory):
    """Seven files in name order: good images with bad ones between them."""
    root = tmp_path_factory.mktemp("mixed")
    names = []
    for i, kind in enumerate(["good", "fake", "good", "good", "empty", "good", "good"]):
        name = f"{i}_{kind}.png"
        content = {"fake": b"<html>not an image</html>", "empty": b""}.get(
            kind, encode(sample_images[i % len(sample_images)]))
        (root / name).write_bytes(content)
        names.append(str(root / name))
    return names


def test_records_come_in_input_order_with_per_image_errors(exported, folder):
    loaded = inference.load_saved_model(exported)
    records = list(inference.localize_files(loaded, folder, batch_size=2))
    assert [r["image"] for r in records] == folder
    assert ["error" in r for r in records] == ["fake" in p or "empty" in p for p in folder]
    assert records[1]["error"].startswith("not a readable image")
    assert records[4]["error"] == "empty file"


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True, "4"])
def test_a_batch_size_that_is_not_a_positive_integer_is_named(exported, folder, batch_size):
    loaded = inference.load_saved_model(exported)
    with pytest.raises(ValueError, match=re.escape(f"batch_size must be a positive integer. Received: "
                                                   f"batch_size={batch_size!r}")):
        list(inference.localize_files(loaded, folder, batch_size=batch_size))
    assert len(list(inference.localize_files(loaded, folder, batch_size=np.int64(3)))) == len(folder)


def test_records_are_the_serving_graph_answers_in_pixels(exported, folder):
    """Batching, error handling and the pixel conversion change nothing the graph says."""
    loaded = inference.load_saved_model(exported)
    good = [p for p in folder if "good" in p]
    records = list(inference.localize_files(loaded, good, batch_size=3))
    served = loaded.signatures["serving_default"](
        image_bytes=tf.constant([inference.read_image_bytes(p)[0] for p in good]))
    for i, record in enumerate(records):
        height, width = (int(v) for v in served["image_sizes"][i])
        n = int(served["num_boxes"][i])
        assert (record["height"], record["width"]) == (height, width)
        assert record["class_id"] == int(served["class_ids"][i])
        assert record["score"] == pytest.approx(float(served["scores"][i]), abs=1e-5)
        assert record["boxes"] == box_rule.normalized_to_pixel(served["boxes"][i, :n].numpy(), height, width).tolist()
        np.testing.assert_allclose(record["cam"], served["cams"][i].numpy(), atol=1e-5)


class CountingModel:
    """A loaded SavedModel whose ``serving_default`` counts its calls (and can be told
    that decoding alone finds nothing wrong)."""

    def __init__(self, loaded):
        self.calls = []
        serve = loaded.signatures["serving_default"]

        def counting(image_bytes):
            self.calls.append(int(image_bytes.shape[0]))
            return serve(image_bytes=image_bytes)
        self.signatures = {"serving_default": counting}


def test_a_bad_file_costs_one_more_call_not_one_per_image(exported, folder):
    model = CountingModel(inference.load_saved_model(exported))
    good = [p for p in folder if "good" in p]
    paths = good[:2] + [folder[1]] + good[2:]  # 2 good, the fake one, 3 good
    records = list(inference.localize_files(model, paths, batch_size=6))
    assert ["error" in r for r in records] == [False, False, True, False, False, False]
    assert model.calls == [6, 5]  # the batch, then the batch without the fake image


def test_a_failure_that_decoding_does_not_explain_goes_image_by_image(exported, folder, monkeypatch):
    monkeypatch.setattr(inference, "_decode_problem", lambda content: None)
    model = CountingModel(inference.load_saved_model(exported))
    paths = [folder[0], folder[1], folder[2]]  # good, fake, good
    records = list(inference.localize_files(model, paths, batch_size=3))
    assert ["error" in r for r in records] == [False, True, False]
    assert records[1]["error"].startswith("not a readable image")
    assert model.calls == [3, 1, 1, 1]


def test_reading_ahead_is_bounded_by_the_batch(exported, folder):
    """Memory follows the batch, not the data: paths are taken one batch at a time."""
    taken = []

    def paths():
        for i in range(100):
            taken.append(i)
            yield folder[0]

    loaded = inference.load_saved_model(exported)
    stream = inference.localize_files(loaded, paths(), batch_size=4)
    next(stream)
    assert len(taken) == 4
    stream.close()


# ----------------------------------------------------------------------------- precision

@pytest.mark.parametrize("value, flags, message", [
    ("float16", {"avx512_bf16"}, "precision must be one of .* Received: precision='float16'"),
    ("bfloat16", {"avx512f", "avx2"}, "needs a CPU with native bfloat16 instructions .avx512_bf16 or amx_bf16"),
])
def test_bad_precisions_are_refused_by_name(value, flags, message):
    with pytest.raises(ValueError, match=message):
        precision.check_precision(value, flags)


@pytest.mark.parametrize("flags", [{"avx512_bf16"}, {"amx_bf16", "amx_tile"}])
def test_bfloat16_is_allowed_with_either_cpu_feature(flags):
    assert precision.check_precision("bfloat16", flags) == "bfloat16"
    assert precision.check_precision("float32", set()) == "float32"


def test_infer_without_cpu_support_is_a_one_line_error(exported, folder, monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    assert cli.main(["infer", "--saved_model", exported, "--image", folder[0], "--precision", "bfloat16"]) == 2
    err = capsys.readouterr().err
    assert "needs a CPU with native bfloat16" in err and "Traceback" not in err


def test_running_in_restores_the_previous_setting(monkeypatch):
    # Only the graph rewrite's switch is looked at: no graph runs, so any CPU will do.
    monkeypatch.setattr(precision, "cpu_flags", lambda: set(precision.BFLOAT16_CPU_FLAGS))

    def rewrite():
        return tf.config.optimizer.get_experimental_options().get("auto_mixed_precision_onednn_bfloat16", False)

    before = rewrite()
    try:
        for outer, inner in (("float32", "bfloat16"), ("bfloat16", "float32")):
            with precision.running_in(outer):
                with precision.running_in(inner):
                    assert rewrite() == (inner == "bfloat16")
                assert rewrite() == (outer == "bfloat16")  # the inner block gave back the outer's setting
            assert rewrite() == before
    finally:
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": before})


@needs_bfloat16
def test_bfloat16_inference_gives_the_same_classes_and_near_boxes(exported, folder, capsys):
    good = [p for p in folder if "good" in p]
    answers = {}
    for value in ("float32", "bfloat16", "float32"):
        images = [arg for path in good for arg in ("--image", path)]
        assert cli.main(["infer", "--saved_model", exported, *images, "--json", "--quiet", "--precision", value]) == 0
        answers.setdefault(value, []).append([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    f32, again, bf16 = answers["float32"][0], answers["float32"][1], answers["bfloat16"][0]
    assert f32 == again  # switching back really runs float32 again
    assert [r["score"] for r in bf16] != [r["score"] for r in f32]  # and bfloat16 really ran
    for a, b in zip(f32, bf16):
        assert a["class_name"] == b["class_name"] and a["class_name"] in CLASS_NAMES
        assert a["score"] == pytest.approx(b["score"], abs=0.02)
        if a["boxes"]:
            assert box_rule.iou(a["boxes"][0], b["boxes"][0]) >= 0.8


@needs_bfloat16
def test_bfloat16_training_keeps_float32_weights(tmp_path):
    from keras_cam import synthetic, training
    synthetic.write_dataset(str(tmp_path / "data"), {"train": 4}, size=32, seed=2)
    config = training.TrainConfig(data=str(tmp_path / "data" / "train"), classes=3, backbone="tiny",
                                  weights="none", image_size=32, epochs=1, batch_size=4, precision="bfloat16")
    run = training.make_run_dir(str(tmp_path / "experiments"))
    result = training.train(config, run, verbose=0)
    assert np.isfinite(result["history"]["loss"]).all()
    assert {w.dtype for w in result["cam_model"].get_weights()} == {np.dtype("float32")}
    assert json.loads(training.TrainConfig.from_json(config.to_json()).to_json())["precision"] == "bfloat16"
