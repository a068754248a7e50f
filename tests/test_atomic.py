"""Atomic outputs (issue 11, "Outputs destroyed by an interruption"): a save that fails or is
killed leaves the previous file (or folder of partitions) whole, and leftovers are never read as
data."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from kedro.io import DatasetError  # noqa: E402
from kedro_datasets.json import JSONDataset  # noqa: E402

from age_gender import datasets  # noqa: E402
from age_gender.lineage import LineageError, stamp_cache  # noqa: E402
from tests.conftest import REPO, make_project, run_kedro, write_tar  # noqa: E402


class Unserialisable:
    pass


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_library_json_dataset_destroys_the_old_file_on_a_failed_save(tmp_path):
    """Why the atomic variants exist: kedro-datasets writes into the target itself."""
    path = tmp_path / "report.json"
    JSONDataset(filepath=str(path)).save({"kept": 1})
    with pytest.raises(DatasetError):
        JSONDataset(filepath=str(path)).save({"kept": 2, "bad": Unserialisable()})
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())  # half-written


@pytest.mark.parametrize(("cls", "name", "good", "bad", "read"), [
    (datasets.AtomicJSONDataset, "r.json", {"kept": 1}, {"kept": 2, "bad": Unserialisable()},
     lambda p: json.loads(p.read_text())),
    (datasets.AtomicParquetDataset, "m.parquet", pd.DataFrame({"a": [1, 2]}),
     pd.DataFrame({"a": [1, object()]}), lambda p: pd.read_parquet(p)["a"].tolist()),
    (datasets.AtomicCSVDataset, "t.csv", pd.DataFrame({"a": [1]}), "not a frame",
     lambda p: pd.read_csv(p)["a"].tolist()),
    (datasets.AtomicTextDataset, "c.md", "# hello", b"\xff not text", lambda p: p.read_text()),
    (datasets.AtomicMatplotlibDataset, "p.png", "figure", {"a": "figure"}, lambda p: p.read_bytes()),
    (datasets.NpyDataset, "a.npy", np.arange(3), np.array([object()]), lambda p: np.load(p).tolist()),
])
def test_atomic_variants_keep_the_old_file_when_a_save_fails(tmp_path, cls, name, good, bad, read):
    path = tmp_path / name
    if isinstance(good, str) and good == "figure":
        good, bad = plt.figure(), {"a": plt.figure()}
    cls(filepath=str(path)).save(good)
    before = read(path)
    with pytest.raises(Exception):  # noqa: B017  (each library raises its own type)
        cls(filepath=str(path)).save(bad)
    assert read(path) == before
    assert _hidden(tmp_path) == []  # no temporary file left behind
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_atomic_variant_loads_what_it_saved_and_clears_stale_temporaries(tmp_path):
    path = tmp_path / "summary.json"
    stale = tmp_path / ".summary.abcd1234.json"  # what a killed save leaves
    stale.write_text("{")
    dataset = datasets.AtomicJSONDataset(filepath=str(path), save_args={"indent": 2})
    dataset.save({"a": [1, 2]})
    assert dataset.load() == {"a": [1, 2]} and path.read_text().startswith("{\n")
    assert not stale.exists()


def _cache(n, value):
    manifest = pd.DataFrame({"file_name": [f"{i}.jpg" for i in range(n)], "sha256": ["x"] * n,
                             "age": [value] * n, "gender": [0] * n, "race": [0] * n})
    return stamp_cache(manifest, {"8px": np.full((n, 8, 8, 3), value, np.uint8),
                                  "16px": np.full((n, 16, 16, 3), value, np.uint8)})


def test_cache_is_swapped_in_whole_and_a_failed_save_keeps_the_old_one(tmp_path, monkeypatch):
    dataset = datasets.FaceCacheDataset(path=str(tmp_path / "face_cache"))
    old = _cache(4, 1)
    dataset.save(old)

    real_save = datasets.NpyDataset.save

    def fail_on_second(self, data):
        if "16px" in str(self._filepath):
            raise OSError("disk full")
        return real_save(self, data)

    monkeypatch.setattr(datasets.NpyDataset, "save", fail_on_second)
    with pytest.raises(Exception, match="disk full"):
        dataset.save(_cache(6, 2))
    loaded = dataset.load()
    assert loaded.identity == old.identity
    assert {k: v().tolist() for k, v in loaded.items()} == {k: v.tolist() for k, v in old.items()}
    assert len(_hidden(tmp_path)) == 1  # only the folder the link points at

    monkeypatch.setattr(datasets.NpyDataset, "save", real_save)
    dataset.save(_cache(6, 2))
    assert len(dataset.load()["16px"]()) == 6 and len(_hidden(tmp_path)) == 1  # old one removed


def test_leftover_temporary_file_is_never_a_partition(tmp_path):
    """The issue's "cached sizes are ['.128px.e6lbtd7r']": temporaries are hidden, never listed."""
    dataset = datasets.FaceCacheDataset(path=str(tmp_path / "face_cache"))
    dataset.save(_cache(3, 1))
    (tmp_path / "face_cache" / ".128px.e6lbtd7r.npy").write_bytes(b"partial")
    assert sorted(dataset.load()) == ["16px", "8px"]


