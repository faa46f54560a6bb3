"""In-graph boxes (SavedModel, TF ops) against the OpenCV reference rule, on real photos.

Exports the ImageNet MobileNetV2 CAM model (real weights from ../shared, its 1000-class
head as our linear head, so the CAMs are real), sends every photo of
../shared/data/wsol6/train through the SavedModel's ``serving_default`` as encoded
bytes, and compares the served top box with the OpenCV largest-contour box computed by
``keras_cam.boxes.boxes_from_cam`` on the same map. Prints the share of images whose
top boxes have IoU >= 0.9 (target: >= 98%) and the share of exactly equal box lists.
With ``--saved_model PATH`` it checks that SavedModel instead, at its own tau and box
rule (e.g. the wsol6 recipe's, whose boxes are drawn on CAM x objectness).

    python benchmarks/serving_agreement.py [--shared ../shared] [--tau 0.2] [--box-extent 0] [--limit N]
    python benchmarks/serving_agreement.py --saved_model /tmp/wsol6_run/saved_model/2

Skips (exit 0) when ../shared is absent.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_cam import boxes as box_rule  # noqa: E402
from keras_cam import cam as cam_ops  # noqa: E402
from keras_cam.evaluation import model_metadata  # noqa: E402
from keras_cam.export import export_saved_model  # noqa: E402
from keras_cam.inference import expand_image_args  # noqa: E402
from keras_cam.imagenet import imagenet_cam_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared"))
    parser.add_argument("--tau", type=float, default=0.2)
    parser.add_argument("--box-extent", type=float, default=0.0,
                        help="0: bounding rectangles; K > 0: moment boxes (mean +- K std)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=0, help="at most this many photos (0: all)")
    parser.add_argument("--saved_model", help="a keras-cam SavedModel to check instead (its own tau and box rule)")
    args = parser.parse_args(argv)
    weights = os.path.join(args.shared, "weights", "mobilenet_v2_imagenet.weights.h5")
    photos = os.path.join(args.shared, "data", "wsol6", "train")
    if not (os.path.isfile(weights) and os.path.isdir(photos)):
        print(f"SKIP: {weights} or {photos} not found")
        return 0
    paths, _ = expand_image_args([photos])
    if args.limit:
        paths = paths[:args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        if args.saved_model:
            loaded = tf.saved_model.load(args.saved_model)
            meta = model_metadata(loaded)
            size, args.tau, args.box_extent = meta["image_size"], meta["tau"], meta["box_extent"]
            name = f"SavedModel {args.saved_model}"
        else:
            model = imagenet_cam_model(weights)
            size = int(model.inputs[0].shape[1])
            loaded = tf.saved_model.load(export_saved_model(model, [str(i) for i in range(1000)],
                                                            os.path.join(tmp, "m", "1"), tau=args.tau,
                                                            box_extent=args.box_extent))
            name = f"ImageNet MobileNetV2 CAM at {size}px"
        serve = loaded.signatures["serving_default"]
        close, exact, counts = 0, 0, []
        start = time.perf_counter()
        for i in range(0, len(paths), args.batch_size):
            batch = paths[i:i + args.batch_size]
            blobs = []
            for path in batch:
                with open(path, "rb") as f:
                    blobs.append(f.read())
            out = serve(image_bytes=tf.constant(blobs))
            # The map the graph thresholded, from the served CAM and objectness.
            maps = cam_ops.maps_from_cams(out["cams"], out["objectness"], (size, size)).numpy()
            for j in range(len(batch)):
                reference, _ = box_rule.boxes_from_cam(maps[j], args.tau, all_regions=True,
                                                        box_extent=args.box_extent)
                n = int(out["num_boxes"][j])
                served = box_rule.normalized_to_pixel(out["boxes"][j, :n].numpy(), size, size)
                counts.append(len(reference))
                if len(reference) == 0 or n == 0:
                    close += int(len(reference) == n == 0)
                    exact += int(len(reference) == n == 0)
                    continue
                close += int(box_rule.iou(served[0], reference[0]) >= 0.9)
                k = min(len(reference), n)
                exact += int(n == min(len(reference), served.shape[0]) and np.array_equal(served[:k], reference[:k]))
        seconds = time.perf_counter() - start
    total = len(paths)
    print(f"photos: {total} (wsol6 train), model: {name}, tau {args.tau:.2f}, box extent {args.box_extent:g}")
    print(f"regions per map: median {np.median(counts):.0f}, max {max(counts)}")
    print(f"top box IoU >= 0.9 with the OpenCV reference: {close}/{total} = {100 * close / total:.1f}% (target >= 98%)")
    print(f"identical box lists (up to K=5): {exact}/{total} = {100 * exact / total:.1f}%")
    print(f"time through serving_default (decode + model + CAM + boxes): {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
