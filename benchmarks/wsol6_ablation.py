"""WSOL levers on wsol6, one at a time, on cached backbone features (BENCHMARKS.md ablation).

    python benchmarks/wsol6_ablation.py [--shared ../shared] [--cache /tmp/wsol6_cache] [--levers all]
        [--folds 5]

Protocol. The validation split is the one ``train.py --val-split 0.2 --seed 0`` keeps
(``data.split_folder(scan_folder(wsol6/train), 0.2, seed=0)``, 130 images); the other 514
images are "dev", where every choice is made: heads are trained on 4/5 of dev and score
the remaining fifth (``--folds`` folds), and tau is the one with the best GT-known Loc
over all of dev's out-of-fold maps. The validation rows use a head trained on all of dev,
at dev's tau and at the validation split's own best-Loc tau (what ``evaluate.py
--calibrate-for loc`` does). Heads are softmax regressions on the pooled features (200 full-batch Adam steps),
centred as ``keras_cam.model.center_head`` does, so each row takes seconds to a minute
on the cache; the fine-tuning levers (``ft_*``) train the last stage and take minutes.
Maps are the true class's CAM upsampled to 224 px (``keras_cam.cam``), boxes follow
``keras_cam.boxes``, and scores ``keras_cam.metrics``, with true boxes scaled to the
224-px frame. Loc is GT-known Loc@0.5 of the first box, BoxAcc the mean over IoU
{0.3, 0.5, 0.7} over all boxes; +- is one standard error.

The first run writes the feature caches (~2.5 GB, a few minutes) to ``--cache``.
Skips (exit 0) without ../shared.
"""

import argparse
import functools
import hashlib
import json
import multiprocessing
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from wsol6 import centre_box, summarize  # noqa: E402

SIZE = 224
TAUS = np.arange(95) / 100.0  # 0.00 ... 0.94, as metrics.default_thresholds() spells its values
RECIPE_EXTENT = 1.5
SQRT3_EXTENT = 1.73  # a candidate tried in session 5; the recipe keeps RECIPE_EXTENT
# Feature caches: name -> (input size, feature_stride, layer or None for the features, flipped)
CACHES = {
    "s32": (224, None, None, False), "s16": (224, 16, None, False), "s16_flip": (224, 16, None, True),
    "s16_320": (320, 16, None, False), "b16": (224, 16, "block_16_project_BN", False),
    "b13": (224, 16, "block_13_project_BN", False), "b13_flip": (224, 16, "block_13_project_BN", True),
    "b12": (224, 16, "block_12_add", False), "b5": (224, 16, "block_5_add", False),
    "b12_320": (320, 16, "block_12_add", False), "b13_320": (320, 16, "block_13_project_BN", False),
}