def test_older_plain_cache_folder_is_moved_aside_then_replaced(tmp_path):
    folder = tmp_path / "face_cache"
    folder.mkdir()
    np.save(folder / "8px.npy", np.zeros((2, 8, 8, 3), np.uint8))
    dataset = datasets.FaceCacheDataset(path=str(folder))
    assert dataset.load().identity is None  # a cache written before identities: consumers refuse
    dataset.save(_cache(3, 1))
    assert folder.is_symlink() and len(dataset.load()["8px"]()) == 3
    assert len(_hidden(tmp_path)) == 1


# --- a real pipeline killed while it writes -----------------------------------------------------

DRIVER = textwrap.dedent("""
    import json, os, sys, time
    target = os.environ["KILL_AT"]
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):  # the moment a finished temporary file goes live
        if os.path.basename(str(dst)) == target:
            print("WRITING", dst, flush=True)
            time.sleep(600)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    bootstrap_project(sys.argv[1])
    with KedroSession.create(project_path=sys.argv[1], runtime_params=json.loads(sys.argv[3])) as session:
        session.run(pipeline_names=[sys.argv[2]])
""")

PARAMS = {"ingestion": {"image_sizes": [32, 48], "face_check": {"enabled": False}, "workers": 1},
          "split": {"test_size": 10, "subset_size": 60}}


