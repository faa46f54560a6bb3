"""Training runs: run folders, checkpoints, resume, and the fit loop.

A run folder (``experiments/experiment_YYYY-MM-DD_HH_MM[_N]``) holds:
    ``config.json``        the full configuration (what ``--resume`` rebuilds from)
    ``class_names.json``   class names, in label order
    ``val_images.txt``     the validation images (for calibration)
    ``skipped_images.txt`` unreadable images that were skipped, and other files of the
                           class folders (not image types keras-cam reads), with the reason
    ``checkpoints/``       ``epoch_NNN.keras`` every N epochs, ``best.keras`` and ``best.json``
    ``backup/``            the last complete epoch for ``--resume``: ``epoch_NNN.weights.h5``
                           (weights and optimizer state) and ``state.json`` naming it
    ``log.csv``, ``tensorboard/``

Resume: every file is written atomically (``storage``), and ``backup/state.json`` is
written last at the end of each epoch, so it is the commit point: a run killed at
any moment resumes from the last epoch whose state.json was written, with its
weights, optimizer state (Adam moments and step count) and epoch number. The data
order and augmentation of each epoch depend only on ``(seed, epoch)``
(``data.make_dataset``), so the resumed epochs see the same batches an
uninterrupted run would. ``log.csv`` rows of uncommitted epochs are dropped on
resume, so each epoch is logged once.
"""

import csv
import dataclasses
import datetime
import json
import math
import os

import keras

from keras_cam import data, objectness, precision, storage, summaries
from keras_cam.boxes import DEFAULT_TAU
from keras_cam.model import (
    BACKBONES,
    TRAIN_LAYERS,
    build_cam_model,
    center_head,
    check_feature_stride,
    classifier_view,
    load_cam_model,
    set_trainable,
    zero_head,
)


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.json`` in the run folder."""
    data: str
    classes: int
    backbone: str = "resnet50"
    weights: str = "imagenet"
    image_size: int = 224
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    val_split: float = 0.2
    checkpoint_every: int = 4
    train_layers: str = "all"
    seed: int = 0
    strict: bool = False
    tau: float = DEFAULT_TAU
    feature_stride: int = None  # None: the backbone's own; half of it: atrous last stage (build_cam_model)
    objectness_layers: list = None  # backbone layers of the objectness head (keras_cam.objectness), or None
    box_extent: float = 0.0  # box rule of the export: 0 bounding rectangles, k > 0 moment boxes (boxes.py)
    precision: str = "float32"  # or "bfloat16" (keras_cam.precision); checkpoints stay float32
    saved_models_dir: str = None  # where train.py exports the run (absolute), so --resume exports there too

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in fields})


def _weights_file(weights):
    """The ``weights`` setting as a path string when it names a file; None for
    ``"imagenet"``, ``"none"`` or None."""
    if weights is None:
        return None
    path = os.fspath(weights)
    return None if path.lower() in ("imagenet", "none") else path


def check_config(config):
    """Refuses settings no run can use, before a run folder is made.

    Raises:
        ValueError: naming the bad setting (as its train.py flag).
    """
    if not isinstance(config.data, (str, os.PathLike)):
        raise ValueError(f"--data must be the path of a folder. Received: {config.data!r}")
    for flag, value in (("--epochs", config.epochs), ("--batch-size", config.batch_size),
                        ("--checkpoint-every", config.checkpoint_every), ("--classes", config.classes),
                        ("--image-size", config.image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{flag} must be a positive integer. Received: {value!r}")
    for flag, value in (("--learning-rate", config.learning_rate), ("--val-split", config.val_split),
                        ("--tau", config.tau), ("--box-extent", config.box_extent)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{flag} must be a number. Received: {value!r}")
    if config.backbone not in BACKBONES:
        raise ValueError(f"--backbone must be one of {', '.join(BACKBONES)}. Received: {config.backbone!r}")
    if config.train_layers not in TRAIN_LAYERS:
        raise ValueError(f"--train-layers must be one of {', '.join(TRAIN_LAYERS)}. Received: {config.train_layers!r}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate >= 0):  # 0: nothing learns (tests use it)
        raise ValueError(f"--learning-rate must be a number >= 0. Received: {config.learning_rate!r}")
    if config.classes < 2:
        raise ValueError(f"--classes must be at least 2 (a classifier tells two classes apart at least). "
                         f"Received: {config.classes!r}")
    if config.image_size < 32:
        raise ValueError(f"--image-size must be at least 32. Received: {config.image_size!r}")
    if not 0.0 <= config.val_split < 1.0:
        raise ValueError(f"--val-split must be in [0, 1). Received: {config.val_split!r}")
    if not (isinstance(config.seed, int) and 0 <= config.seed < 2 ** 32):
        raise ValueError(f"--seed must be an integer in [0, 2**32 - 1]. Received: {config.seed!r}")
    try:
        check_feature_stride(config.backbone, config.feature_stride)
    except ValueError:
        own = BACKBONES[config.backbone].stride
        raise ValueError(f"--feature-stride must be {own // 2} for --backbone {config.backbone} (half of its own "
                         f"stride {own}; leave it out for {own}). Received: {config.feature_stride!r}") from None
    if not (config.weights is None or isinstance(config.weights, (str, os.PathLike))):
        raise ValueError(f"--weights must be 'imagenet', 'none' or the path of a weights file. "
                         f"Received: {config.weights!r}")
    path = _weights_file(config.weights)
    if path is not None and not os.path.isfile(path):
        raise ValueError(f"--weights {path!r}: no such file (give 'imagenet', 'none' or the path of a weights "
                         f"file)")
    # Used only by the export at the end: checked now, not after the epochs.
    if not 0.0 <= config.tau < 1.0:
        raise ValueError(f"--tau must be in [0, 1). Received: {config.tau!r}")
    if not (math.isfinite(config.box_extent) and config.box_extent >= 0):
        raise ValueError(f"--box-extent must be 0 or a positive number. Received: {config.box_extent!r}")


class BadImagesError(ValueError):
    """Unreadable images were found and the run is strict."""


class DivergedError(ValueError):
    """The training loss became NaN or infinite."""


class _NanGuard(keras.callbacks.TerminateOnNaN):
    """Keras' TerminateOnNaN, raising, and remembering that it was the one that raised."""

    def __init__(self):
        super().__init__(raise_error=True)
        self.tripped = False

    def on_batch_end(self, batch, logs=None):
        try:
            super().on_batch_end(batch, logs)
        except RuntimeError:
            self.tripped = True
            raise


