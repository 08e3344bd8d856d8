#!/usr/bin/env bash
# Fetch (here, where pip works) the pure-Python wheels the gpu-marked CLI tests need on the
# device machine, which has torch but not Hydra: into .whl/ (ignored by git), to be named in
# the device call's `carry`. About 0.5 MB.
set -eu
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
PY=${PYTHON:-python3}
$PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
  hydra-core==1.3.2 omegaconf==2.3.0
# antlr4 4.9.3 (what omegaconf 2.3 pins) ships as an sdist only: build its wheel here.
$PY -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -l .whl
