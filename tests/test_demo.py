"""`keras-cam demo` (the README's first command) on a few generated images."""

import json
import os

import pytest

from keras_cam import cli, demo


def test_a_small_demo_draws_every_held_out_image_and_works_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    result = demo.run("out", epochs=1, train_per_class=10, test_per_class=3, verbose=0)
    # 9 held-out images: fewer than the 12 pictures the grid holds, so all of them are drawn.
    assert result["test_images"] == 9 and len(os.listdir(result["pictures"])) == 9
    assert os.path.isfile(result["grid"]) and os.path.isfile(os.path.join(result["saved_model"], "saved_model.pb"))
    assert 0.0 <= result["loc_accuracy"] <= 1.0 and 0.0 <= result["cls_accuracy"] <= 1.0
    (run,) = (tmp_path / "out" / "experiments").iterdir()
    config = json.loads((run / "config.json").read_text())
    assert os.path.isabs(config["data"]) and config["saved_models_dir"] == str(tmp_path / "out" / "saved_models")
    assert all(os.path.isabs(line.split("\t")[0]) for line in (run / "val_images.txt").read_text().splitlines()
               if line and not line.startswith("#"))
    # Resumed from elsewhere, the run trains on and exports beside the demo's own model.
    monkeypatch.chdir(tmp_path / "out")
    assert cli.command_main("train", ["--resume", str(run), "--epochs", "2", "--quiet"], prog="train.py") == 0
    assert sorted(os.listdir(tmp_path / "out" / "saved_models" / run.name)) == ["1", "2"]

    # Run again into the same folder with fewer images: the earlier images are replaced, not trained on.
    monkeypatch.chdir(tmp_path)
    again = demo.run("out", epochs=1, train_per_class=6, test_per_class=2, verbose=0)
    assert again["test_images"] == 6
    assert sorted(len(os.listdir(tmp_path / "out" / "data" / "train" / c)) for c in ("disk", "square", "triangle")) \
        == [6, 6, 6]


@pytest.mark.parametrize("content", ["photos", "boxes.csv", "train/disk/mine.jpg"])
def test_a_demo_folder_whose_data_folder_holds_something_else_is_refused(tmp_path, capsys, content):
    # Even names the demo itself writes: without the demo's mark the folder is the user's.
    mine = tmp_path / "d" / "data" / content
    mine.parent.mkdir(parents=True)
    mine.mkdir() if content == "photos" else mine.write_text("my own annotations")
    assert cli.main(["demo", "--out", str(tmp_path / "d"), "--quiet"]) == 2
    assert (f"{tmp_path / 'd' / 'data'} exists and is not the data of an earlier demo (it has no "
            f"{demo.DATA_MARKER}); give another --out, or remove it yourself") in capsys.readouterr().err
    assert mine.exists() and (mine.is_dir() or mine.read_text() == "my own annotations")


def test_demo_flags_are_checked_before_any_work(tmp_path, capsys):
    for flag in ("--train-per-class", "--test-per-class"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["demo", "--out", str(tmp_path / "d"), flag, "0"])
        assert exit_info.value.code == 2 and "must be a positive integer, got 0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
