"""The command-line tools end to end: train.py -> SavedModel -> infer.py, and their errors."""

import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from keras_cam import cli, synthetic, training

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthetic.write_dataset(str(root), {"train": 10, "test": 2}, size=48, seed=5)
    return root


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """One real run of `keras-cam train` (1 epoch, tiny backbone); returns its folders."""
    work = tmp_path_factory.mktemp("work")
    code = cli.command_main("train", [
        "--data", str(tiny_data / "train"), "--classes", "3", "--backbone", "tiny", "--weights", "none",
        "--image-size", "48", "--epochs", "2", "--batch-size", "8", "--checkpoint-every", "1",
        "--experiments-dir", str(work / "experiments"), "--saved-models-dir", str(work / "saved_models"),
        "--quiet"])
    assert code == 0
    (run,) = (work / "experiments").iterdir()
    return {"run": run, "saved_model": work / "saved_models" / run.name / "1", "data": tiny_data}


def test_train_writes_a_complete_run_folder(trained):
    run = trained["run"]
    assert run.name.startswith("experiment_")
    datetime.datetime.strptime(run.name[len("experiment_"):len("experiment_") + 16], "%Y-%m-%d_%H_%M")
    for name in ("config.json", "class_names.json", "val_images.txt", "skipped_images.txt", "log.csv"):
        assert (run / name).is_file(), name
    assert json.loads((run / "class_names.json").read_text()) == list(synthetic.CLASSES)
    assert (run / "checkpoints" / "epoch_001.keras").is_file()
    assert (run / "checkpoints" / "epoch_002.keras").is_file()
    assert (run / "checkpoints" / "best.keras").is_file()
    assert (run / "tensorboard").is_dir()
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "tiny" and config["classes"] == 3 and config["epochs"] == 2
    # 20% of each class's 10 images are held out and listed for calibration
    assert len((run / "val_images.txt").read_text().splitlines()) == 6
    assert (trained["saved_model"] / "saved_model.pb").is_file()


def test_infer_json_on_a_folder(trained, tmp_path, capsys):
    out_dir = tmp_path / "pictures"
    code = cli.command_main("infer", ["--saved_model", str(trained["saved_model"]),
                                      "--image", str(trained["data"] / "test"), "--json",
                                      "--output", str(out_dir)])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 6
    for record in records:
        assert {"image", "class_id", "class_name", "score", "boxes"} <= set(record)
        assert record["class_name"] in synthetic.CLASSES
        assert 0.0 <= record["score"] <= 1.0
        for box in record["boxes"]:
            assert 0 <= box[0] <= box[2] <= record["width"] and 0 <= box[1] <= box[3] <= record["height"]
    assert len(list(out_dir.glob("*_cam.png"))) == 6


def test_infer_reports_bad_images_and_goes_on(trained, tmp_path, capsys):
    good = sorted((trained["data"] / "test" / "disk").iterdir())[0]
    (tmp_path / "fake.jpg").write_text("<html>not an image</html>")
    (tmp_path / "empty.png").write_bytes(b"")
    code = cli.command_main("infer", ["--saved_model", str(trained["saved_model"]),
                                      "--image", str(good), "--image", str(tmp_path / "fake.jpg"),
                                      "--image", str(tmp_path / "empty.png"),
                                      "--image", str(tmp_path / "missing.jpg"), "--json"])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.strip().splitlines()]
    assert code == 1
    # The --image that matched nothing first (known before any image is read), then the images.
    assert [("error" in r) for r in records] == [True, False, True, True]
    assert records[0]["error"] == "no such file, folder or match" and records[3]["error"] == "empty file"
    assert "missing.jpg" in captured.err and "no such file" in captured.err


def test_infer_takes_globs(trained, capsys):
    pattern = str(trained["data"] / "test" / "*" / "*_00000.png")
    assert cli.command_main("infer", ["--saved_model", str(trained["saved_model"]), "--image", pattern, "--json"]) == 0
    names = [os.path.basename(json.loads(line)["image"]) for line in capsys.readouterr().out.strip().splitlines()]
    assert names == ["disk_00000.png", "square_00000.png", "triangle_00000.png"]


def test_infer_takes_the_model_base_folder(trained, capsys):
    base = trained["saved_model"].parent
    image = sorted((trained["data"] / "test" / "square").iterdir())[0]
    assert cli.command_main("infer", ["--saved_model", str(base), "--image", str(image)]) == 0
    assert "1 of 1 images done, 0 failed" in capsys.readouterr().out


