"""Ground-truth box annotations: boxes CSV, Pascal VOC XML folders and TFDS datasets.

Boxes CSV: one row per box, ``split,class,filename,width,height,xmin,ymin,xmax,ymax``
(the format of ``../shared/data/wsol6/boxes.csv``), pixel corners in the stored image.
keras-cam reads the corners as half-open pixel boxes (see ``keras_cam.boxes``);
VOC-style inclusive corners differ from that by at most one pixel on the right and
bottom.

Pascal VOC XML: one ``<annotation>`` file per image; corners are 1-based and
inclusive and are converted exactly (``metrics.inclusive_to_half_open``).

TFDS (``caltech_birds2011``, ``cars196``, ``voc/2007`` and datasets laid out like
them): boxes are normalized ``[ymin, xmin, ymax, xmax]``.

Evaluation reads all three as ``ImageBoxes``: one class per image, as
weakly-supervised localization (WSOL) assumes, and that class's boxes. For an image
with objects of several classes (VOC), the rule is ``image_class``: the class of the
largest non-difficult object, with every non-difficult box of that class.
"""

import csv
import dataclasses
import math
import os
import re
from xml.etree import ElementTree

import numpy as np

from keras_cam import metrics

BOX_COLUMNS = ("split", "class", "filename", "width", "height", "xmin", "ymin", "xmax", "ymax")


def read_boxes_csv(path):
    """Reads a boxes CSV (``split,class,filename,width,height,xmin,ymin,xmax,ymax``).

    The file is UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8"), and
    comma-separated (a semicolon-separated header is named as such).

    Args:
        path: CSV path.

    Returns:
        dict mapping ``(split, class, filename)`` to a dict with ``width``,
        ``height`` and ``boxes`` (int (N, 4) pixel boxes).

    Raises:
        ValueError: a missing column, a malformed row (its line number is named) or
            text that is not UTF-8.
    """
    try:
        return _read_boxes_csv(path)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def _pixel(text, column, whole=False):
    """A CSV pixel value as an int: a number (``whole``: an integer) of magnitude below 2**31."""
    value = int(text) if whole else float(text)
    if not (math.isfinite(value) and abs(value) < 2 ** 31):
        raise ValueError(f"{column} {text!r} is not a pixel position (finite, of magnitude below 2**31)")
    return int(value)