def make_run_dir(experiments_dir, now=None, saved_models_dir=None):
    """Creates a new, unique run folder ``experiment_YYYY-MM-DD_HH_MM[_N]``.

    Creation is exclusive (``os.mkdir``), so two runs started in the same minute get
    two folders. The run's name is also its SavedModel's name
    (``saved_models_dir/NAME/<version>``): with ``saved_models_dir`` the model folder
    is created first, exclusively too, so that runs of two experiments folders started
    in the same minute never export into one model.

    Args:
        experiments_dir: parent folder (created if missing).
        now: optional ``datetime`` (default: now).
        saved_models_dir: optional folder of the run's exports (created if missing);
            ``saved_models_dir/NAME`` is made (empty) beside the run folder.

    Returns:
        The path of the new folder.
    """
    os.makedirs(experiments_dir, exist_ok=True)
    if saved_models_dir:
        os.makedirs(saved_models_dir, exist_ok=True)
    name = (now or datetime.datetime.now()).strftime("experiment_%Y-%m-%d_%H_%M")
    for n in range(1, 10_000):
        run = name if n == 1 else f"{name}_{n}"
        model = os.path.join(saved_models_dir, run) if saved_models_dir else None
        try:
            if model:
                os.mkdir(model)
        except FileExistsError:
            continue
        try:
            os.mkdir(os.path.join(experiments_dir, run))
            return os.path.join(experiments_dir, run)
        except FileExistsError:
            if model:
                os.rmdir(model)
            continue
    raise RuntimeError(f"Could not create a run folder {name!r} in {experiments_dir!r}")


