"""Read the pipeline's result files for the workflows and `make ci-pipeline` (standard library only).

    python ci_outputs.py gate outputs/promotion.json   # exit 0 promoted (or already), 3 rejected, 1 broken
    python ci_outputs.py get outputs/rollback.json new # print one top-level field

`mlflow run -e promote` turns promote's own exit code 3 into 1, so the verdict is read back from the JSON that
promote writes. The failing thresholds are appended to $GITHUB_STEP_SUMMARY when that is set.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_PASSED, EXIT_BROKEN, EXIT_REJECTED = 0, 1, 3


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"{path} not found: the step that writes it did not finish")
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a JSON object")
    return data


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def gate_summary(promotion: dict[str, Any]) -> tuple[int, str]:
    """The exit code for a promotion result, and Markdown saying what the gate decided."""
    name, version = promotion.get("name"), promotion.get("version")
    failures = [c for c in promotion.get("gate", {}).get("checks", []) if not c.get("passed")]
    if promotion.get("passed") and (promotion.get("promoted") or promotion.get("already_champion")):
        return EXIT_PASSED, f"### Promotion gate: passed\n\n`{name}` version {version} is the champion.\n"
    if promotion.get("passed"):  # a dry run: passes, but nothing moved
        return (
            EXIT_REJECTED,
            f"### Promotion gate: passed (dry run)\n\n`{name}` version {version} was not promoted.\n",
        )
    lines = [
        "### Promotion gate: FAILED",
        "",
        f"`{name}` version {version} was rejected; champion stays at {promotion.get('previous_champion')}. "
        "Nothing was built or pushed.",
        "",
        "| metric | rule | actual | required | detail |",
        "|---|---|---:|---:|---|",
    ]
    for c in failures:
        lines.append(
            f"| {c['metric']} | {c['rule']} | {_fmt(c.get('actual'))} | {_fmt(c.get('required'))} "
            f"| {c['detail']} |"
        )
    return EXIT_REJECTED, "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Dispatch `gate FILE` or `get FILE KEY`."""
    if len(argv) == 3 and argv[1] == "gate":
        code, text = gate_summary(_load(Path(argv[2])))
        print(text)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return code
    if len(argv) == 4 and argv[1] == "get":
        data = _load(Path(argv[2]))
        if argv[3] not in data:
            raise SystemExit(f"{argv[2]} has no field {argv[3]!r}; it has: {', '.join(sorted(data))}")
        print(data[argv[3]])
        return EXIT_PASSED
    raise SystemExit("usage: ci_outputs.py gate PROMOTION_JSON | get JSON_FILE KEY")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
