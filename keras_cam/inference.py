"""Inference through the exported SavedModel (the artifact TF Serving serves).

No Python model code is involved: files are read in threads, a batch at a time, and sent
batch by batch, as encoded bytes, to the ``serving_default`` signature, which decodes
(the images of a batch in parallel), classifies, computes the CAM and the boxes in
one graph call (as fast as decoding apart from the model, and one call). A file that
cannot be read costs one error record and no batch slot; a batch that fails to
decode is checked image by image without the model, and its readable images are sent
again, so one bad file costs one error record and batches stay full.
"""

import concurrent.futures
import functools
import glob
import itertools
import os
import pathlib

import numpy as np
import tensorflow as tf

from keras_cam import boxes as box_rule
from keras_cam import cam as cam_ops
from keras_cam import data, storage
from keras_cam.checks import check_int


class NotASavedModelError(ValueError):
    """The given path is not a keras-cam SavedModel."""


def load_saved_model(path):
    """Loads a keras-cam SavedModel and checks that it has the expected signatures.

    A SavedModel is a program: load only SavedModels from a source you trust.

    Args:
        path: the version folder (``saved_models/NAME/1``) or the model base folder
            (``saved_models/NAME``, whose highest version is taken).

    Returns:
        The loaded object (with ``.signatures``).

    Raises:
        NotASavedModelError: no SavedModel there, or not one exported by keras-cam.
    """
    if not os.path.exists(path):
        raise NotASavedModelError(f"Not a SavedModel: {path!r} does not exist; expected a folder such as "
                                  f"saved_models/NAME/1 (or saved_models/NAME for its highest version)")
    path = resolve_version_dir(path)
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise NotASavedModelError(f"Not a SavedModel (no saved_model.pb): {path!r}; expected a folder such as "
                                  f"saved_models/NAME/1 (or saved_models/NAME for its highest version)")
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # noqa: BLE001 - any load failure means a bad path for the user
        raise NotASavedModelError(f"Could not load the SavedModel at {path!r}: {data.error_reason(error)}") from error
    if "serving_default" not in loaded.signatures or "image_bytes" not in \
            loaded.signatures["serving_default"].structured_input_signature[1]:
        raise NotASavedModelError(f"{path!r} is a SavedModel but not one exported by keras-cam "
                                  f"(no serving_default signature taking image_bytes)")
    return loaded


def resolve_version_dir(path):
    """The SavedModel folder a path names: itself, or a base folder's highest version.

    Numbered folders without a ``saved_model.pb`` (empty, or left by a copy that did
    not finish) are passed over; only when no version holds one is the highest
    taken, so that loading it names the problem.

    Args:
        path: ``saved_models/NAME/1`` or ``saved_models/NAME``.

    Returns:
        str path (unchanged when it holds ``saved_model.pb`` or has no version folders).
    """
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
        versions = storage.version_numbers(path, complete=True) or storage.version_numbers(path)
        if versions:
            path = os.path.join(path, str(versions[-1]))
    return path


def expand_image_args(items, skip=None, passed_over=None):
    """Expands image arguments (files, folders, glob patterns) to a sorted file list.

    Folders are searched recursively for image files; hidden files are skipped.

    Args:
        items: list of str.
        skip: optional callable ``path -> bool``: files that a folder or a pattern
            finds and it accepts are left out (e.g. infer.py's own pictures); a
            file named as such is always kept.
        passed_over: optional list; the other (not hidden) files that the folders
            hold, of types keras-cam does not read (e.g. ``.tif``), are appended.

    Returns:
        ``(paths, missing)``: the image paths found and the arguments that matched
        nothing.
    """
    paths, missing = [], []
    keep = (lambda p: True) if skip is None else (lambda p: not skip(p))
    for item in items:
        if os.path.isdir(item):
            found = []
            for folder, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(folder, f) for f in sorted(files) if data.is_image_file(f)]
                if passed_over is not None:
                    passed_over += [os.path.join(folder, f) for f in sorted(files)
                                    if not f.startswith(".") and not data.is_image_file(f)]
            paths += filter(keep, found)
        elif os.path.lexists(item):  # a file, or a FIFO or broken link that gets its own error record
            paths.append(item)
        else:
            matched = sorted(p for p in _glob(item) if not os.path.isdir(p))
            paths += filter(keep, matched)
            if not matched:  # a pattern that found only skipped files is not a mistake
                missing.append(item)
    return paths, missing


