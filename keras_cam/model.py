"""The CAM model: a backbone, GlobalAveragePooling2D and a linear Dense head.

One graph, two views: ``build_cam_model`` returns a functional model with the named
outputs ``{"logits", "features"}``; ``classifier_view`` is a second ``keras.Model``
over the same layers that returns the logits only, for ``fit``. Both are built flat
from the backbone's own tensors (the backbone is constructed on our preprocessing
tensor via ``input_tensor``), so the model saves, reloads and exports cleanly.
Callers feed RGB images with values 0-255; each backbone's preprocessing is a layer
inside the model.
"""

import dataclasses
import os
import warnings
import zipfile

import keras

from keras_cam import resnet18
from keras_cam.checks import check_int

HEAD_NAME = "logits"
OBJECTNESS_NAME = "objectness"
WEIGHTS_CHOICES = ("imagenet", "none", "PATH to a weights file")


class WeightsUnavailableError(RuntimeError):
    """The ImageNet weights could not be downloaded."""


@keras.saving.register_keras_serializable(package="keras_cam")
class Preprocess(keras.layers.Layer):
    """Maps RGB 0-255 images to a backbone's expected input.

    Args:
        mode: ``"caffe"`` (ResNet50: BGR, ImageNet mean subtracted), ``"tf"``
            (scaled to [-1, 1]) or ``"torch"`` (scaled to [0, 1], ImageNet
            mean/std), as in ``keras.applications.imagenet_utils``.
    """

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "torch"):
            raise ValueError(f"Unknown preprocessing mode. Received: mode={mode!r}")
        self.mode = mode

    def call(self, images):
        return keras.applications.imagenet_utils.preprocess_input(
            keras.ops.cast(images, "float32"), data_format="channels_last", mode=self.mode)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _tiny(input_tensor=None, input_shape=None, weights=None, name="tiny"):
    """A small from-scratch CNN (output stride 8) for the demo and tests.

    Args:
        input_tensor: KerasTensor to build on.
        input_shape: shape (H, W, 3) of a new input, used only when ``input_tensor`` is
            None (as when a weights file is loaded into a stand-alone reference model).
        weights: must be None (there are no pretrained weights for it).
        name: model name.

    Returns:
        A ``keras.Model`` whose output is the layer ``tiny_out``.
    """
    if weights is not None:
        raise ValueError(f"The 'tiny' backbone has no pretrained weights. Received: weights={weights!r}")
    if input_tensor is None:
        input_tensor = keras.Input(input_shape)
    x = input_tensor
    for stage, (filters, strides) in enumerate([(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)]):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                                name=f"tiny_conv{stage}")(x)
        x = keras.layers.BatchNormalization(name=f"tiny_bn{stage}")(x)
        x = keras.layers.ReLU(name="tiny_out" if stage == 6 else f"tiny_relu{stage}")(x)
    return keras.Model(input_tensor, x, name=name)


@dataclasses.dataclass(frozen=True)
class Backbone:
    """How to build one backbone and where its feature maps are."""
    builder: callable
    feature_layer: str
    preprocess: str
    imagenet: bool  # whether Keras can download ImageNet weights for it
    stride: int  # input pixels per feature-map cell


BACKBONES = {
    "resnet50": Backbone(keras.applications.ResNet50, "conv5_block3_out", "caffe", True, 32),
    "resnet18": Backbone(resnet18.ResNet18, resnet18.FEATURE_LAYER, "torch", False, 32),
    "mobilenet_v2": Backbone(keras.applications.MobileNetV2, "out_relu", "tf", True, 32),
    "tiny": Backbone(_tiny, "tiny_out", "tf", False, 8),
}


# What set_trainable trains: everything, the head only, or the head and the last stage.
TRAIN_LAYERS = ("all", "head", "last_stage")