def _read_boxes_csv(path):
    out = {}
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would stick to "split".
    with open(path, newline="", encoding="utf-8-sig") as f:
        # Spaces after the commas (", class") and capitalized names ("Split") are common in
        # hand-made or exported files; the columns are found all the same.
        reader = csv.DictReader(f, skipinitialspace=True)
        header = [name.strip().lower() for name in reader.fieldnames or ()]
        reader.fieldnames = header
        missing = set(BOX_COLUMNS) - set(header)
        if missing and len(header) == 1 and ";" in header[0]:
            # Excel writes ';' where the decimal separator is a comma.
            raise ValueError(f"{path}: the header looks semicolon-separated ({header[0]!r}); expected commas: "
                             f"{','.join(BOX_COLUMNS)}")
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}; expected {','.join(BOX_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            try:
                key = (row["split"], row["class"], row["filename"])
                box = [_pixel(row[k], k) for k in ("xmin", "ymin", "xmax", "ymax")]
                entry = out.setdefault(key, {"width": _pixel(row["width"], "width", whole=True),
                                             "height": _pixel(row["height"], "height", whole=True), "boxes": []})
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}:{line}: malformed row {row!r} ({error})") from None
            if entry["width"] <= 0 or entry["height"] <= 0:
                raise ValueError(f"{path}:{line}: the image's width and height must be positive. Received: "
                                 f"width={row['width']}, height={row['height']}")
            entry["boxes"].append(box)
    for entry in out.values():
        entry["boxes"] = np.asarray(entry["boxes"], np.int32).reshape(-1, 4)
    return out


# The frame of normalized boxes: (height, width) = (1, 1).
NORMALIZED_FRAME = (1.0, 1.0)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageBoxes:
    """One image and its ground truth, as evaluation reads it.

    Attributes:
        image: str, the image's path; or, with ``image_bytes``, an id such as
            ``cars196:test/00012.jpg``.
        class_name: str, the image's one class.
        boxes: float64 (G, 4) half-open ``[xmin, ymin, xmax, ymax]`` in ``frame``,
            G >= 1: the boxes of ``class_name`` in the image.
        frame: ``(height, width)`` of the frame the boxes are in: the annotated
            image's size in pixels, or ``NORMALIZED_FRAME`` for normalized boxes.
            Evaluation scales boxes from this frame to the decoded image.
        image_bytes: the encoded image, or None to read ``image`` from disk.
    """
    image: str
    class_name: str
    boxes: np.ndarray
    frame: tuple
    image_bytes: bytes = None


def csv_image_boxes(csv_path, data_dir, split=None):
    """The images of a boxes CSV, found under a data folder.

    Args:
        csv_path: boxes CSV (see ``read_boxes_csv``).
        data_dir: folder with ``<split>/<class>/<filename>`` or ``<class>/<filename>``
            (the first that exists is used, per image).
        split: only rows of this split; None for all rows.

    Returns:
        list of ``ImageBoxes`` in the CSV's order (a missing image keeps its path in
        the folder's layout, ``<split>/`` when that folder exists, so that reading
        it reports the error there).

    Raises:
        ValueError: a malformed CSV, no row of ``split`` (the splits present are
            named), or rows of several splits, no ``split``, and a folder without a
            ``<split>/`` sub-folder for each of them.
    """
    truth = read_boxes_csv(csv_path)
    if split is not None and not any(key[0] == split for key in truth):
        raise ValueError(f"{csv_path}: no rows with split {split!r}; splits present: "
                         f"{sorted({key[0] for key in truth})}")
    splits = sorted({key[0] for key in truth})
    missing = [s for s in splits if not os.path.isdir(os.path.join(data_dir, s))]
    if split is None and len(splits) > 1 and missing:
        # A folder laid out as <class>/<file> holds one split's images: rows of the other
        # splits would be matched by file name to the wrong images.
        raise ValueError(f"{csv_path} has rows of several splits {splits}, and {data_dir} has no "
                         f"folder for {missing}: choose the split whose images are in it (--split NAME)")
    records = []
    for (row_split, name, filename), entry in truth.items():
        if split is not None and row_split != split:
            continue
        candidates = [os.path.join(data_dir, row_split, name, filename), os.path.join(data_dir, name, filename)]
        # A missing image is reported at its place in the layout the folder has.
        layout = candidates[0] if os.path.isdir(os.path.join(data_dir, row_split)) else candidates[1]
        path = next((c for c in candidates if os.path.isfile(c)), layout)
        records.append(_csv_record(path, name, entry))
    return records


def _csv_record(path, class_name, entry):
    return ImageBoxes(path, class_name, entry["boxes"].astype(np.float64), (entry["height"], entry["width"]))


def class_key(name):
    """A class name for loose matching: no surrounding spaces, lower case, no leading
    ``NNN.`` numbering (so CUB's folder ``001.Black_footed_Albatross`` matches TFDS's
    ``black_footed_albatross``)."""
    return re.sub(r"^\d+\.", "", name.strip()).lower()


def read_images_list(path):
    """Reads an images list such as ``RUN_DIR/val_images.txt`` written by train.py.

    Args:
        path: text file with lines ``<image path><TAB><class name>`` (``\n`` or
            ``\r\n`` line ends); blank lines and comment lines, whose first
            non-blank character is ``#``, are skipped.

    Returns:
        list of ``(image path, class name)``.

    Raises:
        ValueError: a line without a tab (its number is named).
    """
    entries = []
    # train.py writes file names as they are on disk (surrogateescape for non-UTF-8).
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            image, tab, name = line.rpartition("\t")
            if not tab or not image or not name:
                raise ValueError(f"{path}:{number}: expected '<image path><TAB><class name>'. Received: {line!r}")
            entries.append((image, name))
    return entries


def images_list_boxes(entries, truth, split=None):
    """Looks up the boxes of listed images in a boxes CSV.

    An image matches the CSV rows with its file name and its class: the same name,
    or else the same ``class_key`` (case, spaces, ``NNN.`` numbering ignored). Among
    several splits the one given, else the folder above the class folder
    (``DATA/train/<class>/f`` is split ``train``), else the only one.

    Args:
        entries: list of ``(image path, class name)`` (``read_images_list``).
        truth: dict from ``read_boxes_csv``.
        split: CSV split to use; None to infer it as above.

    Returns:
        ``(records, errors)``: ``ImageBoxes`` for the images found, and ``(image
        path, reason)`` for the others (a listed file that does not exist is named
        as such).
    """
    by_file = {}
    for key in truth:
        by_file.setdefault(key[2], []).append(key)
    records, errors = [], []
    for path, name in entries:
        filename = os.path.basename(path)
        rows = [k for k in by_file.get(filename, []) if class_key(k[1]) == class_key(name)]
        folder_split = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(path))))
        # The split first, then the exact class spelling over a looser match.
        if split is not None:
            rows = [k for k in rows if k[0] == split]
        else:
            rows = [k for k in rows if k[0] == folder_split] or rows
        chosen = [k for k in rows if k[1] == name] or rows
        where = f"class {name!r}, file {filename!r}"
        if not chosen:
            if not os.path.lexists(path):  # the likelier mistake, and boxes would not help
                errors.append((path, "cannot read file (No such file or directory)"))
            else:
                errors.append((path, f"no box for {where}" + (f" in split {split!r}" if split is not None else "")))
            continue
        if len({k[0] for k in chosen}) > 1:
            errors.append((path, f"{where} is in several splits {sorted({k[0] for k in chosen})}; give the split"))
            continue
        if len(chosen) > 1:
            errors.append((path, f"{where} matches several classes of the boxes CSV "
                                 f"{sorted(k[1] for k in chosen)}; their names differ only in case or numbering"))
            continue
        records.append(_csv_record(path, name, truth[chosen[0]]))
    return records, errors