def _glob(pattern):
    """``glob.glob(pattern, recursive=True)``, except that ``**`` does not follow
    symlinks (with two symlinks to ``.`` glob's walk would never end) and skips
    hidden files."""
    if "**" not in pattern:
        return glob.glob(pattern)
    head, _, tail = pattern.partition("**")
    found = []
    for root in glob.glob(head) if head else ["."]:
        found += [str(p) for p in pathlib.Path(root).glob("**" + tail) if not p.name.startswith(".")]
    return found


def display_path(path):
    """A path as printable text: the bytes of a non-UTF-8 file name shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _record(out, path):
    """One image's record from its slice of the serving outputs (NumPy values)."""
    height, width = (int(v) for v in out["image_sizes"])
    n = int(out["num_boxes"])
    return {
        "image": path,
        "class_id": int(out["class_ids"]),
        "class_name": out["class_names"].decode("utf-8"),
        "score": float(out["scores"]),
        "boxes": box_rule.normalized_to_pixel(out["boxes"][:n], height, width).tolist(),
        "box_scores": [float(s) for s in out["box_scores"][:n]],
        "width": width,
        "height": height,
        "cam": out["cams"],
        "objectness": out.get("objectness"),
    }


def box_map(record):
    """The map a record's boxes were drawn on, at the CAM's resolution, for pictures.

    The plain CAM, or with an objectness head the normalized CAM times the objectness
    (``keras_cam.cam.maps_from_cams``, the rule the serving graph applies).

    Returns:
        float32 (h, w) in [0, 1].
    """
    cam = np.asarray(record["cam"], np.float32)
    objectness = record.get("objectness")
    objectness = None if objectness is None else np.asarray(objectness, np.float32)[None]
    return cam_ops.maps_from_cams(cam[None], objectness, cam.shape).numpy()[0]


def split_outputs(outputs):
    """Batched signature outputs (tensors) as one dict of NumPy values per image."""
    outputs = {k: v.numpy() for k, v in outputs.items()}
    count = len(next(iter(outputs.values())))
    return [{k: v[i] for k, v in outputs.items()} for i in range(count)]


def call_batch(signature, contents, **inputs):
    """Calls a signature that takes ``image_bytes`` on a batch; one bad image costs one error.

    A batch the signature refuses is checked by decoding alone (no model call) and
    sent again without the images that fail; should decoding find nothing, each
    image goes on its own.

    Args:
        signature: e.g. ``loaded.signatures["serving_default"]``.
        contents: list of encoded images (bytes).
        **inputs: further per-image inputs of the signature, as lists as long as
            ``contents`` (e.g. ``class_ids`` for ``localize_classes``).

    Returns:
        One ``(outputs, error)`` per image, in order: a dict of the image's NumPy
        outputs and None, or None and a readable reason.
    """
    if not contents:
        return []
    try:
        outputs = signature(image_bytes=tf.constant(contents), **{k: tf.constant(v) for k, v in inputs.items()})
    except tf.errors.OpError as error:  # what bad bytes raise; anything else is a bug to see
        if len(contents) == 1:
            return [(None, f"not a readable image ({data.error_reason(error)})")]
        results = {i: (None, reason) for i, c in enumerate(contents) if (reason := _decode_problem(c))}
        rest = [i for i in range(len(contents)) if i not in results]
        for group in ([rest] if results else [[i] for i in rest]):
            answers = call_batch(signature, [contents[i] for i in group],
                                 **{k: [v[i] for i in group] for k, v in inputs.items()})
            results.update(zip(group, answers))
        return [results[i] for i in range(len(contents))]
    return [(out, None) for out in split_outputs(outputs)]


