"""evaluate: annotation readers (CSV, VOC XML, TFDS mock), the localize_classes signature,
figures worked out from the model's own boxes, calibration into a new SavedModel version,
and the command line.

Box convention: half-open pixel boxes [xmin, ymin, xmax, ymax]. The images are 64 px,
the model input size, so image pixels and map pixels are the same frame.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import CLASS_NAMES, IMAGE_SIZE

from keras_cam import (
    annotations,
    calibration,
    cli,
    evaluation,
    export,
    inference,
    objectness,
    synthetic,
)
from keras_cam import boxes as box_rule
from keras_cam import cam as cam_ops

TAU = box_rule.DEFAULT_TAU
ROOT = Path(__file__).resolve().parents[1]


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(annotations.BOX_COLUMNS)
        writer.writerows(rows)
    return str(path)


def _copy_model(exported, base):
    """A private copy ``base/1`` of the session export, so calibration may add versions."""
    shutil.copytree(exported, os.path.join(base, "1"))
    return str(base)


def _run_cli(capsys, *argv):
    code = cli.command_main("evaluate", [str(a) for a in argv], prog="evaluate.py")
    out, err = capsys.readouterr()
    return code, out, err


def _far_corner_box(box, size=IMAGE_SIZE, side=4):
    """A side x side box in the image corner farthest from ``box``'s centre."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = 0 if cx > size / 2 else size - side
    y0 = 0 if cy > size / 2 else size - side
    return [x0, y0, x0 + side, y0 + side]


@pytest.fixture(scope="module")
def loaded(exported):
    """The session export, loaded once (tests that change a model work on copies)."""
    return inference.load_saved_model(exported)


@pytest.fixture(scope="module")
def images(tmp_path_factory, cam_model):
    """Six 64 px synthetic images, the random model's predictions and its true-class maps.

    ``labels`` agree with the prediction for images 0-3 and not for 4 and 5; ``maps``
    are the Keras model's maps of those labels (``calibration``'s path, not the
    SavedModel's).
    """
    raw = tmp_path_factory.mktemp("synthetic")
    synthetic.write_dataset(str(raw), {"val": 2}, size=IMAGE_SIZE, seed=7)
    drawn = [str(p) for c in synthetic.CLASSES for p in sorted((raw / "val" / c).iterdir())]
    predicted = np.array([p for _, _, p, _ in calibration.localization_maps_for_files(cam_model, drawn)])
    labels = np.where(np.arange(6) < 4, predicted, (predicted + 1) % 3)
    root = tmp_path_factory.mktemp("labelled")  # DATA/val/<label>/<file>, as the CSV rows say
    paths = []
    for path, label in zip(drawn, labels):
        (root / "val" / CLASS_NAMES[label]).mkdir(parents=True, exist_ok=True)
        paths.append(shutil.copy(path, root / "val" / CLASS_NAMES[label]))
    paths = [str(p) for p in paths]
    maps = np.stack([m for _, m, _, _ in calibration.localization_maps_for_files(cam_model, paths, labels)])
    return {"root": root, "paths": paths, "predicted": predicted, "labels": labels, "maps": maps}


