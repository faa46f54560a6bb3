"""train.py as a user meets it: bad settings, odd folder names, resuming from elsewhere,
finished runs, diverged runs. Tiny backbone, 32-px synthetic images, one or two epochs."""

import json
import math
import os
import pathlib
import re
import shutil

import numpy as np
import pytest

from keras_cam import cli, data, synthetic, training, visualize

QUICK = ["--backbone", "tiny", "--weights", "none", "--image-size", "32", "--batch-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_cli")
    synthetic.write_dataset(str(root), {"train": 6}, size=32, seed=3)
    return root / "train"


def _train(argv, tmp_path):
    return cli.command_main("train", [*argv, "--experiments-dir", str(tmp_path / "runs"),
                                      "--saved-models-dir", str(tmp_path / "saved")], prog="train.py")


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size", "--checkpoint-every"])
def test_counts_must_be_positive_at_parse_time(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.command_main("train", ["--data", "x", "--classes", "3", flag, "0"], prog="train.py")
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be a positive integer, got 0" in capsys.readouterr().err


def test_the_library_refuses_the_same_counts():
    config = training.TrainConfig(data="x", classes=3, epochs=0)
    with pytest.raises(ValueError, match=r"^--epochs must be a positive integer. Received: 0$"):
        training.check_config(config)


@pytest.mark.parametrize("flag, value, message", [
    ("--learning-rate", "-1", "must be a number > 0, got -1"),
    ("--learning-rate", "0", "must be a number > 0, got 0"),
    ("--learning-rate", "nan", "must be a number > 0, got nan"),
    ("--tau", "1.5", "must be a number in [0, 1), got 1.5"),
    ("--tau", "nan", "must be a number in [0, 1), got nan"),
    ("--tau", "-0.1", "must be a number in [0, 1), got -0.1"),
    ("--box-extent", "-1", "must be 0 or a positive number, got -1"),
    ("--box-extent", "inf", "must be 0 or a positive number, got inf"),
    ("--val-split", "1", "must be a fraction in [0, 1), got 1"),
    ("--image-size", "8", "must be an integer >= 32, got 8"),
    ("--seed", "-3", "must be an integer in [0, 2**32 - 1], got -3"),
    ("--seed", "99999999999", "must be an integer in [0, 2**32 - 1], got 99999999999"),
    ("--feature-stride", "0", "must be a positive integer, got 0"),
    ("--classes", "1", "must be an integer >= 2 (a classifier tells two classes apart at least), got 1"),
])
def test_settings_no_run_can_use_are_refused_before_any_work(tmp_path, flag, value, message, capsys):
    # --tau and --box-extent are used only by the export at the end: refused now, not after the epochs.
    with pytest.raises(SystemExit) as exit_info:
        _train(["--data", str(tmp_path), "--classes", "3", *QUICK, flag, value], tmp_path)
    assert exit_info.value.code == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("field, value, message", [
    ("learning_rate", -1.0, "--learning-rate must be a number >= 0. Received: -1.0"),
    ("tau", 1.5, "--tau must be in [0, 1). Received: 1.5"),
    ("box_extent", float("nan"), "--box-extent must be 0 or a positive number. Received: nan"),
    ("image_size", 8, "--image-size must be at least 32. Received: 8"),
    ("classes", 1, "--classes must be at least 2 (a classifier tells two classes apart at least). Received: 1"),
    ("seed", -3, "--seed must be an integer in [0, 2**32 - 1]. Received: -3"),
    ("weights", "/nonexistent/w.h5",
     "--weights '/nonexistent/w.h5': no such file (give 'imagenet', 'none' or the path of a weights file)"),
    ("feature_stride", 32, "--feature-stride must be 16 for --backbone resnet50 (half of its own stride 32; "
                           "leave it out for 32). Received: 32"),
    ("learning_rate", "0.1", "--learning-rate must be a number. Received: '0.1'"),
    ("tau", None, "--tau must be a number. Received: None"),
    ("backbone", "vgg", "--backbone must be one of resnet50, resnet18, mobilenet_v2, tiny. Received: 'vgg'"),
    ("train_layers", "bogus", "--train-layers must be one of all, head, last_stage. Received: 'bogus'"),
])
def test_the_library_refuses_the_same_settings_before_a_run_starts(field, value, message):
    config = training.TrainConfig(data="x", **{"classes": 3, field: value})
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        training.check_config(config)


def test_a_mistake_found_after_start_removes_the_fresh_run_folder(images, tmp_path, capsys):
    status = _train(["--data", str(images), "--classes", "4", *QUICK, "--epochs", "1"], tmp_path)
    assert status == 2 and "--classes 4 does not match the 3 class folders" in capsys.readouterr().err
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_feature_stride_the_backbone_cannot_give_is_refused_before_a_run_folder_is_made(images, tmp_path,
                                                                                          capsys):
    argv = ["--data", str(images), "--classes", "3", *QUICK, "--feature-stride", "16"]
    assert _train(argv, tmp_path) == 2
    assert ("train.py: error: --feature-stride must be 4 for --backbone tiny (half of its own stride 8; leave it "
            "out for 8). Received: 16") in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_layer_name_the_model_lacks_is_refused_before_the_data_is_scanned(images, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = training.TrainConfig(data=str(images), classes=3, backbone="tiny", weights="none", image_size=32,
                                  objectness_layers=["nope"])
    with pytest.raises(ValueError, match="--objectness-layers: backbone 'tiny' has no 4x4 layer 'nope'"):
        training.train(config, str(run), verbose=0)
    assert os.listdir(run) == []  # no config.json, class list or skipped list of a run that never started


def test_the_library_records_a_relative_data_folder_as_an_absolute_path(images, tmp_path, monkeypatch):
    # As train.py does: the run's validation list (for --calibrate) and config.json must work
    # from any directory, not only from the one the run started in.
    monkeypatch.chdir(images.parent)
    config = training.TrainConfig(data=images.name, classes=3, backbone="tiny", weights="none", image_size=32,
                                  epochs=1, batch_size=4)
    run = training.make_run_dir(str(tmp_path / "runs"))
    training.train(config, run, verbose=0)
    with open(os.path.join(run, "val_images.txt"), encoding="utf-8") as f:
        listed = [line.split("\t")[0] for line in f if line.strip()]
    assert listed and all(os.path.isabs(p) and os.path.isfile(p) for p in listed)
    with open(os.path.join(run, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["data"] == str(images)
    assert config.data == images.name  # the caller's settings are left as they were


def test_the_library_takes_a_weights_path_object_and_records_it_as_an_absolute_path(images, tmp_path, monkeypatch):
    from keras_cam.model import BACKBONES
    monkeypatch.chdir(tmp_path)
    BACKBONES["tiny"].builder(input_shape=(32, 32, 3), weights=None).save_weights("tiny.weights.h5")
    config = training.TrainConfig(data=images, classes=3, backbone="tiny", weights=pathlib.Path("tiny.weights.h5"),
                                  image_size=32, epochs=1, batch_size=4)
    run = training.make_run_dir(str(tmp_path / "runs"))
    training.train(config, run, verbose=0)  # config.json could not hold a Path
    with open(os.path.join(run, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["weights"] == str(tmp_path / "tiny.weights.h5")


@pytest.mark.parametrize("weights", [3, ["a.h5"]])
def test_a_weights_setting_that_is_no_path_is_refused(weights):
    with pytest.raises(ValueError, match=r"^--weights must be 'imagenet', 'none' or the path of a weights file"):
        training.check_config(training.TrainConfig(data="data", classes=3, weights=weights))


def test_a_data_setting_that_is_no_path_is_refused():
    with pytest.raises(ValueError, match=r"^--data must be the path of a folder. Received: None$"):
        training.check_config(training.TrainConfig(data=None, classes=3))


def test_offline_imagenet_weights_are_one_line_not_a_traceback(images, tmp_path, monkeypatch, capsys):
    # The README's first training command, on a machine without internet.
    from keras.src.applications import mobilenet_v2 as keras_mobilenet_v2

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- offline")

    monkeypatch.setattr(keras_mobilenet_v2.file_utils, "get_file", no_network)
    argv = ["--data", str(images), "--classes", "3", "--backbone", "mobilenet_v2", "--image-size", "32"]
    assert _train(argv, tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train.py: error: Could not download the ImageNet weights for "
                                               "'mobilenet_v2'") and "--weights none" in err[0]
    assert not list((tmp_path / "runs").iterdir())  # the fresh run folder is removed


def test_a_missing_weights_file_is_refused_before_a_run_folder_is_made(images, tmp_path, capsys):
    missing = tmp_path / "nope.weights.h5"
    argv = ["--data", str(images), "--classes", "3", "--backbone", "tiny", "--weights", str(missing)]
    assert _train(argv, tmp_path) == 2
    assert f"train.py: error: --weights {str(missing)!r}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_resuming_with_an_unreadable_config_names_the_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{bad")
    assert cli.command_main("train", ["--resume", str(run)], prog="train.py") == 2
    err = capsys.readouterr().err
    assert f"train.py: error: --resume {str(run)!r}: unreadable run settings {str(run / 'config.json')!r} (" in err
    (run / "config.json").write_text('{"no_such_setting": 1}')  # JSON, but not a run's settings
    assert cli.command_main("train", ["--resume", str(run)], prog="train.py") == 2
    assert "unreadable run settings" in capsys.readouterr().err


def _one_epoch_run_on_a_copy(images, tmp_path):
    """A finished one-epoch run on a copy of the images, which a test may change or move."""
    data_dir = tmp_path / "data"
    shutil.copytree(images, data_dir)
    assert _train(["--data", str(data_dir), "--classes", "3", *QUICK, "--epochs", "1"], tmp_path) == 0
    (run,) = (tmp_path / "runs").iterdir()
    return data_dir, run


def test_a_class_folder_added_before_a_resume_is_named_as_a_change_of_the_data(images, tmp_path, capsys):
    data_dir, run = _one_epoch_run_on_a_copy(images, tmp_path)
    shutil.copytree(data_dir / "disk", data_dir / "zebra")
    capsys.readouterr()
    assert cli.command_main("train", ["--resume", str(run), "--epochs", "2"], prog="train.py") == 2
    err = capsys.readouterr().err
    assert "now has 4 class folders ['disk', 'square', 'triangle', 'zebra'], but this run was started with 3 " \
           "classes: the data changed since the run started" in err and "--classes" not in err


def test_a_run_whose_data_folder_moved_resumes_with_data_naming_its_new_place(images, tmp_path, capsys):
    data_dir, run = _one_epoch_run_on_a_copy(images, tmp_path)
    moved = tmp_path / "moved"
    data_dir.rename(moved)
    capsys.readouterr()
    assert cli.command_main("train", ["--resume", str(run), "--epochs", "2"], prog="train.py") == 2
    assert (f"its data folder {str(data_dir)!r} is not there; if it moved, give its new place: --data DIR"
            in capsys.readouterr().err)
    assert cli.command_main("train", ["--resume", str(run), "--epochs", "2", "--data", str(moved), "--quiet"],
                            prog="train.py") == 0
    err = capsys.readouterr().err
    assert f"note: the run's data folder moved: {data_dir} -> {moved}" in err and "ignored" not in err
    assert len(training.read_log(str(run / "log.csv"))["epoch"]) == 2
    # The run now lives on the new place: its validation list (for evaluate.py --images-list) too.
    assert json.loads((run / "config.json").read_text())["data"] == str(moved)
    listed = [line.split("\t")[0] for line in (run / "val_images.txt").read_text().splitlines()]
    assert listed and all(path.startswith(str(moved) + os.sep) and os.path.isfile(path) for path in listed)


def test_a_moved_data_folder_that_holds_other_images_is_refused(images, tmp_path, capsys):
    data_dir, run = _one_epoch_run_on_a_copy(images, tmp_path)
    other = tmp_path / "other"
    shutil.copytree(images, other)
    first = sorted((other / "disk").iterdir())[0]
    first.rename(first.with_name("renamed" + first.suffix))
    capsys.readouterr()
    assert cli.command_main("train", ["--resume", str(run), "--epochs", "2", "--data", str(other)],
                            prog="train.py") == 2
    assert "changed since the run started" in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["data"] == str(data_dir)


def test_read_log_takes_na_as_nan(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch,accuracy,val_accuracy\n0,0.5,NA\n1,0.75,\n")
    log = training.read_log(str(path))
    assert log["accuracy"] == [0.5, 0.75] and all(math.isnan(v) for v in log["val_accuracy"])


def test_no_validation_images_trains_and_exports(images, tmp_path, capsys):
    status = _train(["--data", str(images), "--classes", "3", *QUICK, "--epochs", "1", "--val-split", "0"], tmp_path)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "0 validation images" in out and "SavedModel:" in out


def test_class_folder_name_that_is_not_utf8_trains_with_an_escaped_name(images, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(images, root)
    bad = os.fsencode(root) + b"/cl\xe9"
    os.rename(root / "square", bad)
    others = sorted(d for d in os.listdir(images) if d != "square")
    assert data.scan_folder(str(root)).class_names == ["cl\\xe9", *others]
    status = _train(["--data", str(root), "--classes", "3", *QUICK, "--epochs", "1", "--checkpoint-every", "1"],
                    tmp_path)
    out = capsys.readouterr().out
    assert status == 0, out
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "class_names.json").read_text())[0] == "cl\\xe9"


def test_caption_with_non_ascii_or_unpaired_surrogates_is_drawn():
    picture = visualize.label(np.zeros((32, 64, 3), np.uint8), "caf\u00e9 cl\udce9 0.9")
    assert picture.shape == (32, 64, 3) and picture.any()


def test_resume_from_another_directory_exports_where_the_run_started(images, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(images, tmp_path / "rel")
    assert cli.command_main("train", ["--data", "rel", "--classes", "3", *QUICK, "--epochs", "1",
                                      "--experiments-dir", "runs", "--saved-models-dir", "mine"], prog="train.py") == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert os.path.isabs(json.loads((run / "config.json").read_text())["data"])
    assert all(os.path.isabs(line.split("\t")[0]) for line in (run / "val_images.txt").read_text().splitlines())
    capsys.readouterr()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # A finished run is not exported again ...
    assert cli.command_main("train", ["--resume", str(run), "--quiet"], prog="train.py") == 0
    out = capsys.readouterr().out
    assert "has finished its 1 epochs" in out and str(tmp_path / "mine" / run.name / "1") in out
    # ... but trained on with --epochs, and exported beside its first version, not in ./saved_models.
    assert cli.command_main("train", ["--resume", str(run), "--epochs", "2", "--batch-size", "8", "--quiet"],
                            prog="train.py") == 0
    captured = capsys.readouterr()
    assert "ignored: --batch-size" in captured.err
    assert sorted(os.listdir(tmp_path / "mine" / run.name)) == ["1", "2"]
    assert not (elsewhere / "saved_models").exists()
    assert len(training.read_log(str(run / "log.csv"))["epoch"]) == 2


def test_a_diverged_run_stops_with_a_clear_error(images, tmp_path, capsys):
    status = _train(["--data", str(images), "--classes", "3", *QUICK, "--epochs", "2", "--learning-rate", "1e38"],
                    tmp_path)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("train.py: error: Training diverged: the loss became NaN or infinite in")
    assert "lower --learning-rate" in err and not list((tmp_path / "saved").glob("*/*"))


def test_into_a_pipe_train_py_prints_one_line_per_epoch_not_progress_bars(images, tmp_path):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    flags = [flag for flag in QUICK if flag != "--quiet"]
    done = subprocess.run([sys.executable, os.path.join(root, "train.py"), "--data", str(images), "--classes", "3",
                           *flags, "--epochs", "2", "--experiments-dir", str(tmp_path / "runs"),
                           "--saved-models-dir", str(tmp_path / "saved")],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout and "\x1b[" not in done.stdout
    assert "Epoch 1/2" in done.stdout and "Epoch 2/2" in done.stdout


def _one_epoch_run(images, tmp_path, capsys, *extra):
    assert _train(["--data", str(images), "--classes", "3", *QUICK, "--epochs", "1", *extra], tmp_path) == 0
    capsys.readouterr()
    (run,) = (tmp_path / "runs").iterdir()
    return run


@pytest.mark.parametrize("absolute", [True, False])
def test_the_saved_model_is_shown_as_the_run_folder_is(images, tmp_path, monkeypatch, capsys, absolute):
    monkeypatch.chdir(tmp_path)
    where = (lambda name: str(tmp_path / name)) if absolute else (lambda name: name)
    argv = ["--data", str(images), "--classes", "3", *QUICK, "--epochs", "1",
            "--experiments-dir", where("runs"), "--saved-models-dir", where("saved")]
    assert cli.command_main("train", argv, prog="train.py") == 0
    out = capsys.readouterr().out
    (run,) = (tmp_path / "runs").iterdir()
    assert f"Run folder: {where(os.path.join('runs', run.name))}\n" in out
    assert f"SavedModel: {where(os.path.join('saved', run.name, '1'))}\n" in out


def test_resume_flags_count_when_typed_even_if_equal_to_their_defaults(images, tmp_path, monkeypatch, capsys):
    run = _one_epoch_run(images, tmp_path, capsys)
    monkeypatch.chdir(tmp_path)
    # 12 and saved_models are the parser's defaults, typed here on purpose.
    assert cli.command_main("train", ["--resume", str(run), "--epochs", "12", "--saved-models-dir", "saved_models",
                                      "--backbone", "resnet50", "--quiet"], prog="train.py") == 0
    captured = capsys.readouterr()
    assert "ignored: --backbone" in captured.err
    assert len(training.read_log(str(run / "log.csv"))["epoch"]) == 12
    assert os.listdir(tmp_path / "saved_models" / run.name) == ["1"]
    # --epochs below what was trained is refused.
    assert cli.command_main("train", ["--resume", str(run), "--epochs", "3"], prog="train.py") == 2
    assert "has trained 12 epochs already; give --epochs 12 or more" in capsys.readouterr().err


def test_a_resume_whose_export_failed_exports_next_time(images, tmp_path, monkeypatch, capsys):
    from keras_cam import export, storage
    run = _one_epoch_run(images, tmp_path, capsys)
    real = export.export_saved_model

    def full_disk(cam_model, class_names, target, **kwargs):
        # What a process killed mid-write leaves: its temporary copy beside the versions.
        os.makedirs(os.path.join(os.path.dirname(target), ".tmp-2-0123456789ab", "variables"))
        raise storage.WriteError("Could not write the export: no space left on device.")
    monkeypatch.setattr(export, "export_saved_model", full_disk)
    assert cli.command_main("train", ["--resume", str(run), "--epochs", "2", "--quiet"], prog="train.py") == 2
    assert "export it later" in capsys.readouterr().err
    monkeypatch.setattr(export, "export_saved_model", real)
    # Epoch 2 is trained but was never exported: version 1 (epoch 1) is not the answer.
    assert cli.command_main("train", ["--resume", str(run), "--quiet"], prog="train.py") == 0
    out = capsys.readouterr().out
    assert "has finished" not in out and out.strip().endswith(str(tmp_path / "saved" / run.name / "2"))
    assert sorted(os.listdir(tmp_path / "saved" / run.name)) == ["1", "2"]  # the temporary copy is gone
    assert json.loads((run / "export.json").read_text())["epoch"] == 2
    assert cli.command_main("train", ["--resume", str(run), "--quiet"], prog="train.py") == 0
    assert "has finished its 2 epochs" in capsys.readouterr().out


def test_a_full_disk_in_the_first_epoch_keeps_the_run_folder_it_says_to_resume(images, tmp_path, monkeypatch,
                                                                               capsys):
    from keras_cam import storage

    def full_disk(model, path):
        raise storage.WriteError(f"Could not write {path!r}: no space left on device.")
    monkeypatch.setattr(storage, "save_model", full_disk)
    assert _train(["--data", str(images), "--classes", "3", *QUICK, "--epochs", "1"], tmp_path) == 2
    err = capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    assert f"--resume {run}" in err and (run / "config.json").exists()


def test_an_old_run_with_a_relative_data_path_resumed_elsewhere_is_told_where(images, tmp_path, monkeypatch, capsys):
    run = _one_epoch_run(images, tmp_path, capsys)
    config = json.loads((run / "config.json").read_text())
    config["data"] = "relative/train"
    del config["saved_models_dir"]
    (run / "config.json").write_text(json.dumps(config))
    before = (run / "config.json").read_text()
    monkeypatch.chdir(tmp_path)
    assert cli.command_main("train", ["--resume", str(run), "--epochs", "3"], prog="train.py") == 2
    assert "names the data folder 'relative/train', a path relative to where the run was started" in \
        capsys.readouterr().err
    assert (run / "config.json").read_text() == before


def test_two_class_folders_with_one_printable_name_are_refused(tmp_path):
    for name in (b"cl\\xe9", b"cl\xe9"):
        os.makedirs(os.path.join(os.fsencode(tmp_path), name))
    with pytest.raises(ValueError, match="have the same printable name 'cl\\\\\\\\xe9': rename one"):
        data.scan_folder(str(tmp_path))


def test_files_of_other_types_in_class_folders_are_listed_as_skipped(images, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(images, root)
    some = sorted(os.listdir(root))[0]
    (root / some / "scan.tif").write_bytes(b"II*\x00")
    (root / some / ".DS_Store").write_bytes(b"x")
    (root / some / "more").mkdir()  # nested: its images are not used
    shutil.copy(root / some / sorted(os.listdir(root / some))[0], root / some / "more")
    status = _train(["--data", str(root), "--classes", "3", *QUICK, "--epochs", "1", "--strict"], tmp_path)
    assert status == 0, capsys.readouterr()
    (run,) = (tmp_path / "runs").iterdir()
    listed = (run / "skipped_images.txt").read_text().splitlines()
    assert listed == [f"{root / some / 'more'}\ta folder inside a class folder: its images are not used (only the "
                      "images directly inside a class folder are)",
                      f"{root / some / 'scan.tif'}\tnot an image type keras-cam reads (.jpg, .jpeg, .png, .bmp, "
                      ".gif, .webp)"]


def test_a_validation_class_that_training_does_not_have_is_listed_as_not_used(images, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(images, root / "train")
    shutil.copytree(images, root / "val")
    shutil.copytree(root / "val" / sorted(os.listdir(images))[0], root / "val" / "zebra")
    status = _train(["--data", str(root), "--classes", "3", *QUICK, "--epochs", "1"], tmp_path)
    assert status == 0, capsys.readouterr()
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "skipped_images.txt").read_text() == (
        f"{root / 'val' / 'zebra'}\ta class folder that {root / 'train'} does not have: not used\n")


def test_training_on_after_a_calibration_says_the_new_export_needs_its_own(images, tmp_path, capsys):
    run = _one_epoch_run(images, tmp_path, capsys)
    base = tmp_path / "saved" / run.name
    shutil.copytree(base / "1", base / "2")  # what evaluate.py --calibrate writes: the next version
    assert cli.command_main("train", ["--resume", str(run), "--epochs", "2", "--quiet"], prog="train.py") == 0
    captured = capsys.readouterr()
    assert f"SavedModel: {base / '3'}" in captured.out
    assert f"note: {base / '2'} (written after train.py's last export" in captured.err
    assert f"evaluate.py --saved_model {base / '3'} --images-list {run / 'val_images.txt'}" in captured.err
    # Without a version of someone else's, no note.
    assert cli.command_main("train", ["--resume", str(run), "--epochs", "3", "--quiet"], prog="train.py") == 0
    assert "note:" not in capsys.readouterr().err
