#!/usr/bin/env bash
# One command from a fresh Debian 12 machine: packages, build, and an example generation
# with the tiny SD1 model shipped in tests/fixtures (random weights: the image is noise,
# but every stage of the real pipeline runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
build/bin/easel generate -m tests/fixtures/sd1/sd1_ldm.safetensors -p "a photo of a cat" -n "blurry" \
  -W 64 -H 64 --steps 8 --sampler euler_a --seed 1 -o example.png
echo "example image: $(pwd)/example.png"