class Bench:
    """The photos, their boxes in the 224-px frame, the split and the feature caches."""

    def __init__(self, shared, cache_dir):
        from keras_cam import annotations, data
        root = os.path.join(shared, _common.PHOTOS)
        self.weights = os.path.join(shared, _common.MOBILENET_WEIGHTS)
        folder = data.scan_folder(root)
        _, val = data.split_folder(folder, 0.2, seed=0)
        truth = annotations.read_boxes_csv(os.path.join(os.path.dirname(root), "boxes.csv"))
        self.paths, self.labels = folder.paths, folder.labels
        self.is_val = np.isin(self.paths, val.paths)
        self.dev, self.val = np.flatnonzero(~self.is_val), np.flatnonzero(self.is_val)
        self.gts, self.centre = [], []
        for path, label in zip(self.paths, self.labels):
            entry = truth[("train", folder.class_names[label], os.path.basename(path))]
            scale = np.tile([SIZE / entry["width"], SIZE / entry["height"]], 2)
            self.gts.append(np.clip(entry["boxes"] * scale, 0, SIZE))
            self.centre.append(np.clip(centre_box(SIZE, SIZE), 0, SIZE))
        self.cache_dir = cache_dir
        self._features, self._images = {}, None
        os.makedirs(cache_dir, exist_ok=True)
        # The caches hold features of these photos under this preprocessing rule: a
        # cache written from other photos or by another keras_cam.data is refused.
        with open(data.__file__, "rb") as f:
            key = json.dumps({"photos": os.path.abspath(root), "count": len(self.paths),
                              "data.py": hashlib.sha256(f.read()).hexdigest()})
        stamp = os.path.join(cache_dir, "cache_key.json")
        if os.path.exists(stamp) and open(stamp).read() != key:
            raise SystemExit(f"error: {cache_dir} holds features of other photos or another preprocessing rule; "
                             f"give a fresh --cache")
        with open(stamp, "w") as f:
            f.write(key)

    def features(self, name):
        if name not in self._features:
            path = os.path.join(self.cache_dir, f"{name}.npy")
            if not os.path.exists(path):
                self._write_cache(name, path)
            self._features[name] = np.load(path, mmap_mode="r")
        return self._features[name]

    def _write_cache(self, name, path):
        import keras
        import tensorflow as tf

        from keras_cam import data
        from keras_cam.model import build_cam_model
        size, stride, layer, flip = CACHES[name]
        print(f"  caching {name} features of {len(self.paths)} photos ...", flush=True)
        model = build_cam_model(6, "mobilenet_v2", self.weights, size, feature_stride=stride)
        net = keras.Model(model.inputs[0], model.get_layer(layer).output) if layer else None
        out = []
        for i in range(0, len(self.paths), 32):
            x = tf.stack([data.load_and_resize(data.read_file(p), size) for p in self.paths[i:i + 32]])
            x = x[:, :, ::-1] if flip else x
            y = net(x, training=False) if net else model(x, training=False)["features"]
            out.append(np.asarray(y, np.float32 if layer else np.float16))
        np.save(path + ".part.npy", np.concatenate(out))
        os.replace(path + ".part.npy", path)

    def images(self):
        """The 224-px model inputs, uint8 (for the guided filter)."""
        if self._images is None:
            from keras_cam import data
            self._images = np.stack([np.asarray(data.load_and_resize(data.read_file(p), SIZE), np.uint8)
                                     for p in self.paths])
        return self._images


# Heads and maps ------------------------------------------------------------------------

def train_head(feats, labels, steps=200, extra=None, seed=0, centre=True, zero=False):
    """Softmax regression on pooled features (as train.py's head-only training).

    ``extra(features, kernel, labels)`` adds a loss term. Returns the kernel (K, C),
    centred as ``keras_cam.model.center_head`` does unless ``centre`` is False. The
    kernel starts at Keras' random start, as train.py's did before session 4, or at
    zero with ``zero`` (``keras_cam.model.zero_head``, what train.py does now).
    """
    import tensorflow as tf
    tf.random.set_seed(seed)
    features = tf.constant(np.asarray(feats, np.float32))
    y = tf.constant(labels)
    pooled = tf.reduce_mean(features, [1, 2])
    shape = (features.shape[-1], 6)
    kernel = tf.Variable(tf.zeros(shape) if zero else tf.keras.initializers.GlorotUniform(seed=seed)(shape))
    bias = tf.Variable(tf.zeros(6))
    optimizer = tf.keras.optimizers.Adam(1e-2)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, pooled @ kernel + bias))
            if extra is not None:
                loss += extra(features, kernel, y)
        optimizer.apply_gradients(zip(tape.gradient(loss, [kernel, bias]), [kernel, bias]))

    for _ in range(steps):
        step()
    kernel = kernel.numpy()
    return kernel - kernel.mean(axis=1, keepdims=True) if centre else kernel


def cams(feats, kernel, labels, size=SIZE):
    """True-class CAMs upsampled to the 224-px frame (keras_cam.cam)."""
    from keras_cam import cam
    raw = cam.class_activation_maps(np.asarray(feats, np.float32), kernel, labels)
    return cam.upsample_cams(raw, (size, size)).numpy()


