#!/usr/bin/env bash
# Build the serving or batch image from a small staged context (the repo root holds .venv and data that must
# not be sent to the engine), with OCI labels for source, revision, model name and version.
# Usage: scripts/build-image.sh serving|batch MODEL_DIR TAG [GIT_SHA]
#   MODEL_DIR: a bundle from `mlgate model-bundle` (MLmodel + mlgate_bundle.json); may be "" for batch, which
#   then takes --model <URI> at run time.
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
cp "$root/pyproject.toml" "$root/README.md" "$ctx/"
cp "$root/$kind/Dockerfile" "$root/$kind/requirements.txt" "$ctx/$kind/"
cp -r "$root/src/mlgate" "$ctx/src/"
find "$ctx/src" -name __pycache__ -type d -prune -exec rm -rf {} +
docker build -f "$ctx/$kind/Dockerfile" -t "$tag" \
    --build-arg GIT_SHA="$sha" \
    --build-arg SOURCE="$source_url" \
    --build-arg MODEL_NAME="$name" \
    --build-arg MODEL_VERSION="$version" \
    "$ctx"