class CheckpointCallback(keras.callbacks.Callback):
    """Saves the CAM model every ``every`` epochs and whenever the validation score improves.

    The score is ``val_accuracy``, ties broken by the lower ``val_loss`` (the training
    set's when there is no validation set): on a small validation set accuracy
    saturates early (100% after a few epochs), and the first epoch to reach it would
    otherwise win over later ones that fit the same images with far more confidence.

    At each epoch end it first centres the head (``keras_cam.model.center_head``):
    no probability and no gradient changes, and every checkpoint (so every export)
    carries CAMs without the common part that training leaves undetermined.

    Args:
        cam_model: the multi-output model (the one that gets exported).
        folder: ``RUN_DIR/checkpoints``.
        every: period in epochs.
        best_so_far: ``(accuracy, loss)`` of the best earlier epoch (on resume),
            as ``read_best`` returns it.
    """

    def __init__(self, cam_model, folder, every, best_so_far=(-1.0, math.inf)):
        super().__init__()
        self.cam_model = cam_model
        self.folder = folder
        self.every = max(1, int(every))
        self.best = tuple(best_so_far)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        center_head(self.cam_model)
        if (epoch + 1) % self.every == 0:
            storage.save_model(self.cam_model, os.path.join(self.folder, f"epoch_{epoch + 1:03d}.keras"))
        prefix = "val_" if "val_accuracy" in logs else ""
        accuracy = float(logs.get(prefix + "accuracy", -1.0))
        loss = float(logs.get(prefix + "loss", math.inf))
        loss = math.inf if math.isnan(loss) else loss  # a NaN loss never wins a tie
        if (accuracy, -loss) > (self.best[0], -self.best[1]):
            self.best = (accuracy, loss)
            storage.save_model(self.cam_model, os.path.join(self.folder, "best.keras"))
            storage.write_text(os.path.join(self.folder, "best.json"),
                               json.dumps({"epoch": epoch + 1, "val_accuracy": accuracy, "val_loss": loss}))


