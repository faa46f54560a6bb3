"""Command-line entry points: ``keras-cam train|infer|export|evaluate|demo`` (and train.py, infer.py, evaluate.py).

Thin on purpose: parse flags, make folders, print, call the library. TensorFlow is
imported only after the flags are parsed, so ``--help`` answers at once.
"""

import argparse
import errno
import functools
import json
import os
import shlex
import sys

from keras_cam import __version__


class UserError(Exception):
    """A mistake of the user's (bad flag, path or data): one line, no stack trace."""


def _quiet_tensorflow():
    from keras_cam.quiet import import_tensorflow
    import_tensorflow()  # before any keras_cam module imports TF, so its C++ start-up logs stay hidden


def _user_errors():
    """Exception types that mean "the user gave something wrong"."""
    from keras_cam.inference import NotASavedModelError
    from keras_cam.model import WeightsUnavailableError
    from keras_cam.storage import WriteError
    from keras_cam.training import BadImagesError
    return (UserError, ValueError, FileNotFoundError, FileExistsError, NotASavedModelError,
            WeightsUnavailableError, BadImagesError, PermissionError, WriteError)


def _run(command, args, prog):
    _quiet_tensorflow()
    try:
        return command(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:
        if isinstance(error, _user_errors()):  # WeightsUnavailableError is a RuntimeError
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 2
        # Ctrl-C inside a TensorFlow C++ call can come back as pybind11's "error_already_set
        # MISMATCH ... REPLACED BY KeyboardInterrupt" instead of the KeyboardInterrupt itself.
        if "KeyboardInterrupt" not in str(error):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`keras-cam infer --json ... | head`): stop quietly, and
        # point stdout at /dev/null so the interpreter's final flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:  # noqa: BLE001 - user mistakes become one line
        if isinstance(error, _user_errors()):
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 2
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT) and error.filename is None:
            # A file keras-cam writes names itself (storage.WriteError); this is the output
            # stream (`infer.py --json > /full/disk/results.jsonl`).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            print(f"{prog}: error: cannot write the output: {error.strerror}", file=sys.stderr)
            return 1
        raise


def _check_folder(flag, path):
    """Refuses a path given for a folder that is not one, naming the flag."""
    if not os.path.isdir(path):
        raise UserError(f"{flag} {path!r}: " + ("a file, not a folder" if os.path.exists(path) else "folder not found"))


def _check_file(flag, path):
    """Refuses a path given for a file that is not one, naming the flag."""
    if not os.path.isfile(path):
        raise UserError(f"{flag} {path!r}: " + ("a folder, not a file" if os.path.isdir(path) else "file not found"))


def _int_in(low, high, expected):
    """An argparse ``type`` for an integer flag in ``[low, high]``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {value}")
        return value
    return parse


# For counts that must be at least 1 (e.g. --batch-size).
positive_int = _int_in(1, float("inf"), "a positive integer")


def _number(accepts, expected):
    """An argparse ``type`` for a float flag: ``accepts(value)`` must hold (NaN never does)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
        return value
    return parse


