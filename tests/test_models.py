import numpy as np
import pytest

keras = pytest.importorskip("keras")

from age_gender.models import CrossStitch, build_multitask_cnn, conv_filters  # noqa: E402

SMALL = dict(input_size=16, conv_pairs=2, dense_layers=1, dense_units=10, width_multiplier=0.125,
             batch_norm=False, l2=0.0, dropout=0.0)


def test_conv_filters_follow_the_study():
    assert conv_filters(6) == [64, 128, 256, 512, 512, 512]
    assert conv_filters(5, 0.25) == [16, 32, 64, 128, 128]


@pytest.mark.parametrize("split_point, cross_stitch, expected", [
    (2, "none", 9458),            # shared trunk 4296 + two dense branches 5140 + heads 22
    (0, "none", 13754),           # both conv pairs duplicated per branch
    (1, "none", 808 + 2 * 3488 + 5140 + 22),  # first pair shared, second per branch
    (0, "conv", 13754 + 4 * 8 + 4 * 16),   # per-channel 2x2 units after each branch pair
    (2, "dense", 9458 + 4 * 10),
    (0, "both", 13754 + 4 * 8 + 4 * 16 + 4 * 10),
])
def test_parameter_counts(split_point, cross_stitch, expected):
    model = build_multitask_cnn(split_point=split_point, cross_stitch=cross_stitch, **SMALL)
    assert model.count_params() == expected
    out = model(np.zeros((3, 16, 16, 3), np.float32))
    assert out["age"].shape == (3, 1) and out["gender"].shape == (3, 1)


def test_study_cnn10_shapes_at_full_size():
    model = build_multitask_cnn(input_size=128, conv_pairs=5, dense_layers=3, dense_units=300, split_point=1)
    assert [o.shape for o in model.outputs] == [(None, 1), (None, 1)]
    assert model.get_layer("age5_conv2").filters == 512 and model.get_layer("shared1_conv1").filters == 64
    assert model.count_params() > 20_000_000


def test_age_head_starts_at_the_mean_age_and_gender_is_a_probability():
    model = build_multitask_cnn(age_mean=41.0, age_std=12.0, **SMALL)
    out = model(np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype(np.float32))
    gender, age = (keras.ops.convert_to_numpy(out[k]) for k in ("gender", "age"))
    assert np.all((gender > 0) & (gender < 1))
    assert abs(float(age.mean()) - 41.0) < 12


@pytest.mark.parametrize("bad", [dict(split_point=3), dict(conv_pairs=9), dict(cross_stitch="x"),
                                 dict(input_size=2), dict(pooling="max")])
def test_builder_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        build_multitask_cnn(**{**SMALL, **bad})


def test_cross_stitch_mixes_with_a_learned_2x2_per_channel():
    layer = CrossStitch(per_channel=True, self_weight=0.8)
    a = np.ones((2, 3), np.float32)
    b = np.full((2, 3), 10.0, np.float32)
    out_a, out_b = layer([a, b])
    assert np.allclose(out_a, 0.8 * 1 + 0.2 * 10) and np.allclose(out_b, 0.2 * 1 + 0.8 * 10)
    assert layer.alpha.shape == (2, 2, 3)
    shared = CrossStitch(per_channel=False)
    shared([np.ones((1, 4, 4, 64), np.float32)] * 2)
    assert shared.count_params() == 4  # does not grow with the feature map


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    from age_gender.datasets import KerasModelDataset

    model = build_multitask_cnn(cross_stitch="both", split_point=0, **{**SMALL, "batch_norm": True})
    images = np.random.default_rng(1).uniform(0, 255, (5, 16, 16, 3)).astype(np.float32)
    dataset = KerasModelDataset(str(tmp_path / "m.keras"))
    dataset.save(model)
    loaded = dataset.load()  # plain keras.models.load_model underneath, no custom_objects
    before, after = model.predict(images, verbose=0), loaded.predict(images, verbose=0)
    assert np.array_equal(before["age"], after["age"]) and np.array_equal(before["gender"], after["gender"])
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