def image_class(names, boxes, difficult=None, include_difficult=False):
    """The one class of a multi-object image, for classification-style WSOL, and its boxes.

    The image's class is the class of its largest object (by box area; the first on
    a tie): the object a classifier most likely names and a CAM most likely covers.
    Its ground truth is every box of that class, so finding any of them counts.
    ``difficult`` objects are ignored, as the VOC protocol does.

    Args:
        names: (N,) class names of the objects.
        boxes: float (N, 4) ``[xmin, ymin, xmax, ymax]``, all in one frame.
        difficult: optional bool (N,).
        include_difficult: keep difficult objects.

    Returns:
        ``(class_name, float64 (G, 4) boxes)``, or None when no object is left.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    keep = np.ones(len(names), bool)
    if difficult is not None and not include_difficult:
        keep &= ~np.asarray(difficult, bool)
    if not keep.any():
        return None
    names = np.asarray(names, object)[keep]
    boxes = boxes[keep]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    name = str(names[int(np.argmax(areas))])
    return name, boxes[names == name]


def read_voc_xml(path):
    """Reads one Pascal VOC annotation file.

    Args:
        path: an ``Annotations/*.xml`` file.

    Returns:
        dict with ``filename`` (str), ``width`` and ``height`` (int) and ``objects``:
        list of dicts ``name`` (str), ``box`` (float64 (4,) half-open pixel box,
        converted from VOC's 1-based inclusive corners) and ``difficult`` (bool).

    Raises:
        ValueError: not XML, or a missing or malformed field (the file is named).
    """
    try:
        return _voc_annotation(path)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _voc_annotation(path):
    """``read_voc_xml`` with the reason alone in its ``ValueError``, for lists that name the file."""
    try:
        root = ElementTree.parse(path).getroot()
        filename = root.findtext("filename", "").strip()
        width, height = (int(float(root.findtext(f"size/{k}", "0"))) for k in ("width", "height"))
        if not filename or width <= 0 or height <= 0:
            raise ValueError(f"needs <filename> and a positive <size>; found filename={filename!r}, "
                             f"width={width}, height={height}")
        objects = []
        for obj in root.iter("object"):
            corners = [float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
            box = metrics.inclusive_to_half_open([corners], one_based=True)[0]
            objects.append({"name": obj.findtext("name", "").strip(), "box": box,
                            "difficult": obj.findtext("difficult", "0").strip() not in ("0", "")})
    except (ElementTree.ParseError, TypeError, ValueError, OverflowError) as error:  # OverflowError: int(inf)
        raise ValueError(f"not a valid VOC annotation ({error})") from None
    return {"filename": filename, "width": width, "height": height, "objects": objects}


def voc_image_boxes(root, split=None, images_dir=None, include_difficult=False):
    """The images of a Pascal VOC folder, one class each (see ``image_class``).

    Args:
        root: a VOC year folder (``VOC2007``: ``Annotations/``, ``JPEGImages/``,
            ``ImageSets/Main/``), or a plain folder of VOC XML files.
        split: image set, e.g. ``val``: only the ids in ``ImageSets/Main/<split>.txt``.
        images_dir: where the images are; default ``root/JPEGImages`` for a VOC
            folder, else the folder of the XML files.
        include_difficult: keep difficult objects.

    Returns:
        ``(records, errors)``: ``ImageBoxes`` in file-name order, and ``(xml path,
        reason)`` for files that could not be read. Images whose objects are all
        difficult are left out, as the VOC protocol does.

    Raises:
        FileNotFoundError: no such folder or image-set file.
    """
    annotations_dir = os.path.join(root, "Annotations")
    is_voc = os.path.isdir(annotations_dir)
    if not is_voc:
        annotations_dir = root
    if not os.path.isdir(annotations_dir):
        raise FileNotFoundError(f"VOC folder not found: {root!r}")
    if images_dir is None:
        images_dir = os.path.join(root, "JPEGImages") if is_voc else annotations_dir
    if split is None:
        files = sorted(f for f in os.listdir(annotations_dir) if f.endswith(".xml") and not f.startswith("."))
    else:
        set_path = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(set_path):
            raise FileNotFoundError(f"VOC image set {split!r} not found: {set_path!r}")
        with open(set_path) as f:
            files = [line.split()[0] + ".xml" for line in f if line.strip()]
    records, errors = [], []
    for name in files:
        path = os.path.join(annotations_dir, name)
        try:
            entry = _voc_annotation(path)
        except OSError as error:
            errors.append((path, f"cannot read file ({error.strerror or error})"))
            continue
        except ValueError as error:
            errors.append((path, str(error)))
            continue
        objects = entry["objects"]
        chosen = image_class([o["name"] for o in objects], [o["box"] for o in objects],
                             [o["difficult"] for o in objects], include_difficult)
        if chosen is not None:
            records.append(ImageBoxes(os.path.join(images_dir, entry["filename"]), chosen[0], chosen[1],
                                      (entry["height"], entry["width"])))
    return records, errors


def normalized_tfds_boxes(bbox):
    """TFDS boxes to ``[xmin, ymin, xmax, ymax]`` in ``NORMALIZED_FRAME``.

    TFDS stores normalized ``[ymin, xmin, ymax, xmax]``. Its mock data
    (``tfds.testing.mock_data``) draws the four values independently, so min > max
    occurs there; the corners are sorted (a no-op on real data, whose encoder
    enforces min <= max) and clipped to [0, 1].

    Args:
        bbox: float (N, 4) or (4,).

    Returns:
        float64 (N, 4).
    """
    b = np.asarray(bbox, np.float64).reshape(-1, 4)
    ys = np.sort(b[:, [0, 2]], axis=1)
    xs = np.sort(b[:, [1, 3]], axis=1)
    return np.clip(np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1), 0.0, 1.0)


def tfds_image_boxes(name, split="test", data_dir=None, download=True, include_difficult=False, log=None):
    """Streams a TFDS dataset with boxes as ``ImageBoxes`` (images PNG-encoded).

    Supported layouts: one ``bbox`` per image with a ``label`` (``cars196``; the
    class name is the label's name, or the example's ``label_name`` when present,
    as in ``caltech_birds2011``), or ``objects`` with ``bbox``, ``label`` and
    ``is_difficult`` (``voc/2007``; one class per image by ``image_class``).

    Images are re-encoded as PNG (lossless, so the model sees the stored pixels):
    TFDS's undecoded-image path (``SkipDecoding``) cannot be mocked offline, because
    its mock encoder rejects the mock's unsorted boxes.

    Args:
        name: TFDS name, e.g. ``cars196`` or ``voc/2007``.
        split: TFDS split, e.g. ``test``.
        data_dir: TFDS data folder (default: TFDS's own).
        download: download and prepare the dataset if it is not there yet.
        include_difficult: keep difficult VOC objects.
        log: optional callable taking one line of text, told before a download
            starts (TFDS retries an unreachable server for minutes before it fails).

    Returns:
        A generator of ``ImageBoxes``; images without a usable object (all
        difficult) are left out.

    Raises:
        ValueError: an unknown dataset or split, a dataset without boxes, or one that
            is neither prepared nor downloadable.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # noqa: BLE001 - TFDS raises several types for an unknown name
        raise ValueError(f"Unknown TFDS dataset {name!r}: {str(error).splitlines()[0]}") from None
    features = builder.info.features
    if "objects" in features and "bbox" in features["objects"]:
        label_names = features["objects"]["label"].names
        keep = [k for k in ("bbox", "label", "is_difficult") if k in features["objects"]]
    elif "bbox" in features and "label" in features:
        label_names = features["label"].names
        keep = [k for k in ("bbox", "label", "label_name") if k in features]
    else:
        raise ValueError(f"TFDS dataset {name!r} has no boxes: expected 'bbox' and 'label', or 'objects' "
                         f"with 'bbox'. Its features: {sorted(features.keys())}")
    if download:
        if log is not None and not builder.is_prepared():
            log(f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r}: downloading and preparing it "
                f"(needs internet, and can take long; offline, TFDS retries for minutes before it gives up). "
                f"To prepare it ahead: tfds build {name} --data_dir DIR, then --tfds-data-dir DIR")
        try:
            builder.download_and_prepare()
        except Exception as error:  # noqa: BLE001 - network, checksum and disk errors all mean "not available"
            raise ValueError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and could not be "
                             f"downloaded: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    try:
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except (KeyError, ValueError) as error:
        raise ValueError(f"TFDS dataset {name!r} has no split {split!r} ({error})") from None
    id_key = next((k for k in ("image/filename", "id") if k in features), None)

    def encode(example):
        source = example.get("objects", example)
        out = {k: source[k] for k in keep}
        out["image_bytes"] = tf.io.encode_png(example["image"])
        if id_key:
            out["id"] = example[id_key]
        return out

    def generate():
        for index, ex in enumerate(ds.map(encode, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator()):
            image_id = f"{name}:{split}/{ex['id'].decode('utf-8') if 'id' in ex else index}"
            boxes = normalized_tfds_boxes(ex["bbox"])
            labels = np.atleast_1d(ex["label"])
            if "label_name" in ex:
                names = [ex["label_name"].decode("utf-8")]
            else:
                names = [label_names[int(i)] for i in labels]
            # Mock data draws each field of a sequence with its own length; real
            # examples have equal lengths, where this changes nothing.
            n = min(len(names), len(boxes), len(ex.get("is_difficult", boxes)))
            difficult = ex["is_difficult"][:n] if "is_difficult" in ex else None
            chosen = image_class(names[:n], boxes[:n], difficult, include_difficult)
            if chosen is not None:
                yield ImageBoxes(image_id, chosen[0], chosen[1], NORMALIZED_FRAME, image_bytes=ex["image_bytes"])
    return generate()