def test_infer_json_has_a_record_for_every_image_argument(trained, capsys):
    image = sorted((trained["data"] / "test" / "square").iterdir())[0]
    assert cli.command_main("infer", ["--saved_model", str(trained["saved_model"]), "--image", "nosuch.jpg",
                                      "--image", str(image), "--json"]) == 1
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert records[0] == {"image": "nosuch.jpg", "error": "no such file, folder or match"}
    assert len(records) == 2 and "error" not in records[1]
    # The closing line's speed is that of the image done, not of both.
    assert re.search(r"^1 of 2 images done, 1 failed \(\d+\.\d images/s\)$", captured.err, re.M)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_infer_into_a_full_disk_is_one_line(trained):
    image = sorted((trained["data"] / "test" / "square").iterdir())[0]
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--saved_model", str(trained["saved_model"]),
                               "--image", str(image), "--json"], stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "infer.py: error: cannot write the output: No space left on device"
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_infer_says_which_files_of_a_folder_it_passes_over(trained, tmp_path, capsys):
    image = sorted((trained["data"] / "test" / "square").iterdir())[0]
    (tmp_path / "a.png").write_bytes(image.read_bytes())
    (tmp_path / "scan.tif").write_bytes(b"II*\x00")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    assert cli.command_main("infer", ["--saved_model", str(trained["saved_model"]), "--image", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "note: passed over 1 file of the --image folders that is not of a type keras-cam reads" in captured.err
    assert "scan.tif" in captured.err and "DS_Store" not in captured.err
    assert "1 of 1 images done, 0 failed" in captured.out


def test_infer_mistakes_name_the_folder_or_file(trained, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["infer", "--saved_model", "m", "--image", str(tmp_path / "empty")]) == 2
    assert f"no images to process in --image {str(tmp_path / 'empty')!r}" in capsys.readouterr().err
    (tmp_path / "out.txt").write_text("")
    assert cli.main(["infer", "--saved_model", "m", "--image", "x.jpg", "--output", str(tmp_path / "out.txt")]) == 2
    assert f"--output {str(tmp_path / 'out.txt')!r} is a file; give a folder" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "/nonexistent/folder", "--classes", "3"], "folder not found"),
    (["train", "--data", __file__, "--classes", "3"], f"--data {__file__!r}: a file, not a folder"),
    (["train", "--classes", "3"], "--data and --classes are required"),
    (["train", "--resume", "/nonexistent/run"], "not a run folder"),
    (["infer", "--saved_model", "/nonexistent/model", "--image", "x.jpg"], "no images to process"),
])
def test_user_mistakes_are_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_classes_mismatch_is_a_clear_error(tiny_data, tmp_path, capsys):
    code = cli.main(["train", "--data", str(tiny_data / "train"), "--classes", "5", "--backbone", "tiny",
                     "--weights", "none", "--experiments-dir", str(tmp_path)])
    assert code == 2
    assert "--classes 5 does not match the 3 class folders" in capsys.readouterr().err


def test_not_a_saved_model(tmp_path, tiny_data, capsys):
    image = sorted((tiny_data / "test" / "disk").iterdir())[0]
    assert cli.main(["infer", "--saved_model", str(tmp_path), "--image", str(image)]) == 2
    assert "Not a SavedModel" in capsys.readouterr().err


def test_run_folders_are_unique_within_a_minute(tmp_path):
    now = datetime.datetime(2026, 1, 2, 3, 4)
    first = training.make_run_dir(str(tmp_path), now)
    second = training.make_run_dir(str(tmp_path), now)
    assert os.path.basename(first) == "experiment_2026-01-02_03_04"
    assert os.path.basename(second) == "experiment_2026-01-02_03_04_2"


def test_runs_of_two_experiments_folders_never_share_a_model(tmp_path):
    # The run's name is its SavedModel's name: runs of two experiments folders started in
    # one minute would otherwise export into one model (the second as version 2 of the first).
    now = datetime.datetime(2026, 1, 2, 3, 4)
    saved = tmp_path / "saved_models"
    first = training.make_run_dir(str(tmp_path / "a"), now, saved_models_dir=str(saved))
    second = training.make_run_dir(str(tmp_path / "b"), now, saved_models_dir=str(saved))
    assert os.path.basename(first) == "experiment_2026-01-02_03_04"
    assert os.path.basename(second) == "experiment_2026-01-02_03_04_2"
    assert sorted(os.listdir(saved)) == ["experiment_2026-01-02_03_04", "experiment_2026-01-02_03_04_2"]


def test_train_py_passes_over_a_name_its_saved_models_folder_has(tiny_data, tmp_path, capsys):
    saved = tmp_path / "saved_models"
    stamp = datetime.datetime.now()
    taken = {(stamp + datetime.timedelta(minutes=m)).strftime("experiment_%Y-%m-%d_%H_%M") for m in (0, 1)}
    for name in taken:  # another experiments folder's runs of this minute (and the next)
        (saved / name / "1").mkdir(parents=True)
    argv = ["--data", str(tiny_data / "train"), "--classes", "3", "--backbone", "tiny", "--weights", "none",
            "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--quiet",
            "--experiments-dir", str(tmp_path / "runs"), "--saved-models-dir", str(saved)]
    assert cli.command_main("train", argv) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name not in taken and os.listdir(saved / run.name) == ["1"]
    # A mistake found after the start leaves neither a run folder nor an empty model folder.
    assert cli.command_main("train", [*argv[:3], "4", *argv[4:]]) == 2
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run.name]
    assert sorted(os.listdir(saved)) == sorted(taken | {run.name})


def test_help_and_version_of_the_scripts():
    for script in ("train.py", "infer.py"):
        out = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        assert "--version" in out and "default" in out
    out = subprocess.run([sys.executable, "-m", "keras_cam", "--version"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.startswith("keras-cam ")


@pytest.mark.parametrize("error, code", [
    (KeyboardInterrupt(), 130),
    # What Ctrl-C inside a TensorFlow C++ call can surface as.
    (RuntimeError("pybind11::error_already_set: MISMATCH of original and normalized active exception types: "
                  "ORIGINAL InvalidArgumentError REPLACED BY KeyboardInterrupt: <EMPTY MESSAGE>"), 130),
])
def test_ctrl_c_is_one_line_however_tensorflow_reports_it(error, code, capsys):
    def command(args):
        raise error
    assert cli._run(command, None, "keras-cam export") == code
    assert capsys.readouterr().err == "keras-cam export: interrupted\n"


def test_other_runtime_errors_are_not_taken_for_ctrl_c():
    def command(args):
        raise RuntimeError("something else")
    with pytest.raises(RuntimeError, match="something else"):
        cli._run(command, None, "keras-cam export")
