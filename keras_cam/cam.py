"""Class activation maps (Zhou et al., "Learning Deep Features for Discriminative
Localization", CVPR 2016).

For a head ``logits = GAP(features) @ kernel + bias`` the CAM of class c is
``CAM_c(y, x) = sum_k kernel[k, c] * features[y, x, k]``, so that the spatial mean
of ``CAM_c`` plus ``bias[c]`` is ``logit_c``. All functions here are pure TF ops on
batches; they work eagerly on NumPy arrays and inside the serving graph alike.
"""

import tensorflow as tf


def class_activation_maps(features, kernel, class_ids):
    """Computes one CAM per image for the given classes.

    Args:
        features: float32 (B, h, w, K), the last convolutional feature maps.
        kernel: float32 (K, C), the Dense head's kernel.
        class_ids: int (B,), the class whose map is wanted for each image.

    Returns:
        float32 (B, h, w) raw (unnormalized) class activation maps.
    """
    weights = tf.gather(tf.convert_to_tensor(kernel, tf.float32), class_ids, axis=1)  # (K, B)
    return tf.einsum("bhwk,kb->bhw", tf.convert_to_tensor(features, tf.float32), weights)


def normalize_cams(cams):
    """Min-max normalizes each map of a batch to [0, 1].

    A map with no contrast (constant) becomes all zeros, so it yields no box.

    Args:
        cams: float (B, H, W).

    Returns:
        float32 (B, H, W) in [0, 1]; the input is not modified.
    """
    cams = tf.convert_to_tensor(cams, tf.float32)
    lo = tf.reduce_min(cams, axis=[1, 2], keepdims=True)
    span = tf.reduce_max(cams, axis=[1, 2], keepdims=True) - lo
    return tf.math.divide_no_nan(cams - lo, span)


def upsample_cams(cams, size):
    """Bilinearly resizes maps to an image size.

    Args:
        cams: float (B, h, w).
        size: ``(height, width)`` to resize to.

    Returns:
        float32 (B, height, width).
    """
    return tf.image.resize(tf.convert_to_tensor(cams, tf.float32)[..., None], size, method="bilinear")[..., 0]


def maps_from_cams(cams, objectness, size):
    """The maps the box rule is applied to, from low-resolution CAMs.

    Without objectness, the CAM upsampled to ``size`` and normalized. With it, the
    normalized CAM times the objectness probability (``keras_cam.objectness``), at
    the feature resolution, then upsampled and normalized. An objectness of all ones
    gives back the plain CAM's map (min-max normalization and bilinear resizing
    commute with affine maps).

    Args:
        cams: float (B, h, w), raw or normalized CAMs.
        objectness: None, or float (B, h, w) probabilities.
        size: ``(height, width)`` of the model input.

    Returns:
        float32 (B, height, width) with values in [0, 1].
    """
    # Normalized first on both paths, so that a model served with an all-ones objectness
    # and the library's plain path compute the very same numbers.
    cams = normalize_cams(cams)
    if objectness is not None:
        cams = cams * tf.convert_to_tensor(objectness, tf.float32)
    return normalize_cams(upsample_cams(cams, size))


def objectness_of(outputs):
    """The (B, h, w) objectness probabilities of a CAM model's outputs, or None."""
    objectness = outputs.get("objectness") if hasattr(outputs, "get") else None
    return None if objectness is None else tf.convert_to_tensor(objectness, tf.float32)[..., 0]


def localization_maps(features, kernel, class_ids, size, objectness=None):
    """The maps the box rule is applied to: CAM (times objectness), upsampled to ``size``, normalized.

    Args:
        features: float32 (B, h, w, K).
        kernel: float32 (K, C).
        class_ids: int (B,).
        size: ``(height, width)`` of the model input.
        objectness: optional float (B, h, w) probabilities (``maps_from_cams``).

    Returns:
        float32 (B, height, width) with values in [0, 1].
    """
    return maps_from_cams(class_activation_maps(features, kernel, class_ids), objectness, size)

