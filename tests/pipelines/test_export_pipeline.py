"""evaluation's fairness report and model cards, then `export`, through Kedro on a sample of the
real archive with one tiny scratch model (transfer not trained: skipped everywhere)."""

import json
import os

import pytest

from tests.conftest import make_project, run_kedro, saved

pytestmark = pytest.mark.pipeline

TINY = {
    "ingestion": {"image_sizes": [32], "face_check": {"enabled": False}},
    "split": {"test_size": 60, "subset_size": 200},
    "scratch_training": {"input_size": 32, "epochs": 1, "patience": 1, "batch_size": 32, "width_multiplier": 0.125},
    "scratch": {"architecture": {"conv_pairs": 2, "dense_layers": 1, "dense_units": 8, "split_point": 1}},
    "evaluation": {"fairness": {"age_bands": [0, 13, 20, 40, 60, 70], "min_count": 5}},
    "export": {"formats": ["saved_model", "tflite_int8", "onnx"], "speed": {"faces": 32, "batch_size": 16, "repeats": 1}},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory, sample_archive):
    root = make_project(tmp_path_factory.mktemp("export_project"))
    os.environ["UTKFACE_ARCHIVE"] = str(sample_archive)
    for name in ("ingestion", "split", "scratch", "evaluation", "export"):
        run_kedro(root, name, TINY)
    return root


def _json(project, name):
    return json.loads(saved(project / "data" / "08_reporting" / name).read_text())


def test_fairness_report_heatmap_and_model_card_after_evaluation(project):
    report = _json(project, "fairness_report.json")
    assert list(report) == ["scratch"]
    scratch = report["scratch"]
    assert scratch["n"] == 60 and sum(c["n"] for c in scratch["cells"]) == 60 and len(scratch["cells"]) == 60
    assert all(c["too_few"] == (c["n"] < 5) for c in scratch["cells"])
    assert scratch["gap"]["race"]["age_mae"]["ci"] is not None  # intervals from evaluation.bootstrap
    assert saved(project / "data" / "08_reporting" / "fairness_heatmap.png").stat().st_size > 10_000
    card = (project / "data" / "08_reporting" / "model_cards" / "scratch.md").read_text()
    split_id = _json(project, "scratch_training_info.json")["split_id"]
    assert f"split id `{split_id}`" in card and "Not measured" in card and "## Known weak groups" in card


def test_every_export_is_checked_against_its_keras_model(project):
    folder = project / "data" / "06_models" / "exported"
    assert folder.is_symlink() and sorted(p.name for p in (folder / "scratch").iterdir()) == [
        "export_info.json", "model.onnx", "model_int8.tflite", "saved_model"]
    report = _json(project, "export_report.json")["models"]["scratch"]
    assert report["n"] == 60 and report["keras"]["images_per_second"] > 0
    for fmt, result in report["formats"].items():
        assert result["passed"], (fmt, result)
        assert result["images_per_second"] > 0 and result["size_bytes"] > 0
    # float32 exports differ from the .keras model by kernels only, or by its bfloat16 rounding
    # where it trained in mixed_bfloat16 (device.mixed_precision: auto on CPUs with AVX512-BF16)
    bound = 1e-3 if report["keras_dtype_policy"] == "float32" else 0.5
    assert report["formats"]["onnx"]["max_abs_difference"]["age_years"] < bound
    table = (project / "data" / "08_reporting" / "export_report.md").read_text()
    assert "| scratch | onnx |" in table and "| scratch | .keras (" in table


def test_an_export_of_other_weights_is_refused(project, tmp_path):
    import keras

    from age_gender.lineage import LineageError
    from age_gender.pipelines.export.nodes import check_exports

    model_path = saved(project / "data" / "06_models" / "scratch.keras")
    other = keras.models.load_model(model_path)
    other.weights[0].assign(other.weights[0].numpy() + 1.0)
    from age_gender.datasets import AtomicParquetDataset, FaceCacheDataset
    from age_gender.export import ExportedModelsDataset

    exported = ExportedModelsDataset(path=str(project / "data" / "06_models" / "exported")).load()
    cache = FaceCacheDataset(path=str(project / "data" / "03_primary" / "face_cache")).load()
    splits = AtomicParquetDataset(filepath=str(project / "data" / "05_model_input" / "face_splits.parquet")).load()
    with pytest.raises(LineageError, match="other weights than scratch_model now.*rerun `kedro run --pipeline export`"):
        check_exports(exported, cache, splits, {"check": {}, "speed": {}}, scratch_model=other)