def check_feature_stride(backbone, feature_stride):
    """Refuses a ``feature_stride`` the backbone cannot give (only half its own stride can).

    Raises:
        ValueError: naming the one value ``backbone`` takes.
    """
    own = BACKBONES[backbone].stride
    if feature_stride is not None and (isinstance(feature_stride, bool) or feature_stride != own // 2):
        raise ValueError(f"feature_stride must be None or {own // 2} (half of backbone {backbone!r}'s own stride "
                         f"{own}). Received: feature_stride={feature_stride!r}")


def _build_backbone(spec, name, x, input_shape, weights):
    if spec.builder is _tiny or spec.builder is resnet18.ResNet18:
        return spec.builder(input_tensor=x, input_shape=input_shape, weights=weights)
    return spec.builder(include_top=False, input_tensor=x, input_shape=input_shape, weights=weights)


def _copy_weights_by_name(source, target):
    """Copies the weights of every layer of ``target`` that ``source`` has by name."""
    by_name = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in target.layers:
        src = by_name.get(layer.name)
        if src is not None and layer.weights:
            layer.set_weights(src.get_weights())
            copied += 1
    return copied


def _load_weights_file(spec, backbone_name, backbone, path, input_shape):
    """Loads a weights file saved from the stock backbone (with or without top)."""
    errors = []
    candidates = [{}] if not spec.imagenet else [{"include_top": True}, {"include_top": False}]
    for kwargs in candidates:
        try:
            if spec.imagenet:
                shape = None if kwargs["include_top"] else input_shape
                reference = spec.builder(weights=None, input_shape=shape, **kwargs)
            else:
                reference = spec.builder(input_shape=input_shape, weights=None)
            # A file of another model makes Keras warn once per layer it cannot match
            # (hundreds of lines); the error below says what went wrong.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference.load_weights(path)
        except Exception as error:  # noqa: BLE001 - try the next layout, report all
            # Keras' first line says why; the rest lists every layer of the model.
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0].split(" Example error message")[0]
            errors.append(f"{kwargs or 'default'}: {reason[:200] + ' ...' if len(reason) > 200 else reason}")
            continue
        if _copy_weights_by_name(reference, backbone) == 0:
            errors.append(f"{kwargs}: no layer names in common")
            continue
        return
    raise ValueError(
        f"Could not load weights file {path!r} into backbone {backbone_name!r}; it must be "
        f"saved from the stock Keras {backbone_name} model. Tried: " + "; ".join(errors))


_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _input_layer(layer):
    """The layer whose output ``layer`` (called once) takes as its input."""
    return layer.input._keras_history.operation


