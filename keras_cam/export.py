"""Export: a SavedModel that answers class, CAM and boxes by itself.

Layout: ``<base>/<name>/<version>/`` with integer versions, as
``tensorflow_model_server --model_base_path=<base>/<name>`` expects. Class names,
the box threshold ``tau`` and the box rule's ``box_extent`` (0: bounding
rectangles; k > 0: moment boxes, see ``keras_cam.boxes``) are variables inside the
SavedModel.

Signatures (all return the same named outputs):
    ``serving_default``: ``image_bytes`` DT_STRING [-1], encoded JPEG/PNG/BMP/GIF/WebP of
        any size; decoding and resizing happen in the graph.
    ``predict_images``: ``images`` float32 [-1, S, S, 3], RGB 0-255 at input size
        (another size is refused: TF Serving does not check shapes).
    ``localize_classes``: ``image_bytes`` DT_STRING [-1] and ``class_ids`` DT_INT32
        [-1], one class per image: the CAM and boxes of that class instead of the
        predicted one (evaluation needs the true class's map for GT-known Loc).
Outputs: ``probabilities`` [-1, C], ``class_ids`` [-1], ``class_names`` [-1],
``scores`` [-1], ``cams`` [-1, h, w] (normalized to [0, 1]), ``objectness`` [-1, h, w]
(the model's objectness probabilities, ``keras_cam.objectness``; all ones without an
objectness head), the boxes being drawn on ``cam.maps_from_cams(cams, objectness)``,
``boxes`` [-1, K, 4] normalized ``[ymin, xmin, ymax, xmax]``, ``box_scores`` [-1, K]
(0 marks padding), ``num_boxes`` [-1] and ``image_sizes`` [-1, 2] (height, width of
the input image, to turn normalized boxes into pixels). ``class_ids``,
``class_names``, ``scores`` (that class's probability), ``cams`` and the boxes are
those of the predicted class, or of the given class for ``localize_classes``. An
empty batch gets empty outputs.
"""

import json
import os

import tensorflow as tf

from keras_cam import boxes as box_rule
from keras_cam import cam as cam_ops
from keras_cam import data, storage
from keras_cam.checks import check_int
from keras_cam.graph_boxes import boxes_from_cams_tf
from keras_cam.model import HEAD_NAME

DEFAULT_MAX_BOXES = 5
# The exported signatures (names of CamServingModule tf.functions).
SIGNATURES = ("serving_default", "predict_images", "localize_classes")


