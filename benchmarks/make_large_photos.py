"""Camera-sized JPEGs from the wsol6 photos, for the decoding side of infer.py's speed.

    python benchmarks/make_large_photos.py --out /tmp/large_photos [--size 4000x3000] [--count 64]

Each photo is enlarged (bicubic) to ``--size`` and written as a quality-90 JPEG: a
stand-in for phone and camera photos (12 megapixels by default), which the wsol6
photos (~400 px) are not. Their content is the photos' own, so the classes and boxes
stay meaningful; their file size is smaller than a real camera's (smooth enlargements
compress well), which makes decoding them cheaper than real ones, not dearer.
``python benchmarks/infer_speed.py --photos /tmp/large_photos --images 64`` then
measures infer.py on them. Skips (exit 0) without ../shared.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=_common.DEFAULT_SHARED)
    parser.add_argument("--out", required=True, help="folder to write the JPEGs to")
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT")
    parser.add_argument("--count", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must be WIDTHxHEIGHT, e.g. 4000x3000. Received: {args.size!r}")
    photos = _common.photos_or_skip(args.shared, need_weights=False)
    if photos is None:
        return 0
    import cv2
    import numpy as np
    os.makedirs(args.out, exist_ok=True)
    sizes = []
    for i, path in enumerate(photos[:args.count]):
        image = cv2.imread(path)
        if image is None:
            print(f"skipped (OpenCV cannot read it): {path}", file=sys.stderr)
            continue
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
        _, blob = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        with open(os.path.join(args.out, f"large_{i:04d}.jpg"), "wb") as f:
            f.write(blob.tobytes())
        sizes.append(blob.size)
    print(f"{len(sizes)} JPEGs of {width}x{height} in {args.out}, {np.mean(sizes) / 1e6:.2f} MB each on average")
    return 0


if __name__ == "__main__":
    sys.exit(main())
