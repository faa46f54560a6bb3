"""Image input: folder layout, decoding, preprocessing and the tf.data pipelines.

The preprocessing rule lives here once and is used by training, evaluation and the
serving graph alike: decode to RGB uint8 (first frame of an animated GIF, alpha
dropped without compositing, greyscale and palette expanded to three channels,
16-bit samples scaled to 8 bits, CMYK converted; EXIF orientation is *not* applied,
as TF's decoders do not apply it), then resize to a square ``image_size`` with
bilinear interpolation, stretching, not padding, so that a box normalized to the
resized image is the same box normalized to the original. A JPEG at least twice the
model input on both sides is decoded at libjpeg's reduced scale (1/2, 1/4 or 1/8, the
smallest that keeps both sides at least ``image_size``; ``jpeg_scale``) before that
resize: a 12-megapixel photo then decodes 2-3x faster, and the input is the smoother
downscale of the two.

Untrusted bytes: only JPEG, PNG, GIF, BMP and still WebP are decoded (TF would also
take JPEG XL, whose size header is not checked here, and animated WebP, which crashes
it), and an image whose header declares more than ``MAX_IMAGE_PIXELS`` pixels is
refused before anything is allocated for it.
"""

import dataclasses
import os
import re
import stat

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Images whose header declares more pixels than this are refused before decoding: a
# 30000x30000 header must not make a server or a training run allocate 2.7 GB.
MAX_IMAGE_PIXELS = 50_000_000
# Files larger than this are not read at all (a 50-megapixel PNG is ~150 MB at worst).
MAX_IMAGE_BYTES = 256 * 2**20
SUPPORTED_FORMATS = "JPEG, PNG, GIF, BMP or WebP"
# The size fields of every supported format lie in the first 30 bytes.
_HEADER_BYTES = 32


