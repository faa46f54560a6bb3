"""Nothing breaks, nothing is lost: bad images at every entry point, user mistakes, faults.

The table ``CASES`` lists each kind of image input with its defined outcome, and every
case is tried where images enter keras-cam:
    ``decode``   ``data.decode_image``, the one decoding rule;
    ``train``    what train.py does with a folder: ``find_unreadable`` decides what is
                 skipped (and listed), the rest goes through the training pipeline;
    ``infer``    infer.py's ``localize_files``: one record per image, an error record
                 for a bad one, the others answered;
    ``serving``  the exported ``serving_default``: an error for the bad request, and
                 the next request is answered.
Then: file-system oddities, command-line mistakes (one line, no stack trace), and
faults (full disk, interrupted writes, concurrent runs, unsafe model files).
"""

import ast
import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from bad_images import (animated, cv2_encode, declaring, exif_rotated_jpeg, pil_encode, png_declaring, rgb)
from conftest import CLASS_NAMES, IMAGE_SIZE
from keras_cam import cli, data, inference, storage, synthetic, training
from keras_cam.model import load_cam_model

IMAGE = rgb(20, 30)
GREY = IMAGE[..., 1]
RGBA = np.dstack([IMAGE, np.linspace(0, 255, IMAGE.size // 3).reshape(IMAGE.shape[:2]).astype(np.uint8)])
JPEG = cv2_encode(IMAGE, ".jpg")
NOT_AN_IMAGE = "Not a JPEG, PNG, GIF, BMP or WebP image"


def ok(reference, atol=0):
    """Decodes to ``reference`` (uint8 (H, W, 3)) within ``atol`` per pixel."""
    return {"reference": np.asarray(reference), "atol": atol}


def error(reason, **per_entry):
    """Refused everywhere with ``reason`` (or the entry's own reason) in the message."""
    return {"reason": reason, **per_entry}


CASES = {  # name: (file extension, encoded bytes, outcome)
    "truncated_jpeg": (".jpg", JPEG[:len(JPEG) // 2], error("Invalid JPEG data")),
    "zero_bytes": (".jpg", b"", error(NOT_AN_IMAGE, train="empty file", infer="empty file")),
    "html_named_jpg": (".jpg", b"<!DOCTYPE html><html><body>Not found</body></html>", error(NOT_AN_IMAGE)),
    "text_named_jpg": (".jpg", b"just some text\n", error(NOT_AN_IMAGE)),
    "png_with_alpha": (".png", cv2_encode(RGBA, ".png"), ok(IMAGE)),  # alpha dropped, not composited
    "png_16_bit": (".png", cv2_encode(IMAGE.astype(np.uint16) * 257, ".png"), ok(IMAGE)),
    "greyscale_png": (".png", cv2_encode(GREY, ".png"), ok(np.dstack([GREY] * 3))),
    "greyscale_jpeg": (".jpg", cv2_encode(GREY, ".jpg"), ok(np.dstack([GREY] * 3), atol=12)),
    "cmyk_jpeg": (".jpg", pil_encode(Image.fromarray(IMAGE).convert("CMYK"), "JPEG", quality=95), ok(IMAGE, 16)),
    "palette_gif": (".gif", pil_encode(Image.fromarray(IMAGE).convert("P"), "GIF"),
                    ok(np.asarray(Image.fromarray(IMAGE).convert("P").convert("RGB")))),
    "animated_gif": (".gif", animated("GIF", [IMAGE, IMAGE[::-1]]),  # the first frame
                     ok(np.asarray(Image.fromarray(IMAGE).convert("P").convert("RGB")), atol=80)),
    "bmp": (".bmp", cv2_encode(IMAGE, ".bmp"), ok(IMAGE)),
    "webp": (".webp", pil_encode(IMAGE, "WEBP", lossless=True), ok(IMAGE)),
    "webp_with_alpha": (".webp", pil_encode(RGBA, "WEBP", lossless=True, exact=True), ok(IMAGE)),
    "animated_webp": (".webp", animated("WEBP", [IMAGE, IMAGE[::-1]]), error("Animated WebP is not supported")),
    "tiff": (".jpg", pil_encode(IMAGE, "TIFF"), error(NOT_AN_IMAGE)),
    # TF would decode JPEG XL, but its size header is not checked: refused
    "jpeg_xl": (".jpg", b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(64), error(NOT_AN_IMAGE)),
    "one_pixel_png": (".png", cv2_encode(IMAGE[:1, :1], ".png"), ok(IMAGE[:1, :1])),
    "one_pixel_jpeg": (".jpg", cv2_encode(IMAGE[:1, :1], ".jpg"), ok(IMAGE[:1, :1], atol=4)),
    "huge_png_header": (".png", png_declaring(30000, 30000), error("Image too large")),
    "huge_jpeg_header": (".jpg", declaring(JPEG, 30000, 30000), error("Image too large")),
    # pixels as stored: EXIF orientation is not applied (20 x 30, not 30 x 20)
    "exif_rotated_jpeg": (".jpg", exif_rotated_jpeg(IMAGE), ok(IMAGE, atol=16)),
}
ENTRIES = ["decode", "train", "infer", "evaluate", "serving"]
CLASS_COUNT = 2  # train entry: files alternate between two labels


def _path(folder, name):
    return str(folder / f"{name}{CASES[name][0]}")


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases")
    for name, (_, blob, _) in CASES.items():
        Path(_path(folder, name)).write_bytes(blob)
    return folder


@pytest.fixture(scope="module")
def serve(exported):
    return tf.saved_model.load(exported).signatures["serving_default"]


@pytest.fixture(scope="module")
def train_outcome(case_files):
    """What a training run does with all the case files at once: skip or train on each."""
    paths = [_path(case_files, name) for name in CASES]
    skipped = dict(data.find_unreadable(paths))
    kept = [p for p in paths if p not in skipped]
    # the label is the file's index, so the batch says which files made it through
    ds = data.make_dataset(kept, np.arange(len(kept)), IMAGE_SIZE, len(kept), training=True, seed=3)
    images, labels = next(iter(ds))
    assert images.shape == (len(kept), IMAGE_SIZE, IMAGE_SIZE, 3) and np.isfinite(images.numpy()).all()
    trained = {kept[i] for i in labels.numpy()}
    return {"skipped": skipped, "trained": trained}


@pytest.fixture(scope="module")
def infer_outcome(case_files, exported):
    """infer.py's records for all the case files in one call (batches mix good and bad)."""
    paths = [_path(case_files, name) for name in CASES]
    records = list(inference.localize_files(inference.load_saved_model(exported), paths, batch_size=8))
    assert [r["image"] for r in records] == paths
    return dict(zip(paths, records))


@pytest.fixture(scope="module")
def evaluate_outcome(case_files, exported, tmp_path_factory):
    """evaluate.py's report for all the case files in one run: an error or a score per image."""
    from keras_cam import cli
    data_dir = tmp_path_factory.mktemp("evaluate_data")
    (data_dir / "disk").mkdir()
    rows = ["split,class,filename,width,height,xmin,ymin,xmax,ymax"]
    for name, (ext, blob, outcome) in CASES.items():
        (data_dir / "disk" / f"{name}{ext}").write_bytes(blob)
        height, width = outcome["reference"].shape[:2] if "reference" in outcome else (1, 1)
        rows.append(f"test,disk,{name}{ext},{width},{height},0,0,{width},{height}")
    (data_dir / "boxes.csv").write_text("\n".join(rows) + "\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["evaluate", "--saved_model", exported, "--data", str(data_dir),
                         "--boxes", str(data_dir / "boxes.csv"), "--json"])
    report = json.loads(out.getvalue())
    assert code == 1  # some images failed, and the run says so at the end
    errors = {os.path.basename(e["image"]): e["error"] for e in report["errors"]}
    return {name: errors.get(f"{name}{ext}", "evaluated") for name, (ext, _, _) in CASES.items()}


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_table(name, entry, case_files, request):
    _, blob, outcome = CASES[name]
    path = _path(case_files, name)
    if entry == "decode":
        try:
            got = data.decode_image(tf.constant(blob)).numpy()
        except tf.errors.InvalidArgumentError as e:
            got = data.error_reason(e)
    elif entry == "train":
        result = request.getfixturevalue("train_outcome")
        got = result["skipped"].get(path, "trained" if path in result["trained"] else "lost")
    elif entry == "infer":
        record = request.getfixturevalue("infer_outcome")[path]
        got = record["error"] if "error" in record else (record["height"], record["width"])
    elif entry == "evaluate":
        got = request.getfixturevalue("evaluate_outcome")[name]
    else:
        serve = request.getfixturevalue("serve")
        try:
            got = tuple(serve(image_bytes=tf.constant([blob]))["image_sizes"].numpy()[0])
        except tf.errors.InvalidArgumentError as e:
            got = data.error_reason(e)
        # whatever this request did, the next one is answered
        assert serve(image_bytes=tf.constant([JPEG]))["probabilities"].shape == (1, len(CLASS_NAMES))

    if "reason" in outcome:
        # evaluate.py reads files as infer.py does, so it reports what infer.py reports
        reason = outcome.get(entry, outcome.get("infer", outcome["reason"]) if entry == "evaluate" else outcome["reason"])
        assert isinstance(got, str) and reason in got, f"{name} at {entry}: expected {reason!r}, got {got!r}"
        assert "\n" not in got
        return
    reference = outcome["reference"]
    if entry == "decode":
        assert got.shape == reference.shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - reference).max() <= outcome["atol"], name
    elif entry == "train":
        assert got == "trained", f"{name}: {got}"
    elif entry == "evaluate":
        assert got == "evaluated", f"{name}: {got}"
    else:
        assert got == reference.shape[:2], f"{name} at {entry}: {got}"


# ---------------------------------------------------------------------------- folders

def _write_images(folder, count, seed=0, prefix="img"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{prefix}_{i}.png").write_bytes(cv2_encode(rgb(24, 24, seed=seed + i), ".png"))


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """A class folder with every file-system oddity, next to a normal one and a one-image class."""
    root = tmp_path_factory.mktemp("messy")
    odd = root / "odd"
    _write_images(odd, 3, seed=10)
    _write_images(root / "plain", 4, seed=20)
    _write_images(root / "single", 1, seed=30)
    (odd / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 100)
    (odd / "._img_0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble junk")
    (odd / "name with spaces.png").write_bytes(cv2_encode(rgb(24, 24, seed=40), ".png"))
    non_utf8 = os.path.join(os.fsencode(odd), b"caf\xe9.png")  # Latin-1 name, not valid UTF-8
    with open(non_utf8, "wb") as f:
        f.write(cv2_encode(rgb(24, 24, seed=41), ".png"))
    os.symlink("loop.png", odd / "loop.png")
    os.mkfifo(odd / "pipe.png")  # reading a FIFO would block forever
    (odd / "folder.png").mkdir()
    os.symlink(".", odd / "subfolder_loop")
    (odd / "corrupt.jpg").write_bytes(JPEG[:100])
    return root


ODD_SKIPPED = {  # file: reason listed in skipped_images.txt
    "loop.png": "cannot read file (Too many levels of symbolic links)",
    "pipe.png": "not a regular file",
    "folder.png": "not a regular file",
    "corrupt.jpg": "Invalid JPEG data",
    "subfolder_loop": "a folder inside a class folder: its images are not used",  # listed, not followed
}
ODD_USED = ["img_0.png", "img_1.png", "img_2.png", "name with spaces.png", os.fsdecode(b"caf\xe9.png")]


def test_training_data_skips_lists_and_keeps(messy, tmp_path):
    config = training.TrainConfig(data=str(messy), classes=3, val_split=0.0)
    train, val, skipped = training.prepare_data(config, str(tmp_path))
    assert train.class_names == ["odd", "plain", "single"]
    reasons = {os.path.basename(p): r for p, r in skipped}
    assert set(reasons) == set(ODD_SKIPPED)
    for name, reason in ODD_SKIPPED.items():
        assert reason in reasons[name], (name, reasons[name])
    used = sorted(os.path.basename(p) for p, label in zip(train.paths, train.labels) if label == 0)
    assert used == sorted(ODD_USED)  # hidden files are not images; odd names are fine
    assert sum(train.labels == 2) == 1  # the one-image class trains on its image
    listed = (tmp_path / "skipped_images.txt").read_bytes().decode("utf-8").splitlines()
    assert sorted(line.split("\t")[0].rsplit("/", 1)[-1] for line in listed) == sorted(ODD_SKIPPED)


@pytest.mark.parametrize("layout", ["flat", "train_val"])
def test_images_beside_the_class_folders_are_listed_as_not_used(tmp_path, layout):
    root = tmp_path / "data"
    # The folders that hold class folders, and every folder where a stray image can lie.
    class_parents = [root / "train", root / "val"] if layout == "train_val" else [root]
    folders = sorted({root, *class_parents})
    for folder in class_parents:
        for name in ("cat", "dog"):
            (folder / name).mkdir(parents=True)
            for i in range(3):
                (folder / name / f"{i}.png").write_bytes(cv2_encode(IMAGE, ".png"))
    for folder in folders:
        (folder / "stray.png").write_bytes(cv2_encode(IMAGE, ".png"))
        (folder / "README.txt").write_text("not an image: not listed")
    config = training.TrainConfig(data=str(root), classes=2, val_split=0.34)
    train, val, skipped = training.prepare_data(config, str(tmp_path))
    assert len(train.paths) + len(val.paths) == 6 * len(class_parents)
    assert skipped == [(str(folder / "stray.png"), "an image outside the class folders: not used (only images "
                                                   "inside a class folder are)") for folder in folders]


def test_unreadable_file_is_skipped(tmp_path):
    path = tmp_path / "secret.png"
    path.write_bytes(cv2_encode(IMAGE, ".png"))
    path.chmod(0)
    if os.geteuid() != 0:
        ((_, reason),) = data.find_unreadable([str(path)])
    else:  # root reads files whatever their permissions: check in a child without that capability
        setpriv = shutil.which("setpriv")  # util-linux, on every Debian
        drop = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
        if setpriv is None or subprocess.run([*drop, "true"], capture_output=True).returncode != 0:
            pytest.skip("root reads files whatever their permissions, and cannot drop that capability here")
        check = f"from keras_cam import data; print(data.find_unreadable([{str(path)!r}]))"
        result = subprocess.run([*drop, sys.executable, "-c", check], capture_output=True, text=True, timeout=300,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        assert result.returncode == 0, result.stderr[-2000:]
        ((_, reason),) = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert reason == "cannot read file (Permission denied)"


def test_infer_on_a_messy_folder_goes_on_and_reports(messy, exported, capsys, tmp_path):
    pictures = tmp_path / "pictures"
    code = cli.command_main("infer", ["--saved_model", exported, "--image", str(messy / "odd"), "--json",
                                      "--output", str(pictures)])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 1  # something failed
    by_name = {os.path.basename(r["image"]): r for r in records}
    # the non-UTF-8 name is shown with its byte escaped; the walk does not follow the loop
    assert set(by_name) == {"img_0.png", "img_1.png", "img_2.png", "name with spaces.png", "caf\\xe9.png",
                            "loop.png", "pipe.png", "corrupt.jpg"}
    for name in ("loop.png", "pipe.png", "corrupt.jpg"):
        assert ODD_SKIPPED[name] in by_name[name]["error"]
        assert f"{name}: " in captured.err
    assert all("class_name" in by_name[n] for n in ("img_0.png", "name with spaces.png", "caf\\xe9.png"))
    assert "Traceback" not in captured.err
    # Every readable image gets its picture, the non-UTF-8 name too (cv2.imwrite crashed the process on it).
    assert sorted(os.listdir(os.fsencode(pictures))) == sorted(
        os.fsencode(os.path.splitext(n)[0] + "_cam.png") for n in ODD_USED)
    assert all(os.path.getsize(os.path.join(os.fsencode(pictures), n)) > 0 for n in os.listdir(os.fsencode(pictures)))


def test_odd_files_named_directly_get_their_own_error(messy, exported):
    paths, missing = inference.expand_image_args([str(messy / "odd" / n) for n in ("loop.png", "pipe.png")])
    assert not missing
    records = list(inference.localize_files(inference.load_saved_model(exported), paths))
    assert [r["error"] for r in records] == [ODD_SKIPPED["loop.png"], ODD_SKIPPED["pipe.png"]]


def test_glob_does_not_follow_symlink_loops(messy):
    paths, missing = inference.expand_image_args([str(messy / "odd" / "**" / "*.png")])
    assert not missing
    assert "name with spaces.png" in {os.path.basename(p) for p in paths}
    assert not any("subfolder_loop" in p for p in paths)


def test_a_whole_training_run_on_messy_data(messy, tmp_path, capsys):
    """train.py end to end: bad files skipped and listed, a summary line, an export."""
    code = cli.command_main("train", [
        "--data", str(messy), "--classes", "3", "--backbone", "tiny", "--weights", "none", "--image-size", "32",
        "--epochs", "1", "--batch-size", "4", "--experiments-dir", str(tmp_path / "runs"),
        "--saved-models-dir", str(tmp_path / "models"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (run,) = (tmp_path / "runs").iterdir()
    summary = [line for line in captured.out.splitlines() if line.startswith("Done:")]
    assert len(summary) == 1 and f"{len(ODD_SKIPPED)} skipped or left out (listed in {run / 'skipped_images.txt'})" in summary[0]
    assert "; 1 epoch; best val_accuracy" in summary[0]
    assert len((run / "skipped_images.txt").read_text(errors="surrogateescape").splitlines()) == len(ODD_SKIPPED)
    assert (tmp_path / "models" / run.name / "1" / "saved_model.pb").is_file()


# ---------------------------------------------------------------------------- user mistakes

@pytest.fixture(scope="module")
def mistakes(tmp_path_factory, messy):
    root = tmp_path_factory.mktemp("mistakes")
    _write_images(root / "empty_class" / "cats", 2)
    (root / "empty_class" / "dogs").mkdir()
    (root / "empty_class" / "dogs" / ".DS_Store").write_bytes(b"junk")
    _write_images(root / "strict" / "a", 2)
    _write_images(root / "strict" / "b", 2)
    (root / "strict" / "b" / "broken.jpg").write_bytes(b"<html>")
    (root / "not_a_model_file").write_text("hello")
    (root / "garbage_model").mkdir()
    (root / "garbage_model" / "saved_model.pb").write_bytes(b"\x08\x01garbage")
    (root / "empty_dir").mkdir()
    run = root / "run_with_broken_state"
    (run / "backup").mkdir(parents=True)
    (run / "config.json").write_text(training.TrainConfig(data=str(root / "strict"), classes=2).to_json())
    (run / "backup" / "state.json").write_text("{not json")
    (root / "good.png").write_bytes(cv2_encode(IMAGE, ".png"))
    return root


TINY = ["--backbone", "tiny", "--weights", "none", "--image-size", "32", "--quiet"]
MISTAKES = {  # name: (argv with {root}, exit status, message parts)
    "empty class folder": (["train", "--data", "{root}/empty_class", "--classes", "2", *TINY],
                           2, ["empty_class/dogs", "has no images", "add images or remove the folder"]),
    "--classes not matching": (["train", "--data", "{root}/strict", "--classes", "5", *TINY],
                               2, ["--classes 5 does not match the 2 class folders"]),
    "--strict with a bad image": (["train", "--data", "{root}/strict", "--classes", "2", "--strict", *TINY],
                                  2, ["Unreadable image", "broken.jpg", NOT_AN_IMAGE, "without --strict"]),
    "--resume not a run": (["train", "--resume", "{root}/empty_dir"], 2, ["not a run folder"]),
    "--resume broken state": (["train", "--resume", "{root}/run_with_broken_state", "--saved-models-dir",
                               "{root}/models"], 2, ["Cannot resume", "state.json"]),
    "SavedModel path missing": (["infer", "--saved_model", "{root}/nowhere", "--image", "{root}/good.png"],
                                2, ["Not a SavedModel", "nowhere"]),
    "SavedModel path is a file": (["infer", "--saved_model", "{root}/not_a_model_file", "--image",
                                   "{root}/good.png"], 2, ["Not a SavedModel", "not_a_model_file"]),
    "SavedModel path is an empty folder": (["infer", "--saved_model", "{root}/empty_dir", "--image",
                                            "{root}/good.png"], 2, ["Not a SavedModel", "empty_dir"]),
    "SavedModel is garbage": (["infer", "--saved_model", "{root}/garbage_model", "--image", "{root}/good.png"],
                              2, ["Could not load the SavedModel", "garbage_model"]),
    "image path missing": (["infer", "--saved_model", "{root}/empty_dir", "--image", "{root}/nothing.jpg"],
                           2, ["--image", "nothing.jpg", "no such file"]),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_user_mistakes_are_one_line(name, mistakes, capsys):
    argv, status, parts = MISTAKES[name]
    assert cli.main([a.format(root=mistakes) for a in argv]) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) >= 1 and all(part in "\n".join(errors) for part in parts), err
    assert len(err.splitlines()) <= 2, err  # infer's missing image: its own line, then "no images to process"


def test_missing_image_among_good_ones_exits_1(exported, mistakes, capsys):
    code = cli.main(["infer", "--saved_model", exported, "--image", str(mistakes / "good.png"),
                     "--image", str(mistakes / "nothing.jpg"), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    # One JSON line for each --image: the one that matched nothing carries its error.
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert len(records) == 2 and records[0]["image"].endswith("nothing.jpg") and "error" in records[0]
    assert "error" not in records[1] and "nothing.jpg" in captured.err and "Traceback" not in captured.err


# ---------------------------------------------------------------------------- faults

def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


def test_full_disk_while_saving_a_checkpoint(cam_model, tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "best.keras"
    storage.save_model(cam_model, target)
    before = target.read_bytes()

    def full_disk(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(keras.Model, "save", full_disk)
    with pytest.raises(storage.WriteError, match="No space left on device") as info:
        storage.save_model(cam_model, target)
    assert str(target) in str(info.value) and "previous version (if any) is intact" in str(info.value)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert os.listdir(target.parent) == ["best.keras"]  # no temporary file left
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~_umask()
    load_cam_model(target)


def test_full_disk_while_exporting(cam_model, tmp_path, monkeypatch):
    from keras_cam.export import export_saved_model, next_version_dir
    base = tmp_path / "saved_models" / "run"
    first = export_saved_model(cam_model, CLASS_NAMES, str(base / "1"))
    before = _files(first)
    real_save = tf.saved_model.save

    def full_disk(obj, export_dir, signatures=None, options=None):
        Path(export_dir, "saved_model.pb").write_bytes(b"half")
        raise tf.errors.ResourceExhaustedError(None, None, f"{export_dir}/variables/tmp; No space left on device")
    monkeypatch.setattr(tf.saved_model, "save", full_disk)
    target = next_version_dir(str(base))
    with pytest.raises(storage.WriteError, match="No space left on device"):
        export_saved_model(cam_model, CLASS_NAMES, target)
    monkeypatch.setattr(tf.saved_model, "save", real_save)
    assert sorted(os.listdir(base)) == ["1"]  # no version 2, no temporary folder
    assert _files(first) == before
    assert os.stat(first).st_mode & 0o777 == 0o777 & ~_umask()  # readable by a server running as another user
    served = inference.load_saved_model(str(base)).signatures["serving_default"]
    assert served(image_bytes=tf.constant([JPEG]))["probabilities"].shape == (1, len(CLASS_NAMES))


def test_full_disk_during_training_names_the_file_and_how_to_resume(tmp_path, monkeypatch, capsys):
    synthetic.write_dataset(str(tmp_path / "data"), {"train": 4}, size=32, seed=1)
    real_save = keras.Model.save

    def full_disk_at_epoch_2(self, path, *args, **kwargs):
        if "epoch_002" in os.path.basename(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, path, *args, **kwargs)
    monkeypatch.setattr(keras.Model, "save", full_disk_at_epoch_2)
    code = cli.main(["train", "--data", str(tmp_path / "data" / "train"), "--classes", "3", *TINY,
                     "--epochs", "3", "--batch-size", "4", "--checkpoint-every", "1",
                     "--experiments-dir", str(tmp_path / "runs"), "--saved-models-dir", str(tmp_path / "models")])
    err = capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "epoch_002.keras" in err and "No space left on device" in err and f"--resume {run}" in err
    # the last complete epoch is intact and is where --resume starts
    assert training.read_resume_state(str(run))["epoch"] == 1
    load_cam_model(run / "checkpoints" / "epoch_001.keras")
    assert not list(run.rglob(".tmp-*")) and not list((tmp_path / "models").glob("*/*"))  # no version


def test_a_write_interrupted_midway_leaves_the_previous_file(tmp_path):
    target = tmp_path / "state.json"
    storage.write_text(target, '{"epoch": 1}')

    def crash_midway(tmp):
        Path(tmp).write_text('{"epo')
        raise KeyboardInterrupt  # what a Ctrl-C mid-write looks like from here
    with pytest.raises(KeyboardInterrupt):
        storage.replace_atomically(target, crash_midway)
    assert target.read_text() == '{"epoch": 1}' and os.listdir(tmp_path) == ["state.json"]


def test_log_rows_of_uncommitted_epochs_are_dropped(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,accuracy,loss\n1,0.5,1.0\n2,0.6,0.9\n3,0.7,0.8\n4,0.7")  # killed while writing epoch 4
    training._trim_log(str(log), 2)  # epochs 1 and 2 were committed
    assert log.read_text() == "epoch,accuracy,loss\n1,0.5,1.0\n2,0.6,0.9\n"
    assert training.read_log(str(log)) == {"epoch": [1.0, 2.0], "accuracy": [0.5, 0.6], "loss": [1.0, 0.9]}
    # A log from before epochs were counted from 1 is renumbered, then trimmed the same way.
    log.write_text("epoch,accuracy,loss\n0,0.5,1.0\n1,0.6,0.9\n2,0.7,0.8\n3,0.7")
    training._trim_log(str(log), 2)
    assert log.read_text() == "epoch,accuracy,loss\n1,0.5,1.0\n2,0.6,0.9\n"


def test_runs_started_together_get_their_own_folders(tmp_path):
    import datetime
    now = datetime.datetime(2026, 1, 2, 3, 4)
    folders, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        folders.append(training.make_run_dir(str(tmp_path), now))
    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(folders)) == 8 and all(os.path.isdir(f) for f in folders)


def test_keras_files_load_in_safe_mode(tmp_path):
    """A .keras file cannot run code on load: a Lambda layer (pickled Python) is refused."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        load_cam_model(path)


def test_empty_class_folder_is_named(tmp_path):
    _write_images(tmp_path / "a", 1)
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"Class folder '.*/b' has no images"):
        data.scan_folder(str(tmp_path))


@pytest.mark.slow
def test_sigkill_while_writing_checkpoints_never_leaves_a_broken_one(tmp_path):
    """A process saving checkpoints in a loop is killed at random moments; every time,
    the checkpoint on disk loads."""
    import signal
    import subprocess
    import sys
    import time
    target = tmp_path / "best.keras"
    script = f"""
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from keras_cam import storage
from keras_cam.model import build_cam_model
model = build_cam_model(3, "tiny", "none", 32)
while True:
    storage.save_model(model, {str(target)!r})
    print("saved", flush=True)
"""
    rng = np.random.default_rng(0)
    for _ in range(3):
        process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        process.stdout.readline()  # one complete save
        time.sleep(rng.uniform(0.0, 0.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
        load_cam_model(target)
        storage.remove_temporaries(str(tmp_path))
