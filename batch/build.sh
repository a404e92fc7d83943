#!/usr/bin/env bash
# Build the batch image from a small staged context (the repo root holds .venv and data we must not send).
# Usage: batch/build.sh MODEL_DIR TAG [GIT_SHA]   (MODEL_DIR may be "" to build without a baked model)
set -euo pipefail
model_dir=${1-}
tag=${2:?image tag}
sha=${3:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
root=$(cd "$(dirname "$0")/.." && pwd)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/batch/model" "$ctx/src"
name=unknown version=unknown
if [ -n "$model_dir" ]; then
    [ -f "$model_dir/MLmodel" ] || { echo "$model_dir has no MLmodel: run make model-bundle-batch first" >&2; exit 1; }
    cp -r "$model_dir/." "$ctx/batch/model/"
    meta() { "${PYTHON:-python3}" -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]) or "unknown")' "$model_dir/mlgate_bundle.json" "$1" 2>/dev/null || echo unknown; }
    name=$(meta name) version=$(meta version)
fi
cp "$root/pyproject.toml" "$root/README.md" "$ctx/"
cp "$root/batch/Dockerfile" "$root/batch/requirements.txt" "$ctx/batch/"
cp -r "$root/src/mlgate" "$ctx/src/"
find "$ctx/src" -name __pycache__ -type d -prune -exec rm -rf {} +
docker build -f "$ctx/batch/Dockerfile" -t "$tag" \
    --build-arg GIT_SHA="$sha" \
    --build-arg MODEL_NAME="$name" \
    --build-arg MODEL_VERSION="$version" \
    "$ctx"
