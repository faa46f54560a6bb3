"""Pictures: the CAM heatmap over the image, with boxes drawn (no display needed)."""

import os

import cv2
import numpy as np


def overlay(image, cam, boxes=(), true_boxes=(), alpha=0.45):
    """Draws a CAM heatmap and boxes over an image.

    Args:
        image: uint8 (H, W, 3) RGB.
        cam: float (h, w) map in [0, 1], at any resolution (resized to the image).
        boxes: predicted pixel boxes ``[xmin, ymin, xmax, ymax]`` (green, best one thick).
        true_boxes: optional ground-truth pixel boxes (white).
        alpha: heatmap opacity.

    Returns:
        uint8 (H, W, 3) RGB picture; the inputs are not modified.
    """
    image = np.asarray(image, np.uint8)
    height, width = image.shape[:2]
    heat = cv2.resize(np.asarray(cam, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    picture = cv2.addWeighted(image, 1 - alpha, heat, alpha, 0)
    thickness = max(1, round(max(height, width) / 160))
    for box in true_boxes:
        x0, y0, x1, y1 = (int(v) for v in box)
        cv2.rectangle(picture, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), thickness)
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = (int(v) for v in box)
        cv2.rectangle(picture, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), thickness * (2 if i == 0 else 1))
    return picture


def label(picture, text):
    """Writes a caption in the top-left corner of a picture (in place on a copy)."""
    picture = picture.copy()
    # Hershey fonts draw ASCII only (and OpenCV crashes on unpaired surrogates).
    text = str(text).encode("ascii", "replace").decode("ascii")
    scale = max(0.35, picture.shape[1] / 640)
    cv2.putText(picture, text, (4, int(14 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(picture, text, (4, int(14 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return picture


def write_rgb(path, picture):
    """Writes an RGB picture to a PNG/JPEG file (the format of the name's extension).

    OpenCV encodes and Python writes: ``cv2.imwrite`` crashes the process on a file
    name that is not valid UTF-8 (an unpaired surrogate), which Python's ``open`` takes.
    """
    ext = os.path.splitext(os.fspath(path))[1] or ".png"
    try:
        ok, encoded = cv2.imencode(ext, cv2.cvtColor(np.asarray(picture, np.uint8), cv2.COLOR_RGB2BGR))
    except cv2.error:  # no encoder for that extension
        ok = False
    if not ok:
        raise OSError(f"Could not encode picture {path!r} as {ext}")
    with open(path, "wb") as f:
        f.write(encoded.tobytes())