def _halve_output_stride(net, backbone_name, inputs, preprocessed):
    """A copy of a backbone with its last downsampling removed (atrous last stage).

    The strided convolutions that produce the last resolution get stride 1 and the
    spatial convolutions after them dilation 2, so each keeps its receptive field
    in input pixels (atrous convolution, Chen et al., DeepLab, TPAMI 2018); an
    explicit ``ZeroPadding2D`` before a ``"valid"`` convolution pads for the new
    stride and dilation. Layer names and weight shapes are unchanged, so the
    weights are copied over and the feature map has twice the side (7x7 -> 14x14
    at 224 px for ResNet50 and MobileNetV2).

    Args:
        net: a backbone ``keras.Model`` built on our preprocessing tensor.
        backbone_name: for error messages.
        inputs: the CAM model's input tensor.
        preprocessed: the preprocessing layer's output tensor, which ``net`` was
            built on.

    Returns:
        The new backbone ``keras.Model``, built flat on the same input tensors.
    """
    final = tuple(net.output.shape[1:3])
    last_stage = [l for l in net.layers if isinstance(l, _CONVS) and tuple(l.output.shape[1:3]) == final]
    strided = {l.name for l in last_stage if max(l.strides) > 1}
    if not strided:
        raise ValueError(f"Backbone {backbone_name!r} has no strided convolution to remove for feature_stride.")
    padding = {}
    expected = None  # the resolution the strided convolutions read: the last stage's new one
    for layer in last_stage:
        dilate = 1 if layer.name in strided else 2
        source = _input_layer(layer)
        padded = layer.padding == "valid" and isinstance(source, keras.layers.ZeroPadding2D)
        if padded:
            padding[source.name] = tuple(((k - 1) // 2 * dilate,) * 2 for k in layer.kernel_size)
        if layer.name in strided:
            expected = tuple((source.input if padded else layer.input).shape[1:3])

    def clone(layer):
        config = layer.get_config()
        if layer.name in strided:
            config["strides"] = (1, 1)
        elif isinstance(layer, _CONVS) and layer in last_stage and max(layer.kernel_size) > 1:
            config["dilation_rate"] = (2, 2)
        if layer.name in padding:
            config["padding"] = padding[layer.name]
        return layer.__class__.from_config(config)

    # keras.applications trace the backbone back to our Input (and so include the
    # preprocessing layer); a plain keras.Model on a non-Input tensor starts there.
    start = inputs if any(t is inputs for t in keras.tree.flatten(net.input)) else preprocessed
    new = keras.models.clone_model(net, input_tensors=keras.tree.map_structure(lambda _: start, net.input),
                                   clone_function=clone)
    if tuple(new.output.shape[1:3]) != expected:
        raise ValueError(f"feature_stride: backbone {backbone_name!r} gave a {new.output.shape[1:3]} feature map "
                         f"instead of {expected}; its last stage is not supported.")
    _copy_weights_by_name(net, new)
    return new


def _same_size_outputs(net, backbone_name, features, names):
    """The outputs of the named backbone layers, which must have the feature map's size."""
    size = tuple(features.shape[1:3])
    same_size = [l.name for l in net.layers if len(l.output.shape) == 4 and tuple(l.output.shape[1:3]) == size]
    outputs = []
    for name in names:
        if name not in same_size:
            reason = "no such layer" if name not in {l.name for l in net.layers} else "another resolution"
            raise ValueError(
                f"objectness_layers: backbone {backbone_name!r} has no {size[0]}x{size[1]} layer {name!r} "
                f"({reason}). Its last layers at the feature map's resolution: {', '.join(same_size[-12:])}. "
                f"Received: {name!r}")
        outputs.append(net.get_layer(name).output)
    return outputs


def build_cam_model(num_classes, backbone="resnet50", weights="imagenet", image_size=224,
                    freeze_batchnorm=None, feature_stride=None, objectness_layers=None):
    """Builds the CAM model.

    Args:
        num_classes: number of classes C (>= 2).
        backbone: one of ``BACKBONES``: ``"resnet50"`` (default), ``"resnet18"``,
            ``"mobilenet_v2"`` or ``"tiny"``.
        weights: ``"imagenet"`` (Keras downloads and caches them), ``None`` or
            ``"none"`` (random init), or a path to a weights file saved from the
            stock backbone (with or without its classification top).
        image_size: int side of the square RGB input.
        freeze_batchnorm: keep BatchNormalization in inference mode (not trainable).
            Defaults to True for pretrained weights, False for random init.
        feature_stride: None for the backbone's own output stride (32 for
            ResNet50, ResNet18 and MobileNetV2, 8 for tiny), or half of it: the
            last stage then runs at the previous stage's resolution with dilated
            convolutions and the same weights (a 14x14 CAM at 224 px instead of
            7x7; about 1.3x the compute for MobileNetV2).
        objectness_layers: optional names of backbone layers at the feature map's
            resolution. The model then has a third output, ``"objectness"``: a 1x1
            convolution with a sigmoid on those layers' concatenated outputs, the
            probability that each position is object rather than background. It is
            not trained by the classifier's loss; ``keras_cam.objectness.fit_objectness``
            fits it on the CAM's own confident regions after training, and the box
            rule then thresholds CAM x objectness (``keras_cam.cam.maps_from_cams``).
            For MobileNetV2 with ``feature_stride=16``:
            ``["block_12_add", "block_13_project_BN"]`` (BENCHMARKS.md).

    Returns:
        A ``keras.Model`` mapping float32 (B, S, S, 3) RGB 0-255 to
        ``{"logits": float32 (B, C), "features": float32 (B, h, w, K)}``, plus
        ``"objectness"``: float32 (B, h, w, 1) with ``objectness_layers``.

    Raises:
        ValueError: unknown backbone, bad class count or weights argument.
        WeightsUnavailableError: ImageNet weights could not be downloaded.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone. Expected one of {sorted(BACKBONES)}. Received: backbone={backbone!r}")
    num_classes = check_int(num_classes, "num_classes", minimum=2)  # a classifier needs 2 classes
    image_size = check_int(image_size, "image_size", minimum=32)
    check_feature_stride(backbone, feature_stride)
    spec = BACKBONES[backbone]
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        weights = None
    elif weights == "imagenet":
        if not spec.imagenet:
            raise ValueError(
                f"Keras has no ImageNet weights for backbone {backbone!r}. Use weights='none' or a "
                f"path to a weights file. Received: weights={weights!r}")
    elif not (isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights)):
        raise ValueError(
            f"weights must be 'imagenet', 'none' or the path of an existing weights file. "
            f"Received: weights={weights!r}")
    input_shape = (image_size, image_size, 3)
    inputs = keras.Input(input_shape, name="images")
    x = Preprocess(spec.preprocess, name="preprocess")(inputs)
    build_weights = weights if weights in (None, "imagenet") else None
    try:
        net = _build_backbone(spec, backbone, x, input_shape, build_weights)
    except Exception as error:
        if build_weights == "imagenet" and not isinstance(error, ValueError):
            raise WeightsUnavailableError(
                f"Could not download the ImageNet weights for {backbone!r} ({error}). Without "
                f"internet, use --weights none (random init) or --weights PATH to a weights file.") from error
        raise
    if build_weights is None and weights is not None:
        _load_weights_file(spec, backbone, net, os.fspath(weights), input_shape)
    if feature_stride is not None:
        net = _halve_output_stride(net, backbone, inputs, x)
    features = net.get_layer(spec.feature_layer).output
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(features)
    logits = keras.layers.Dense(num_classes, name=HEAD_NAME)(pooled)
    outputs = {"logits": logits, "features": features}
    if objectness_layers:
        names = [objectness_layers] if isinstance(objectness_layers, str) else list(objectness_layers)
        found = _same_size_outputs(net, backbone, features, names)
        x = found[0] if len(found) == 1 else keras.layers.Concatenate(name="objectness_inputs")(found)
        # Starts at 0.5 everywhere (a no-op on the map) until fit_objectness sets it.
        outputs[OBJECTNESS_NAME] = keras.layers.Conv2D(1, 1, activation="sigmoid", kernel_initializer="zeros",
                                                       name=OBJECTNESS_NAME)(x)
    model = keras.Model(inputs, outputs, name=f"cam_{backbone}")
    if freeze_batchnorm is None:
        freeze_batchnorm = weights is not None
    if freeze_batchnorm:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model


def zero_head(cam_model):
    """Sets the head's kernel and bias to zero, in place (how ``train.py`` starts a run).

    The softmax loss needs no random start of the head: with the backbone frozen
    (``--train-layers head``) it is convex in the head, and when the backbone trains
    too the head's first steps break the symmetry (Kolesnikov et al., "Big Transfer", ECCV 2020, start their heads at zero too). A
    random kernel is worse for the CAM than for the classifier: it adds a random
    projection of the features to every class's map, which a short training on a
    small set does not wash out: on wsol6, 12 head-only epochs learn a kernel of norm
    1.7 from zero, while Keras' random start has norm 3.1 once centred, so the maps
    were mostly the random start's. From zero, the CAM holds only what training
    learned. ``build_cam_model`` keeps Keras' random start, so an untrained model
    still gives distinct per-class maps.

    Args:
        cam_model: a model from ``build_cam_model``.

    Returns:
        ``cam_model``.
    """
    head = cam_model.get_layer(HEAD_NAME)
    for weight in (head.kernel, head.bias):
        weight.assign(keras.ops.zeros_like(weight))
    return cam_model


def center_head(cam_model):
    """Removes the part of the head that is common to all classes, in place.

    Adding one vector to every class's kernel column (and one number to every bias)
    changes no probability, so training never determines that common part: the
    softmax cross-entropy gradient sums to zero over classes, and what is there is
    the initialization plus optimizer drift. It adds one shared map to every
    class's CAM. Subtracting the mean over classes keeps every probability and
    every class id, and leaves each CAM the class's evidence against the average
    class; the CAM identity (spatial mean of CAM_c plus bias_c equals logit_c)
    still holds, with logits all shifted by one per-image constant.

    Args:
        cam_model: a model from ``build_cam_model``.

    Returns:
        ``cam_model``.
    """
    head = cam_model.get_layer(HEAD_NAME)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in (head.kernel, head.bias))
    head.kernel.assign(kernel - kernel.mean(axis=1, keepdims=True))
    head.bias.assign(bias - bias.mean())
    return cam_model


def classifier_view(cam_model):
    """The same layers as ``cam_model``, returning only the logits (for training).

    Args:
        cam_model: a model from ``build_cam_model`` (or reloaded from a checkpoint).

    Returns:
        ``keras.Model`` mapping (B, S, S, 3) to float32 logits (B, C).
    """
    return keras.Model(cam_model.input, cam_model.get_layer(HEAD_NAME).output, name="classifier")


def set_trainable(cam_model, train_layers):
    """Chooses which layers learn: ``"all"``, ``"head"`` or ``"last_stage"``.

    ``"last_stage"`` trains the head and the backbone layers of the last stage: those
    at the feature map's resolution in the backbone's own form, from its strided
    convolutions on (the same layers with ``feature_stride``, whose last stage runs
    at the previous stage's resolution). BatchNormalization layers keep the
    trainability set by ``build_cam_model``. An objectness head never learns here
    (``keras_cam.objectness.fit_objectness`` fits it after training).

    Args:
        cam_model: a model from ``build_cam_model``.
        train_layers: ``"all"``, ``"head"`` or ``"last_stage"``.
    """
    if train_layers not in TRAIN_LAYERS:
        raise ValueError(f"train_layers must be 'all', 'head' or 'last_stage'. Received: {train_layers!r}")
    layers = [l for l in cam_model.layers if not isinstance(l, keras.layers.InputLayer)]
    if train_layers == "all":
        start = 0
    elif train_layers == "head":
        start = [l.name for l in layers].index("gap")  # gap, logits (and the objectness head's layers)
    else:
        start = [l.name for l in layers].index(_last_stage_start(cam_model))
    for i, layer in enumerate(layers):
        if isinstance(layer, keras.layers.BatchNormalization):
            if i < start:
                layer.trainable = False
            continue
        layer.trainable = i >= start
    if OBJECTNESS_NAME in [l.name for l in layers]:
        cam_model.get_layer(OBJECTNESS_NAME).trainable = False  # fitted by keras_cam.objectness, not by fit


def _first_at_feature_resolution(model):
    """Name of the first layer (in ``model.layers`` order) whose output has the
    spatial size of the ``features`` output: where the last stage starts."""
    side = tuple(model.output["features"].shape[1:3])
    for layer in model.layers:
        shape = getattr(layer.output, "shape", None)
        if not isinstance(layer, keras.layers.InputLayer) and shape is not None and len(shape) == 4 \
                and tuple(shape[1:3]) == side:
            return layer.name
    raise ValueError(f"{model.name}: no layer at the feature map's resolution {side}")


def _last_stage_start(cam_model):
    """The first layer of the last stage. With an atrous last stage (``feature_stride``)
    the resolution no longer changes there, so the stage is read off the backbone
    built in its own form (same layer names, no weights needed)."""
    dilated = any(isinstance(l, _CONVS) and max(l.dilation_rate) > 1 for l in cam_model.layers)
    if not dilated:
        return _first_at_feature_resolution(cam_model)
    backbone = cam_model.name.removeprefix("cam_")
    if backbone not in BACKBONES:
        raise ValueError(f"Cannot find the last stage of {cam_model.name!r}: not a keras-cam model of a known backbone")
    plain = build_cam_model(2, backbone, weights=None, image_size=int(cam_model.inputs[0].shape[1]))
    return _first_at_feature_resolution(plain)


def load_cam_model(path):
    """Loads a ``.keras`` CAM model in safe mode (no code runs from the file).

    Args:
        path: path of a ``.keras`` file saved by keras-cam.

    Returns:
        The ``keras.Model``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a ``.keras`` archive (Keras would call it missing).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No .keras checkpoint at {path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a .keras checkpoint: a .keras file is a zip archive saved by Keras")
    return keras.saving.load_model(path, safe_mode=True, compile=False)
