"""Target 1: infer.py's pipeline over a folder of real JPEGs against the plain classifier.

Sides, interleaved in one process (ABBA), on the same photos:
    forward   the plain classifier (``classifier_view``, the same backbone, in a
              ``tf.function``) on already-decoded, resized batches: the limit.
    infer     what ``infer.py --json`` runs per image after start-up: read, decode,
              model, CAM, boxes, JSON lines (``inference.localize_files`` on the
              exported SavedModel, records serialized with ``json.dumps``).
    split     the alternative infer.py does not take: each batch decoded in a graph
              call of its own (``data.decode_batch``), then ``predict_images``.
    predict   ``predict_images`` (model + CAM + boxes) on already-decoded batches.
    decode    reading and decoding alone (``data.decode_batch``), batch by batch.

Start-up (import, SavedModel load, first call) is excluded: one warm-up pass of each
side runs before the rounds (start-up is target 5, ``benchmarks/startup.py``).

    python benchmarks/infer_speed.py [--backbone mobilenet_v2] [--batch-size 16] [--images 256]
        [--segment 32] [--rounds N] [--precision float32] [--sides forward,infer,...] [--photos DIR]

The sides take turns through the folder, ``--segment`` images per timed call (the
default rounds cover the folder twice), and the median of the per-round ratios is
reported.

Skips (exit 0) without ../shared.
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

ALL_SIDES = ("forward", "infer", "split", "predict", "decode")


def make_sides(loaded, model, paths, batch_size, segment):
    """The callables to time: each call processes the next ``segment`` images of ``paths``
    (taking turns through them) and returns how many it processed."""
    import tensorflow as tf

    from keras_cam import data, inference
    from keras_cam.model import classifier_view

    size = int(model.inputs[0].shape[1])
    classifier = classifier_view(model)
    forward = tf.function(lambda x: classifier(x, training=False))
    decoded = [tf.stack([data.load_and_resize(tf.io.read_file(p), size) for p in paths[i:i + batch_size]])
               for i in range(0, len(paths), batch_size)]
    turns = {}

    def next_segment(name):
        """The next ``segment`` paths for side ``name`` and their decoded batches."""
        start = turns.get(name, 0) % len(paths)
        turns[name] = start + segment
        return paths[start:start + segment], decoded[start // batch_size:(start + segment) // batch_size]

    predict = loaded.signatures["predict_images"]
    sink = open(os.devnull, "w")

    def run_forward():
        batches = next_segment("forward")[1]
        for x in batches:
            forward(x).numpy()
        return sum(len(x) for x in batches)

    def run_infer():
        count = 0
        for record in inference.localize_files(loaded, next_segment("infer")[0], batch_size=batch_size):
            sink.write(json.dumps(inference.to_json_record(record)) + "\n")
            count += "error" not in record
        return count

    decode_batch = tf.function(lambda blobs: data.decode_batch(blobs, size),
                               input_signature=[tf.TensorSpec([None], tf.string)])

    def decode_part(name):
        part = next_segment(name)[0]
        for i in range(0, len(part), batch_size):
            chunk = part[i:i + batch_size]
            yield chunk, decode_batch(tf.constant([inference.read_image_bytes(p)[0] for p in chunk]))

    def run_split():
        count = 0
        for chunk, (images, sizes) in decode_part("split"):
            outputs = predict(images=images)
            outputs["image_sizes"] = sizes  # the originals' sizes, to scale the boxes
            for record in map(inference._record, inference.split_outputs(outputs), chunk):
                sink.write(json.dumps(inference.to_json_record(record)) + "\n")
                count += 1
        return count

    def run_predict():
        batches = next_segment("predict")[1]
        for x in batches:
            predict(images=x)["boxes"].numpy()
        return sum(len(x) for x in batches)

    def run_decode():
        return sum(int(images.shape[0]) for _, (images, _) in decode_part("decode"))

    return {"forward": run_forward, "infer": run_infer, "split": run_split, "predict": run_predict,
            "decode": run_decode}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_common_arguments(parser)
    parser.add_argument("--backbone", default="mobilenet_v2", choices=["mobilenet_v2", "resnet50"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--segment", type=int, default=32,
                        help="images per timed call; the sides take turns through the folder in segments "
                             "this long, so that drifts of the shared CPU hit both sides of a ratio alike")
    parser.set_defaults(rounds=0)  # 0: enough rounds to cover the folder twice
    parser.add_argument("--sides", default=",".join(ALL_SIDES))
    parser.add_argument("--photos", help="a folder of images to use instead of the wsol6 photos (e.g. large "
                                         "JPEGs from benchmarks/make_large_photos.py)")
    args = parser.parse_args(argv)
    photos = _common.photos_or_skip(args.shared)
    if photos is None:
        return 0
    if args.photos:
        from keras_cam.inference import expand_image_args
        photos, missing = expand_image_args([args.photos])
        if missing or not photos:
            parser.error(f"--photos {args.photos!r}: no images found")
    from keras_cam import inference, precision
    from keras_cam.export import export_saved_model

    paths = photos[:args.images]
    model = _common.cam_model(args.backbone, args.shared)
    print(_common.machine_line())
    print(f"{args.backbone} ({_common.weights_note(args.backbone)}), 224 px, batch {args.batch_size}, "
          f"{len(paths)} images of {args.photos or os.path.join(args.shared, _common.PHOTOS)}, "
          f"precision {args.precision}")
    with tempfile.TemporaryDirectory() as tmp, precision.running_in(args.precision):
        loaded = inference.load_saved_model(export_saved_model(model, [str(i) for i in range(1000)],
                                                               os.path.join(tmp, "m", "1")))
        everything = make_sides(loaded, model, paths, args.batch_size, args.segment)
        sides = {name: everything[name] for name in args.sides.split(",")}
        for run in sides.values():  # warm-up: tracing and first calls are start-up, not steady state
            run()
        rounds = args.rounds or 2 * len(paths) // args.segment
        rates = _common.interleave(sides, rounds)
    _common.print_rates(rates)
    if "forward" in rates:
        for name in ("predict", "split", "decode"):
            if name in rates:
                print(f"  {name} / forward = {_common.median_ratio(rates, name, 'forward'):.3f}x")
    if "split" in rates and "infer" in rates:
        print(f"  infer / split = {_common.median_ratio(rates, 'infer', 'split'):.3f}x")
    if "forward" in rates and "infer" in rates:
        print(_common.target_line(
            1, f"infer pipeline / plain forward ({args.backbone}, batch {args.batch_size}, {args.precision}, "
               f"median of {rounds} rounds of {args.segment} images)", _common.median_ratio(rates, "infer", "forward"), 0.9))
    return 0


if __name__ == "__main__":
    sys.exit(main())