# --tau (a box threshold), --box-extent, --learning-rate.
tau_value = _number(lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
box_extent_value = _number(lambda v: 0.0 <= v < float("inf"), "0 or a positive number")
learning_rate_value = _number(lambda v: 0.0 < v < float("inf"), "a number > 0")
fraction_value = _number(lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)")



# --image-size, --seed (NumPy's and TensorFlow's seeds are 32-bit), --feature-stride.
image_size_value = _int_in(32, 2 ** 31 - 1, "an integer >= 32")
seed_value = _int_in(0, 2 ** 32 - 1, "an integer in [0, 2**32 - 1]")
classes_value = _int_in(2, float("inf"), "an integer >= 2 (a classifier tells two classes apart at least)")


# ---------------------------------------------------------------------------- train

def add_train_arguments(parser):
    d = "(default: %(default)s)"
    parser.add_argument("--data", help="folder with one sub-folder of images per class "
                        "(or DATA/train and DATA/val with those sub-folders); required unless --resume")
    parser.add_argument("--classes", type=classes_value,
                        help="number of classes; must match the class folders; required unless --resume")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet18", "mobilenet_v2", "tiny"],
                        help=f"feature extractor {d}")
    parser.add_argument("--weights", default="imagenet",
                        help=f"'imagenet' (downloaded by Keras), 'none' (random init) or PATH to a weights file {d}")
    parser.add_argument("--image-size", type=image_size_value, default=224, help=f"square input side in pixels {d}")
    parser.add_argument("--epochs", type=positive_int, default=12, help=f"{d}")
    parser.add_argument("--batch-size", type=positive_int, default=32, help=f"{d}")
    parser.add_argument("--learning-rate", type=learning_rate_value, default=1e-3, help=f"Adam learning rate {d}")
    parser.add_argument("--val-split", type=fraction_value, default=0.2,
                        help=f"fraction of each class held out for validation, unless DATA/val exists {d}")
    parser.add_argument("--checkpoint-every", type=positive_int, default=4, help=f"save a checkpoint every N epochs {d}")
    parser.add_argument("--train-layers", default="all", choices=["all", "head", "last_stage"],
                        help=f"which layers learn {d}")
    parser.add_argument("--tau", type=tau_value, default=0.2,
                        help=f"box threshold on the CAM min-max normalized to [0, 1], carried by the export {d}")
    parser.add_argument("--feature-stride", type=positive_int, default=None,
                        help="half the backbone's output stride (16 for resnet50, resnet18, mobilenet_v2; 4 for tiny): the last "
                             "stage runs dilated at the previous resolution with the same weights, a 14x14 CAM at "
                             "224 px instead of 7x7 (default: the backbone's own)")
    parser.add_argument("--objectness-layers", type=_layer_names, default=None, metavar="LAYER[,LAYER]",
                        help="add an objectness head on these backbone layers (at the feature map's resolution), "
                             "fitted after training on the CAM's own confident regions; boxes are then drawn on "
                             "CAM x objectness (for mobilenet_v2 with --feature-stride 16: "
                             "block_12_add,block_13_project_BN, see BENCHMARKS.md) (default: none)")
    add_box_extent_argument(parser)
    parser.add_argument("--seed", type=seed_value, default=0, help=f"{d}")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run from its last complete epoch, with the run's own settings "
                             "(with it, --epochs trains a run longer, --saved-models-dir moves its export and --data "
                             "names the data folder's new place if it moved; other run settings given are ignored, "
                             "with a note)")
    parser.add_argument("--experiments-dir", default="experiments", help=f"where run folders go {d}")
    parser.add_argument("--saved-models-dir", default="saved_models", help=f"where the final export goes {d}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_precision_argument(parser)


def _layer_names(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected layer names separated by commas, got {text!r}")
    return names


def add_box_extent_argument(parser, default=0.0, default_text="%(default)s"):
    parser.add_argument("--box-extent", type=box_extent_value, default=default, metavar="K",
                        help="box rule carried by the export: 0 boxes each CAM region by its bounding rectangle; "
                             "K > 0 by its moment box, the centre of its pixels +- K standard deviations along x "
                             f"and y (1.5 was best on real photos, see BENCHMARKS.md) (default: {default_text})")


def add_precision_argument(parser):
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                        help="arithmetic of the model's convolutions and products: bfloat16 only on CPUs with "
                             "avx512_bf16 or AMX (faster for large models; saved models stay float32) "
                             "(default: %(default)s)")


# What --resume may change in a run; every other run setting comes from its config.json.
_RESUME_FLAGS = ("epochs", "saved_models_dir", "data")


def _run_settings(training):
    """The train.py flags that are ``TrainConfig`` fields (the run's settings)."""
    import dataclasses
    return [f.name for f in dataclasses.fields(training.TrainConfig)]


def _resumed_config(args, training):
    run_dir = args.resume
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(config_path):
        raise UserError(f"--resume {run_dir!r}: not a run folder (no config.json)")
    try:
        with open(config_path) as f:
            config = training.TrainConfig.from_json(f.read())
    except (ValueError, TypeError) as error:  # not JSON, or not the settings of a run
        raise UserError(f"--resume {run_dir!r}: unreadable run settings {config_path!r} ({error})") from None
    if "data" in args.given:  # the data folder moved; prepare_data checks that it holds the same data
        _check_folder("--data", args.data)
        if os.path.abspath(args.data) != config.data:
            print(f"note: the run's data folder moved: {config.data} -> {os.path.abspath(args.data)}",
                  file=sys.stderr)
        config.data = os.path.abspath(args.data)
    elif not os.path.isabs(config.data) and not os.path.isdir(config.data):
        raise UserError(f"--resume {run_dir!r}: its config.json names the data folder {config.data!r}, a path "
                        f"relative to where the run was started (older keras-cam runs stored it so); "
                        f"resume from that directory, or give the folder: --data DIR")
    elif not os.path.isdir(config.data):
        raise UserError(f"--resume {run_dir!r}: its data folder {config.data!r} is not there; if it moved, "
                        f"give its new place: --data DIR")
    ignored = [n for n in _run_settings(training) if n in args.given and n not in _RESUME_FLAGS]
    ignored += [n for n in ("experiments_dir",) if n in args.given]
    if ignored:
        print(f"note: with --resume the run's own settings hold; ignored: "
              f"{', '.join('--' + n.replace('_', '-') for n in ignored)}", file=sys.stderr)
    if "epochs" in args.given:
        done = (training.read_resume_state(run_dir) or {"epoch": 0})["epoch"]
        if args.epochs < done:
            raise UserError(f"--epochs {args.epochs}: {run_dir} has trained {done} epochs already; "
                            f"give --epochs {done} or more")
        config.epochs = args.epochs  # train a finished or interrupted run for longer
    if "saved_models_dir" in args.given or not config.saved_models_dir:
        config.saved_models_dir = os.path.abspath(args.saved_models_dir)
    return run_dir, config


def _new_config(args, training):
    if not args.data or args.classes is None:
        raise UserError("--data and --classes are required (or --resume RUN_DIR)")
    _check_folder("--data", args.data)
    config = training.TrainConfig(**{name: getattr(args, name) for name in _run_settings(training)})
    # Absolute paths: the run folder (config.json, val_images.txt) works from any directory.
    config.data, config.saved_models_dir = os.path.abspath(args.data), os.path.abspath(args.saved_models_dir)
    training.check_config(config)
    return config


def _remove_unstarted_run(run_dir, model_dir):
    """Removes a fresh run folder that no epoch was committed in and that holds no
    list of skipped images worth reading, and its still empty model folder, so a
    mistake leaves nothing behind."""
    import shutil
    skipped = os.path.join(run_dir, "skipped_images.txt")
    if os.path.exists(os.path.join(run_dir, "backup", "state.json")) or (
            os.path.exists(skipped) and os.path.getsize(skipped)):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        os.rmdir(model_dir)
    except OSError:
        pass  # gone already, or it holds a version


EXPORT_RECORD = "export.json"  # in the run folder: the epochs and the version train.py last exported


def _read_export_record(run_dir):
    try:
        with open(os.path.join(run_dir, EXPORT_RECORD)) as f:
            record = json.load(f)
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def _train(args):
    from keras_cam import export, storage, training
    from keras_cam.storage import WriteError
    if args.resume:
        run_dir, config = _resumed_config(args, training)
        print(f"Resuming {run_dir}")
    else:
        config = _new_config(args, training)
        run_dir = training.make_run_dir(args.experiments_dir, saved_models_dir=config.saved_models_dir)
        print(f"Run folder: {run_dir}")
    name = os.path.basename(os.path.normpath(run_dir))
    base = os.path.join(config.saved_models_dir, name)
    state = training.read_resume_state(run_dir) if args.resume else None
    previous = _read_export_record(run_dir)
    if (state and state["epoch"] >= config.epochs and previous and previous.get("epoch") == state["epoch"]
            and os.path.isfile(os.path.join(str(previous.get("version")), "saved_model.pb"))):
        # Nothing to do: exporting again would only add an identical version for TF Serving to load.
        print(f"{run_dir} has finished its {config.epochs} epochs; its SavedModel: {previous['version']} "
              f"(give --epochs N to train it longer)")
        return 0
    # Progress bars on a terminal; one line per epoch into a pipe or a log file.
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    try:
        result = training.train(config, run_dir, verbose=verbose,
                                log=None if args.quiet else functools.partial(print, flush=True))
    except KeyboardInterrupt:
        print(f"{args.prog}: interrupted; continue with: {_shell_command(args.prog)} --resume {shlex.quote(run_dir)}",
              file=sys.stderr)
        return 130
    except WriteError:
        raise  # its message says how to resume: the run folder stays
    except Exception:  # noqa: BLE001 - a mistake (or a full stdout) before the first epoch leaves nothing
        if not args.resume:
            _remove_unstarted_run(run_dir, base)
        raise
    skipped = result["skipped"]
    for path, reason in skipped[:10]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if args.resume:  # a run killed mid-export left its temporary copy in the run's own model folder
        storage.remove_temporaries(base)
    target = export.next_version_dir(base)
    # Versions written after train.py's last export (evaluate.py --calibrate) carry a
    # tau chosen for the model before this training; the new export has the run's own.
    last = str((previous or {}).get("version", ""))
    since = (int(os.path.basename(last)) if os.path.basename(last).isdigit()
             and os.path.dirname(last) == os.path.abspath(base) else None)
    others = [v for v in storage.version_numbers(base) if since is not None and v > since]
    try:
        export.export_saved_model(result["cam_model"], result["class_names"], target, tau=config.tau,
                                  box_extent=config.box_extent)
    except WriteError as error:
        raise WriteError(f"{error} The trained model is safe in {run_dir}; export it later with "
                         f"`keras-cam export {run_dir}`.", error.errno) from error
    storage.write_text(os.path.join(run_dir, EXPORT_RECORD), json.dumps(
        {"epoch": (training.read_resume_state(run_dir) or {"epoch": 0})["epoch"], "version": os.path.abspath(target)}))
    print(training.summary_line(result, run_dir))
    fit = result["objectness_fit"]
    if fit:
        print(f"Objectness head: fitted on {fit['positions']} positions of the training images' CAMs "
              f"({fit['object_share']:.0%} object), agreeing with them on {fit['train_accuracy']:.0%}")
    # As the run folder is shown: relative when it is (and the export is below this directory).
    shown = os.path.relpath(target)
    print(f"SavedModel: {target if os.path.isabs(run_dir) or shown.startswith(os.pardir) else shown}")
    if others:
        print(f"note: {os.path.join(base, str(max(others)))} (written after train.py's last export, e.g. by "
              f"evaluate.py --calibrate) was for the model before this training; {target} carries the run's "
              f"--tau {config.tau:g}. To calibrate it: evaluate.py --saved_model {shlex.quote(target)} --images-list "
              f"{shlex.quote(os.path.join(run_dir, 'val_images.txt'))} --boxes CSV --calibrate", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- infer

def add_infer_arguments(parser):
    parser.add_argument("--saved_model", "--saved-model", dest="saved_model", required=True,
                        help="SavedModel version folder, or the model base folder (highest version is used)")
    parser.add_argument("--image", action="append", required=True,
                        help="image file, folder or glob pattern; repeat for more")
    parser.add_argument("--json", action="store_true", help="one JSON object per image per line on stdout (an "
                        "--image that matches nothing gets one too, with its error, before the images)")
    parser.add_argument("--output", metavar="DIR", help="write each picture with heatmap and boxes here as "
                        "NAME_cam.png (NAME_2_cam.png, ... for a later image of the same name stem); *_cam.png "
                        "files in DIR are not taken as images by a folder or pattern --image")
    parser.add_argument("--batch-size", type=positive_int, default=16,
                        help="images per model call (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true",
                        help="print nothing but errors (and --json lines); no progress bar")
    add_precision_argument(parser)


def _infer(args):
    from keras_cam import data, inference, precision
    from keras_cam.progress import Progress
    precision.check_precision(args.precision)
    if args.output and os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UserError(f"--output {args.output!r} is a file; give a folder for the pictures")
    passed_over = []
    paths, missing = inference.expand_image_args(args.image, skip=_own_picture(args.output), passed_over=passed_over)
    if passed_over and not args.quiet:
        shown = ", ".join(inference.display_path(p) for p in passed_over[:3]) + (", ..." if len(passed_over) > 3 else "")
        print(f"note: passed over {len(passed_over)} file{'s' if len(passed_over) != 1 else ''} of the --image "
              f"folders that {'are' if len(passed_over) != 1 else 'is'} not of a type keras-cam reads "
              f"({', '.join(data.IMAGE_EXTENSIONS)}): {shown}", file=sys.stderr)
    for item in missing:
        print(f"{args.prog}: error: --image {item!r}: no such file, folder or match", file=sys.stderr)
        if args.json:  # a JSON reader can account for every --image it gave
            print(json.dumps({"image": item, "error": "no such file, folder or match"}), flush=True)
    if not paths:
        shown = ", ".join(repr(item) for item in args.image if item not in missing)
        raise UserError(f"no images to process in --image {shown}" if shown else "no images to process")
    loaded = inference.load_saved_model(args.saved_model)
    if args.output:
        os.makedirs(args.output, exist_ok=True)
    failures, used_names = len(missing), set()
    # Results go to stdout; the progress bar to stderr, drawn only on a terminal (never
    # into a pipe or a log), so `--json > results.jsonl` stays clean.
    bar = Progress(len(paths), enabled=not args.quiet, unit="images")
    with precision.running_in(args.precision):
        for record in inference.localize_files(loaded, paths, batch_size=args.batch_size):
            if "error" in record:
                failures += 1
                bar.print(f"{args.prog}: error: {record['image']}: {record['error']}", file=sys.stderr)
            elif args.output:
                record["picture"] = _draw(record, os.path.join(args.output, _picture_name(record["image"], used_names)))
            if args.json:
                bar.print(json.dumps(inference.to_json_record(record)))
            elif not args.quiet and "error" not in record:
                bar.print(inference.summary_line(record))
            bar.update()
    bar.close()
    if not args.quiet:
        total = len(paths) + len(missing)  # a missing --image item counts as one failed image
        done = total - failures
        # The speed of the images done: a failed file costs next to nothing.
        speed = f" ({done / bar.elapsed:.1f} images/s)" if done and bar.elapsed > 0 else ""
        print(f"{done} of {total} images done, {failures} failed{speed}",
              file=sys.stderr if args.json else sys.stdout)
    return 1 if failures else 0


def _picture_name(image_path, used):
    """``<stem>_cam.png``, or ``<stem>_2_cam.png``, ``_3``... when an earlier image of this run
    (``x.jpg``, ``sub/x.png``) took the name; ``used`` holds the names taken (lower case,
    for case-insensitive file systems)."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    name, n = f"{stem}_cam.png", 1
    while name.lower() in used:
        n += 1
        name = f"{stem}_{n}_cam.png"
    used.add(name.lower())
    return name


def _own_picture(output):
    """For ``--output DIR``: whether a found file is one of infer's pictures in DIR."""
    if not output:
        return None
    folder = os.path.realpath(output)
    return lambda path: path.endswith("_cam.png") and os.path.realpath(os.path.dirname(path)) == folder


def _draw(record, path):
    import tensorflow as tf

    from keras_cam import data, inference, visualize
    with open(record["image"], "rb") as f:
        image = data.decode_image(tf.constant(f.read())).numpy()
    picture = visualize.label(visualize.overlay(image, inference.box_map(record), record["boxes"]),
                              f"{record['class_name']} {record['score']:.2f}")
    visualize.write_rgb(path, picture)
    return path


# ---------------------------------------------------------------------------- export

def add_export_arguments(parser):
    d = "(default: %(default)s)"
    parser.add_argument("source", metavar="RUN_DIR_OR_KERAS_FILE",
                        help="a run folder (its checkpoints/best.keras is exported) or a .keras checkpoint")
    parser.add_argument("--tau", type=tau_value, default=0.2,
                        help=f"box threshold on the CAM min-max normalized to [0, 1], carried by the export {d}")
    parser.add_argument("--max-boxes", type=positive_int, default=5, help=f"box slots per image in the outputs {d}")
    add_box_extent_argument(parser, default=None, default_text="the run's own, from its config.json, else 0")
    parser.add_argument("--class-names", metavar="NAMES",
                        help="comma-separated class names in label order, or a file (JSON list, or one name "
                             "per line) (default: the run folder's class_names.json)")
    parser.add_argument("--name", help="model name: the export goes to SAVED_MODELS_DIR/NAME/<next version> "
                                       "(default: the run folder's name, else the file's stem)")
    parser.add_argument("--saved-models-dir", default="saved_models", help=f"where exports go {d}")
    parser.add_argument("--json", action="store_true", help="print one JSON object describing the export on stdout")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")


def _read_class_names(value):
    if os.path.isdir(value):
        raise UserError(f"--class-names {value!r}: a folder; give a file of names (one a line, or a JSON list) "
                        f"or the names joined by commas")
    if not os.path.isfile(value) and (os.sep in value or value.lower().endswith((".txt", ".json"))):
        raise UserError(f"--class-names {value!r}: file not found")
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            text = f.read()
        names = json.loads(text) if text.lstrip().startswith("[") else text.splitlines()
    else:
        names = value.split(",")
    names = [str(n).strip() for n in names if str(n).strip()]
    if not names:
        raise UserError(f"--class-names {value!r}: no class names found")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # ImageNet's labels repeat "crane" (the bird, the machine): a note, not an error
        print(f"note: --class-names {value!r} repeats {', '.join(repeated)}: those classes are told apart only "
              f"by their class_id", file=sys.stderr)
    return names


def _check_same_classes(base, class_names):
    """Refuses to add a model of other classes as the next version of ``base``.

    The highest version is the one TF Serving and infer.py take: a model of other
    classes there would silently replace the one served under that name.
    """
    from keras_cam import evaluation, inference, storage
    if not storage.version_numbers(base):
        return
    served = evaluation.model_metadata(inference.load_saved_model(base))["class_names"]
    if served != list(class_names):
        shown = ", ".join(served[:6]) + (", ..." if len(served) > 6 else "")
        raise UserError(f"{base} holds a model of other classes ({shown}); a new version there would replace it "
                        f"for TF Serving and infer.py: give another --name")


def _export(args):
    from keras_cam import export
    from keras_cam.model import load_cam_model
    checkpoint, class_names, name = export.find_checkpoint(args.source)
    if args.class_names:
        class_names = _read_class_names(args.class_names)
    if class_names is None:
        raise UserError(f"{args.source!r}: no class_names.json in its run folder; give --class-names")
    if args.name is not None and (not args.name.strip() or args.name in (".", "..") or "/" in args.name
                                  or os.sep in args.name):
        # One folder inside --saved-models-dir: "..", "." or a path would put the model elsewhere.
        raise UserError(f"--name {args.name!r}: give a model name, one folder name without a path (or leave "
                        f"--name out for the run's own)")
    base = os.path.join(args.saved_models_dir, args.name or name)
    say = print if not (args.quiet or args.json) else (lambda *_: None)
    say(f"Loading {checkpoint}")
    cam_model = load_cam_model(checkpoint)
    export.check_class_names(cam_model, class_names)  # first: a wrong count is the input to fix
    _check_same_classes(base, class_names)
    target = export.next_version_dir(base)
    box_extent = args.box_extent
    if box_extent is None:  # the run's box rule, as its own export at the end of training had it
        box_extent = export.run_box_extent(checkpoint) or 0.0
    shown = ", ".join(class_names[:6]) + (", ..." if len(class_names) > 6 else "")
    rule = f"moment boxes of {box_extent:g} sd" if box_extent else "bounding rectangles"
    say(f"Exporting {len(class_names)} classes ({shown}), tau {args.tau}, {rule}, "
        f"up to {args.max_boxes} boxes per image")
    export.export_saved_model(cam_model, class_names, target, tau=args.tau, max_boxes=args.max_boxes,
                              box_extent=box_extent)
    if args.json:
        print(json.dumps({"saved_model": target, "checkpoint": checkpoint, "class_names": class_names,
                          "tau": args.tau, "max_boxes": args.max_boxes, "box_extent": box_extent}))
    else:
        say(f"SavedModel: {target}")
    return 0


# ---------------------------------------------------------------------------- evaluate

def add_evaluate_arguments(parser):
    d = "(default: %(default)s)"
    parser.add_argument("--saved_model", "--saved-model", dest="saved_model", required=True,
                        help="SavedModel version folder, or the model base folder (highest version is used)")
    parser.add_argument("--boxes", metavar="CSV", help="boxes CSV (split,class,filename,width,height,xmin,ymin,"
                        "xmax,ymax); the images are under --data or listed by --images-list")
    parser.add_argument("--voc", metavar="DIR", help="Pascal VOC folder (Annotations/, JPEGImages/, "
                        "ImageSets/Main/) or a folder of VOC XML files")
    parser.add_argument("--tfds", metavar="NAME[:SPLIT]",
                        help="TFDS dataset with boxes, e.g. cars196, caltech_birds2011, voc/2007:validation "
                             "(split default: test)")
    parser.add_argument("--data", metavar="DIR", help="the images: DIR/<split>/<class>/<file> or "
                        "DIR/<class>/<file> for --boxes; the image folder for --voc (default: its JPEGImages)")
    parser.add_argument("--split", help="only this split: the CSV rows of it, or the VOC image set "
                        "ImageSets/Main/SPLIT.txt")
    parser.add_argument("--images-list", metavar="FILE", help="exactly these images: lines 'path<TAB>class name' "
                        "(blank and '#' comment lines skipped), such as train.py's RUN_DIR/val_images.txt; their "
                        "boxes come from --boxes")
    parser.add_argument("--tfds-data-dir", metavar="DIR", help="TFDS data folder (default: TFDS's own)")
    parser.add_argument("--calibrate", action="store_true",
                        help="choose tau on these (validation) images and write a new version of the SavedModel "
                             "(NAME/<next version>/) that carries it")
    parser.add_argument("--calibrate-for", choices=["box_acc", "loc"], default="box_acc",
                        help="what the calibrated tau maximizes: box_acc, the mean BoxAcc over IoU 0.3, 0.5 and 0.7 "
                             "of all boxes (MaxBoxAccV2's figure at one tau), or loc, GT-known Loc (first box, "
                             "IoU 0.5; MaxBoxAcc's tau) (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    parser.add_argument("--plot", metavar="PNG", help="write a plot of BoxAcc against tau for each IoU delta to this "
                        "file, a name ending in .png (its folder is made if needed; not an existing folder)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help=f"images per model call {d}")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def _ground_truth(args):
    """``(examples, errors, description)`` of the chosen source of true boxes."""
    from keras_cam import annotations
    if args.tfds:
        name, _, split = args.tfds.partition(":")
        split = split or "test"
        tell = None if args.quiet else functools.partial(print, file=sys.stderr, flush=True)
        return (annotations.tfds_image_boxes(name, split, data_dir=args.tfds_data_dir, log=tell), [],
                f"TFDS {name}:{split}")
    if args.voc:
        _check_folder("--voc", args.voc)
        records, errors = annotations.voc_image_boxes(args.voc, args.split, images_dir=args.data)
        return records, errors, f"{args.voc}" + (f" ({args.split})" if args.split else "")
    if args.images_list:
        records, errors = annotations.images_list_boxes(
            annotations.read_images_list(args.images_list), annotations.read_boxes_csv(args.boxes), args.split)
        return records, errors, args.images_list
    _check_folder("--data", args.data)
    records = annotations.csv_image_boxes(args.boxes, args.data, args.split)
    return records, [], f"{args.boxes}" + (f" ({args.split})" if args.split else "")


# Failures named one a line on stderr; past these many, the rest are counted.
_SHOWN_FAILURES = 20


def _print_failures(prog, records):
    for record in records[:_SHOWN_FAILURES]:
        print(f"{prog}: error: {record['image']}: {record['error']}", file=sys.stderr)
    if len(records) > _SHOWN_FAILURES:
        print(f"{prog}: error: ... and {len(records) - _SHOWN_FAILURES} more images that could not be "
              f"evaluated (the --json report lists every one in its errors)", file=sys.stderr)


def _evaluate(args):
    given = [flag for flag, value in (("--boxes", args.boxes), ("--voc", args.voc), ("--tfds", args.tfds)) if value]
    if len(given) != 1:
        raise UserError("give exactly one of --boxes CSV, --voc DIR or --tfds NAME[:SPLIT]"
                        + (f"; received {' and '.join(given)}" if given else ""))
    if args.tfds and (args.split or args.data):
        raise UserError("--tfds takes its split as NAME:SPLIT and reads its own images; drop --split and --data")
    if args.images_list and not args.boxes:
        raise UserError("--images-list needs --boxes CSV, where the boxes of the listed images are")
    if args.boxes and not (args.data or args.images_list):
        raise UserError("--boxes needs --data DIR (the images) or --images-list FILE")
    for flag, path in (("--boxes", args.boxes), ("--images-list", args.images_list)):
        if path:
            _check_file(flag, path)
    if args.plot:  # before any work, so a bad name cannot cost the run or hide the calibrated version
        if os.path.isdir(args.plot):
            raise UserError(f"--plot {args.plot!r} is a folder; give a file name such as "
                            f"{os.path.join(args.plot, 'box_acc.png')!r}")
        if os.path.splitext(args.plot)[1].lower() != ".png":
            raise UserError(f"--plot {args.plot!r}: the plot is written as PNG; give a file name ending in .png")
        # Its folder is made when the plot is written; here only checked that it can be.
        folder = existing = os.path.dirname(os.path.abspath(args.plot))
        while not os.path.lexists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise UserError(f"--plot {args.plot!r}: cannot make its folder {folder!r} ({existing!r} is a file)")
        if not os.access(existing, os.W_OK):
            raise UserError(f"--plot {args.plot!r}: cannot write in {existing!r}")
    from keras_cam import evaluation, inference
    examples, read_errors, source = _ground_truth(args)
    loaded = inference.load_saved_model(args.saved_model)
    if args.calibrate:  # before the evaluation, which can take long, rather than after it
        try:
            evaluation.calibrated_version_dir(args.saved_model)
        except ValueError as error:
            raise UserError(f"--calibrate: {error}") from None
    from keras_cam.progress import Progress
    total = len(examples) if hasattr(examples, "__len__") else None  # TFDS streams its examples
    bar = Progress(total, enabled=not (args.quiet or args.json), unit="images")

    def progress(done, failed):  # failed images count as handled: the bar ends at the total
        bar.update(done + failed - bar.done)

    unread = [{"image": p, "error": e} for p, e in read_errors]
    try:
        report = evaluation.evaluate_saved_model(loaded, examples, batch_size=args.batch_size, progress=progress,
                                                 criterion=args.calibrate_for)
    except evaluation.NothingEvaluatedError as error:
        bar.close()
        # The images that could not even be read count too: name the failures, then why none was scored.
        failed = unread + error.errors
        if args.json:  # the report a script reads, with every failure (stderr shows the first ones)
            print(json.dumps({"num_images": 0, "num_failed": len(failed), "errors": failed}))
        _print_failures(args.prog, failed)
        raise UserError(str(evaluation.NothingEvaluatedError(failed, source))) from None
    bar.close()
    report["errors"] = unread + report["errors"]
    report["num_failed"] = len(report["errors"])
    _print_failures(args.prog, report["errors"])
    not_calibrated = None
    if args.calibrate:
        evaluated = os.path.normpath(inference.resolve_version_dir(args.saved_model))  # before a new version exists
        try:
            report["calibrated_saved_model"] = evaluation.save_calibrated_version(
                loaded, args.saved_model, report["calibrated_tau"])
            report["calibrated_version_written"] = os.path.normpath(report["calibrated_saved_model"]) != evaluated
        except ValueError as error:  # reported after the figures, which still stand
            not_calibrated = error
    if args.json:
        print(json.dumps(report))
    else:
        print(evaluation.format_report(report, source))
        if "calibrated_saved_model" in report:
            print(f"Calibrated SavedModel (tau {report['calibrated_tau']:.2f}): {report['calibrated_saved_model']}"
                  if report["calibrated_version_written"] else
                  f"{report['calibrated_saved_model']} carries the calibrated tau {report['calibrated_tau']:.2f} "
                  f"already: no new version written")
    if args.plot:  # after the report, which stands even if the plot cannot be written
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        evaluation.plot_box_acc(report, args.plot)
        if not args.json:
            print(f"Plot: {args.plot}")
    if not_calibrated is not None:
        raise UserError(f"--calibrate: {not_calibrated}")
    return 1 if report["errors"] else 0


# ---------------------------------------------------------------------------- demo

def add_demo_arguments(parser):
    parser.add_argument("--out", default="demo_output", help="work folder (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=12, help="training epochs (default: %(default)s)")
    parser.add_argument("--train-per-class", type=positive_int, default=500,
                        help="generated training images per class, 20%% for validation (default: %(default)s)")
    parser.add_argument("--test-per-class", type=positive_int, default=50,
                        help="generated held-out images per class (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _demo(args):
    from keras_cam import demo
    result = demo.run(args.out, epochs=args.epochs, train_per_class=args.train_per_class,
                      test_per_class=args.test_per_class,
                      verbose=0 if args.quiet else (1 if sys.stdout.isatty() else 2), log=print)
    print(f"Localization accuracy (best box IoU >= 0.5) on {result['test_images']} held-out images: "
          f"{result['loc_accuracy']:.3f}; classification accuracy {result['cls_accuracy']:.3f}")
    return 0


# ---------------------------------------------------------------------------- entry points

COMMANDS = {
    "train": (add_train_arguments, _train, "train a CAM model on a folder of class sub-folders and export it"),
    "infer": (add_infer_arguments, _infer, "classify and localize images with an exported SavedModel"),
    "export": (add_export_arguments, _export, "export a run's best checkpoint (or a .keras file) as a SavedModel"),
    "evaluate": (add_evaluate_arguments, _evaluate,
                 "score an exported SavedModel's boxes against true boxes (WSOL metrics); calibrate its tau"),
    "demo": (add_demo_arguments, _demo, "train, export and evaluate on built-in synthetic data (offline)"),
}


def _shell_command(prog):
    """How to run ``prog`` again from a shell: ``python PATH/train.py`` for the scripts
    (they are not executables on the PATH), ``keras-cam train`` as it is."""
    if not prog.endswith(".py"):
        return prog
    script = sys.argv[0] if os.path.basename(sys.argv[0]) == prog else prog
    return f"python {shlex.quote(script)}"


def _parser(command, prog):
    add, _, help_text = COMMANDS[command]
    parser = argparse.ArgumentParser(prog=prog, description=help_text)
    parser.add_argument("--version", action="version", version=f"keras-cam {__version__}")
    add(parser)
    parser.set_defaults(prog=prog)  # commands print per-item errors as "prog: error: ..." too
    return parser


def _typed_flags(parser, args, argv):
    """The destinations of the flags given on the command line, not just equal to their
    defaults. argparse fills in a default only where the namespace has no value yet, so
    parsing again into a namespace pre-filled with a marker leaves the marker wherever
    a flag was not given. (No ``append`` flags: they would append to the marker.)"""
    unset = object()
    probe = argparse.Namespace(**{name: unset for name in vars(args)})
    parser.parse_args(argv, namespace=probe)
    return {name for name, value in vars(probe).items() if value is not unset}


def command_main(command, argv=None, prog=None):
    """Runs one command (e.g. ``train``, ``infer``, ``export``) with its own flags."""
    prog = prog or f"keras-cam {command}"
    parser = _parser(command, prog)
    args = parser.parse_args(argv)
    args.given = _typed_flags(parser, args, argv) if command == "train" else set()
    return _run(COMMANDS[command][1], args, prog)


def main(argv=None):
    """``keras-cam COMMAND [flags]``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="keras-cam", description="Turn an image classifier into an object localizer.")
    parser.add_argument("--version", action="version", version=f"keras-cam {__version__}")
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[2]}" for k, v in COMMANDS.items()))
    if not argv or argv[0].startswith("-"):
        parser.parse_args(argv)
        parser.print_help()
        return 2
    parser.parse_args(argv[:1])
    return command_main(argv[0], argv[1:])