def normalized(maps):
    lo = maps.min(axis=(1, 2), keepdims=True)
    return (maps - lo) / np.maximum(maps.max(axis=(1, 2), keepdims=True) - lo, 1e-12)


def guided_filter(guide, p, radius=8, eps=1e-2):
    """He et al.'s guided filter (grey guide), OpenCV box filters."""
    import cv2

    def box(x):
        return cv2.boxFilter(x, -1, (2 * radius + 1,) * 2, borderType=cv2.BORDER_REFLECT)
    mean_i, mean_p = box(guide), box(p)
    a = (box(guide * p) - mean_i * mean_p) / (box(guide * guide) - mean_i * mean_i + eps)
    return box(a) * guide + box(mean_p - a * mean_i)


def background_suppression(alpha=1.0, beta=0.5):
    """BAS-style head loss with the true class's own CAM as the mask: share of the positive
    evidence outside the mask (alpha) plus the mask's mean (area, beta)."""
    import tensorflow as tf

    def extra(features, kernel, y):
        w = tf.transpose(tf.gather(kernel - tf.reduce_mean(kernel, 1, keepdims=True), y, axis=1))
        cam = tf.einsum("bhwk,bk->bhw", features, w)
        lo, hi = tf.reduce_min(cam, [1, 2], keepdims=True), tf.reduce_max(cam, [1, 2], keepdims=True)
        mask = (cam - lo) / (hi - lo + 1e-6)
        positive = tf.nn.relu(cam)
        outside = tf.reduce_mean((1 - mask) * positive, [1, 2]) / (tf.reduce_mean(positive, [1, 2]) + 1e-6)
        return alpha * tf.reduce_mean(outside) + beta * tf.reduce_mean(mask)
    return extra


def class_maps(feats, kernel, labels, how, temperature=4.0):
    """Per-position maps from all classes' CAMs: 'softmax' (probability of the true class at
    each position) or 'max_other' (true class minus the strongest other class)."""
    every = np.einsum("bhwk,kc->bhwc", np.asarray(feats, np.float32), kernel)
    own = np.take_along_axis(every, labels[:, None, None, None], -1)[..., 0]
    if how == "softmax":
        z = every / temperature
        z = np.exp(z - z.max(-1, keepdims=True))
        low = np.take_along_axis(z, labels[:, None, None, None], -1)[..., 0] / z.sum(-1)
    else:
        np.put_along_axis(every, labels[:, None, None, None], -np.inf, -1)
        low = own - every.max(-1)
    from keras_cam import cam
    return cam.upsample_cams(low.astype(np.float32), (SIZE, SIZE)).numpy()


