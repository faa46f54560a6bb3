"""Localization pictures and the TensorBoard callback that logs them during training."""

import glob
import os

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CLASS_NAMES, IMAGE_SIZE

from keras_cam import boxes as box_rule
from keras_cam import summaries, synthetic, training
from keras_cam.model import classifier_view


def _image_events(log_dir):
    """(step, [decoded RGB pictures]) of every ``val_images`` summary under log_dir."""
    found = []
    for path in sorted(glob.glob(os.path.join(str(log_dir), "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == summaries.IMAGES_TAG:
                    # Image summaries hold [width, height, png, png, ...] as strings.
                    encoded = value.tensor.string_val[2:]
                    pictures = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
                                for b in encoded]
                    found.append((event.step, pictures))
    return found


@pytest.fixture()
def image_files(tmp_path, sample_images):
    paths = []
    for i, image in enumerate(sample_images):
        path = str(tmp_path / f"image_{i}.png")
        cv2.imwrite(path, image[..., ::-1])
        paths.append(path)
    return paths


def test_localize_images_follows_the_box_rule(cam_model, image_files):
    images = summaries.load_images(image_files, IMAGE_SIZE)
    assert images.shape == (len(image_files), IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.uint8
    localized = summaries.localize_images(cam_model, images, tau=0.3)
    logits = cam_model(images.astype("float32"), training=False)["logits"].numpy()
    np.testing.assert_array_equal(localized["class_ids"], logits.argmax(axis=-1))
    np.testing.assert_allclose(localized["scores"], tf.nn.softmax(logits).numpy().max(axis=-1), rtol=1e-6)
    assert localized["maps"].shape == (len(image_files), IMAGE_SIZE, IMAGE_SIZE)
    for score_map, found in zip(localized["maps"], localized["boxes"]):
        assert score_map.min() >= 0.0 and score_map.max() == pytest.approx(1.0)
        np.testing.assert_array_equal(found, box_rule.boxes_from_cam(score_map, 0.3, all_regions=True)[0])
    # A run's moment boxes (--box-extent) are what its pictures show too.
    moments = summaries.localize_images(cam_model, images, tau=0.3, box_extent=1.0)
    expected = [box_rule.boxes_from_cam(m, 0.3, all_regions=True, box_extent=1.0)[0] for m in localized["maps"]]
    for found, want in zip(moments["boxes"], expected):
        np.testing.assert_array_equal(found, want)
    assert any(not np.array_equal(a, b) for a, b in zip(moments["boxes"], localized["boxes"]))


def test_draw_localizations_enlarges_small_images_and_draws(cam_model, image_files):
    images = summaries.load_images(image_files, IMAGE_SIZE)
    localized = summaries.localize_images(cam_model, images)
    truth = [np.array([[4, 4, 20, 20]])] * len(images)
    pictures = summaries.draw_localizations(images, localized, CLASS_NAMES, true_boxes=truth, min_side=128)
    assert pictures.shape == (len(images), 128, 128, 3) and pictures.dtype == np.uint8
    plain = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)
    assert np.abs(pictures.astype(int) - plain).mean() > 5  # heatmap blended in
    # The true box's edge (white) runs along x = 8 from y = 8 on, in the doubled frame.
    assert (pictures[:, 20:30, 8] == 255).all()


def test_pick_spread():
    assert summaries.pick_spread(list("abcdefgh"), 4) == list("aceg")
    assert summaries.pick_spread(["a", "b"], 4) == ["a", "b"]


def test_callback_logs_pictures_at_checkpoint_epochs_and_the_last(cam_model, image_files, tmp_path):
    log_dir = tmp_path / "tb" / "val_images"
    classifier = classifier_view(cam_model)
    classifier.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    x = np.random.default_rng(0).uniform(0, 255, (4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    callback = summaries.CamImagesCallback(cam_model, image_files[:3], CLASS_NAMES, str(log_dir), every=2)
    classifier.fit(x, np.array([0, 1, 2, 0]), epochs=5, batch_size=4, verbose=0, callbacks=[callback])
    events = _image_events(log_dir)
    # Epochs 2 and 4 (every=2) and the last, 5; steps are 0-based epochs like Keras' scalars.
    assert [step for step, _ in events] == [1, 3, 4]
    for _, pictures in events:
        assert len(pictures) == 3
        assert all(p.shape == (128, 128, 3) for p in pictures)


def test_training_writes_validation_pictures_to_tensorboard(tmp_path):
    data_dir = tmp_path / "data"
    synthetic.write_dataset(str(data_dir), {"train": 5}, size=32, seed=2)
    config = training.TrainConfig(data=str(data_dir / "train"), classes=3, backbone="tiny", weights="none",
                                  image_size=32, epochs=1, batch_size=8, checkpoint_every=4)
    run_dir = training.make_run_dir(str(tmp_path / "experiments"))
    training.train(config, run_dir, verbose=0)
    events = _image_events(os.path.join(run_dir, "tensorboard", "val_images"))
    assert [step for step, _ in events] == [0]  # the last epoch, though not a checkpoint epoch
    with open(os.path.join(run_dir, "val_images.txt")) as f:
        val_images = f.read().splitlines()
    assert all(len(pictures) == min(4, len(val_images)) for _, pictures in events)