def test_distribution_age_head_predicts_the_expected_age_and_penalises_its_variance(tmp_path):
    from age_gender.datasets import KerasModelDataset
    from age_gender.models.layers import AgeExpectation

    probabilities = np.zeros((2, 117), np.float32)
    probabilities[0, 30] = 1.0
    probabilities[1, [20, 40]] = 0.5
    layer = AgeExpectation(116, variance_weight=0.1)
    ages = keras.ops.convert_to_numpy(layer(probabilities))
    assert ages.shape == (2, 1) and np.allclose(ages.ravel(), [30.0, 30.0])
    assert np.isclose(float(keras.ops.convert_to_numpy(layer.losses[0])), 0.1 * (0 + 100) / 2)  # Var: 0 and 100

    model = build_multitask_cnn(age_mean=41.0, age_std=12.0, age_head="distribution", variance_weight=0.01, **SMALL)
    images = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype(np.float32)
    age = keras.ops.convert_to_numpy(model(images)["age"])
    assert age.shape == (8, 1) and abs(float(age.mean()) - 41.0) < 6  # starts at the prior's mean age
    model.compile(optimizer="adam", loss={"age": "mae", "gender": "binary_crossentropy"})
    history = model.fit(images, {"age": np.full((8, 1), 30.0, np.float32), "gender": np.ones((8, 1), np.float32)},
                        epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    dataset = KerasModelDataset(str(tmp_path / "d.keras"))
    dataset.save(model)
    again = dataset.load()
    assert np.allclose(model.predict(images, verbose=0)["age"], again.predict(images, verbose=0)["age"], atol=1e-5)
    with pytest.raises(ValueError, match="age_head"):
        build_multitask_cnn(age_head="ordinal", **SMALL)


def test_random_affine_resamples_once_within_its_ranges(tmp_path):
    from age_gender.models import RandomAffine

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 24, 24, 3)).astype(np.float32)
    still = RandomAffine(flip=False, seed=1)(images, training=True)
    np.testing.assert_allclose(np.asarray(still), images, atol=1e-3)  # no range: the identity
    mirrored = np.asarray(RandomAffine(flip=True, seed=1)(images, training=True))
    flipped = [np.allclose(m, i[:, ::-1], atol=1e-3) for m, i in zip(mirrored, images)]
    kept = [np.allclose(m, i, atol=1e-3) for m, i in zip(mirrored, images)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)  # each mirrored or not
    layer = RandomAffine(flip=True, shift=0.1, zoom=0.1, rotation_degrees=10, seed=3)
    moved = np.asarray(layer(images, training=True))
    assert moved.shape == images.shape and moved.dtype == np.float32 and not np.allclose(moved, images)
    assert 0 <= moved.min() and moved.max() <= 255  # bilinear with reflected edges stays in range
    again = np.asarray(RandomAffine(flip=True, shift=0.1, zoom=0.1, rotation_degrees=10, seed=3)(images, training=True))
    np.testing.assert_array_equal(again, moved)  # seeded
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
    with pytest.raises(ValueError, match="0 <= shift"):
        RandomAffine(shift=1.5)
    inputs = keras.Input((24, 24, 3))
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "affine.keras")
    loaded = keras.models.load_model(tmp_path / "affine.keras")
    assert loaded.layers[-1].get_config()["rotation_degrees"] == 10.0


def test_single_resampling_replaces_four_layers_with_one():
    from age_gender.training import augmentation

    settings = {"enabled": True, "flip": True, "shift": 0.1, "zoom": 0.1, "rotation_degrees": 10, "contrast": 0.2}
    assert [type(layer).__name__ for layer in augmentation(settings, 0).layers] == [
        "RandomFlip", "RandomTranslation", "RandomZoom", "RandomRotation", "RandomContrast"]
    assert [type(layer).__name__ for layer in augmentation({**settings, "single_resampling": True}, 0).layers] == [
        "RandomAffine", "RandomContrast"]
