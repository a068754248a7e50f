"""Two local worker processes train one model with MultiWorkerMirroredStrategy (CPU simulation
of a two-machine cluster, on the loopback interface only)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.pipeline


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_train_in_sync(tmp_path, archive_members):
    from age_gender.faces import decode_face, parse_utkface_name

    good = [(n, d) for n, d in archive_members.items() if not isinstance(parse_utkface_name(n), str)][:96]
    images = np.stack([decode_face(d, (32,), 10**7).arrays[32] for _, d in good])
    labels = [parse_utkface_name(n) for n, _ in good]
    np.save(tmp_path / "cache.npy", images)
    pd.DataFrame({"file_name": [n for n, _ in good], "cache_index": range(len(good)),
                  "age": [lab.age for lab in labels], "gender": [lab.gender for lab in labels],
                  "race": [lab.race for lab in labels], "split": ["train"] * len(good)}).to_parquet(tmp_path / "splits.parquet")
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "CUDA_VISIBLE_DEVICES": "-1"}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "age_gender.multiworker", "--cache", str(tmp_path / "cache.npy"),
             "--splits", str(tmp_path / "splits.parquet"), "--epochs", "2", "--out", str(tmp_path / f"w{index}.json")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    summaries = [json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(2)]
    assert all(s["replicas"] == 2 for s in summaries)  # CollectiveAllReduceStrategy = MultiWorkerMirrored
    assert summaries[0]["loss"] == summaries[1]["loss"] and summaries[0]["loss"][1] < summaries[0]["loss"][0]
    assert summaries[0]["trainable_checksum"] == pytest.approx(summaries[1]["trainable_checksum"], rel=1e-6)