def _inspect_header(image_bytes):
    """What an encoded image's header says: its format and the pixels it declares.

    Reads only the first ``_HEADER_BYTES`` bytes (zero-padded, so a truncated header
    gives small sizes here and a decoder error later, never an out-of-range read).

    Args:
        image_bytes: scalar string tensor.

    Returns:
        dict: ``supported``, ``webp``, ``animated_webp`` and ``jpeg`` (bool scalars),
        ``pixels`` (int64, 0 when not supported) and ``jpeg_shape`` (int32 (2,), a
        JPEG's height and width; zeros for other formats).
    """
    header = tf.strings.join([tf.strings.substr(image_bytes, 0, _HEADER_BYTES), b"\x00" * _HEADER_BYTES])
    octets = tf.cast(tf.io.decode_raw(tf.strings.substr(header, 0, _HEADER_BYTES), tf.uint8), tf.int64)

    # Plain arithmetic on the 32 header bytes (no per-format branches) keeps this
    # graph small: it is traced into every input pipeline and the serving signature.
    def uint(offset, length, little_endian=True):
        weights = [256**k for k in range(length)]
        return tf.reduce_sum(octets[offset:offset + length] * (weights if little_endian else weights[::-1]))

    def starts(offset, magic):
        return tf.equal(tf.strings.substr(header, offset, len(magic)), magic)

    def signed32(value):
        return tf.where(value >= 2**31, value - 2**32, value)

    vp8l = uint(21, 4)  # WebP lossless: 14-bit width-1, then 14-bit height-1
    webp_pixels = tf.where(
        starts(12, b"VP8X"), (uint(24, 3) + 1) * (uint(27, 3) + 1),  # extended: 24-bit canvas width-1, height-1
        tf.where(starts(12, b"VP8L"), (vp8l % 2**14 + 1) * (vp8l // 2**14 % 2**14 + 1),
                 (uint(26, 2) % 2**14) * (uint(28, 2) % 2**14)))  # lossy: 14-bit width, height
    is_jpeg = tf.image.is_jpeg(image_bytes)
    def side(value):  # capped: two 32-bit sides would overflow int64 into a "small" product
        return tf.minimum(value, 2**31)

    formats = [  # (is this format, pixels its header declares)
        (starts(0, b"\x89PNG\r\n\x1a\n"), side(uint(16, 4, False)) * side(uint(20, 4, False))),
        (starts(0, b"GIF8"), uint(6, 2) * uint(8, 2)),
        # BMP heights are negative for top-down rows
        (starts(0, b"BM"), tf.abs(signed32(uint(18, 4))) * tf.abs(signed32(uint(22, 4)))),
        (tf.logical_and(starts(0, b"RIFF"), starts(8, b"WEBP")), webp_pixels),
    ]
    pixels = tf.constant(0, tf.int64)
    for is_format, declared in formats:
        pixels = tf.where(is_format, declared, pixels)
    jpeg_shape = tf.cond(is_jpeg, lambda: tf.image.extract_jpeg_shape(image_bytes)[:2],
                         lambda: tf.zeros([2], tf.int32))
    pixels = tf.where(is_jpeg, tf.reduce_prod(tf.cast(jpeg_shape, tf.int64)), pixels)
    is_webp = formats[-1][0]
    # libwebp's has_animation is this VP8X flag bit
    animated_webp = tf.logical_and(tf.logical_and(is_webp, starts(12, b"VP8X")), octets[20] // 2 % 2 > 0)
    return {"supported": tf.reduce_any(tf.stack([is_jpeg] + [is_format for is_format, _ in formats])),
            "webp": is_webp, "animated_webp": animated_webp, "pixels": pixels,
            "jpeg": is_jpeg, "jpeg_shape": jpeg_shape}


def declared_pixels(image_bytes):
    """Pixel count an encoded image declares in its header, without decoding it.

    Args:
        image_bytes: scalar string tensor.

    Returns:
        int64 scalar; 0 for bytes that are not a supported format.
    """
    return _inspect_header(image_bytes)["pixels"]


def jpeg_scale(shape, min_side):
    """The libjpeg decoding scale for a JPEG of ``shape`` that is to be resized to ``min_side``.

    libjpeg can decode at 1/2, 1/4 or 1/8 of the stored size for a fraction of the
    work (the inverse DCT runs on fewer coefficients). The scale chosen is the
    smallest that still leaves both sides at least ``min_side`` pixels, so that the
    resize to the model input never enlarges what it gets.

    Args:
        shape: int (2,) or (3,) tensor, the JPEG's height and width (and channels).
        min_side: int, the smallest side the decoded image may have.

    Returns:
        int32 scalar: 1, 2, 4 or 8 (the denominator of the scale).
    """
    return tf.bitwise.left_shift(1, _jpeg_halvings(shape, min_side))


def _jpeg_halvings(shape, min_side):
    """log2 of ``jpeg_scale``: 0, 1, 2 or 3."""
    short = tf.cast(tf.reduce_min(shape[:2]), tf.int32)
    return tf.reduce_sum(tf.cast(tf.stack([short // r >= min_side for r in (2, 4, 8)]), tf.int32))


def decode_image(image_bytes, min_side=None):
    """Decodes one encoded image (JPEG, PNG, GIF, BMP, WebP) to RGB.

    Args:
        image_bytes: scalar string tensor.
        min_side: None to decode at full size; an int to let a JPEG that is at least
            twice as large on both sides decode at a reduced scale (``jpeg_scale``),
            for images that are resized to that side next.

    Returns:
        uint8 (H, W, 3) tensor.

    Raises:
        tf.errors.InvalidArgumentError: bytes that are not a supported image (empty,
            another format, truncated or corrupt), an animated WebP, or an image
            declaring more than ``MAX_IMAGE_PIXELS`` pixels.
    """
    return _decode(image_bytes, min_side)[0]


def _decode(image_bytes, min_side):
    """``decode_image``, also giving the image's stored height and width (int32 (2,))."""
    header = _inspect_header(image_bytes)
    checks = [
        tf.debugging.assert_equal(header["supported"], True, message=f"Not a {SUPPORTED_FORMATS} image"),
        # TF 2.21 writes RGBA frames into an RGB buffer for an animated WebP without
        # alpha (heap corruption, the process aborts): never hand one to the decoder.
        tf.debugging.assert_equal(header["animated_webp"], False,
                                  message="Animated WebP is not supported: convert it to a still image"),
        tf.debugging.assert_less_equal(
            header["pixels"], tf.constant(MAX_IMAGE_PIXELS, tf.int64),
            message=f"Image too large: its header declares more than {MAX_IMAGE_PIXELS} pixels"),
    ]

    def full_size():
        return tf.cond(
            header["webp"],
            # TF decodes WebP only to its own channel count (4 with alpha)
            lambda: tf.io.decode_image(image_bytes, channels=0, expand_animations=False, dtype=tf.uint8)[..., :3],
            lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False, dtype=tf.uint8))

    def scaled_jpeg():
        halvings = _jpeg_halvings(header["jpeg_shape"], min_side)
        branches = [full_size] + [lambda r=r: tf.io.decode_jpeg(image_bytes, channels=3, ratio=r) for r in (2, 4, 8)]
        return tf.switch_case(halvings, branches)

    with tf.control_dependencies(checks):
        if min_side is None:
            image = full_size()
        else:
            image = tf.cond(header["jpeg"], scaled_jpeg, full_size)
    image = tf.ensure_shape(image, [None, None, 3])
    # A JPEG may have been decoded at a reduced scale: its stored size is the header's.
    return image, tf.where(header["jpeg"], header["jpeg_shape"], tf.shape(image, out_type=tf.int32)[:2])


def resize_image(image, image_size):
    """Resizes decoded images to the model's square input size.

    Args:
        image: uint8 or float (H, W, 3) or (B, H, W, 3), RGB 0-255.
        image_size: int side of the model input.

    Returns:
        float32 (image_size, image_size, 3) (or batched), RGB 0-255.
    """
    # uint8 goes to the resize op as it is (same result): a float copy of a large
    # original would take four times its memory.
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        image = tf.cast(image, tf.float32)
    return tf.image.resize(image, (image_size, image_size), method="bilinear")


def path_strings(paths):
    """Image paths as a string tensor, for tf.data.

    Bytes, not text: a file name that is not valid UTF-8 (e.g. Latin-1 from an old
    camera or a Windows share) is a valid path but cannot become a text tensor.

    Args:
        paths: list of str (or bytes) paths.

    Returns:
        string tensor (N,).
    """
    return tf.constant([os.fsencode(p) for p in paths], tf.string, shape=[len(paths)])


def read_file(path):
    """``tf.io.read_file`` that also takes a str path whose file name is not UTF-8."""
    return tf.io.read_file(os.fsencode(path) if isinstance(path, str) else path)


def load_and_resize(image_bytes, image_size):
    """The full preprocessing rule: encoded bytes to a model input."""
    return decode_and_resize(image_bytes, image_size)[0]


def decode_and_resize(image_bytes, image_size):
    """The full preprocessing rule, also giving the original size (to scale boxes back).

    Args:
        image_bytes: scalar string tensor.
        image_size: int side of the model input.

    Returns:
        A tuple ``(image, size)``: float32 (image_size, image_size, 3) RGB 0-255 and
        int32 (2,) the image's own height and width (as stored, before any scaling).
    """
    image, size = _decode(image_bytes, min_side=image_size)
    return resize_image(image, image_size), size


def decode_batch(image_bytes, image_size):
    """``decode_and_resize`` on a batch, in one graph (the images decode in parallel).

    Args:
        image_bytes: string (B,) encoded images.
        image_size: int side of the model input.

    Returns:
        A tuple ``(images, sizes)``: float32 (B, image_size, image_size, 3) RGB 0-255
        and int32 (B, 2) each image's stored height and width.

    Raises:
        tf.errors.InvalidArgumentError: if any image of the batch is refused by
            ``decode_image``.
    """
    return tf.map_fn(lambda one: decode_and_resize(one, image_size), image_bytes,
                     fn_output_signature=(tf.TensorSpec([image_size, image_size, 3], tf.float32),
                                          tf.TensorSpec([2], tf.int32)))


def error_reason(error):
    """One readable line from a read or decode error, without TF's node and op tags.

    Args:
        error: an exception (``tf.errors.OpError``, ``OSError``, ...).

    Returns:
        str, e.g. ``"Image too large: its header declares more than 50000000 pixels"``.
    """
    lines = [line for line in (getattr(error, "message", None) or str(error)).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    # In graph mode the message is "Graph execution error:", a trace, then the op's
    # own message on the line just above "[[{{node ...}}]]".
    marks = [k for k, line in enumerate(lines) if line.lstrip().startswith("[[{{node") and k > 0]
    line = lines[marks[0] - 1] if marks else lines[0]
    line = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", line)
    line = re.sub(r"\s*\[Op:\w+\].*$", "", line)
    line = re.sub(r"^assertion failed: \[(.*?)\].*$", r"\1", line)
    if isinstance(error, (tf.errors.NotFoundError, tf.errors.PermissionDeniedError)) and "; " in line:
        # TF's file errors read "<path>; <reason>": the path is named beside the reason already.
        return f"cannot read file ({line.rsplit('; ', 1)[1].strip()})"
    return line.strip() or type(error).__name__


def file_problem(path):
    """Why a file cannot be an image input, found without reading it (or ``None``).

    Catches what would otherwise hang or exhaust memory before any decoder runs: a
    FIFO or device (reading blocks), a directory, a symlink loop, an empty or a huge
    file.

    Args:
        path: str or bytes path.

    Returns:
        A short reason (str) or ``None`` when the file looks readable.
    """
    try:
        info = os.stat(path)
    except OSError as error:
        return f"cannot read file ({error.strerror or error})"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty file"
    if info.st_size > MAX_IMAGE_BYTES:
        return f"file too large ({info.st_size} bytes, the limit is {MAX_IMAGE_BYTES})"
    return None


@dataclasses.dataclass
class ImageFolder:
    """A folder of images with one sub-folder per class.

    Attributes:
        paths: list of str image paths.
        labels: int64 array (N,) class index of each path.
        class_names: sorted list of class folder names.
    """
    paths: list
    labels: np.ndarray
    class_names: list


def is_image_file(name):
    """Whether a file name is an image keras-cam reads (hidden files, e.g. ``._x.jpg``, are not)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def left_out(paths):
    """What the folders of ``paths`` hold besides the images keras-cam reads, hidden
    entries aside: what a class folder holds and training leaves out.

    Returns:
        list of ``(path, reason)``: files of other types, and sub-folders (only the
        images directly inside a class folder are used).
    """
    kinds = ", ".join(IMAGE_EXTENSIONS)
    out = []
    for d in sorted({os.path.dirname(p) for p in paths}):
        for f in sorted(os.listdir(d)):
            path = os.path.join(d, f)
            if f.startswith(".") or is_image_file(f):  # image names are read (and fail there if need be)
                continue
            if os.path.isdir(path):
                out.append((path, "a folder inside a class folder: its images are not used (only the images "
                                  "directly inside a class folder are)"))
            elif os.path.isfile(path):
                out.append((path, f"not an image type keras-cam reads ({kinds})"))
    return out


def loose_images(folder):
    """Images lying directly in a data folder, beside its class folders: not used.

    Returns:
        list of ``(path, reason)``; other files there (a README, a boxes CSV) are not listed.
    """
    return [(os.path.join(folder, f), "an image outside the class folders: not used (only images inside a "
                                      "class folder are)")
            for f in sorted(os.listdir(folder))
            if not f.startswith(".") and is_image_file(f) and os.path.isfile(os.path.join(folder, f))]


def readable_name(name):
    """A file or folder name as printable text: bytes that are not valid UTF-8 (which
    ``os.listdir`` returns as surrogate escapes) become ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def scan_folder(root, class_names=None):
    """Lists ``root/<class>/<image>`` files.

    Args:
        root: folder with one sub-folder per class.
        class_names: optional list fixing the classes and their order; by default
            the sorted names of the non-hidden sub-folders.

    Returns:
        An ``ImageFolder``.

    Raises:
        FileNotFoundError: ``root`` or a named class folder does not exist.
        ValueError: no class folders, or a class folder without images (the class
            would have no examples).
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Data folder not found: {root!r}")
    # Class names are the folder names, made printable: a name that is not valid UTF-8
    # keeps its bad bytes as \xNN escapes (it becomes a label, a TF string and a caption).
    folders = {}
    for d in sorted(os.listdir(root)):
        if not d.startswith(".") and os.path.isdir(os.path.join(root, d)):
            if readable_name(d) in folders:
                raise ValueError(f"Class folders {os.path.join(root, folders[readable_name(d)])!r} and "
                                 f"{os.path.join(root, d)!r} have the same printable name "
                                 f"{readable_name(d)!r}: rename one.")
            folders[readable_name(d)] = d
    if class_names is None:
        class_names = sorted(folders)
    if not class_names:
        raise ValueError(f"No class sub-folders in {root!r}; expected {root}/<class name>/<image files>.")
    paths, labels = [], []
    for index, name in enumerate(class_names):
        folder = os.path.join(root, folders.get(name, name))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Class folder not found: {folder!r}")
        files = sorted(f for f in os.listdir(folder) if is_image_file(f))
        if not files:
            hint = ""
            if name in ("train", "val", "test") and any(os.path.isdir(os.path.join(folder, d)) for d in os.listdir(folder)):
                hint = (f" It holds sub-folders: for a split layout give {root}/train and {root}/val (both), "
                        f"or point --data at one of them.")
            raise ValueError(f"Class folder {folder!r} has no images ({', '.join(IMAGE_EXTENSIONS)}): "
                             f"add images or remove the folder.{hint}")
        paths += [os.path.join(folder, f) for f in files]
        labels += [index] * len(files)
    return ImageFolder(paths, np.asarray(labels, np.int64), list(class_names))


def split_folder(folder, val_split, seed=0):
    """Splits an ``ImageFolder`` into train and validation parts, per class.

    Each class keeps ``round(val_split * n)`` of its images for validation (at least
    one when it has two or more and ``val_split > 0``). Deterministic for a seed.

    Args:
        folder: an ``ImageFolder``.
        val_split: fraction in [0, 1).
        seed: int seed of the shuffle.

    Returns:
        ``(train, val)``, two ``ImageFolder``s with the same class names.
    """
    if not 0.0 <= val_split < 1.0:
        raise ValueError(f"val_split must be in [0, 1). Received: val_split={val_split!r}")
    rng = np.random.default_rng(seed)
    val_idx = []
    for label in range(len(folder.class_names)):
        idx = np.flatnonzero(folder.labels == label)
        n_val = int(round(val_split * len(idx)))
        if val_split > 0 and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val_idx += list(rng.permutation(idx)[:n_val])
    is_val = np.zeros(len(folder.paths), bool)
    is_val[np.asarray(val_idx, np.int64)] = True

    def pick(mask):
        keep = np.flatnonzero(mask)
        return ImageFolder([folder.paths[i] for i in keep], folder.labels[keep], folder.class_names)
    return pick(~is_val), pick(is_val)


def find_unreadable(paths, min_side=None):
    """Finds the images that cannot be used, decoding all of them in parallel once.

    Files that could hang or exhaust a reader (see ``file_problem``) are not opened.

    Args:
        paths: list of image paths.
        min_side: as for ``decode_image``: the model input side lets large JPEGs
            decode at a reduced scale (libjpeg still reads all of their data).

    Returns:
        A list of ``(path, reason)`` for the images that cannot be used, in input order.
    """
    reasons = {i: file_problem(p) for i, p in enumerate(paths)}
    to_decode = [i for i, reason in reasons.items() if reason is None]
    if to_decode:
        def check(index, path):
            return index, tf.shape(decode_image(tf.io.read_file(path), min_side))

        ds = tf.data.Dataset.from_tensor_slices((np.asarray(to_decode, np.int64),
                                                 path_strings([paths[i] for i in to_decode])))
        ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
        decoded = {int(index) for index, _ in ds.as_numpy_iterator()}
        for i in set(to_decode) - decoded:
            try:
                decode_image(read_file(paths[i]), min_side)
                reasons[i] = "could not be decoded"
            except (tf.errors.OpError, ValueError) as error:
                reasons[i] = error_reason(error)
    return [(paths[i], reason) for i, reason in sorted(reasons.items()) if reason is not None]


def _random_resized_crop(image, seed, min_area=0.35):
    """Random crop of 35-100% of the area (aspect 3/4-4/3) and a horizontal flip.

    Mild on purpose: localization needs the object's extent in view. Stateless: the
    same ``seed`` (int64 (2,)) gives the same crop and flip.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=crop_seed,
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(min_area, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, size)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def make_dataset(paths, labels, image_size, batch_size, training, seed=0, epochs=range(1)):
    """The tf.data pipeline: parallel read, decode, augment (training), batch, prefetch.

    The images must have been checked with ``find_unreadable``: a file that fails to
    decode here stops the run (which ``--resume`` then continues).

    For training, the dataset holds the batches of all ``epochs`` one after another
    (give ``fit`` ``steps_per_epoch=ceil(N / batch_size)``). Each epoch's order and
    augmentation are a pure function of ``(seed, epoch)``, not of a random state
    that lives in the process, so a run resumed at epoch k sees exactly the batches
    an uninterrupted run sees from epoch k on.

    Args:
        paths: list of image paths.
        labels: int array (N,).
        image_size: int model input side.
        batch_size: int.
        training: shuffle and augment when True.
        seed: int seed of the shuffle and augmentation.
        epochs: range of epoch indices to produce (training only).

    Returns:
        ``tf.data.Dataset`` of ``(float32 (B, S, S, 3), int64 (B,))``.
    """
    path_table = path_strings(paths)
    label_table = tf.constant(np.asarray(labels, np.int64))

    def load(index, sample_seed=None):
        # A random crop keeps at least about half of each side: decode at a scale that
        # leaves it the model's resolution (``jpeg_scale``).
        min_side = image_size if sample_seed is None else 2 * image_size
        image = decode_image(tf.io.read_file(path_table[index]), min_side=min_side)
        if sample_seed is not None:
            image = _random_resized_crop(image, sample_seed)
        return resize_image(image, image_size), label_table[index]

    if not training:
        ds = tf.data.Dataset.range(len(paths)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def one_epoch(epoch):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        order = tf.argsort(tf.random.stateless_uniform([len(paths)], seed=epoch_seed))
        ds = tf.data.Dataset.from_tensor_slices(tf.cast(order, tf.int64))
        ds = ds.map(lambda i: load(i, tf.random.experimental.stateless_fold_in(epoch_seed, i)),
                    num_parallel_calls=tf.data.AUTOTUNE)  # deterministic order: resume replays it
        return ds.batch(batch_size)

    ds = tf.data.Dataset.range(epochs.start, epochs.stop).flat_map(one_epoch)
    return ds.prefetch(tf.data.AUTOTUNE)
