"""Interrupted training: a real `python train.py` killed with SIGKILL mid-epoch, then --resume.

The resumed run must end where an uninterrupted run ends: every epoch logged once,
the optimizer's step count carried on, and the same losses and accuracy (the data
order and augmentation of each epoch depend only on the seed and the epoch number).
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from keras_cam import cli, synthetic, training

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, BATCH, PER_CLASS = 5, 4, 10
FLAGS = ["--classes", "3", "--backbone", "tiny", "--weights", "none", "--image-size", "32",
         "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--checkpoint-every", "1", "--quiet"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_data")
    synthetic.write_dataset(str(root), {"train": PER_CLASS}, size=32, seed=7)
    return root / "train"


def _train_process(args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _kill_after_commit(process, experiments, epoch, timeout=240):
    """SIGKILLs ``process`` as soon as its run has committed ``epoch`` epochs.

    The commit (``backup/state.json``) is the last thing an epoch does, so the kill
    lands in the following epoch. Returns the run folder.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"train.py ended before it could be killed: {process.communicate()}"
        for run in experiments.glob("*/backup/state.json"):
            try:
                done = json.loads(run.read_text())["epoch"]
            except (OSError, ValueError):
                continue
            if done >= epoch:
                process.send_signal(signal.SIGKILL)
                process.communicate()
                return run.parent.parent
        time.sleep(0.005)
    process.kill()
    pytest.fail(f"no epoch {epoch} committed within {timeout} s")


def _log(run):
    return training.read_log(str(run / "log.csv"))


def _state(run):
    return json.loads((run / "backup" / "state.json").read_text())


def _assert_resumed_like_uninterrupted(resumed, reference, steps_per_epoch, n_val):
    got, want = _log(resumed), _log(reference)
    # Each epoch logged exactly once, counted from 1 as the checkpoints are.
    assert got["epoch"] == list(range(1, EPOCHS + 1)), "each epoch logged exactly once"
    assert want["epoch"] == list(range(1, EPOCHS + 1))
    # the optimizer's step count went on from the kill instead of restarting at 0
    assert _state(resumed)["optimizer_iterations"] == EPOCHS * steps_per_epoch
    assert _state(reference)["optimizer_iterations"] == EPOCHS * steps_per_epoch
    # same data, same optimizer state: the same trajectory, within float noise
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-3)
    np.testing.assert_allclose(got["val_loss"], want["val_loss"], rtol=1e-3)
    assert abs(got["val_accuracy"][-1] - want["val_accuracy"][-1]) <= 1.0 / n_val + 1e-6
    assert json.loads((resumed / "checkpoints" / "best.json").read_text()) == \
        json.loads((reference / "checkpoints" / "best.json").read_text())
    assert sorted(p.name for p in (resumed / "checkpoints").glob("epoch_*.keras")) == \
        [f"epoch_{e:03d}.keras" for e in range(1, EPOCHS + 1)]
    assert not list(resumed.rglob(".tmp-*")), "no temporary file is left behind"


def test_sigkill_mid_epoch_then_resume(images, tmp_path, capsys):
    """A real train.py is killed mid-epoch; `keras-cam train --resume` (in-process) finishes it.

    The uninterrupted reference is a second train.py started at the same time (the
    machine's other core does it while the first one is killed and resumed).
    """
    experiments, saved_models = tmp_path / "experiments", tmp_path / "saved_models"
    reference = _train_process(["--data", str(images), *FLAGS, "--experiments-dir", str(tmp_path / "reference"),
                                "--saved-models-dir", str(tmp_path / "reference_models")])
    process = _train_process(["--data", str(images), *FLAGS, "--experiments-dir", str(experiments),
                              "--saved-models-dir", str(saved_models)])
    run = _kill_after_commit(process, experiments, epoch=2)
    assert process.returncode == -signal.SIGKILL
    committed = _state(run)["epoch"]
    assert 2 <= committed < EPOCHS
    assert not list(saved_models.glob("*/*"))  # its model folder, no version yet

    code = cli.command_main("train", ["--resume", str(run), "--saved-models-dir", str(saved_models), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{EPOCHS} epochs (resumed after epoch {committed})" in out and "best val_accuracy" in out
    assert (saved_models / run.name / "1" / "saved_model.pb").is_file()

    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err
    (reference_run,) = (tmp_path / "reference").iterdir()
    n_val = len((run / "val_images.txt").read_text().splitlines())
    _assert_resumed_like_uninterrupted(run, reference_run, math.ceil((3 * PER_CLASS - n_val) / BATCH), n_val)


@pytest.mark.slow
def test_sigkill_twice_then_resume_all_in_processes(images, tmp_path):
    """Slow variant: every run is a real `python train.py`, killed twice before it finishes."""
    saved_models = tmp_path / "saved_models"
    experiments = tmp_path / "experiments"
    run = _kill_after_commit(_train_process(["--data", str(images), *FLAGS, "--experiments-dir", str(experiments),
                                             "--saved-models-dir", str(saved_models)]), experiments, epoch=1)
    first = _state(run)["epoch"]
    _kill_after_commit(_train_process(["--resume", str(run), "--saved-models-dir", str(saved_models)]),
                       experiments, epoch=first + 2)
    finished = _train_process(["--resume", str(run), "--saved-models-dir", str(saved_models)])
    out, err = finished.communicate(timeout=600)
    assert finished.returncode == 0, err

    reference_dir = tmp_path / "reference"
    reference = _train_process(["--data", str(images), *FLAGS, "--experiments-dir", str(reference_dir),
                                "--saved-models-dir", str(tmp_path / "reference_models")])
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err
    (reference_run,) = reference_dir.iterdir()
    n_val = len((run / "val_images.txt").read_text().splitlines())
    _assert_resumed_like_uninterrupted(run, reference_run, math.ceil((3 * PER_CLASS - n_val) / BATCH), n_val)