def fine_tune(bench, train, epochs=6, learning_rate=1e-4, cutmix=0.0, seed=0):
    """Trains MobileNetV2's last stage (blocks 14-16, Conv_1) and the head on cached block-13
    outputs (the photos and their mirror images), starting from the head-only solution;
    ``cutmix`` > 0: that share of each batch gets a rectangle of another image's features
    (labels mixed by area). Returns a function: image indices -> (maps, accuracy)."""
    import keras
    import tensorflow as tf

    from keras_cam.model import build_cam_model
    keras.utils.set_random_seed(seed)
    full = build_cam_model(6, "mobilenet_v2", bench.weights, SIZE, feature_stride=16)
    inputs = keras.Input((14, 14, 160))
    x = inputs
    for block in (14, 15, 16):
        y = x
        for part in ("expand", "expand_BN", "expand_relu", "depthwise", "depthwise_BN", "depthwise_relu",
                     "project", "project_BN"):
            y = full.get_layer(f"block_{block}_{part}")(y)
        x = keras.layers.Add()([x, y]) if block < 16 else y
    features = full.get_layer("out_relu")(full.get_layer("Conv_1_bn")(full.get_layer("Conv_1")(x)))
    head = full.get_layer("logits")
    tail = keras.Model(inputs, [head(full.get_layer("gap")(features)), features])
    b13 = bench.features("b13")
    x_all = np.concatenate([b13[train], bench.features("b13_flip")[train]]).astype(np.float32)
    y_all = np.concatenate([bench.labels[train]] * 2)
    head.kernel.assign(train_head(bench.features("s16")[train], bench.labels[train]))
    optimizer = keras.optimizers.Adam(learning_rate)
    rng = np.random.default_rng(seed)

    @tf.function
    def step(x, y_a, y_b, lam):
        with tf.GradientTape() as tape:
            logits = tail(x, training=True)[0]
            loss = tf.reduce_mean(lam * tf.nn.sparse_softmax_cross_entropy_with_logits(y_a, logits)
                                  + (1 - lam) * tf.nn.sparse_softmax_cross_entropy_with_logits(y_b, logits))
        grads = tape.gradient(loss, tail.trainable_variables)
        optimizer.apply_gradients(zip(grads, tail.trainable_variables))

    for _ in range(epochs):
        order = rng.permutation(len(x_all))
        for start in range(0, len(order), 32):
            batch = order[start:start + 32]
            x, y_a = x_all[batch].copy(), y_all[batch]
            other = rng.permutation(len(batch))
            lam = np.ones(len(batch), np.float32)
            for j in np.flatnonzero(rng.random(len(batch)) < cutmix):
                h, w = rng.integers(3, 12, size=2)
                top, left = rng.integers(0, 15 - h), rng.integers(0, 15 - w)
                x[j, top:top + h, left:left + w] = x_all[batch[other[j]], top:top + h, left:left + w]
                lam[j] = 1 - h * w / 196
            step(x, y_a, y_a[other], lam)
    kernel = head.kernel.numpy()
    head.kernel.assign(kernel - kernel.mean(axis=1, keepdims=True))

    def maps(index):
        logits, feats = tail.predict(np.asarray(b13[index], np.float32), batch_size=64, verbose=0)
        labels = bench.labels[index]
        return cams(feats, head.kernel.numpy(), labels), float(np.mean(logits.argmax(1) == labels))
    return maps


# Levers: name -> (what it is, maps(bench, train, test) -> (N, 224, 224), box extent, rule)

def _head_maps(name, transform=None, extra=None, zero=False):
    def maps(bench, train, test):
        feats = bench.features(name)
        f_train, f_test = (feats[train], feats[test]) if transform is None else \
            (transform(feats[train]), transform(feats[test]))
        return cams(f_test, train_head(f_train, bench.labels[train], extra=extra, zero=zero), bench.labels[test])
    return maps


def _uncentred(name):
    def maps(bench, train, test):
        feats = bench.features(name)
        return cams(feats[test], train_head(feats[train], bench.labels[train], centre=False), bench.labels[test])
    return maps


def _standardized(bench, train, test):
    feats = bench.features("s16")
    pooled = np.asarray(feats[train], np.float32).mean(axis=(1, 2))
    mean, scale = pooled.mean(0), pooled.std(0) + 1e-3
    f_train, f_test = ((np.asarray(feats[i], np.float32) - mean) / scale for i in (train, test))
    return cams(f_test, train_head(f_train, bench.labels[train]), bench.labels[test])


def recipe(bench, train, test):
    return _head_maps("s16")(bench, train, test)


def flip(bench, train, test):
    kernel = train_head(bench.features("s16")[train], bench.labels[train])
    mirrored = cams(bench.features("s16_flip")[test], kernel, bench.labels[test])[:, :, ::-1]
    return normalized(cams(bench.features("s16")[test], kernel, bench.labels[test])) + normalized(mirrored)


def multiscale(bench, train, test):
    kernel = train_head(bench.features("s16")[train], bench.labels[train])
    return (normalized(cams(bench.features("s16")[test], kernel, bench.labels[test]))
            + normalized(cams(bench.features("s16_320")[test], kernel, bench.labels[test])))


