#!/usr/bin/env bash
# Build the serving image from a small staged context (the repo root holds .venv and data we must not send).
# Usage: serving/build.sh MODEL_DIR TAG [GIT_SHA]
set -euo pipefail
model_dir=${1:?model folder (with MLmodel)}
tag=${2:?image tag}
sha=${3:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
root=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$model_dir/MLmodel" ] || { echo "$model_dir has no MLmodel: run make model-bundle first" >&2; exit 1; }
meta() { sed -n "s/^$1: //p" "$model_dir/registered_model_meta" 2>/dev/null | tr -d "'\"" || true; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/serving" "$ctx/src"
cp "$root/pyproject.toml" "$root/README.md" "$ctx/"
cp "$root/serving/Dockerfile" "$root/serving/requirements.txt" "$ctx/serving/"
cp -r "$root/src/mlgate" "$ctx/src/"
find "$ctx/src" -name __pycache__ -type d -prune -exec rm -rf {} +
cp -r "$model_dir" "$ctx/serving/model"
docker build -f "$ctx/serving/Dockerfile" -t "$tag" \
    --build-arg GIT_SHA="$sha" \
    --build-arg MODEL_NAME="$(meta model_name)" \
    --build-arg MODEL_VERSION="$(meta model_version)" \
    "$ctx"
