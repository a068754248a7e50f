"""Shared fixtures: the real UTKFace archive (required, never skipped), small samples of it, and
a throw-away copy of the Kedro project to run pipelines in."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("AGE_GENDER_TRACKING", "off")  # tests/test_tracking.py turns it on for its own runs
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")


def _archive_path() -> Path:
    return Path(os.environ.get("UTKFACE_ARCHIVE", REPO.parent / "shared" / "data" / "UTKFace.tar.gz"))


def _weights_dir() -> Path:
    return Path(os.environ.get("UTKFACE_WEIGHTS_DIR", REPO.parent / "shared" / "weights"))


@pytest.fixture(scope="session")
def utkface_archive() -> Path:
    path = _archive_path()
    if not path.is_file():
        pytest.fail(f"The tests need the real UTKFace archive at {path} (set UTKFACE_ARCHIVE).")
    return path


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    path = _weights_dir()
    if not (path / "mobilenet_v2_1.0_imagenet_notop.weights.h5").is_file():
        pytest.fail(f"The tests need the ImageNet weight files in {path} (set UTKFACE_WEIGHTS_DIR).")
    return path


@pytest.fixture(scope="session")
def archive_members(utkface_archive: Path) -> dict[str, bytes]:
    """Every 40th well-named file of the real archive (about 540) plus every malformed name."""
    from age_gender.faces import UTKFACE_NAME

    members: dict[str, bytes] = {}
    with tarfile.open(utkface_archive) as archive:
        for index, member in enumerate(archive):
            if not member.isfile():
                continue
            malformed = not UTKFACE_NAME.match(member.name.rsplit("/", 1)[-1])
            if malformed or index % 40 == 0:
                members[member.name] = archive.extractfile(member).read()
    return members


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="session")
def sample_archive(tmp_path_factory, archive_members) -> Path:
    """A small .tar.gz in the published layout, made of real archive members."""
    return write_tar(tmp_path_factory.mktemp("raw") / "UTKFace_sample.tar.gz", archive_members)


def make_project(root: Path) -> Path:
    """A copy of the project's configuration in ``root``, so runs write there, not in the repo."""
    shutil.copytree(REPO / "conf", root / "conf")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()  # the package itself is installed; Kedro only checks the folder
    for layer in ("01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input",
                  "06_models", "07_model_output", "08_reporting"):
        (root / "data" / layer).mkdir(parents=True)
    return root


@pytest.fixture()
def kedro_project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def saved(path: Path) -> Path:
    """The file a catalog entry wrote at ``path``: for a versioned entry (``versioned: true``, a
    folder ``<path>/<version>/<name>``) the newest version's file, else ``path`` itself."""
    path = Path(path)
    if path.is_dir():
        versions = sorted(v for v in path.iterdir() if (v / path.name).exists())
        if versions:
            return versions[-1] / path.name
    return path


def run_kedro(project: Path, pipeline: str, params: dict | None = None, env: str | None = None):
    """Run a registered pipeline through a real KedroSession in ``project``."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=params or {}) as session:
        return session.run(pipeline_names=[pipeline])