def guided(bench, train, test):
    maps = normalized(recipe(bench, train, test)).astype(np.float32)
    grey = bench.images()[test].mean(-1).astype(np.float32) / 255
    return np.stack([guided_filter(g, m) for g, m in zip(grey, maps)])


def concat_b16(bench, train, test):
    both = np.concatenate([bench.features("s16"), bench.features("b16")], -1)
    return cams(both[test], train_head(both[train], bench.labels[train]), bench.labels[test])


def _all_class(how):
    def maps(bench, train, test):
        feats = bench.features("s16")
        return class_maps(feats[test], train_head(feats[train], bench.labels[train]), bench.labels[test], how)
    return maps


def imagenet_head(bench, train, test):
    """The stock 1000-class ImageNet head on the same features: the CAM of the image's
    top-5 ImageNet classes, weighted by their probabilities (no training on wsol6)."""
    from keras_cam.imagenet import imagenet_cam_model
    head = imagenet_cam_model(bench.weights).get_layer("logits")
    kernel, bias = head.kernel.numpy(), head.bias.numpy()
    feats = np.asarray(bench.features("s16")[test], np.float32)
    logits = feats.mean(axis=(1, 2)) @ kernel + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.argsort(-p, axis=1)[:, :5]
    weights = np.stack([kernel[:, t] @ p[i, t] for i, t in enumerate(top)])
    from keras_cam import cam
    return cam.upsample_cams(np.einsum("bhwk,bk->bhw", feats, weights), (SIZE, SIZE)).numpy()


def _upsampled(feats, side):
    """Bilinear resize of (N, h, w, K) features to (N, side, side, K), in chunks."""
    import tensorflow as tf
    feats = np.asarray(feats, np.float32)
    if feats.shape[1] == side:
        return feats
    return np.concatenate([tf.image.resize(feats[i:i + 64], (side, side)).numpy() for i in range(0, len(feats), 64)])


def _objectness(layers=("b12", "b13"), side=14, foreground=0.6, background=0.1, rounds=1, only=False, base="s16",
                zero=False):
    """The recipe's CAM times an objectness head (``keras_cam.objectness``): a logistic
    regression at each position of the cached ``layers`` (resized to ``side``), fitted on
    the training fold's own CAMs (object >= ``foreground``, background <= ``background``
    of each normalized map), as ``train.py --objectness-layers
    block_12_add,block_13_project_BN`` does with the defaults. ``rounds`` > 1 refits on
    the labels of CAM x objectness; ``only`` draws boxes on the objectness alone; ``base``
    names the caches of the head's features, ``+``-joined (``s16_320``: 320-px inputs, 20x20
    maps; ``s16+b16``: the head on the last features and block 16's projection)."""
    def maps(bench, train, test):
        from keras_cam import cam, objectness
        feats = np.concatenate([np.asarray(bench.features(n), np.float32) for n in base.split("+")], -1)
        lower = np.concatenate([_upsampled(bench.features(n), side) for n in layers], -1)
        kernel = train_head(feats[train], bench.labels[train], zero=zero)
        raw = {k: _upsampled(cam.class_activation_maps(feats[i], kernel, bench.labels[i]).numpy()[..., None],
                             side)[..., 0] for k, i in (("train", train), ("test", test))}
        guide, x = raw["train"], lower[train].reshape(-1, lower.shape[-1])
        for _ in range(rounds):
            labels = objectness.pseudo_labels(guide, foreground, background).reshape(-1)
            weights, bias = objectness.fit_logistic(x[labels >= 0], labels[labels >= 0])
            guide = cam.normalize_cams(raw["train"]).numpy() / (1 + np.exp(-(lower[train] @ weights + bias)))
        probability = 1 / (1 + np.exp(-(lower[test] @ weights + bias)))
        if only:
            return cam.upsample_cams(probability.astype(np.float32), (SIZE, SIZE)).numpy()
        return cam.maps_from_cams(raw["test"], probability, (SIZE, SIZE)).numpy()
    return maps


objectness_maps = _objectness()


