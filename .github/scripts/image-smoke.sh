#!/usr/bin/env bash
# Run a freshly built image once, as `make ci-image-smoke` does in the ci and pipeline workflows.
#   image-smoke.sh serving IMAGE_REF   start it, wait for /ready, POST two rows of data/penguins.csv to /invocations
#   image-smoke.sh batch IMAGE_REF     score data/penguins.csv into a temporary folder, check the output exists
set -euo pipefail
kind="${1:?usage: image-smoke.sh serving|batch IMAGE_REF}"
ref="${2:?usage: image-smoke.sh serving|batch IMAGE_REF}"
sample="$(mktemp -d)"
trap 'rm -rf "$sample"; [ -n "${ctr:-}" ] && docker rm -f "$ctr" >/dev/null 2>&1 || true' EXIT
# the feature columns only (drop species and year), header and two rows
head -3 data/penguins.csv | cut -d, -f2-7 > "$sample/rows.csv"

case "$kind" in
serving)
    ctr="$(docker run -d -p 127.0.0.1::8080 "$ref")"
    port="$(docker port "$ctr" 8080/tcp | sed -n '1s/.*://p')"
    for _ in $(seq 1 90); do
        if curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then break; fi
        sleep 1
    done
    curl -fsS "http://127.0.0.1:$port/ready"
    echo
    curl -fsS -H 'Content-Type: text/csv' --data-binary "@$sample/rows.csv" \
        "http://127.0.0.1:$port/invocations" | tee "$sample/predictions.json"
    echo
    grep -q '"predictions"' "$sample/predictions.json"
    ;;
batch)
    chmod a+rwx "$sample"
    docker run --rm -v "$sample:/work" "$ref" --input /work/rows.csv --output /work/scored.csv
    test -s "$sample/scored.csv"
    head -3 "$sample/scored.csv"
    ;;
*)
    echo "unknown image kind: $kind (serving or batch)" >&2
    exit 1
    ;;
esac
echo "image smoke ok: $kind $ref"