def read_best(checkpoints):
    """``((val_accuracy, val_loss), epoch)`` of ``best.keras`` from ``best.json``;
    ``((-1.0, inf), 0)`` if none."""
    try:
        with open(os.path.join(checkpoints, "best.json")) as f:
            best = json.load(f)
        return (float(best["val_accuracy"]), float(best.get("val_loss", math.inf))), int(best["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return (-1.0, math.inf), 0


STATE_FILE = "state.json"


class ResumeCallback(keras.callbacks.Callback):
    """Commits the training state at the end of every epoch, for ``--resume``.

    Writes the classifier's weights with the optimizer state to
    ``epoch_NNN.weights.h5``, then ``state.json`` naming it (the commit), then
    deletes the older weights file. Must come last among the callbacks, so that an
    epoch is committed only after its log row and checkpoints are written.

    Args:
        folder: ``RUN_DIR/backup``.
    """

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        name = f"epoch_{epoch + 1:03d}.weights.h5"
        storage.save_model(self.model, os.path.join(self.folder, name))
        storage.write_text(os.path.join(self.folder, STATE_FILE), json.dumps({
            "epoch": epoch + 1, "weights": name,
            "optimizer_iterations": int(self.model.optimizer.iterations.numpy())}))
        for old in os.listdir(self.folder):
            if old.endswith(".weights.h5") and old != name:
                os.remove(os.path.join(self.folder, old))


def read_resume_state(run_dir):
    """The last committed epoch of a run (``backup/state.json``), or ``None``.

    Returns:
        dict with ``epoch`` (epochs completed), ``weights`` (file name in
        ``backup/``) and ``optimizer_iterations``; ``None`` before the first epoch.

    Raises:
        ValueError: the state file or the weights it names are unreadable.
    """
    path = os.path.join(run_dir, "backup", STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            state = json.load(f)
        state["epoch"], state["weights"] = int(state["epoch"]), str(state["weights"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"Cannot resume: unreadable training state {path!r} ({error})") from error
    if not os.path.isfile(os.path.join(run_dir, "backup", state["weights"])):
        raise ValueError(f"Cannot resume: {path!r} names {state['weights']!r}, which is missing")
    return state


class EpochLog(keras.callbacks.CSVLogger):
    """``log.csv``: Keras' CSVLogger (appending, for resumed runs), with epochs counted
    from 1 as in the progress lines, ``epoch_NNN`` checkpoints and ``best.json``."""

    def __init__(self, path):
        super().__init__(path, append=True)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


def _trim_log(path, epochs_done):
    """Keeps only the header and complete rows of committed epochs in ``log.csv``.

    A run killed after logging an epoch but before committing it would otherwise
    log that epoch twice. A log of a run started before keras-cam counted epochs
    from 1 (its first row is epoch 0) is renumbered, so that the resumed epochs
    follow on.
    """
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if epochs_done == 0 or not lines or not lines[0].endswith("\n"):
        os.remove(path)  # CSVLogger writes a fresh header
        return
    width = len(lines[0].split(","))
    if len(lines) > 1 and lines[1].startswith("0,"):
        def renumbered(line):
            epoch, comma, rest = line.partition(",")
            return f"{int(epoch) + 1},{rest}" if comma and epoch.isdigit() else line
        lines = lines[:1] + [renumbered(line) for line in lines[1:]]

    def committed(line):
        epoch = line.split(",", 1)[0]
        return (line.endswith("\n") and len(line.split(",")) == width and epoch.isdigit()
                and 1 <= int(epoch) <= epochs_done)
    keep = lines[:1] + [line for line in lines[1:] if committed(line)]
    if keep != lines:
        storage.write_text(path, "".join(keep))


def read_log(path):
    """``log.csv`` as a dict of per-epoch lists of floats (``epoch`` included)."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    def number(text):
        # CSVLogger writes "NA" for a metric an epoch did not have.
        return math.nan if text in (None, "", "NA") else float(text)
    return {key: [number(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def _recorded_data_folder(run_dir):
    """The data folder of the run's own ``config.json`` (None for a new run)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return TrainConfig.from_json(f.read()).data


def prepare_data(config, run_dir):
    """Scans the data folder, checks the images and splits train/validation.

    Uses ``DATA/train`` and ``DATA/val`` when both exist, else a stratified
    ``val_split`` of ``DATA``. Writes ``class_names.json``, ``val_images.txt`` and
    ``skipped_images.txt`` to the run folder. When the run folder has them already
    (a resumed run), the classes and the validation images must not have changed;
    the folder itself may have moved (``config.data`` differs from the run's
    ``config.json``): the same images under the new place are the same data.

    Returns:
        ``(train, val, skipped)``: two ``data.ImageFolder`` and the list of
        ``(path, reason)`` skipped.

    Raises:
        ValueError: ``config.classes`` does not match the class folders, a class has
            no readable training image, or the data changed since the run started.
        BadImagesError: an unreadable image in a strict run.
    """
    train_dir, val_dir = os.path.join(config.data, "train"), os.path.join(config.data, "val")
    split_layout = os.path.isdir(train_dir) and os.path.isdir(val_dir)
    if split_layout:
        train = data.scan_folder(train_dir)
        val = data.scan_folder(val_dir, class_names=train.class_names)
    else:
        train, val = data.split_folder(data.scan_folder(config.data), config.val_split, seed=config.seed)
    names = train.class_names
    if len(names) != config.classes:
        if os.path.isfile(os.path.join(run_dir, "class_names.json")):  # a resumed run: the data changed
            raise ValueError(f"{config.data!r} now has {len(names)} class folders {names}, but this run was "
                             f"started with {config.classes} classes: the data changed since the run started")
        raise ValueError(
            f"--classes {config.classes} does not match the {len(names)} class folders found in "
            f"{config.data!r}: {names}")
    paths = train.paths + val.paths
    unreadable = data.find_unreadable(paths, min_side=config.image_size)
    # What else the class folders hold is listed too, so that .tif files mixed with
    # JPEGs or a nested folder are not left out unnoticed (they do not stop a --strict
    # run), and so are class folders of DATA/val that DATA/train does not have.
    skipped = unreadable + data.left_out(paths)
    skipped += [item for folder in ((config.data, train_dir, val_dir) if split_layout else (config.data,))
                for item in data.loose_images(folder)]
    if split_layout:
        skipped += [(os.path.join(val_dir, d), f"a class folder that {train_dir} does not have: not used")
                    for d in sorted(os.listdir(val_dir)) if not d.startswith(".")
                    and os.path.isdir(os.path.join(val_dir, d)) and data.readable_name(d) not in names]
    skipped_path = os.path.join(run_dir, "skipped_images.txt")
    storage.write_text(skipped_path, "".join(f"{p}\t{r}\n" for p, r in skipped))
    if unreadable and config.strict:
        raise BadImagesError(f"Unreadable image {unreadable[0][0]!r}: {unreadable[0][1]} "
                             f"(run without --strict to skip it)")
    bad = {p for p, _ in unreadable}

    def keep(folder):
        idx = [i for i, p in enumerate(folder.paths) if p not in bad]
        return data.ImageFolder([folder.paths[i] for i in idx], folder.labels[idx], folder.class_names)
    train, val = keep(train), keep(val)
    for label, name in enumerate(names):
        if not (train.labels == label).any():
            raise ValueError(f"Class {name!r} has no readable training image in {config.data!r} "
                             f"(the skipped ones are listed in {skipped_path})")
    files = {"class_names.json": json.dumps(names),
             "val_images.txt": "".join(f"{p}\t{names[l]}\n" for p, l in zip(val.paths, val.labels))}
    started_in = _recorded_data_folder(run_dir)
    for name, text in files.items():
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                recorded = f.read()
            if started_in not in (None, config.data):  # the folder moved: the same files, under its new place
                recorded = "".join(config.data + line[len(started_in):] if line.startswith(started_in + os.sep)
                                   else line for line in recorded.splitlines(keepends=True))
            if recorded != text:
                    raise ValueError(f"Cannot resume {run_dir!r}: the classes or validation images in "
                                     f"{config.data!r} changed since the run started ({name} differs); "
                                     f"start a new run instead.")
        storage.write_text(path, text)
    return train, val, skipped


def train(config, run_dir, verbose=1, log=None):
    """Trains (or resumes) a run in ``run_dir``.

    Args:
        config: a ``TrainConfig``.
        run_dir: the run folder (from ``make_run_dir``, or an existing one to resume).
        verbose: Keras ``fit`` verbosity (1: progress bars, 0: quiet).
        log: optional callable taking one line of text, told of the stages after
            ``fit`` (the objectness fit).

    Returns:
        dict with ``cam_model`` (the best model), ``class_names``, ``history`` (every
        epoch of the run, resumed ones included, from ``log.csv``), ``best_epoch``
        and ``best_val_accuracy`` (of ``best.keras``), ``initial_epoch`` (epochs done
        before this call), ``train_set`` and ``val_set`` (``data.ImageFolder``),
        ``skipped``, and ``objectness_fit`` (``objectness.fit_objectness``'s summary,
        or None without ``config.objectness_layers``).

    Raises:
        storage.WriteError: a checkpoint could not be written (e.g. disk full); the
            message says how to resume.
        DivergedError: the loss became NaN or infinite (the message names the epoch).
        ValueError: a setting no run can use (``check_config``); ``config.precision``
            is unknown, or bfloat16 on a CPU without it; or the objectness head cannot be fitted (the message says where the
            trained classifier is and how to export it without the head).
    """
    check_config(config)
    precision.check_precision(config.precision)
    # Absolute, as train.py makes the data folder: the run folder (config.json,
    # val_images.txt) then works from any directory.
    # The weights file too (a path, or os.PathLike, which config.json could not hold): --resume
    # from another directory builds the model from it again.
    path = _weights_file(config.weights)
    config = dataclasses.replace(config, data=os.path.abspath(config.data),
                                 weights=config.weights if path is None else os.path.abspath(path))
    # The model before the data: a weights file or layer name it cannot use is named
    # before every image is scanned, and leaves the run folder as it was.
    keras.utils.set_random_seed(config.seed)
    try:
        cam_model = build_cam_model(config.classes, config.backbone, config.weights, config.image_size,
                                    feature_stride=config.feature_stride, objectness_layers=config.objectness_layers)
    except ValueError as error:  # named as its train.py flag, as check_config names the others
        message = str(error)
        if not message.startswith("objectness_layers:"):
            raise
        raise ValueError("--objectness-layers" + message[len("objectness_layers"):]) from None
    train_set, val_set, skipped = prepare_data(config, run_dir)
    # After the data checks: a resume that fails on them leaves the run's settings as they were.
    storage.write_text(os.path.join(run_dir, "config.json"), config.to_json())
    backup, checkpoints = os.path.join(run_dir, "backup"), os.path.join(run_dir, "checkpoints")
    for folder in (backup, checkpoints):
        os.makedirs(folder, exist_ok=True)
        storage.remove_temporaries(folder)  # left by a run killed mid-write
    state = read_resume_state(run_dir)
    if state is None:
        zero_head(cam_model)
    set_trainable(cam_model, config.train_layers)
    classifier = classifier_view(cam_model)
    classifier.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    initial_epoch = 0
    if state is not None:
        weights = os.path.join(backup, state["weights"])
        classifier.optimizer.build(classifier.trainable_variables)  # so its state has somewhere to go
        try:
            classifier.load_weights(weights)
        except (OSError, ValueError) as error:
            raise ValueError(f"Cannot resume from {weights!r}: {data.error_reason(error)}") from error
        initial_epoch = state["epoch"]
    log_path = os.path.join(run_dir, "log.csv")
    _trim_log(log_path, initial_epoch)
    train_ds = data.make_dataset(train_set.paths, train_set.labels, config.image_size, config.batch_size,
                                 training=True, seed=config.seed, epochs=range(initial_epoch, config.epochs))
    val_ds = (data.make_dataset(val_set.paths, val_set.labels, config.image_size, config.batch_size,
                                training=False) if val_set.paths else None)
    # A diverged run stops at the first NaN or infinite loss, before that epoch is
    # logged, checkpointed or committed.
    nan_guard = _NanGuard()
    callbacks = [
        nan_guard,
        CheckpointCallback(cam_model, checkpoints, config.checkpoint_every, read_best(checkpoints)[0]),
        EpochLog(log_path),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
        # A few validation images with CAM and boxes at each checkpoint epoch (TensorBoard "Images").
        summaries.CamImagesCallback(cam_model, summaries.pick_spread(val_set.paths or train_set.paths, 4),
                                    train_set.class_names, os.path.join(run_dir, "tensorboard", "val_images"),
                                    every=config.checkpoint_every, tau=config.tau, box_extent=config.box_extent),
    ]
    callbacks.append(ResumeCallback(backup))  # last: the commit point of each epoch
    if initial_epoch < config.epochs:
        try:
            with precision.running_in(config.precision):
                classifier.fit(train_ds, validation_data=val_ds, epochs=config.epochs, initial_epoch=initial_epoch,
                               steps_per_epoch=math.ceil(len(train_set.paths) / config.batch_size),
                               callbacks=callbacks, verbose=verbose, shuffle=False)
        except storage.WriteError as error:
            raise storage.WriteError(f"{error} Fix that (e.g. free some space), then continue with "
                                     f"--resume {run_dir}", error.errno) from error
        except RuntimeError as error:
            if not nan_guard.tripped:
                raise
            done = (read_resume_state(run_dir) or {"epoch": 0})["epoch"]
            kept = f"; epochs 1-{done} of this one are kept in {run_dir}" if done else ""
            raise DivergedError(f"Training diverged: the loss became NaN or infinite in epoch {done + 1} "
                                f"(--learning-rate {config.learning_rate:g}). Start a new run with a lower "
                                f"--learning-rate{kept}.") from error
    best_path = os.path.join(checkpoints, "best.keras")
    best = load_cam_model(best_path) if os.path.exists(best_path) else center_head(cam_model)
    (best_val_accuracy, _), best_epoch = read_best(checkpoints)
    objectness_fit = None
    if config.objectness_layers:
        if log is not None:
            log(f"Fitting the objectness head on the CAMs of {len(train_set.paths)} training images ...")
        try:
            objectness_fit = objectness.fit_objectness(best, train_set.paths, train_set.labels, config.batch_size,
                                                       config.seed)
        except ValueError as error:
            raise ValueError(f"{error} The trained classifier is safe in {best_path}; `keras-cam export "
                             f"{run_dir}` exports it with boxes on the plain CAM.") from error
        if os.path.exists(best_path):
            storage.save_model(best, best_path)
    return {"cam_model": best, "objectness_fit": objectness_fit, "class_names": train_set.class_names, "history": read_log(log_path),
            "best_epoch": best_epoch, "best_val_accuracy": best_val_accuracy, "initial_epoch": initial_epoch,
            "train_set": train_set, "val_set": val_set, "skipped": skipped}


def summary_line(result, run_dir):
    """The line a finished run ends with: images used and skipped, epochs, best score."""
    history, skipped = result["history"], result["skipped"]
    epochs = len(history.get("epoch", []))
    resumed = f" (resumed after epoch {result['initial_epoch']})" if result["initial_epoch"] else ""
    metric = "val_accuracy" if result["val_set"].paths else "accuracy (no validation images)"
    best = (f"best {metric} {result['best_val_accuracy']:.3f} at epoch {result['best_epoch']}"
            if result["best_epoch"] else "no best checkpoint")
    return (f"Done: {len(result['train_set'].paths)} training and {len(result['val_set'].paths)} validation "
            f"images, {len(skipped)} skipped or left out (listed in {os.path.join(run_dir, 'skipped_images.txt')}); "
            f"{epochs} epoch{'s' if epochs != 1 else ''}{resumed}; {best}")