def _kill_while_writing(project, pipeline, target, tmp_path):
    """Run ``pipeline`` in a subprocess and SIGKILL it while ``target`` is being written."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "KILL_AT": target, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, str(driver), str(project), pipeline, json.dumps(PARAMS)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                               cwd=project)
    deadline = time.monotonic() + 240
    try:
        for line in process.stdout:
            if line.startswith("WRITING"):
                process.send_signal(signal.SIGKILL)
                break
            assert time.monotonic() < deadline
        else:
            pytest.fail(f"{pipeline} never wrote {target}")
    finally:
        process.kill()
        process.wait()
    return process.returncode


def _outputs(project):
    data = project / "data"
    return {
        "face_manifest.parquet": data / "03_primary" / "face_manifest.parquet",
        "ingestion_report.json": data / "08_reporting" / "ingestion_report.json",
        "age_distribution.png": data / "08_reporting" / "age_distribution.png",
        "face_splits.parquet": data / "05_model_input" / "face_splits.parquet",
        "split_summary.json": data / "08_reporting" / "split_summary.json",
    }


def _load(path):
    from PIL import Image

    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return Image.open(path).load()


def _cache_state(project):
    cache = datasets.FaceCacheDataset(path=str(project / "data" / "03_primary" / "face_cache")).load()
    return cache.identity, {k: v().shape for k, v in cache.items()}


def _ingested_project(tmp_path, archive_members, monkeypatch, count: int):
    """A project whose archive (UTKFACE_ARCHIVE) holds the first ``count`` well-named real faces,
    ingested once; returns (project, archive path, every well-named (name, bytes) pair)."""
    from age_gender.faces import UTKFACE_NAME

    good = sorted((n, b) for n, b in archive_members.items() if UTKFACE_NAME.match(n.rsplit("/", 1)[-1]))
    project = make_project(tmp_path / "project")
    archive = tmp_path / "faces.tar.gz"
    monkeypatch.setenv("UTKFACE_ARCHIVE", str(archive))
    write_tar(archive, dict(good[:count]))
    run_kedro(project, "ingestion", PARAMS)
    return project, archive, good


@pytest.mark.pipeline
def test_killed_pipelines_leave_old_or_new_outputs_and_the_next_run_works(tmp_path, archive_members, monkeypatch):
    """ingestion and split on real faces, SIGKILLed at each of their writes: every output is the
    previous run's, whole and loadable; a killed ingestion leaves no half cache; a manifest newer
    than the cache is refused by split; the next run works."""
    project, archive, good = _ingested_project(tmp_path, archive_members, monkeypatch, 100)
    run_kedro(project, "split", PARAMS)
    before = {name: path.read_bytes() for name, path in _outputs(project).items()}
    cache_before = _cache_state(project)

    write_tar(archive, dict(good[:130]))  # the killed runs would write other content
    for pipeline, target in [("ingestion", "face_manifest.parquet"), ("ingestion", "ingestion_report.json"),
                             ("ingestion", "face_cache"), ("split", "face_splits.parquet")]:
        assert _kill_while_writing(project, pipeline, target, tmp_path) == -signal.SIGKILL
        assert _cache_state(project) == cache_before, target
        changed = {name for name, path in _outputs(project).items() if path.read_bytes() != before[name]}
        assert target not in changed  # killed before its rename: the old file, byte for byte
        for path in _outputs(project).values():
            _load(path)  # every output, old or new, loads
        if target == "face_cache":  # manifest new, cache old: split refuses and names ingestion
            with pytest.raises(Exception) as error:
                run_kedro(project, "split", PARAMS)
            cause = error.value
            while not isinstance(cause, LineageError) and cause.__cause__ is not None:
                cause = cause.__cause__
            assert "rerun `kedro run --pipeline ingestion`" in str(cause)
            assert (project / "data" / "05_model_input" / "face_splits.parquet").read_bytes() == before["face_splits.parquet"]
            for name in changed:  # back to the old run's files, for the next kill
                _outputs(project)[name].write_bytes(before[name])

    # the next run works and leaves no temporaries behind
    run_kedro(project, "ingestion", PARAMS)
    run_kedro(project, "split", PARAMS)
    assert len(pd.read_parquet(_outputs(project)["face_splits.parquet"])) == 130
    assert _cache_state(project)[0]["rows"] == 130
    hidden = _hidden(project / "data" / "03_primary")
    assert len(hidden) == 1 and hidden[0].startswith(".face_cache."), hidden
    assert _hidden(project / "data" / "05_model_input") == _hidden(project / "data" / "08_reporting") == []


@pytest.mark.pipeline
def test_ingestion_killed_at_random_moments_never_leaves_a_broken_or_mixed_output(tmp_path, archive_members,
                                                                                   monkeypatch):
    """SIGKILL at seeded random moments of a real ingestion run: each time every output loads, and
    manifest and cache are either of one ingestion or refused by `split`; then a run works."""
    from age_gender.lineage import check_manifest_matches_cache

    project, archive, good = _ingested_project(tmp_path, archive_members, monkeypatch, 150)

    import yaml

    base = yaml.safe_load((project / "conf" / "base" / "parameters_ingestion.yml").read_text())
    base["ingestion"].update(image_sizes=[32, 48], workers=1, face_check={**base["ingestion"]["face_check"], "enabled": False})
    (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(base))
    command = [sys.executable, "-m", "kedro", "run", "--pipeline", "ingestion"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.monotonic()
    subprocess.run(command, cwd=project, env=env, check=True, capture_output=True, timeout=300)
    duration = time.monotonic() - started
    rng = np.random.default_rng(11)
    primary = project / "data" / "03_primary"
    for count in (120, 180, 100, 160):
        write_tar(archive, dict(good[:count]))
        process = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.0) * duration)
        process.send_signal(signal.SIGKILL)
        process.wait()
        manifest = pd.read_parquet(primary / "face_manifest.parquet")
        cache = datasets.FaceCacheDataset(path=str(primary / "face_cache")).load()
        assert all(len(loader()) == cache.identity["rows"] for loader in cache.values())
        json.loads((project / "data" / "08_reporting" / "ingestion_report.json").read_text())
        try:
            check_manifest_matches_cache(manifest, cache)
        except LineageError as error:  # killed between the two writes: refused, never mixed
            assert "rerun `kedro run --pipeline ingestion`" in str(error)
        else:
            assert len(manifest) == cache.identity["rows"]
    (project / "conf" / "local" / "parameters.yml").unlink()
    run_kedro(project, "ingestion", PARAMS)
    run_kedro(project, "split", PARAMS)
    assert len(pd.read_parquet(project / "data" / "05_model_input" / "face_splits.parquet")) == 160
