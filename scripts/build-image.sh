#!/usr/bin/env bash
# Build the serving or batch image from a small staged context (the repo root holds .venv and data that must
# not be sent to the engine), with OCI labels for source, revision, model name and version.
# Usage: scripts/build-image.sh serving|batch MODEL_DIR TAG [GIT_SHA]
#   MODEL_DIR: a bundle from `mlgate model-bundle` (MLmodel + mlgate_bundle.json); may be "" for batch, which
#   then takes --model <URI> at run time.
# The serving image's runtime: onnx (serving/requirements-onnx.txt: ONNX Runtime and numpy, no scikit-learn,
# scipy, pandas or skops) when MODEL_DIR's MLmodel says metadata.mlgate.onnx.passed and its onnx/model.onnx
# is there, else sklearn (serving/requirements.txt). MLGATE_IMAGE_RUNTIME=sklearn|onnx forces one (onnx fails
# for a model without a parity-proven ONNX file). The batch image holds both and picks per model at run time.
set -euo pipefail
kind=${1:?serving or batch}
model_dir=${2-}
tag=${3:?image tag}
sha=${4:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
root=$(cd "$(dirname "$0")/.." && pwd)
case "$kind" in serving|batch) ;; *) echo "unknown image kind '$kind': use serving or batch" >&2; exit 2 ;; esac
[ -n "$model_dir" ] || [ "$kind" = batch ] || { echo "the serving image needs a model folder" >&2; exit 1; }
# The repository the image comes from: the GitHub one in Actions (forks get their own), else the local origin.
source_url=${GITHUB_REPOSITORY:+${GITHUB_SERVER_URL:-https://github.com}/$GITHUB_REPOSITORY}
source_url=${source_url:-$(git -C "$root" remote get-url origin 2>/dev/null || echo unknown)}

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/$kind/model" "$ctx/src"
name=unknown version=unknown
if [ -n "$model_dir" ]; then
    [ -f "$model_dir/MLmodel" ] || { echo "$model_dir has no MLmodel: run mlgate model-bundle first" >&2; exit 1; }
    cp -r "$model_dir/." "$ctx/$kind/model/"
    meta() {
        "${PYTHON:-python3}" -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]) or "unknown")' \
            "$model_dir/mlgate_bundle.json" "$1" 2>/dev/null || echo unknown
    }
    name=$(meta name) version=$(meta version)
fi

# The model's compiled runtime, from MLmodel: with PyYAML when this python has it, else (a runner's bare python3)
# from the block-style YAML MLflow writes. Prints "onnx: <why>" or "sklearn: <why>".
model_runtime() {
    "${PYTHON:-python3}" - "$1" <<'PY'
import os
import sys

folder = sys.argv[1]
with open(os.path.join(folder, "MLmodel"), encoding="utf-8") as f:
    text = f.read()
try:
    import yaml
except ImportError:
    yaml = None
if yaml is not None:
    meta = ((yaml.safe_load(text) or {}).get("metadata") or {}).get("mlgate") or {}
    meta = meta.get("onnx") or {}
    passed, path = meta.get("passed") is True, meta.get("path") or "onnx/model.onnx"
else:
    found, stack = {}, []  # the scalars right under metadata > mlgate > onnx; stack: (indent, key)
    for line in text.splitlines():
        body = line.lstrip(" ")
        if not body or body.startswith(("#", "- ")) or ":" not in body:
            continue  # blank, comment, list item or a wrapped scalar's continuation
        indent = len(line) - len(body)
        key, _, value = body.partition(":")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if [k for _, k in stack] == ["metadata", "mlgate", "onnx"]:
            found[key.strip()] = value.strip().strip("'\"")
        stack.append((indent, key.strip()))
    passed, path = found.get("passed") == "true", found.get("path") or "onnx/model.onnx"
if not passed:
    print("sklearn: its MLmodel records no parity-proven ONNX model (metadata.mlgate.onnx.passed)")
elif not os.path.isfile(os.path.join(folder, path)):
    print(f"sklearn: its MLmodel records a parity-proven ONNX model, but {path} is missing")
else:
    print(f"onnx: its MLmodel records a parity-proven {path}")
PY
}
runtime=""
if [ "$kind" = serving ]; then
    if ! found=$(model_runtime "$model_dir" 2>&1); then
        found="sklearn: its MLmodel could not be read (${found##*$'\n'})"
    fi
    case "${MLGATE_IMAGE_RUNTIME:-}" in
    "") runtime=${found%%:*} why="$model_dir: ${found#*: }" ;;
    sklearn) runtime=sklearn why="forced by MLGATE_IMAGE_RUNTIME=sklearn" ;;
    onnx)
        [ "${found%%:*}" = onnx ] || { echo "MLGATE_IMAGE_RUNTIME=onnx, but $model_dir: ${found#*: }" >&2; exit 1; }
        runtime=onnx why="forced by MLGATE_IMAGE_RUNTIME=onnx" ;;
    *) echo "MLGATE_IMAGE_RUNTIME must be sklearn, onnx or unset, not '$MLGATE_IMAGE_RUNTIME'" >&2; exit 2 ;;
    esac
    echo "build-image.sh: the serving image runs on $runtime ($why)" >&2
fi

cp "$root/pyproject.toml" "$root/README.md" "$ctx/"
cp "$root/$kind/Dockerfile" "$root/$kind"/requirements*.txt "$ctx/$kind/"
cp -r "$root/src/mlgate" "$ctx/src/"
find "$ctx/src" -name __pycache__ -type d -prune -exec rm -rf {} +
docker build -f "$ctx/$kind/Dockerfile" -t "$tag" \
    --build-arg GIT_SHA="$sha" \
    --build-arg SOURCE="$source_url" \
    --build-arg MODEL_NAME="$name" \
    --build-arg MODEL_VERSION="$version" \
    ${runtime:+--build-arg RUNTIME="$runtime"} \
    "$ctx"
