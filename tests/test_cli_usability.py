"""The command-line surface: entry points, --help/--version, `keras-cam export`, progress."""

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLASS_NAMES, IMAGE_SIZE

from keras_cam import __version__, cli
from keras_cam.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).with_name("keras-cam")


def _run(argv, timeout=120):
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# --- entry points ---------------------------------------------------------------------

def test_console_script_help_and_version():
    assert CONSOLE_SCRIPT.is_file(), f"{CONSOLE_SCRIPT} missing: pip install -e . creates it"
    result = _run([str(CONSOLE_SCRIPT), "--help"])
    assert result.returncode == 0
    for command in cli.COMMANDS:
        assert command in result.stdout
    result = _run([str(CONSOLE_SCRIPT), "--version"])
    assert result.returncode == 0 and result.stdout.strip() == f"keras-cam {__version__}"


def test_python_dash_m_and_the_scripts_answer_help_without_tensorflow_noise():
    for argv in ([sys.executable, "-m", "keras_cam", "--help"], [sys.executable, "train.py", "--help"],
                 [sys.executable, "infer.py", "--help"]):
        result = _run(argv)
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout and result.stderr == "", argv


def test_bare_command_prints_usage_and_fails(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "usage: keras-cam" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_version(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"keras-cam {__version__}"


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_explains_every_flag_with_its_default(command):
    parser = cli._parser(command, f"keras-cam {command}")
    text = " ".join(parser.format_help().split())
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help, f"{command} {name}: no help text"
        assert (action.option_strings[0] if action.option_strings else action.metavar) in text
        if action.default not in (None, False, argparse.SUPPRESS):
            expanded = formatter._expand_help(action)
            assert f"(default: {action.default})" in expanded, f"{command} {name}: {expanded!r}"


def test_cli_defaults_are_the_library_defaults():
    from keras_cam import boxes, export
    for command in ("train", "export"):
        args = cli._parser(command, "x").parse_args(["run"] if command == "export" else [])
        assert args.tau == boxes.DEFAULT_TAU
    assert cli._parser("export", "x").parse_args(["run"]).max_boxes == export.DEFAULT_MAX_BOXES
    # evaluate's --calibrate-for is spelled out in cli (no TF import before parsing): the same criteria.
    from keras_cam import calibration
    parser = cli._parser("evaluate", "x")
    (action,) = [a for a in parser._actions if "--calibrate-for" in a.option_strings]
    assert tuple(action.choices) == calibration.CRITERIA and action.default == calibration.DEFAULT_CRITERION
    # So are train's --backbone and --train-layers: the same as the library's.
    from keras_cam import model
    train = {a.dest: a for a in cli._parser("train", "x")._actions}
    assert list(train["backbone"].choices) == list(model.BACKBONES)
    assert tuple(train["train_layers"].choices) == model.TRAIN_LAYERS


# --- export ---------------------------------------------------------------------------

@pytest.fixture()
def run_dir(cam_model, tmp_path):
    """A run folder as `keras-cam train` leaves it, with the tiny model as its best checkpoint."""
    run = tmp_path / "experiments" / "experiment_2026-01-02_03_04"
    (run / "checkpoints").mkdir(parents=True)
    cam_model.save(str(run / "checkpoints" / "best.keras"))
    (run / "class_names.json").write_text(json.dumps(CLASS_NAMES))
    return run


def test_export_round_trip(run_dir, cam_model, tmp_path, capsys):
    import tensorflow as tf
    saved_models = tmp_path / "saved_models"
    code = cli.main(["export", str(run_dir), "--tau", "0.35", "--max-boxes", "3",
                     "--saved-models-dir", str(saved_models)])
    out = capsys.readouterr().out
    target = saved_models / run_dir.name / "1"
    assert code == 0
    assert f"Loading {run_dir / 'checkpoints' / 'best.keras'}" in out and f"SavedModel: {target}" in out
    loaded = tf.saved_model.load(str(target))
    meta = loaded.metadata()
    assert meta["tau"].numpy() == pytest.approx(0.35)
    assert int(meta["max_boxes"]) == 3 and int(meta["image_size"]) == IMAGE_SIZE
    assert [c.decode() for c in meta["class_names"].numpy()] == CLASS_NAMES
    images = np.random.default_rng(0).uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    served = loaded.signatures["predict_images"](images=tf.constant(images))
    expected = tf.nn.softmax(cam_model(images, training=False)["logits"]).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    assert served["boxes"].shape == (2, 3, 4)

    # The next export of the same run is the next version; --json is machine-readable.
    assert cli.main(["export", str(run_dir), "--saved-models-dir", str(saved_models), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["saved_model"] == str(saved_models / run_dir.name / "2")
    assert record["tau"] == 0.2 and record["class_names"] == CLASS_NAMES


def test_export_keeps_the_runs_box_rule_unless_given(run_dir, tmp_path, capsys):
    from keras_cam import evaluation, inference
    (run_dir / "config.json").write_text(json.dumps({"data": "d", "classes": 3, "box_extent": 1.5}))
    saved_models = tmp_path / "sm"
    extents = []
    for extra in ([], ["--box-extent", "0"]):
        assert cli.main(["export", str(run_dir), "--saved-models-dir", str(saved_models), "--json", *extra]) == 0
        record = json.loads(capsys.readouterr().out)
        loaded = inference.load_saved_model(record["saved_model"])
        extents.append((record["box_extent"], evaluation.model_metadata(loaded)["box_extent"]))
    assert extents == [(1.5, 1.5), (0.0, 0.0)]
    assert cli.main(["export", str(run_dir), "--saved-models-dir", str(saved_models)]) == 0
    assert "tau 0.2, moment boxes of 1.5 sd, up to 5 boxes per image" in capsys.readouterr().out


def test_export_a_keras_file_with_class_names(run_dir, tmp_path, capsys):
    import tensorflow as tf
    checkpoint = tmp_path / "model.keras"
    checkpoint.write_bytes((run_dir / "checkpoints" / "best.keras").read_bytes())
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    assert cli.main(["export", str(checkpoint), "--class-names", str(names), "--name", "pets",
                     "--saved-models-dir", str(tmp_path / "sm"), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    loaded = tf.saved_model.load(str(tmp_path / "sm" / "pets" / "1"))  # keep it: metadata uses its variables
    meta = loaded.metadata()
    assert [c.decode() for c in meta["class_names"].numpy()] == ["cat", "dog", "bird"]


def test_export_of_other_classes_into_a_served_model_folder_is_refused(run_dir, tmp_path, capsys):
    saved_models = tmp_path / "sm"
    assert cli.main(["export", str(run_dir), "--name", "shared", "--saved-models-dir", str(saved_models),
                     "--quiet"]) == 0
    # The same classes again: a new version, as any re-export.
    assert cli.main(["export", str(run_dir), "--name", "shared", "--saved-models-dir", str(saved_models),
                     "--quiet"]) == 0
    capsys.readouterr()
    code = cli.main(["export", str(run_dir), "--class-names", "cat,dog,bird", "--name", "shared",
                     "--saved-models-dir", str(saved_models)])
    err = capsys.readouterr().err
    assert code == 2 and (f"{saved_models / 'shared'} holds a model of other classes ({', '.join(CLASS_NAMES)}); "
                          f"a new version there would replace it") in err
    # A wrong number of names is named as that, not as other classes (which --name would not fix).
    code = cli.main(["export", str(run_dir), "--class-names", "cat,dog", "--name", "shared",
                     "--saved-models-dir", str(saved_models)])
    err = capsys.readouterr().err
    assert code == 2 and "The model has 3 classes but 2 class names were given" in err and "other classes" not in err
    assert sorted(os.listdir(saved_models / "shared")) == ["1", "2"]


def test_export_with_a_repeated_class_name_notes_it_and_exports(run_dir, tmp_path, capsys):
    # ImageNet's own labels repeat "crane": a repeat is noted, not refused.
    assert cli.main(["export", str(run_dir), "--class-names", "crane,dog,crane", "--saved-models-dir",
                     str(tmp_path / "sm"), "--quiet"]) == 0
    assert "note: --class-names 'crane,dog,crane' repeats crane" in capsys.readouterr().err
    assert (tmp_path / "sm" / run_dir.name / "1" / "saved_model.pb").exists()


@pytest.mark.parametrize("extra, message", [
    (["--class-names", "a,b"], "The model has 3 classes but 2 class names were given"),
    (["--class-names", "TMP"], "--class-names 'TMP': a folder; give a file of names"),
    (["--class-names", "TMP/names.txt"], "--class-names 'TMP/names.txt': file not found"),
    (["--name", ""], "--name '': give a model name, one folder name without a path"),
    (["--name", " "], "--name ' ': give a model name, one folder name without a path"),
    (["--name", "."], "--name '.': give a model name, one folder name without a path"),
    (["--name", ".."], "--name '..': give a model name, one folder name without a path"),
    (["--name", "../escape"], "--name '../escape': give a model name, one folder name without a path"),
    (["--name", "a/b"], "--name 'a/b': give a model name, one folder name without a path"),
])
def test_export_mistakes_are_one_line(run_dir, tmp_path, extra, message, capsys):
    extra = [a.replace("TMP", str(tmp_path)) for a in extra]
    assert cli.main(["export", str(run_dir), "--saved-models-dir", str(tmp_path / "sm"), *extra]) == 2
    captured = capsys.readouterr()
    assert message.replace("TMP", str(tmp_path)) in captured.err and "Traceback" not in captured.err
    assert "Exporting" not in captured.out  # refused before it says it exports
    assert not (tmp_path / "sm" / run_dir.name / "1").exists()


@pytest.mark.parametrize("extra, message", [
    (["--tau", "1.5"], "argument --tau: must be a number in [0, 1), got 1.5"),
    (["--max-boxes", "0"], "argument --max-boxes: must be a positive integer, got 0"),
    (["--box-extent", "-1"], "argument --box-extent: must be 0 or a positive number, got -1"),
])
def test_export_flags_are_checked_when_parsed(run_dir, tmp_path, extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", str(run_dir), "--saved-models-dir", str(tmp_path / "sm"), *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "sm").exists()


def test_export_needs_a_checkpoint_and_class_names(tmp_path, cam_model, capsys):
    assert cli.main(["export", str(tmp_path / "missing")]) == 2
    assert "No run folder or .keras file" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path)]) == 2
    assert "best.keras" in capsys.readouterr().err
    (tmp_path / "text.keras").write_text("not a zip archive")
    assert cli.main(["export", str(tmp_path / "text.keras"), "--class-names", "a,b,c"]) == 2
    assert f"{str(tmp_path / 'text.keras')!r} is not a .keras checkpoint: a .keras file is a zip archive" \
        in capsys.readouterr().err
    cam_model.save(str(tmp_path / "lonely.keras"))
    assert cli.main(["export", str(tmp_path / "lonely.keras"), "--saved-models-dir", str(tmp_path)]) == 2
    assert "give --class-names" in capsys.readouterr().err


# --- progress ---------------------------------------------------------------------------

class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_bar_on_a_terminal_shows_count_rate_and_eta():
    stream, clock = FakeTerminal(), FakeClock()
    bar = Progress(10, stream=stream, unit="images", width=10, interval=0.0, clock=clock)
    clock.now += 2.0
    bar.update(4)
    assert stream.getvalue().endswith("[====>     ] 4/10 images  2.0 images/s  ETA 3s")
    before = stream.getvalue()
    bar.print("a line into a file", file=io.StringIO())
    assert stream.getvalue() == before  # it does not cross the bar, which stays
    bar.print("a result line", file=FakeTerminal())
    assert stream.getvalue().endswith("\r")  # the bar line was wiped before the result line
    clock.now += 3.0
    bar.update(6)
    bar.close()
    assert stream.getvalue().endswith("[==========] 10/10 images  2.0 images/s\n")
    assert bar.rate == pytest.approx(2.0)


def test_progress_draws_nothing_when_quiet_or_not_a_terminal():
    for stream, enabled in ((FakeTerminal(), False), (io.StringIO(), True)):
        bar = Progress(3, stream=stream, enabled=enabled)
        bar.update(3)
        bar.close()
        assert stream.getvalue() == "" and bar.done == 3


def test_infer_prints_a_rate_and_keeps_json_on_stdout_clean(exported, sample_images, tmp_path, capsys):
    for i, image in enumerate(sample_images):
        cv2.imwrite(str(tmp_path / f"{i}.png"), image[..., ::-1])
    assert cli.main(["infer", "--saved_model", exported, "--image", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert len([json.loads(line) for line in captured.out.splitlines()]) == len(sample_images)
    assert f"{len(sample_images)} of {len(sample_images)} images done, 0 failed (" in captured.err
    assert "images/s)" in captured.err and "\r" not in captured.err  # not a terminal: no bar
    assert cli.main(["infer", "--saved_model", exported, "--image", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")


# --- no TensorFlow start-up noise ---------------------------------------------------------

def test_infer_script_prints_no_tensorflow_log_lines(exported, sample_images, tmp_path):
    import os
    cv2.imwrite(str(tmp_path / "photo.png"), sample_images[0][..., ::-1])
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    result = subprocess.run([sys.executable, "infer.py", "--saved_model", exported, "--image",
                             str(tmp_path / "photo.png")], check=False, capture_output=True, text=True,
                            timeout=180, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert "photo.png:" in result.stdout and "1 of 1 images done" in result.stdout
    assert result.stderr == ""  # no oneDNN / absl / cpu_feature_guard lines, no Python warnings


# --- counts given on the command line ----------------------------------------------------

@pytest.mark.parametrize("command, value, shown", [
    ("infer", "0", "0"), ("infer", "-3", "-3"), ("evaluate", "0", "0"), ("evaluate", "x", "'x'")])
def test_batch_size_must_be_a_positive_integer(command, value, shown, capsys):
    required = {"infer": ["--image", "a.png"], "evaluate": ["--tfds", "cars196"]}[command]
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--saved_model", "m", *required, "--batch-size", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"keras-cam {command}: error: argument --batch-size: must be a positive integer, got {shown}" in err
    assert "Traceback" not in err


def test_positive_int_is_an_argparse_type():
    assert cli.positive_int("7") == 7
    for text in ("0", "-1", "2.5", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a positive integer"):
            cli.positive_int(text)


# --- per-item errors and the summary line -------------------------------------------------

@pytest.mark.parametrize("prog", ["infer.py", "keras-cam infer"])
def test_infer_counts_a_missing_path_and_prints_the_real_prog(exported, sample_images, tmp_path, prog, capsys):
    cv2.imwrite(str(tmp_path / "ok.png"), sample_images[0][..., ::-1])
    (tmp_path / "bad.png").write_text("not an image")
    code = cli.command_main("infer", ["--saved_model", exported, "--image", str(tmp_path / "nope.jpg"),
                                      "--image", str(tmp_path / "ok.png"), "--image", str(tmp_path / "bad.png")],
                            prog=prog)
    out, err = capsys.readouterr()
    assert code == 1
    assert "1 of 3 images done, 2 failed" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{prog}: error: ") for line in lines), lines
    assert "nope.jpg" in lines[0] and "bad.png" in lines[1]


# --- --output pictures ----------------------------------------------------------------------

def test_infer_output_names_are_unique_and_its_pictures_are_not_inputs(exported, sample_images, tmp_path, capsys):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name, image in zip(("x.png", "x.jpg", "sub/x.png", "X.bmp"), sample_images):
        cv2.imwrite(str(images / name), image[..., ::-1])
    argv = ["infer", "--saved_model", exported, "--image", str(images), "--output", str(images), "--json"]
    assert cli.main(argv) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Sorted walk: X.bmp, x.jpg, x.png, then sub/x.png; the names ignore case (macOS, Windows).
    assert [(os.path.relpath(r["image"], images), os.path.basename(r["picture"])) for r in records] == [
        ("X.bmp", "X_cam.png"), ("x.jpg", "x_2_cam.png"), ("x.png", "x_3_cam.png"), ("sub/x.png", "x_4_cam.png")]
    assert all(cv2.imread(r["picture"]) is not None for r in records)
    # The second run over the same folder does not take the first run's pictures as images.
    assert cli.main(argv) == 0
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["picture"] for r in again] == [r["picture"] for r in records]
    # ... nor through a pattern; a picture named on its own is still an image.
    assert cli.main([*argv[:3], "--image", str(images / "*.png"), "--image", records[0]["picture"],
                     "--output", str(images), "--json"]) == 0
    named = [os.path.basename(json.loads(line)["image"]) for line in capsys.readouterr().out.splitlines()]
    assert named == ["x.png", "X_cam.png"]
    # A pattern that finds only pictures is not a missing input.
    assert cli.main([*argv[:3], "--image", str(images / "*_cam.png"), "--image", str(images / "x.png"),
                     "--output", str(images), "--json"]) == 0
    assert "no such file" not in capsys.readouterr().err


# --- model base folders ----------------------------------------------------------------------

def test_an_empty_version_folder_does_not_hide_the_complete_one(exported, sample_images, tmp_path, capsys):
    import shutil

    from keras_cam import inference
    base = tmp_path / "m"
    shutil.copytree(exported, base / "1")
    (base / "12").mkdir()  # empty, e.g. a copy that never finished
    (base / "7").mkdir()
    assert inference.resolve_version_dir(str(base)) == str(base / "1")
    cv2.imwrite(str(tmp_path / "photo.png"), sample_images[0][..., ::-1])
    assert cli.main(["infer", "--saved_model", str(base), "--image", str(tmp_path / "photo.png")]) == 0
    assert "1 of 1 images done" in capsys.readouterr().out
    # With no complete version the highest is taken, so the error names it.
    shutil.rmtree(base / "1")
    assert inference.resolve_version_dir(str(base)) == str(base / "12")
    assert cli.main(["infer", "--saved_model", str(base), "--image", str(tmp_path / "photo.png")]) == 2
    assert f"Not a SavedModel (no saved_model.pb): '{base / '12'}'" in capsys.readouterr().err
