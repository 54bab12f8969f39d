#!/usr/bin/env bash
# Builds and runs the whole test suite (parity, bad input, brief fuzzing) with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
cd build && ctest --output-on-failure -j"$(nproc)"