def test_library_maps_name_the_images_that_cannot_be_read_before_any_batch(cam_model, images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    paths = [*images["paths"], str(broken), str(tmp_path / "missing.png")]
    with pytest.raises(ValueError) as info:  # batches of 1: the good images come first, yet none is yielded
        next(calibration.localization_maps_for_files(cam_model, paths, batch_size=1))
    message = str(info.value)
    assert message.startswith("2 of 8 images cannot be used: ")
    assert f"{broken}: " in message and f"{tmp_path / 'missing.png'}: " in message
    assert not any(p in message for p in images["paths"])


@pytest.mark.parametrize("batch_size", [0, 2.7, True])
def test_library_batch_sizes_are_positive_integers(cam_model, loaded, images, batch_size):
    message = re.escape(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    with pytest.raises(ValueError, match=message):
        next(calibration.localization_maps_for_files(cam_model, images["paths"], batch_size=batch_size))
    with pytest.raises(ValueError, match=message):
        calibration.evaluate_maps(cam_model, images["paths"], images["labels"],
                                  _own_boxes(images, TAU), batch_size=batch_size)
    with pytest.raises(ValueError, match=message):
        evaluation.evaluate_saved_model(loaded, [], batch_size=batch_size)
    with pytest.raises(ValueError, match=message):
        objectness.fit_objectness(cam_model, images["paths"], images["labels"], batch_size=batch_size)


def _truth_csv(images, path, boxes):
    rows = [("val", CLASS_NAMES[label], os.path.basename(p), IMAGE_SIZE, IMAGE_SIZE, *b)
            for p, label, b in zip(images["paths"], images["labels"], boxes)]
    return _write_csv(path, rows)


def _own_boxes(images, tau):
    """The largest-region box of each true-class map at tau (OpenCV rule)."""
    return [box_rule.boxes_from_cam(m, tau)[0][0].tolist() for m in images["maps"]]


# ----------------------------------------------------------------------------- readers

def _voc_xml(filename, objects, width=64, height=64):
    body = "".join(
        f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, difficult in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{body}</annotation>")


def test_voc_folder_class_rule_difficult_and_one_based_corners(tmp_path):
    voc = tmp_path / "VOC2007"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    # dog 1..10 x 1..20 (area 200) and dog 20..30 (area 121); the difficult cat is larger.
    (voc / "Annotations" / "a.xml").write_text(_voc_xml("a.jpg", [
        ("dog", (1, 1, 10, 20), False), ("cat", (5, 5, 40, 40), True), ("dog", (20, 20, 30, 30), False),
        ("bird", (50, 50, 52, 52), False)]))
    (voc / "Annotations" / "b.xml").write_text(_voc_xml("b.jpg", [("cat", (1, 1, 64, 64), True)]))
    (voc / "Annotations" / "c.xml").write_text("<annotation><filename>c.jpg</file")
    (voc / "Annotations" / "d.xml").write_text(_voc_xml("d.jpg", [("dog", (0, 3, 9, 9), False)]))
    (voc / "ImageSets" / "Main" / "val.txt").write_text("a\nb\n")

    records, errors = annotations.voc_image_boxes(str(voc))
    # b has only a difficult object: left out; c is not XML; d has a 0 corner in 1-based counting.
    assert [os.path.basename(r.image) for r in records] == ["a.jpg"]
    assert sorted(os.path.basename(p) for p, _ in errors) == ["c.xml", "d.xml"]
    assert "below 1" in {os.path.basename(p): e for p, e in errors}["d.xml"]
    for path, reason in errors:  # the CLI prints "path: reason": the path once
        assert reason.startswith("not a valid VOC annotation (") and path not in reason
    with pytest.raises(ValueError, match=r"c\.xml: not a valid VOC annotation \("):  # on its own it names the file
        annotations.read_voc_xml(str(voc / "Annotations" / "c.xml"))
    (a,) = records
    assert a.class_name == "dog" and a.frame == (64, 64)
    assert a.image == os.path.join(str(voc), "JPEGImages", "a.jpg")
    # 1-based inclusive -> half-open: [xmin - 1, ymin - 1, xmax, ymax]
    np.testing.assert_array_equal(a.boxes, [[0, 0, 10, 20], [19, 19, 30, 30]])

    with_difficult, _ = annotations.voc_image_boxes(str(voc), split="val", include_difficult=True)
    assert [(r.class_name, r.boxes.tolist()) for r in with_difficult] == [
        ("cat", [[4, 4, 40, 40]]), ("cat", [[0, 0, 64, 64]])]
    with pytest.raises(FileNotFoundError, match="image set 'test'"):
        annotations.voc_image_boxes(str(voc), split="test")
    (voc / "ImageSets" / "Main" / "gone.txt").write_text("a\nzz\n")
    _, errors = annotations.voc_image_boxes(str(voc), split="gone")
    assert errors == [(str(voc / "Annotations" / "zz.xml"), "cannot read file (No such file or directory)")]


def test_image_class_takes_the_largest_object_first_on_ties():
    boxes = [[0, 0, 2, 2], [0, 0, 3, 3], [5, 5, 8, 8], [0, 0, 1, 1]]
    name, chosen = annotations.image_class(["a", "b", "c", "b"], boxes)
    assert name == "b" and chosen.tolist() == [[0, 0, 3, 3], [0, 0, 1, 1]]
    assert annotations.image_class(["a", "b"], [[0, 0, 2, 2], [4, 4, 6, 6]])[0] == "a"
    assert annotations.image_class(["a"], [[0, 0, 2, 2]], difficult=[True]) is None


def test_tfds_boxes_sort_corners_and_reorder():
    # TFDS order [ymin, xmin, ymax, xmax], here with both minima above the maxima.
    got = annotations.normalized_tfds_boxes([[0.6, 0.3, 0.1, 0.2], [0.1, 0.2, 0.5, 1.2]])
    np.testing.assert_allclose(got, [[0.2, 0.1, 0.3, 0.6], [0.2, 0.1, 1.0, 0.5]])


def test_tfds_says_before_a_download_and_names_the_dataset_when_it_fails(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def offline(self, *args, **kwargs):
        raise ConnectionError("Failed to establish a new connection")
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    told = []
    with pytest.raises(ValueError, match="'cars196' is not prepared in .* could not be downloaded: Failed to"):
        annotations.tfds_image_boxes("cars196", "test", data_dir=str(tmp_path), log=told.append)
    assert len(told) == 1 and "downloading and preparing" in told[0] and "tfds build cars196" in told[0]


@pytest.mark.parametrize("name, split", [("caltech_birds2011", "test"), ("cars196", "test"),
                                         ("voc/2007", "validation")])
def test_tfds_readers_on_mock_data(name, split):
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=4):
        records = list(annotations.tfds_image_boxes(name, split))
        features = tfds.builder(name).info.features
    assert records
    for r in records:
        assert r.frame == annotations.NORMALIZED_FRAME
        assert r.boxes.shape[1] == 4 and len(r.boxes) >= 1
        assert np.all((r.boxes >= 0) & (r.boxes <= 1))
        assert np.all(r.boxes[:, :2] <= r.boxes[:, 2:])
        assert r.image.startswith(f"{name}:{split}/")
        assert r.image_bytes.startswith(b"\x89PNG")
        if name == "voc/2007":
            assert r.class_name in features["objects"]["label"].names
        elif name == "cars196":
            assert len(r.boxes) == 1 and r.class_name in features["label"].names


def test_csv_rows_find_images_with_or_without_the_split_folder(tmp_path):
    (tmp_path / "val" / "a").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "val" / "a" / "x.png").write_bytes(b"1")
    (tmp_path / "b" / "y.png").write_bytes(b"1")
    path = _write_csv(tmp_path / "boxes.csv", [("val", "a", "x.png", 10, 20, 0, 0, 5, 5),
                                                ("val", "b", "y.png", 10, 20, 1, 1, 4, 4),
                                                ("test", "a", "z.png", 10, 20, 1, 1, 4, 4)])
    records = annotations.csv_image_boxes(path, str(tmp_path), split="val")
    assert [r.image for r in records] == [str(tmp_path / "val" / "a" / "x.png"), str(tmp_path / "b" / "y.png")]
    assert records[0].frame == (20, 10)
    with pytest.raises(ValueError, match="no rows with split 'train'; splits present: \\['test', 'val'\\]"):
        annotations.csv_image_boxes(path, str(tmp_path), split="train")
    # A missing image is named where the folder's layout puts it: <split>/ only when that folder exists.
    (test,) = annotations.csv_image_boxes(path, str(tmp_path), split="test")
    assert test.image == str(tmp_path / "a" / "z.png")
    missing = annotations.csv_image_boxes(_write_csv(tmp_path / "m.csv", [("val", "a", "w.png", 10, 20, 0, 0, 5, 5)]),
                                          str(tmp_path))
    assert missing[0].image == str(tmp_path / "val" / "a" / "w.png")


def test_boxes_csv_from_excel_byte_order_mark_and_semicolons(tmp_path):
    rows = [",".join(annotations.BOX_COLUMNS), "val,disk,x.png,8,8,0,0,4,4"]
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    truth = annotations.read_boxes_csv(str(tmp_path / "bom.csv"))
    assert list(truth) == [("val", "disk", "x.png")]
    assert truth["val", "disk", "x.png"]["boxes"].tolist() == [[0, 0, 4, 4]]
    (tmp_path / "semi.csv").write_text("\n".join(r.replace(",", ";") for r in rows) + "\n")
    with pytest.raises(ValueError, match="semi.csv: the header looks semicolon-separated .*; expected commas: split,"):
        annotations.read_boxes_csv(str(tmp_path / "semi.csv"))
    (tmp_path / "zero.csv").write_text(rows[0] + "\nval,disk,x.png,0,8,0,0,0,4\n")
    with pytest.raises(ValueError, match=r"zero.csv:2: the image's width and height must be positive. "
                                         r"Received: width=0, height=8"):
        annotations.read_boxes_csv(str(tmp_path / "zero.csv"))
    # Spaces after the commas and capitalized column names, as hand-made files have them.
    (tmp_path / "spaced.csv").write_text("Split, Class, Filename, Width, Height, XMin, YMin, XMax, YMax\n"
                                         "val, disk, x.png, 8, 8, 0, 0, 4, 4\n")
    spaced = annotations.read_boxes_csv(str(tmp_path / "spaced.csv"))
    assert list(spaced) == [("val", "disk", "x.png")]
    assert spaced["val", "disk", "x.png"]["boxes"].tolist() == [[0, 0, 4, 4]]
    (tmp_path / "latin1.csv").write_bytes(("\n".join(rows) + "\nval,dïsk,y.png,8,8,0,0,4,4\n").encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.csv: not UTF-8 text"):
        annotations.read_boxes_csv(str(tmp_path / "latin1.csv"))


@pytest.mark.parametrize("values, column", [
    ("8,8,inf,0,4,4", "xmin 'inf'"), ("8,8,0,0,1e10,4", "xmax '1e10'"), ("8,8,0,-3e9,4,4", "ymin '-3e9'"),
    ("99999999999,8,0,0,4,4", "width '99999999999'"), ("8,8,0,0,4,nan", "ymax 'nan'"),
])
def test_a_csv_coordinate_that_is_no_pixel_position_is_a_malformed_row(tmp_path, values, column):
    path = tmp_path / "big.csv"
    path.write_text(",".join(annotations.BOX_COLUMNS) + "\nval,disk,x.png,8,8,0,0,4,4\nval,disk,y.png," + values + "\n")
    with pytest.raises(ValueError) as info:
        annotations.read_boxes_csv(str(path))
    assert str(info.value).startswith(f"{path}:3: malformed row ") and column in str(info.value)


@pytest.mark.parametrize("width, height", [("inf", 64), ("1e400", 64), (64, "-inf")])
def test_a_voc_file_with_infinite_numbers_is_a_read_error(tmp_path, width, height):
    (tmp_path / "a.xml").write_text(_voc_xml("a.jpg", [("dog", (1, 1, 10, 20), False)]))
    (tmp_path / "b.xml").write_text(_voc_xml("b.jpg", [("dog", (1, 1, 4, 20), False)], width=width, height=height))
    records, errors = annotations.voc_image_boxes(str(tmp_path))
    assert [os.path.basename(r.image) for r in records] == ["a.jpg"]
    assert [(os.path.basename(p), e.split(" (")[0]) for p, e in errors] == [("b.xml", "not a valid VOC annotation")]


def test_images_list_matches_split_from_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the listed paths are relative
    (tmp_path / "data" / "train" / "a").mkdir(parents=True)
    (tmp_path / "data" / "train" / "a" / "w.png").write_bytes(b"1")  # there, but without a box
    truth = annotations.read_boxes_csv(_write_csv(tmp_path / "b.csv", [
        ("train", "a", "x.png", 8, 8, 0, 0, 4, 4), ("test", "a", "x.png", 8, 8, 1, 1, 5, 5),
        ("train", "a", "y.png", 8, 8, 2, 2, 6, 6)]))
    (tmp_path / "list.txt").write_text("data/train/a/x.png\ta\n\nelsewhere/a/y.png\ta\nother/a/x.png\ta\n"
                                       "data/train/a/w.png\ta\n")
    entries = annotations.read_images_list(str(tmp_path / "list.txt"))
    records, errors = annotations.images_list_boxes(entries, truth)
    assert [(r.image, r.boxes.tolist()) for r in records] == [("data/train/a/x.png", [[0, 0, 4, 4]]),
                                                              ("elsewhere/a/y.png", [[2, 2, 6, 6]])]
    assert [p for p, _ in errors] == ["other/a/x.png", "data/train/a/w.png"]
    assert "several splits ['test', 'train']" in errors[0][1] and "no box" in errors[1][1]
    records, errors = annotations.images_list_boxes(entries, truth, split="test")
    assert [r.boxes.tolist() for r in records] == [[[1, 1, 5, 5]], [[1, 1, 5, 5]]] and len(errors) == 2
    (tmp_path / "bad.txt").write_text("# a comment\nno tab here\n")
    with pytest.raises(ValueError, match="bad.txt:2: expected"):
        annotations.read_images_list(str(tmp_path / "bad.txt"))


def test_images_list_comments_case_and_missing_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"1")
    (tmp_path / "list.txt").write_text(f"# made by hand\n\n  # indented comment\n{tmp_path / 'a.png'}\tDISK\r\n"
                                       f"\t\n{tmp_path / 'nope.png'}\tdisk\n")
    entries = annotations.read_images_list(str(tmp_path / "list.txt"))
    assert entries == [(str(tmp_path / "a.png"), "DISK"), (str(tmp_path / "nope.png"), "disk")]
    truth = annotations.read_boxes_csv(_write_csv(tmp_path / "b.csv", [("val", "disk", "a.png", 8, 8, 0, 0, 4, 4)]))
    records, errors = annotations.images_list_boxes(entries, truth)
    # DISK matches the CSV's disk, as class names match the model's: ignoring case.
    assert [(r.class_name, r.boxes.tolist()) for r in records] == [("DISK", [[0, 0, 4, 4]])]
    assert errors == [(str(tmp_path / "nope.png"), "cannot read file (No such file or directory)")]
    # An exact spelling wins; two that differ only in case are ambiguous, not a guess.
    both = annotations.read_boxes_csv(_write_csv(tmp_path / "c.csv", [("val", "disk", "a.png", 8, 8, 0, 0, 4, 4),
                                                                       ("val", "Disk", "a.png", 8, 8, 1, 1, 4, 4)]))
    records, _ = annotations.images_list_boxes([(str(tmp_path / "a.png"), "Disk")], both)
    assert records[0].boxes.tolist() == [[1, 1, 4, 4]]
    _, errors = annotations.images_list_boxes([(str(tmp_path / "a.png"), "DISK")], both)
    assert "matches several classes of the boxes CSV ['Disk', 'disk']" in errors[0][1]
    # The split decides before the spelling: an exact match in another split does not hide a loose one.
    split = annotations.read_boxes_csv(_write_csv(tmp_path / "d.csv", [("train", "Disk", "a.png", 8, 8, 0, 0, 4, 4),
                                                                        ("test", "disk", "a.png", 8, 8, 2, 2, 4, 4)]))
    records, errors = annotations.images_list_boxes([(str(tmp_path / "a.png"), "Disk")], split, split="test")
    assert not errors and records[0].boxes.tolist() == [[2, 2, 4, 4]]


# ----------------------------------------------------------------------------- the signature

def test_localize_classes_gives_the_given_class_map_and_boxes(loaded, images):
    blobs = tf.constant([Path(p).read_bytes() for p in images["paths"]])
    labels = images["labels"].astype(np.int32)
    default = loaded.signatures["serving_default"](image_bytes=blobs)
    own = loaded.signatures["localize_classes"](image_bytes=blobs, class_ids=default["class_ids"])
    for key in default:  # the predicted classes give exactly serving_default's answer
        np.testing.assert_array_equal(own[key].numpy(), default[key].numpy(), err_msg=key)
    given = loaded.signatures["localize_classes"](image_bytes=blobs, class_ids=tf.constant(labels))
    np.testing.assert_array_equal(given["class_ids"], labels)
    assert [n.decode() for n in given["class_names"].numpy()] == [CLASS_NAMES[i] for i in labels]
    probabilities = given["probabilities"].numpy()
    np.testing.assert_allclose(given["scores"], probabilities[np.arange(6), labels])
    np.testing.assert_array_equal(probabilities.argmax(-1), images["predicted"])
    # The served map, upsampled and normalized, is the Keras model's map of the given class.
    maps = cam_ops.normalize_cams(cam_ops.upsample_cams(given["cams"], (IMAGE_SIZE, IMAGE_SIZE))).numpy()
    np.testing.assert_allclose(maps, images["maps"], atol=1e-5)
    for i in (4, 5):  # wrong labels: another class's map than the default signature's
        assert not np.allclose(given["cams"][i], default["cams"][i])
        served = box_rule.normalized_to_pixel(given["boxes"][i, :1].numpy(), IMAGE_SIZE, IMAGE_SIZE)[0]
        assert box_rule.iou(served, box_rule.boxes_from_cam(images["maps"][i], TAU)[0][0]) >= 0.9


@pytest.mark.parametrize("ids, message", [([0, 3], "below the number of classes"), ([-1, 0], "must be >= 0"),
                                          ([0], "one class_id per image")])
def test_localize_classes_rejects_bad_class_ids(loaded, images, ids, message):
    blobs = tf.constant([Path(p).read_bytes() for p in images["paths"][:2]])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures["localize_classes"](image_bytes=blobs, class_ids=tf.constant(ids, tf.int32))


# ----------------------------------------------------------------------------- figures

def test_figures_worked_out_from_the_models_own_boxes(loaded, cam_model, images, tmp_path):
    """Truth = the model's own box (a hit) for images 0, 1, 2, 4, a far 4x4 corner (a miss) for 3, 5.

    Labels agree with the prediction for 0-3 only. So: Top-1 Cls 4/6, GT-known Loc 4/6
    (0, 1, 2, 4), Top-1 Loc 3/6 (0, 1, 2), BoxAcc 4/6 at every delta.
    """
    own = _own_boxes(images, TAU)
    boxes = [own[i] if i in (0, 1, 2, 4) else _far_corner_box(own[i]) for i in range(6)]
    for i in (3, 5):  # a miss for every box the rule finds, at every delta
        every, _ = box_rule.boxes_from_cam(images["maps"][i], TAU, all_regions=True)
        assert max(box_rule.iou(b, boxes[i]) for b in every) < 0.3
    csv_path = _truth_csv(images, tmp_path / "boxes.csv", boxes)
    records = annotations.csv_image_boxes(csv_path, str(images["root"]), split="val")
    calls = []
    report = evaluation.evaluate_saved_model(loaded, records, batch_size=4,
                                             progress=lambda done, failed: calls.append((done, failed)))
    assert calls == [(4, 0), (6, 0)]
    assert report["num_images"] == 6 and report["errors"] == []
    at = report["at_model_tau"]
    assert at["tau"] == pytest.approx(TAU)
    assert (at["top1_cls"], at["gt_known_loc"], at["top1_loc"]) == (4 / 6, 4 / 6, 3 / 6)
    assert at["box_acc"] == {"0.3": 4 / 6, "0.5": 4 / 6, "0.7": 4 / 6} and at["mean_box_acc"] == pytest.approx(4 / 6)
    assert [r["iou"] for r in report["images"]] == pytest.approx([1, 1, 1, 0, 1, 0], abs=0.3)
    # The curves agree with the Keras model's path (calibration.evaluate_maps).
    expected = calibration.evaluate_maps(cam_model, images["paths"], images["labels"],
                                         [np.array([b]) for b in boxes]).result()
    curves = report["curves"]
    np.testing.assert_array_equal(curves["thresholds"], expected["thresholds"])
    for mode in ("largest", "all"):
        for delta in (0.3, 0.5, 0.7):
            np.testing.assert_array_equal(curves[mode][str(delta)], expected["box_acc"][mode][delta])
    np.testing.assert_array_equal(curves["top1_loc"], expected["top1_loc"])
    assert curves["gt_known_loc"][round(TAU * 100)] == 4 / 6
    assert report["max_box_acc"] == expected["max_box_acc"] and report["max_box_acc_v2"] == expected["max_box_acc_v2"]
    assert report["calibrated_tau"] == calibration.choose_tau(expected)
    json.dumps(report)  # serializable as it is


def test_figures_by_true_boxes_per_image_worked_out_from_the_models_own_boxes(loaded, images, tmp_path):
    """As above, and images 1 and 3 get a second true box, a far 4x4 corner that no box finds.

    One true box: images 0, 2, 4 (hits) and 5 (a miss): Loc 3/4, BoxAcc 3/4, 3 of 4 objects
    found. Several: image 1 (its own box: a hit, 1 of 2 objects) and 3 (0 of 2): Loc 1/2,
    BoxAcc 1/2, 1 of 4 objects found.
    """
    own = _own_boxes(images, TAU)
    first = [own[i] if i in (0, 1, 2, 4) else _far_corner_box(own[i]) for i in range(6)]
    rows = [("val", CLASS_NAMES[images["labels"][i]], os.path.basename(images["paths"][i]), IMAGE_SIZE, IMAGE_SIZE,
             *first[i]) for i in range(6)]
    rows += [("val", CLASS_NAMES[images["labels"][i]], os.path.basename(images["paths"][i]), IMAGE_SIZE, IMAGE_SIZE,
              *_far_corner_box(own[i])) for i in (1,)]
    rows += [("val", CLASS_NAMES[images["labels"][3]], os.path.basename(images["paths"][3]), IMAGE_SIZE, IMAGE_SIZE,
              *_far_corner_box(own[3], side=6))]
    for i, extra in ((1, _far_corner_box(own[1])), (3, _far_corner_box(own[3], side=6)), (3, first[3]), (5, first[5])):
        every, _ = box_rule.boxes_from_cam(images["maps"][i], TAU, all_regions=True)
        assert max(box_rule.iou(b, extra) for b in every) < 0.3  # no box finds it, at any delta
    records = annotations.csv_image_boxes(_write_csv(tmp_path / "b.csv", rows), str(images["root"]), split="val")
    report = evaluation.evaluate_saved_model(loaded, records)
    groups = report["at_model_tau"]["by_true_boxes"]
    assert groups == {
        "one": {"num_images": 4, "gt_known_loc": 3 / 4, "mean_box_acc": 3 / 4, "true_boxes": 4, "objects_found": 3,
                "object_recall": 3 / 4},
        "several": {"num_images": 2, "gt_known_loc": 1 / 2, "mean_box_acc": 1 / 2, "true_boxes": 4,
                    "objects_found": 1, "object_recall": 1 / 4}}
    assert [r["num_true_boxes"] for r in report["images"]] == [1, 2, 1, 2, 1, 1]
    text = evaluation.format_report(report)
    assert "    4 images with one true box: GT-known Loc 0.750, mean BoxAcc 0.750, objects found 3 of 4" in text
    assert "    2 images with several true boxes: GT-known Loc 0.500, mean BoxAcc 0.500, objects found 1 of 4" in text


def test_voc_xml_gives_the_same_figures_as_the_csv(loaded, images, tmp_path):
    """The same truth as 1-based inclusive VOC corners ([x0 + 1, y0 + 1, x1, y1]) scores the same."""
    boxes = _own_boxes(images, 0.5)
    csv_path = _truth_csv(images, tmp_path / "boxes.csv", boxes)
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    for path, label, b in zip(images["paths"], images["labels"], boxes):
        stem = os.path.splitext(os.path.basename(path))[0]
        objects = [(CLASS_NAMES[label], (b[0] + 1, b[1] + 1, b[2], b[3]), False)]
        (voc / "Annotations" / f"{stem}.xml").write_text(_voc_xml(os.path.basename(path), objects))
    from_csv = evaluation.evaluate_saved_model(
        loaded, annotations.csv_image_boxes(csv_path, str(images["root"])))
    (tmp_path / "flat").mkdir()
    for path in images["paths"]:
        shutil.copy(path, tmp_path / "flat")
    records, errors = annotations.voc_image_boxes(str(voc), images_dir=str(tmp_path / "flat"))
    assert errors == []
    from_voc = evaluation.evaluate_saved_model(loaded, records)
    assert from_voc["num_images"] == 6
    for key in ("at_model_tau", "curves", "max_box_acc_v2", "calibrated_tau"):
        assert from_voc[key] == from_csv[key], key


def test_bad_images_are_reported_and_skipped(loaded, images, tmp_path):
    boxes = _own_boxes(images, TAU)
    rows = [("val", CLASS_NAMES[label], os.path.basename(p), IMAGE_SIZE, IMAGE_SIZE, *b)
            for p, label, b in zip(images["paths"], images["labels"], boxes)]
    data = tmp_path / "data"
    shutil.copytree(images["root"] / "val", data / "val")
    some_class = rows[0][1]
    (data / "val" / some_class / "fake.png").write_text("<html>not an image</html>")
    for name in ("wide.png", "flat.png", "swapped.png", "half_flat.png"):
        shutil.copy(images["paths"][0], data / "val" / some_class / name)
    (data / "val" / "zebra").mkdir()
    shutil.copy(images["paths"][0], data / "val" / "zebra")
    rows += [("val", some_class, "fake.png", 64, 64, 0, 0, 8, 8),
             ("val", some_class, "missing.png", 64, 64, 0, 0, 8, 8),
             ("val", "zebra", rows[0][2], 64, 64, 0, 0, 8, 8),
             ("val", "zebra", "ghost.png", 64, 64, 0, 0, 8, 8),   # no file either: the class is named
             ("val", some_class, "wide.png", 32, 64, 0, 0, 8, 8),   # annotated as 32 wide: another aspect
             ("val", some_class, "flat.png", 64, 64, 5, 0, 5, 8),    # its only box has no area
             ("val", some_class, "half_flat.png", 64, 64, 5, 0, 5, 8),  # no area, beside a box that has:
             ("val", some_class, "half_flat.png", 64, 64, 0, 0, 8, 8),  # scored on that one
             ("val", some_class, "swapped.png", 64, 64, 8, 0, 5, 8)]
    records = annotations.csv_image_boxes(_write_csv(tmp_path / "b.csv", rows), str(data))
    report = evaluation.evaluate_saved_model(loaded, records, batch_size=3)
    assert report["num_images"] == 7 and report["num_failed"] == 7
    assert "half_flat.png" not in str(report["errors"])
    errors = {os.path.basename(e["image"]) + ":" + e["error"][:30] for e in report["errors"]}
    assert any(e.startswith("fake.png:not a readable image") for e in errors)
    assert any(e.startswith("missing.png:cannot read file") for e in errors)
    assert "class 'zebra' is not one of the model's classes (disk, square, triangle)" in str(report["errors"])
    assert any(e.startswith("ghost.png:class 'zebra' is not") for e in errors)
    assert "the boxes are for a 32x64 image but the image is 64x64" in str(report["errors"])
    by_file = {os.path.basename(e["image"]): e["error"] for e in report["errors"]}
    assert by_file["flat.png"] == ("every ground-truth box has no area (xmin == xmax or ymin == ymax). "
                                   "Received: [[5.0, 0.0, 5.0, 8.0]]")
    assert by_file["swapped.png"].startswith("ground-truth boxes[0] needs xmin <= xmax")


def test_an_export_without_localize_classes_is_refused(loaded):
    old = types.SimpleNamespace(signatures={k: loaded.signatures[k] for k in ("serving_default", "predict_images")})
    with pytest.raises(inference.NotASavedModelError, match="no 'localize_classes' signature"):
        evaluation.evaluate_saved_model(old, [])


# ----------------------------------------------------------------------------- calibration

def test_calibrate_for_loc_takes_max_box_acc_tau_and_says_so(exported, images, tmp_path, capsys):
    boxes = _own_boxes(images, 0.75)
    csv_path = _truth_csv(images, tmp_path / "boxes.csv", boxes)
    runs = {}
    for criterion in ("loc", "box_acc"):
        code, out, err = _run_cli(capsys, "--saved_model", exported, "--data", images["root"], "--boxes", csv_path,
                                  "--calibrate-for", criterion, "--json", "--quiet")
        assert code == 0, err
        runs[criterion] = json.loads(out)
    loc, box_acc = runs["loc"], runs["box_acc"]
    assert loc["calibration_criterion"] == "loc" and loc["calibrated_tau"] == loc["max_box_acc_tau"]
    assert loc["calibrated_tau"] != box_acc["calibrated_tau"]  # else the CLI could ignore the criterion
    curve = box_acc["curves"]["mean_box_acc"]
    assert box_acc["calibrated_tau"] == box_acc["curves"]["thresholds"][int(np.argmax(curve))]
    code, out, _ = _run_cli(capsys, "--saved_model", exported, "--data", images["root"], "--boxes", csv_path,
                            "--calibrate-for", "loc", "--quiet")
    assert code == 0 and re.search(r"calibrated tau +[0-9.]+ +best GT-known Loc on these images", out)
    code, out, _ = _run_cli(capsys, "--saved_model", exported, "--data", images["root"], "--boxes", csv_path,
                            "--quiet")
    assert code == 0 and re.search(r"calibrated tau +[0-9.]+ +best mean BoxAcc on these images", out)
    with pytest.raises(SystemExit) as exit_info:
        _run_cli(capsys, "--saved_model", exported, "--data", images["root"], "--boxes", csv_path,
                 "--calibrate-for", "iou")
    assert exit_info.value.code == 2 and "invalid choice: 'iou'" in capsys.readouterr().err


def test_calibrate_on_val_images_list_writes_version_2_that_infer_honours(exported, loaded, images, tmp_path,
                                                                         capsys):
    """Truth = the model's own boxes at tau 0.75, labels = predictions; one command calibrates.

    The random model's maps are broad: at tau 0.2 their box is most of the image, at 0.75
    a small part, so the calibrated model's boxes differ visibly from version 1's.
    """
    keep = slice(0, 4)  # labels = predictions: the true-class maps are the ones infer.py uses
    paths, labels = images["paths"][keep], images["labels"][keep]
    boxes = _own_boxes(images, 0.75)[keep]
    csv_path = _write_csv(tmp_path / "boxes.csv", [("train", CLASS_NAMES[l], os.path.basename(p), 64, 64, *b)
                                                   for p, l, b in zip(paths, labels, boxes)])
    val_list = tmp_path / "val_images.txt"  # as train.py writes it
    val_list.write_text("".join(f"{p}\t{CLASS_NAMES[l]}\n" for p, l in zip(paths, labels)))
    base = _copy_model(exported, tmp_path / "saved_models" / "tiny")
    code, out, err = _run_cli(capsys, "--saved_model", base, "--images-list", val_list, "--boxes", csv_path,
                              "--calibrate", "--json", "--plot", tmp_path / "plots" / "box_acc.png")
    assert code == 0, err
    report = json.loads(out)
    tau = report["calibrated_tau"]
    assert report["num_images"] == 4
    # The default criterion: the first tau with the best mean BoxAcc (all boxes, IoU 0.3/0.5/0.7).
    mean_box_acc = report["curves"]["mean_box_acc"]
    assert report["calibration_criterion"] == "box_acc" and max(mean_box_acc) == 1.0
    assert tau == report["curves"]["thresholds"][int(np.argmax(mean_box_acc))]
    assert tau != pytest.approx(TAU)  # else this test could not tell the versions apart
    assert report["calibrated_saved_model"] == os.path.join(base, "2") and report["calibrated_version_written"]
    assert sorted(os.listdir(base)) == ["1", "2"]  # no temporary folder left
    assert (tmp_path / "plots" / "box_acc.png").read_bytes().startswith(b"\x89PNG")

    v2 = inference.load_saved_model(os.path.join(base, "2"))
    assert set(v2.signatures) == set(export.SIGNATURES)
    assert evaluation.model_metadata(v2) == {**evaluation.model_metadata(loaded), "tau": pytest.approx(tau)}
    assert evaluation.model_metadata(loaded)["tau"] == pytest.approx(TAU)  # version 1 is unchanged

    # infer.py on the base folder takes version 2 and lists the boxes of the new tau.
    image_args = [a for p in paths for a in ("--image", p)]
    assert cli.command_main("infer", ["--saved_model", base, *image_args, "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    changed = 0
    for record, m in zip(records, images["maps"][keep]):
        new, _ = box_rule.boxes_from_cam(m, tau, all_regions=True)
        old, _ = box_rule.boxes_from_cam(m, TAU, all_regions=True)
        assert box_rule.iou(record["boxes"][0], new[0]) >= 0.9
        changed += box_rule.iou(new[0], old[0]) < 0.9
    assert changed  # the new tau gives other boxes than 0.2, so the check above can fail

    # The text report says where the new version went (on the base folder, as the README's command),
    # and its title names the images' source (not the model), as without --calibrate.
    other = _copy_model(exported, tmp_path / "saved_models" / "other")
    code, out, err = _run_cli(capsys, "--saved_model", other, "--images-list", val_list, "--boxes", csv_path,
                              "--calibrate")
    assert code == 0, err
    assert out.startswith(f"4 images of {val_list}"), out.splitlines()[0]
    assert f"Calibrated SavedModel (tau {tau:.2f}): {os.path.join(other, '2')}" in out
    assert "no new version written" not in out and sorted(os.listdir(other)) == ["1", "2"]

    # Calibrating again on the same images finds the tau version 2 carries: no duplicate version 3.
    code, out, err = _run_cli(capsys, "--saved_model", base, "--images-list", val_list, "--boxes", csv_path,
                              "--calibrate")
    assert code == 0, err
    assert f"{os.path.join(base, '2')} carries the calibrated tau {tau:.2f} already: no new version written" in out
    assert sorted(os.listdir(base)) == ["1", "2"]

    # An existing version is never overwritten, and a failed write leaves the loaded tau alone.
    with pytest.raises(FileExistsError):
        export.export_with_tau(v2, 0.3, os.path.join(base, "2"))
    with pytest.raises(ValueError, match="tau must be in"):
        export.export_with_tau(v2, 1.0, os.path.join(base, "3"))
    assert evaluation.model_metadata(v2)["tau"] == pytest.approx(tau)
    assert sorted(os.listdir(base)) == ["1", "2"]


def test_calibration_needs_a_numbered_version_folder(exported, loaded, tmp_path):
    plain = tmp_path / "model"
    shutil.copytree(exported, plain)
    with pytest.raises(ValueError, match="numbered folder"):
        evaluation.save_calibrated_version(loaded, str(plain), 0.3)


def test_cli_calibrate_outside_a_numbered_folder_is_refused_before_evaluating(exported, images, tmp_path, capsys):
    plain = tmp_path / "model"
    shutil.copytree(exported, plain)
    csv_path = _truth_csv(images, tmp_path / "boxes.csv", _own_boxes(images, TAU))
    code, out, err = _run_cli(capsys, "--saved_model", plain, "--data", images["root"], "--boxes", csv_path,
                              "--calibrate")
    assert code == 2 and out == ""  # no report: nothing was evaluated
    assert err.strip().splitlines() == [
        f"evaluate.py: error: --calibrate: Calibration writes the next version beside the SavedModel, which must be "
        f"in a numbered folder such as saved_models/NAME/1. Received: {str(plain)!r}"]


# ----------------------------------------------------------------------------- command line

def test_cli_table_and_exit_status(exported, images, tmp_path, capsys):
    boxes = _own_boxes(images, TAU)
    csv_path = _truth_csv(images, tmp_path / "boxes.csv", boxes)
    code, out, err = _run_cli(capsys, "--saved_model", exported, "--data", images["root"], "--boxes", csv_path,
                              "--split", "val")
    assert code == 0, err
    assert "6 images of" in out and "GT-known Loc (first box, IoU >= 0.5)" in out and "MaxBoxAccV2" in out
    with open(csv_path, "a") as f:
        f.write("val,disk,missing.png,64,64,0,0,8,8\n")
    code, out, err = _run_cli(capsys, "--saved_model", exported, "--data", images["root"], "--boxes", csv_path)
    assert code == 1
    assert "6 images of" in out and "(1 failed, not counted)" in out
    missing = images["root"] / "val" / "disk" / "missing.png"
    assert err.strip().splitlines() == [f"evaluate.py: error: {missing}: cannot read file (No such file or directory)"]


def test_cli_progress_counts_the_images_that_failed_too(exported, images, tmp_path, capsys, monkeypatch):
    from keras_cam import progress
    bars = []

    class Recorded(progress.Progress):
        def close(self):
            bars.append((self.done, self.total))
            super().close()

    monkeypatch.setattr(progress, "Progress", Recorded)
    csv_path = _truth_csv(images, tmp_path / "boxes.csv", _own_boxes(images, TAU))
    with open(csv_path, "a") as f:
        f.write("val,disk,missing.png,64,64,0,0,8,8\n")
    code, out, _ = _run_cli(capsys, "--saved_model", exported, "--data", images["root"], "--boxes", csv_path)
    assert code == 1 and "(1 failed, not counted)" in out
    assert bars == [(7, 7)]  # the bar ends at the total, not one short


def test_cli_names_why_no_image_could_be_scored(exported, images, tmp_path, capsys):
    csv_path = _truth_csv(images, tmp_path / "boxes.csv", _own_boxes(images, TAU))
    listed = tmp_path / "list.txt"
    listed.write_text(f"{images['paths'][0]}\tno_such_class\n{tmp_path / 'gone.png'}\tdisk\n")
    code, out, err = _run_cli(capsys, "--saved_model", exported, "--images-list", listed, "--boxes", csv_path)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 3
    name = os.path.basename(images["paths"][0])
    assert lines[0] == f"evaluate.py: error: {images['paths'][0]}: no box for class 'no_such_class', file {name!r}"
    assert lines[1] == f"evaluate.py: error: {tmp_path / 'gone.png'}: cannot read file (No such file or directory)"
    assert lines[-1].startswith("evaluate.py: error: No image could be evaluated (2 failed); first error: ")
    listed.write_text("# nothing listed\n")
    code, _, err = _run_cli(capsys, "--saved_model", exported, "--images-list", listed, "--boxes", csv_path)
    assert code == 2 and err.strip() == f"evaluate.py: error: No image to evaluate: {listed} lists none"


def test_csv_of_several_splits_needs_the_split_for_a_flat_folder(tmp_path):
    for split in ("train", "test"):  # the same file name in both splits, as generated data sets have
        (tmp_path / split / "a").mkdir(parents=True)
        (tmp_path / split / "a" / "x.png").write_bytes(b"1")
    path = _write_csv(tmp_path / "boxes.csv", [("train", "a", "x.png", 10, 20, 0, 0, 5, 5),
                                                ("test", "a", "x.png", 10, 20, 1, 1, 4, 4)])
    # Rows of the other split would be scored against the same-named image: refused.
    with pytest.raises(ValueError, match=r"rows of several splits \['test', 'train'\], and .*test has no folder "
                                         r"for \['test', 'train'\]: choose the split .*\(--split NAME\)"):
        annotations.csv_image_boxes(path, str(tmp_path / "test"))
    (test,) = annotations.csv_image_boxes(path, str(tmp_path / "test"), split="test")
    assert test.image == str(tmp_path / "test" / "a" / "x.png") and test.boxes.tolist() == [[1, 1, 4, 4]]
    # With a <split>/ folder for each split, every row finds its own image.
    records = annotations.csv_image_boxes(path, str(tmp_path))
    assert [r.image for r in records] == [str(tmp_path / s / "a" / "x.png") for s in ("train", "test")]


def test_cli_tfds_mock_end_to_end(exported, tmp_path, capsys):
    """voc/2007 through the command line on mock data, with a model named after its classes."""
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=3):
        names = sorted({r.class_name for r in annotations.tfds_image_boxes("voc/2007", "test")})
        names = (names + ["spare1", "spare2"])[:3] if len(names) < 3 else names
        if len(names) > 3:
            pytest.skip(f"mock data gave {len(names)} image classes; the test model has 3")
        loaded = tf.saved_model.load(exported)
        loaded.class_names.assign(names)
        model = str(tmp_path / "voc_model" / "1")
        export.export_with_tau(loaded, TAU, model)
        code, out, err = _run_cli(capsys, "--saved_model", model, "--tfds", "voc/2007", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["num_images"] == 3 and report["errors"] == []
    assert report["model"]["class_names"] == names
    assert all(r["image"].startswith("voc/2007:test/") for r in report["images"])


@pytest.mark.parametrize("argv, message", [
    (["--saved_model", "m"], "give exactly one of --boxes CSV, --voc DIR or --tfds"),
    (["--saved_model", "m", "--boxes", "b.csv", "--voc", "v"], "received --boxes and --voc"),
    (["--saved_model", "m", "--boxes", "b.csv"], "--boxes needs --data DIR"),
    (["--saved_model", "m", "--voc", "v", "--images-list", "l.txt"], "--images-list needs --boxes"),
    (["--saved_model", "m", "--tfds", "cars196", "--split", "train"], "takes its split as NAME:SPLIT"),
    (["--saved_model", "/nonexistent/model", "--boxes", "CSV", "--data", "DATA"], "Not a SavedModel"),
    (["--saved_model", "EXPORTED", "--boxes", "CSV", "--data", "/nonexistent/data"],
     "--data '/nonexistent/data': folder not found"),
    (["--saved_model", "EXPORTED", "--boxes", "CSV", "--data", "CSV"], "--data 'CSV_PATH': a file, not a folder"),
    (["--saved_model", "EXPORTED", "--boxes", "/nonexistent/b.csv", "--data", "DATA"],
     "--boxes '/nonexistent/b.csv': file not found"),
    (["--saved_model", "EXPORTED", "--boxes", "DATA", "--data", "DATA"], "--boxes 'DATA_PATH': a folder, not a file"),
    (["--saved_model", "EXPORTED", "--boxes", "CSV", "--images-list", "DATA"],
     "--images-list 'DATA_PATH': a folder, not a file"),
    (["--saved_model", "EXPORTED", "--voc", "/nonexistent/voc"], "--voc '/nonexistent/voc': folder not found"),
    (["--saved_model", "EXPORTED", "--tfds", "no_such_dataset_xyz"], "Unknown TFDS dataset 'no_such_dataset_xyz'"),
    (["--saved_model", "EXPORTED", "--boxes", "CSV", "--data", "DATA", "--split", "nope"], "no rows with split 'nope'"),
    (["--saved_model", "/nonexistent/model", "--boxes", "CSV", "--data", "DATA", "--plot", "TMP"],
     "is a folder; give a file name such as"),
    (["--saved_model", "/nonexistent/model", "--boxes", "CSV", "--data", "DATA", "--plot", "p.jpg"],
     "--plot 'p.jpg': the plot is written as PNG; give a file name ending in .png"),
    (["--saved_model", "/nonexistent/model", "--boxes", "CSV", "--data", "DATA", "--plot", "BELOW_CSV"],
     "cannot make its folder"),  # below a file: refused before the model is even looked at
])
def test_cli_user_mistakes_are_one_line(exported, images, tmp_path, capsys, argv, message):
    csv_path = _truth_csv(images, tmp_path / "boxes.csv", _own_boxes(images, TAU))
    swap = {"EXPORTED": exported, "CSV": csv_path, "DATA": str(images["root"]), "TMP": str(tmp_path),
            "BELOW_CSV": os.path.join(str(csv_path), "x.png")}
    code, _, err = _run_cli(capsys, *[swap.get(a, a) for a in argv])
    message = message.replace("CSV_PATH", str(csv_path)).replace("DATA_PATH", str(images["root"]))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_cli_names_the_first_failures_and_counts_the_rest(exported, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "zebra").mkdir(parents=True)
    rows = [("val", "zebra", f"z{i:02d}.png", 64, 64, 0, 0, 8, 8) for i in range(25)]
    code, _, err = _run_cli(capsys, "--saved_model", exported, "--data", data,
                            "--boxes", _write_csv(tmp_path / "b.csv", rows))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 22, err
    assert all("class 'zebra' is not one of the model's classes" in line for line in lines[:20])
    assert lines[20] == ("evaluate.py: error: ... and 5 more images that could not be evaluated (the --json report "
                         "lists every one in its errors)")
    assert lines[21].startswith("evaluate.py: error: No image could be evaluated (25 failed)")
    # --json still gives the report a script reads, with all 25 failures.
    code, out, err = _run_cli(capsys, "--saved_model", exported, "--data", data, "--boxes", tmp_path / "b.csv",
                              "--json")
    report = json.loads(out)
    assert code == 2 and report["num_images"] == 0 and report["num_failed"] == 25
    assert [os.path.basename(e["image"]) for e in report["errors"]] == [f"z{i:02d}.png" for i in range(25)]
    lines = err.strip().splitlines()
    assert lines[20] == ("evaluate.py: error: ... and 5 more images that could not be evaluated (the --json report "
                         "lists every one in its errors)")


def test_cli_plot_into_a_folder_is_refused_before_calibrating(exported, images, tmp_path, capsys):
    csv_path = _truth_csv(images, tmp_path / "boxes.csv", _own_boxes(images, TAU))
    base = _copy_model(exported, tmp_path / "m")
    (tmp_path / "plots").mkdir()
    code, out, err = _run_cli(capsys, "--saved_model", base, "--data", images["root"], "--boxes", csv_path,
                              "--calibrate", "--plot", tmp_path / "plots")
    assert code == 2 and out == "" and "is a folder" in err and "Traceback" not in err
    assert os.listdir(base) == ["1"] and os.listdir(tmp_path / "plots") == []


def test_cli_refuses_to_calibrate_when_nothing_localizes(exported, images, tmp_path, capsys):
    boxes = [_far_corner_box(b) for b in _own_boxes(images, TAU)]
    for i, b in enumerate(boxes):  # precondition: no tau finds the corner box with IoU >= 0.5
        assert all(box_rule.iou(box_rule.boxes_from_cam(images["maps"][i], t / 100)[0][0], b) < 0.5
                   for t in range(100) if images["maps"][i].max() > t / 100)
    csv_path = _truth_csv(images, tmp_path / "boxes.csv", boxes)
    base = _copy_model(exported, tmp_path / "m")
    code, out, err = _run_cli(capsys, "--saved_model", base, "--data", images["root"], "--boxes", csv_path,
                              "--calibrate")
    assert code == 2 and "calibrated tau" in out and "none" in out
    assert "--calibrate: Nothing to calibrate" in err
    assert os.listdir(base) == ["1"]


def test_evaluate_script_help():
    out = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--help"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "--calibrate" in out and "--images-list" in out and "(default: 16)" in out
