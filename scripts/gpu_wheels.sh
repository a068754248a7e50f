#!/usr/bin/env bash
# Download the Python 3.12 manylinux wheels the GPU check needs on a machine that has JAX, numpy,
# h5py, rich, pyyaml, pandas ... but no Keras or Kedro and no registry (the device tool's H200
# image). One version of each, no dependencies resolved by pip: the list below is complete for
# `kedro run` of ingestion, split and scratch and for keras-tuner's import. About 7 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-.venv/bin/pip}"
rm -rf .whl && mkdir -p .whl
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  keras==3.15.1 namex==0.1.0 optree==0.20.0 kedro==1.7.0 kedro-datasets==9.6.0 omegaconf==2.4.0 \
  dynaconf==3.3.5 more-itertools==11.2.1 parse==1.22.4 tomli-w==1.2.0 gitpython==3.2.1 gitdb==4.0.12 \
  smmap==5.0.3 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  keras-tuner==1.4.8 kt-legacy==1.0.5
du -sh .whl