def read_image_bytes(path):
    """Reads a file's bytes for the model.

    Returns:
        ``(content, None)``, or ``(None, reason)`` for a file that cannot be read, is
        empty, too large or not a regular file (a FIFO would block the read).
    """
    problem = data.file_problem(path)
    if problem is not None:
        return None, problem
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as error:
        return None, f"cannot read file ({error.strerror or error})"
    return (content, None) if content else (None, "empty file")


def localize_files(loaded, paths, batch_size=16):
    """Runs the SavedModel over image files, batched.

    Args:
        loaded: from ``load_saved_model``.
        paths: iterable of image paths.
        batch_size: int >= 1, images per call of the model.

    Yields:
        One dict per image, in order: ``image``, ``class_id``, ``class_name``,
        ``score``, ``boxes`` (pixel ``[xmin, ymin, xmax, ymax]`` in the original
        image, best first), ``box_scores``, ``width``, ``height``, ``cam`` (float32
        (h, w) in [0, 1]); or ``image`` and ``error`` for an image that failed.

    Raises:
        ValueError: a ``batch_size`` that is not a positive integer (at the first item).
    """
    batch_size = check_int(batch_size, "batch_size")
    serve = loaded.signatures["serving_default"]
    paths = iter(paths)
    pending, ready = [], 0
    # Decoding inside the model's graph call measured as fast as decoding each batch
    # in a call of its own first (benchmarks/infer_speed.py, "split"); decoding in
    # threads beside the model call was slower on 2 cores (the threads pre-empt the
    # model's sharded ops). Memory stays one batch of files, whatever the number of paths.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:  # file reads wait on I/O
        while chunk := list(itertools.islice(paths, batch_size - ready)):
            for path, (content, error) in zip(chunk, pool.map(read_image_bytes, chunk)):
                pending.append((path, content, error))
                ready += error is None
            if ready == batch_size:
                yield from _run_batch(serve, pending)
                pending, ready = [], 0
    yield from _run_batch(serve, pending)


def _run_batch(serve, pending):
    """Runs the readable files of ``pending`` (``(path, content, error)``) in one call;
    yields every record in order, errors in their place."""
    good = [i for i, (_, _, error) in enumerate(pending) if error is None]
    answers = dict(zip(good, call_batch(serve, [pending[i][1] for i in good])))
    for i, (path, _, error) in enumerate(pending):
        out, error = answers.get(i, (None, error))
        yield {"image": path, "error": error} if error is not None else _record(out, path)


@functools.lru_cache(maxsize=None)
def _decoder():
    return tf.function(data.decode_image, input_signature=[tf.TensorSpec([], tf.string)]).get_concrete_function()


def _decode_problem(content):
    """Why encoded bytes do not decode with the preprocessing rule (``None`` if they do)."""
    try:
        _decoder()(tf.constant(content))
    except (tf.errors.OpError, ValueError) as error:
        return f"not a readable image ({data.error_reason(error)})"
    return None


def to_json_record(record):
    """The JSON-serializable part of a record (everything but the CAM and objectness arrays)."""
    return {k: display_path(v) if k in ("image", "picture") else v
            for k, v in record.items() if k not in ("cam", "objectness")}


def summary_line(record):
    """One readable line for a record."""
    image = display_path(record["image"])
    if "error" in record:
        return f"{image}: ERROR {record['error']}"
    boxes = " ".join("[{} {} {} {}]".format(*b) for b in record["boxes"]) or "no box"
    return f"{image}: {record['class_name']} ({record['score']:.2f})  boxes: {boxes}"