def _fine_tuned(**options):
    def maps(bench, train, test):
        return fine_tune(bench, train, **options)(test)[0]
    return maps


def split_objects_rule(score_map, gt, taus, tau2=0.5, min_share=0.0):
    """Box rule variant: the regions at tau, then, when the map holds two or more regions
    at tau2 (each at least ``min_share`` of that foreground), those regions too."""
    from keras_cam import boxes, metrics
    m = metrics.normalize_map(score_map).astype(np.float64)
    extra, shares = boxes.boxes_from_cam(m, tau2, all_regions=True, box_extent=RECIPE_EXTENT)
    extra = extra[shares >= min_share]
    largest, every = metrics.best_ious_over_thresholds(m, gt, taus, box_extent=RECIPE_EXTENT)
    if len(extra) >= 2:
        every = np.maximum(every, np.where(largest > 0, metrics.best_iou(extra, gt), 0))
    return largest, every


def mass_rule(score_map, gt, taus):
    """Per-image threshold: the foreground holds the share ``p`` (on the tau axis) of the
    normalized map's mass."""
    from keras_cam import boxes, metrics
    m = metrics.normalize_map(score_map).astype(np.float64)
    values = np.sort(m, axis=None)[::-1]
    share = np.cumsum(values) / max(values.sum(), 1e-12)
    largest, every = np.zeros(len(taus)), np.zeros(len(taus))
    for k, p in enumerate(taus):
        t = min(values[min(np.searchsorted(share, p), values.size - 1)], 0.99)
        found, _ = boxes.boxes_from_cam(m, t, all_regions=True, box_extent=RECIPE_EXTENT)
        if len(found):
            largest[k], every[k] = metrics.best_iou(found[:1], gt), metrics.best_iou(found, gt)
    return largest, every


