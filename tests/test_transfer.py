import numpy as np
import pytest

from age_gender.models import (
    build_backbone,
    build_transfer_model,
    build_two_headed_top,
    resolve_weights,
    unfreeze_last,
)
from age_gender.models.backbones import WeightsUnavailable
from age_gender.models.heads import HEAD_STRUCTURES, build_feature_extractor


@pytest.fixture(scope="module")
def mobilenet(weights_dir):
    path, pretrained = resolve_weights("mobilenet_v2", str(weights_dir / "mobilenet_v2_1.0_imagenet_notop.weights.h5"), False)
    assert pretrained
    return build_backbone("mobilenet_v2", 32, path)


def test_local_weights_are_really_loaded(mobilenet, weights_dir):
    random = build_backbone("mobilenet_v2", 32, None)
    assert not np.allclose(mobilenet.get_layer("Conv1").get_weights()[0], random.get_layer("Conv1").get_weights()[0])


def test_cached_features_give_the_same_head_results_as_the_full_model(mobilenet):
    extractor = build_feature_extractor("mobilenet_v2", mobilenet, 32)
    top = build_two_headed_top(extractor.output_shape[-1], "dense-bn-dropout", 16)
    full = build_transfer_model(extractor, top)
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    via_cache = top.predict(extractor.predict(images, verbose=0), verbose=0)
    direct = full.predict(images, verbose=0)
    for key in ("age", "gender"):
        assert np.allclose(via_cache[key], direct[key], atol=1e-4)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsUnavailable, match=r"not found at .*nothing\.h5.*allow_random_init"):
        resolve_weights("xception", str(tmp_path / "nothing.h5"), allow_random_init=False)
    with pytest.raises(WeightsUnavailable, match="no pretrained weights configured"):
        resolve_weights("vgg16", "random", allow_random_init=False)
    assert resolve_weights("vgg16", "random", allow_random_init=True) == (None, False)
    with pytest.raises(ValueError, match="Unknown backbone"):
        resolve_weights("alexnet", "imagenet", False)


def test_every_head_structure_builds():
    for structure in HEAD_STRUCTURES:
        top = build_two_headed_top(20, structure, 8)
        assert set(top.output_names) == {"age", "gender"}


def test_fine_tuning_changes_only_the_unfrozen_layers(weights_dir):
    from age_gender.training import compile_multitask

    path, _ = resolve_weights("mobilenet_v2", str(weights_dir / "mobilenet_v2_1.0_imagenet_notop.weights.h5"), False)
    backbone = build_backbone("mobilenet_v2", 32, path)
    extractor = build_feature_extractor("mobilenet_v2", backbone, 32)
    model = build_transfer_model(extractor, build_two_headed_top(extractor.output_shape[-1], "dense-dropout", 8))
    unfrozen = set(unfreeze_last(backbone, 3))
    assert len(unfrozen) == 3
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in backbone.layers}
    compile_multitask(model, 1e-2, {"age": 0.1, "gender": 1.0})
    rng = np.random.default_rng(0)
    model.fit(rng.uniform(0, 255, (16, 32, 32, 3)).astype(np.float32),
              {"age": rng.uniform(1, 80, (16, 1)), "gender": rng.integers(0, 2, (16, 1)).astype("float32")},
              epochs=2, batch_size=8, verbose=0)
    for layer in backbone.layers:
        changed = any(not np.array_equal(a, b) for a, b in zip(before[layer.name], layer.get_weights()))
        assert changed == (layer.name in unfrozen), layer.name