class CamServingModule(tf.Module):
    """The exported program: the Keras CAM model plus the box rule in TF ops.

    Args:
        cam_model: a model from ``keras_cam.model.build_cam_model``.
        class_names: list of C class names.
        tau: box threshold in [0, 1).
        max_boxes: K, the fixed number of box slots per image.
        box_extent: 0 for bounding rectangles, k > 0 for moment boxes.
    """

    def __init__(self, cam_model, class_names, tau=box_rule.DEFAULT_TAU, max_boxes=DEFAULT_MAX_BOXES,
                 box_extent=box_rule.DEFAULT_BOX_EXTENT):
        super().__init__(name="keras_cam")
        check_class_names(cam_model, class_names)
        if not 0.0 <= float(tau) < 1.0:
            raise ValueError(f"tau must be in [0, 1). Received: tau={tau!r}")
        max_boxes = check_int(max_boxes, "max_boxes")
        self.model = cam_model
        self.image_size = int(cam_model.inputs[0].shape[1])
        self.max_boxes = max_boxes
        self.class_names = tf.Variable([str(c) for c in class_names], trainable=False, name="class_names")
        self.tau = tf.Variable(float(tau), trainable=False, name="tau")
        box_rule.check_box_extent(box_extent)
        self.box_extent = tf.Variable(float(box_extent), trainable=False, name="box_extent")
        size = self.image_size
        self.predict_images = tf.function(
            self._predict_images, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
        self.serving_default = tf.function(
            self._serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        self.localize_classes = tf.function(
            self._serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes"),
                                                tf.TensorSpec([None], tf.int32, name="class_ids")])
        self.metadata = tf.function(self._metadata, input_signature=[])

    def _localize(self, images, image_sizes, class_ids=None):
        # An empty batch (a gRPC client may send one) gets empty outputs: Keras layers
        # cannot run on 0 images, so the graph runs on one blank image and keeps none.
        count = tf.shape(images)[0]
        images = tf.cond(count > 0, lambda: images,
                         lambda: tf.zeros([1, self.image_size, self.image_size, 3], images.dtype))
        if class_ids is not None:
            sized = tf.debugging.assert_equal(tf.size(class_ids), count,
                                              message="localize_classes needs one class_id per image")
            with tf.control_dependencies([sized]):
                class_ids = tf.cond(count > 0, lambda: tf.identity(class_ids), lambda: tf.zeros([1], tf.int32))
        outputs = self._outputs(images, class_ids)
        return {**{k: v[:count] for k, v in outputs.items()}, "image_sizes": image_sizes}

    def _outputs(self, images, class_ids):
        outputs = self.model(images, training=False)
        logits, features = outputs["logits"], outputs["features"]
        probabilities = tf.nn.softmax(logits, axis=-1)
        if class_ids is None:
            class_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
        else:
            num_classes = tf.shape(logits, out_type=tf.int32)[1]
            checks = [
                tf.debugging.assert_non_negative(class_ids, message="class_ids must be >= 0"),
                tf.debugging.assert_less(class_ids, num_classes,
                                         message="class_ids must be below the number of classes"),
            ]
            with tf.control_dependencies(checks):
                class_ids = tf.identity(class_ids)
        kernel = tf.convert_to_tensor(self.model.get_layer(HEAD_NAME).kernel)
        raw = cam_ops.class_activation_maps(features, kernel, class_ids)
        objectness = cam_ops.objectness_of(outputs)
        if objectness is None:
            objectness = tf.ones_like(raw)
        maps = cam_ops.maps_from_cams(raw, objectness, (self.image_size, self.image_size))
        boxes, box_scores, num_boxes = boxes_from_cams_tf(maps, self.tau, self.max_boxes, self.box_extent)
        return {
            "probabilities": probabilities,
            "class_ids": class_ids,
            "class_names": tf.gather(self.class_names, class_ids),
            "scores": tf.gather(probabilities, class_ids, batch_dims=1),
            "cams": cam_ops.normalize_cams(raw),
            "objectness": objectness,
            "boxes": boxes,
            "box_scores": box_scores,
            "num_boxes": num_boxes,
        }

    def _predict_images(self, images):
        # TF Serving passes any shape through: a float array of another size would be
        # answered with maps and boxes of the wrong frame, so it is refused here.
        size = self.image_size
        checked = tf.debugging.assert_equal(
            tf.shape(images)[1:3], [size, size],
            message=f"predict_images takes images of {size}x{size} pixels (the model's input); send photos of "
                    f"other sizes as encoded bytes to serving_default")
        # NaN or infinite pixels would come back as NaN scores and maps with no box.
        finite = tf.debugging.assert_equal(tf.reduce_all(tf.math.is_finite(images)), True,
                                           message="predict_images: the images hold NaN or infinite values")
        with tf.control_dependencies([checked, finite]):
            images = tf.identity(images)
        sizes = tf.tile([[size, size]], [tf.shape(images)[0], 1])
        return self._localize(images, sizes)

    def _serve_bytes(self, image_bytes, class_ids=None):
        images, sizes = data.decode_batch(image_bytes, self.image_size)
        return self._localize(images, sizes, class_ids)

    def _metadata(self):
        return {"class_names": tf.identity(self.class_names), "tau": tf.identity(self.tau),
                "box_extent": tf.identity(self.box_extent),
                "image_size": tf.constant(self.image_size), "max_boxes": tf.constant(self.max_boxes)}


def check_class_names(cam_model, class_names):
    """Refuses a list of class names whose length is not the model's class count.

    Raises:
        ValueError: naming both counts.
    """
    num_classes = cam_model.get_layer(HEAD_NAME).units
    if len(class_names) != num_classes:
        raise ValueError(f"The model has {num_classes} classes but {len(class_names)} class names were given: "
                         f"{class_names!r}")


def next_version_dir(model_base_path):
    """The next integer version folder under a model base path (1 when empty)."""
    return os.path.join(model_base_path, str(max(storage.version_numbers(model_base_path), default=0) + 1))


def export_saved_model(cam_model, class_names, export_dir, tau=box_rule.DEFAULT_TAU,
                       max_boxes=DEFAULT_MAX_BOXES, box_extent=box_rule.DEFAULT_BOX_EXTENT):
    """Writes the serving SavedModel, atomically.

    The model is written to a temporary folder beside ``export_dir`` and renamed into
    place, so a crash never leaves a half-written export at ``export_dir``.

    Args:
        cam_model: a model from ``keras_cam.model.build_cam_model``.
        class_names: list of C class names.
        export_dir: target folder, e.g. ``saved_models/NAME/1``; must not exist.
        tau: box threshold carried by the model.
        max_boxes: K box slots per image.
        box_extent: box rule carried by the model: 0 for bounding rectangles, k > 0
            for moment boxes (``keras_cam.boxes.moment_box``).

    Returns:
        ``export_dir``.

    Raises:
        FileExistsError: ``export_dir`` exists already.
    """
    module = CamServingModule(cam_model, class_names, tau, max_boxes, box_extent)
    return _save_atomically(module, export_dir, {name: getattr(module, name) for name in SIGNATURES})


def export_with_tau(loaded, tau, export_dir):
    """Writes a copy of a loaded keras-cam SavedModel that carries another ``tau``, atomically.

    The copy keeps every signature and the ``metadata`` function; only the ``tau``
    variable differs, so TF Serving and ``infer.py`` use the new threshold with no
    flag. This is how calibration ships its choice (``saved_models/NAME/<next>/``).

    Args:
        loaded: from ``keras_cam.inference.load_saved_model``; left with its own tau.
        tau: float box threshold in [0, 1).
        export_dir: target folder, e.g. ``export.next_version_dir(...)``; must not exist.

    Returns:
        ``export_dir``.

    Raises:
        ValueError: tau outside [0, 1), or ``loaded`` has no ``tau`` variable.
        FileExistsError: ``export_dir`` exists already.
    """
    if not 0.0 <= float(tau) < 1.0:
        raise ValueError(f"tau must be in [0, 1). Received: tau={tau!r}")
    if not isinstance(getattr(loaded, "tau", None), tf.Variable):
        raise ValueError("The loaded SavedModel has no tau variable; it was not exported by keras-cam.")
    previous = loaded.tau.numpy()
    loaded.tau.assign(float(tau))
    try:
        return _save_atomically(loaded, export_dir, {name: loaded.signatures[name] for name in loaded.signatures})
    finally:
        loaded.tau.assign(previous)


def _save_atomically(obj, export_dir, signatures):
    """``tf.saved_model.save`` into a temporary folder beside ``export_dir``, then a rename.

    A crash never leaves a half-written export at ``export_dir``, where TF Serving
    would pick it up as the newest version; a failed write (e.g. a full disk) raises
    ``storage.WriteError`` and leaves the earlier versions as they were.
    """
    export_dir = os.fspath(export_dir)
    if os.path.exists(export_dir):
        raise FileExistsError(f"Export folder exists already: {export_dir!r}")
    return storage.replace_atomically(
        export_dir, lambda tmp: tf.saved_model.save(obj, tmp, signatures=signatures), folder=True)


def find_checkpoint(source):
    """Finds the checkpoint and class names to export from a run folder or a ``.keras`` file.

    Args:
        source: a run folder (its ``checkpoints/best.keras`` is taken) or a ``.keras``
            file. Class names come from the run folder's ``class_names.json``; for a
            file inside ``RUN_DIR/checkpoints/``, from that run folder's.

    Returns:
        ``(checkpoint, class_names, name)``: the ``.keras`` path, the list of class
        names (None when no ``class_names.json`` was found) and the model name to
        export under (the run folder's name, else the file's stem).

    Raises:
        FileNotFoundError: ``source`` does not exist, or a run folder has no
            ``checkpoints/best.keras``.
        ValueError: a file that is not ``.keras``, or an unreadable ``class_names.json``.
    """
    source = os.path.normpath(os.fspath(source))
    if os.path.isdir(source):
        run_dir = source
        checkpoint = os.path.join(source, "checkpoints", "best.keras")
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"No checkpoint to export in run folder {source!r}: "
                                    f"{checkpoint!r} does not exist")
    elif os.path.isfile(source):
        if not source.endswith(".keras"):
            raise ValueError(f"Can export a run folder or a .keras checkpoint. Received: {source!r}")
        checkpoint = source
        folder = os.path.dirname(os.path.abspath(source))
        run_dir = os.path.dirname(folder) if os.path.basename(folder) == "checkpoints" else folder
    else:
        raise FileNotFoundError(f"No run folder or .keras file at {source!r}")
    names_path = os.path.join(run_dir, "class_names.json")
    class_names = None
    if os.path.isfile(names_path):
        with open(names_path) as f:
            try:
                class_names = json.load(f)
            except ValueError as error:
                raise ValueError(f"Unreadable class names file {names_path!r}: {error}") from None
        if not (isinstance(class_names, list) and all(isinstance(c, str) for c in class_names)):
            raise ValueError(f"{names_path!r} must hold a JSON list of class names. Received: {class_names!r}")
        name = os.path.basename(run_dir)
    else:
        name = os.path.splitext(os.path.basename(checkpoint))[0]
    return checkpoint, class_names, name


def run_box_extent(checkpoint):
    """The ``--box-extent`` the run of a checkpoint was trained with, from its run
    folder's ``config.json`` (``RUN_DIR/checkpoints/*.keras``); None when the file has
    no run folder or it does not say."""
    folder = os.path.dirname(os.path.abspath(checkpoint))
    if os.path.basename(folder) != "checkpoints":
        return None
    try:
        with open(os.path.join(os.path.dirname(folder), "config.json")) as f:
            value = json.load(f).get("box_extent")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