def max_sum_rule(score_map, gt, taus, side=28):
    """Box rule variant: the rectangle with the largest sum of (map - tau), found
    exhaustively on the map resized to ``side`` x ``side`` (one box per image)."""
    import cv2

    from keras_cam import metrics
    m = cv2.resize(metrics.normalize_map(score_map).astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
    m = metrics.normalize_map(m)
    top, bottom = np.triu_indices(side + 1, 1)
    upper = np.triu(np.ones((side + 1, side + 1), bool), 1)[None]
    best = np.zeros(len(taus))
    for k, t in enumerate(taus):
        prefix = np.zeros((side + 1, side + 1))
        prefix[1:, 1:] = (m - t).cumsum(0).cumsum(1)
        rows = prefix[bottom] - prefix[top]                    # (row pairs, side + 1)
        sums = np.where(upper, rows[:, None, :] - rows[:, :, None], -np.inf)  # (row pair, left, right)
        r, left, right = np.unravel_index(np.argmax(sums), sums.shape)
        box = np.array([[left, top[r], right, bottom[r]]]) * (SIZE / side)
        best[k] = metrics.best_iou(box, gt)
    return best, best


LEVERS = {
    "plain32": ("plain CAM (7x7, stride 32), bounding boxes", _uncentred("s32"), 0.0, None),
    "stride16": ("+ 14x14 CAM (--feature-stride 16)", _uncentred("s16"), 0.0, None),
    "centred": ("+ centred head", recipe, 0.0, None),
    "recipe": ("+ moment boxes (--box-extent 1.5): the recipe", recipe, RECIPE_EXTENT, None),
    "flip": ("recipe + flip-averaged CAM", flip, RECIPE_EXTENT, None),
    "multiscale": ("recipe + 224 and 320 px CAMs averaged (2.5x compute)", multiscale, RECIPE_EXTENT, None),
    "guided": ("recipe + guided filter on the image (r 8, eps 0.01)", guided, RECIPE_EXTENT, None),
    "concat_b16": ("recipe + head on [features, block_16_project]", concat_b16, RECIPE_EXTENT, None),
    "zscore": ("recipe, head on channel-standardized features", _standardized, RECIPE_EXTENT, None),
    "l2": ("recipe, head on per-position L2-normalized features",
           _head_maps("s16", lambda f: np.asarray(f, np.float32) / (np.linalg.norm(np.asarray(f, np.float32), axis=-1,
                                                                                  keepdims=True) + 1e-6)),
           RECIPE_EXTENT, None),
    "softmax": ("recipe, map = per-position softmax probability of the class (T 4)",
                _all_class("softmax"), RECIPE_EXTENT, None),
    "max_other": ("recipe, map = class CAM minus the strongest other class", _all_class("max_other"),
                  RECIPE_EXTENT, None),
    "imagenet_head": ("map of the stock ImageNet head's top-5 classes (not trained on wsol6)", imagenet_head,
                      RECIPE_EXTENT, None),
    "bas_head": ("recipe, head trained with background suppression + area loss (1, 0.5)",
                 _head_maps("s16", extra=background_suppression()), RECIPE_EXTENT, None),
    "split_objects": ("recipe + regions at 0.5 as further boxes when there are several", recipe, RECIPE_EXTENT,
                      split_objects_rule),
    "split_objects_10": ("same, only regions with >= 10% of that foreground", recipe, RECIPE_EXTENT,
                         functools.partial(split_objects_rule, min_share=0.1)),
    "objectness": ("recipe, boxes on CAM x objectness head (blocks 12-13, fitted on the CAM's confident regions)",
                   objectness_maps, RECIPE_EXTENT, None),
    "objectness_fg05": ("objectness, object targets at CAM >= 0.5 instead of 0.6",
                        _objectness(foreground=0.5), RECIPE_EXTENT, None),
    "objectness_bg02": ("objectness, background targets at CAM <= 0.2 instead of 0.1",
                        _objectness(background=0.2), RECIPE_EXTENT, None),
    "objectness_2rounds": ("objectness refitted on the labels of CAM x objectness", _objectness(rounds=2),
                           RECIPE_EXTENT, None),
    "objectness_only": ("boxes on the objectness probability alone (class-agnostic)", _objectness(only=True),
                        RECIPE_EXTENT, None),
    "objectness_b5": ("objectness at 28x28 on blocks 5, 12 and 13 (the latter two upsampled)",
                      _objectness(("b5", "b12", "b13"), side=28), RECIPE_EXTENT, None),
    "objectness_320": ("objectness on 320-px inputs (--image-size 320: 20x20 maps, ~2x the compute)",
                       _objectness(("b12_320", "b13_320"), side=20, base="s16_320"), RECIPE_EXTENT, None),
    "objectness_b16": ("objectness, CAM of a head on [features, block_16_project] (concat_b16)",
                       _objectness(base="s16+b16"), RECIPE_EXTENT, None),
    "recipe_zero": ("recipe, head started at zero (train.py since session 4)", _head_maps("s16", zero=True),
                    RECIPE_EXTENT, None),
    "objectness_zero": ("objectness, head started at zero (train.py since session 4)", _objectness(zero=True),
                        RECIPE_EXTENT, None),
    "objectness_sqrt3": ("objectness, head started at zero, moment boxes of sqrt(3) sd (--box-extent 1.73; "
                         "session 5)", _objectness(zero=True), SQRT3_EXTENT, None),
    "objectness_maxsum": ("objectness maps, box = the rectangle of largest sum of (map - tau)", objectness_maps,
                          0.0, max_sum_rule),
    "mass": ("recipe maps, per-image threshold by mass share p (tau axis = p)", recipe, RECIPE_EXTENT, mass_rule),
    "ft_last": ("last stage fine-tuned (Adam 1e-4, 6 epochs, photos + mirrors)", _fine_tuned(), RECIPE_EXTENT, None),
    "ft_cutmix": ("last stage fine-tuned with feature CutMix (3e-4, p 0.5)",
                  _fine_tuned(learning_rate=3e-4, cutmix=0.5), RECIPE_EXTENT, None),
}


# Scoring --------------------------------------------------------------------------------

def _curves(job):
    score_map, gt, extent, rule = job
    from keras_cam import metrics
    if rule is None:
        return metrics.best_ious_over_thresholds(score_map, gt, TAUS, box_extent=extent)
    return rule(score_map, gt, TAUS)


def curves(pool, maps, gts, extent, rule):
    """Per-image best IoU at every tau: (first box, all boxes), each (N, T)."""
    res = list(pool.map(_curves, [(m, g, extent, rule) for m, g in zip(maps, gts)], chunksize=8))
    return np.stack([r[0] for r in res]), np.stack([r[1] for r in res])


def best_tau(first):
    """Index of the first tau with the best GT-known Loc (``--calibrate-for loc``)."""
    return int(np.argmax((first >= 0.5).mean(axis=0)))


def best_mean_box_acc_tau(every):
    """Index of the first tau with the best mean BoxAcc (``evaluate.py --calibrate``'s rule)."""
    return int(np.argmax(np.mean([(every >= d).mean(axis=0) for d in (0.3, 0.5, 0.7)], axis=0)))


def row(first, every, t):
    return summarize(first[:, t], every[:, t])


def fmt(s, tau):
    return (f"Loc {s['gt_known_loc']:.3f} +- {s['gt_known_loc_se']:.3f} / BoxAcc {s['mean_box_acc']:.3f} +- "
            f"{s['mean_box_acc_se']:.3f} (tau {TAUS[tau]:.2f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=_common.DEFAULT_SHARED)
    parser.add_argument("--cache", default=os.path.join("/tmp", "wsol6_cache"), help="feature cache folder")
    parser.add_argument("--levers", default="all", help=f"comma-separated, of: {', '.join(LEVERS)}")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    if _common.photos_or_skip(args.shared) is None:
        return 0
    names = list(LEVERS) if args.levers == "all" else args.levers.split(",")
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        parser.error(f"unknown levers {unknown}; choose from {', '.join(LEVERS)}")
    from concurrent.futures import ProcessPoolExecutor
    bench = Bench(args.shared, args.cache)
    parts = np.array_split(np.random.default_rng(0).permutation(bench.dev), args.folds)
    dev_order = np.concatenate(parts)
    print(_common.machine_line())
    print(f"wsol6: {len(bench.dev)} dev images ({args.folds}-fold), {len(bench.val)} validation images")
    from keras_cam import metrics
    for split, index in (("dev", dev_order), ("val", bench.val)):
        iou = [metrics.best_iou(bench.centre[i], bench.gts[i]) for i in index]
        print(f"  centre box (50% of the area), {split}: Loc {np.mean(np.array(iou) >= 0.5):.3f} / "
              f"BoxAcc {summarize(iou, iou)['mean_box_acc']:.3f}")
    # spawn, not fork: TensorFlow's threads are running by now.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for name in names:
            what, make_maps, extent, rule = LEVERS[name]
            start = time.time()
            dev_first, dev_every = [], []
            for k, test in enumerate(parts):
                train = np.concatenate([p for j, p in enumerate(parts) if j != k])
                f, e = curves(pool, make_maps(bench, train, test), [bench.gts[i] for i in test], extent, rule)
                dev_first.append(f)
                dev_every.append(e)
            dev_first, dev_every = np.concatenate(dev_first), np.concatenate(dev_every)
            val_first, val_every = curves(pool, make_maps(bench, bench.dev, bench.val),
                                          [bench.gts[i] for i in bench.val], extent, rule)
            t_dev, t_val = best_tau(dev_first), best_tau(val_first)
            print(f"{name}: {what}  [{time.time() - start:.0f} s]")
            print(f"  dev @ its tau:      {fmt(row(dev_first, dev_every, t_dev), t_dev)}")
            print(f"  val @ dev tau:      {fmt(row(val_first, val_every, t_dev), t_dev)}")
            print(f"  val @ its own tau:  {fmt(row(val_first, val_every, t_val), t_val)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
