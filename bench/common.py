"""What the benchmark scripts share: model folders saved as `mlgate train` saves them (the skops pipeline,
the mlgate metadata, and the ONNX model with its parity report when it compiles), interleaving, spreads and
the load average. Imported by the scripts under bench/ (which put this folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def save_model(folder: Path, model: Any, cfg: Any, train: Any, holdout: Any, spec: Any) -> Path:
    """Save a fitted pipeline as ``mlgate train`` logs it: same metadata, ONNX model and parity report.

    Args:
        folder: where the MLflow model folder goes (replaced when it exists).
        model: the fitted mlgate pipeline.
        cfg: the pipeline config (data, task, ONNX tolerance).
        train: the training rows (features, target), for the signature and the reference statistics.
        holdout: held-out feature rows to prove the compiled model's parity on.
        spec: the estimator config (for the model's pip requirements).
    """
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature

    from mlgate.compiler import compile_pipeline
    from mlgate.features import reference_stats
    from mlgate.runtime import ONNX_FILE, PARITY_FILE
    from mlgate.train import model_requirements, trusted_types

    features = cfg.data.feature_names
    X = train[features]
    fitted = model.predict(X)
    compiled = compile_pipeline(model, holdout[features], cfg.onnx.tolerance)
    if folder.exists():
        shutil.rmtree(folder)
    mlflow.sklearn.save_model(
        model,
        str(folder),
        serialization_format="skops",
        skops_trusted_types=trusted_types(model),
        signature=infer_signature(X, model.predict(X.head(20))),
        input_example=X.head(5),
        pip_requirements=list(model_requirements(spec.class_path)),
        metadata={
            "mlgate": {
                "target": cfg.data.target,
                "task": cfg.task,
                "classes": [str(c) for c in getattr(model, "classes_", [])],
                "features": [f.model_dump() for f in cfg.data.features],
                "reference_stats": reference_stats(
                    train, cfg.data, predictions=pd.Series(fitted), task=cfg.task
                ),
                "onnx": compiled.report,
            }
        },
    )
    (folder / PARITY_FILE).parent.mkdir(parents=True, exist_ok=True)
    (folder / PARITY_FILE).write_text(json.dumps(compiled.report, indent=2, sort_keys=True) + "\n")
    if compiled.model is not None:
        (folder / ONNX_FILE).write_bytes(compiled.model)
    return folder


def is_current(folder: Path) -> bool:
    """A model folder saved by :func:`save_model` (older benchmark folders have no parity report)."""
    from mlgate.runtime import PARITY_FILE

    return (folder / "MLmodel").is_file() and (folder / PARITY_FILE).is_file()


def has_onnx(folder: Path) -> bool:
    """The folder's compiled model passed parity (so ``--runtime onnx`` can serve it)."""
    from mlgate.modelio import read_mlmodel
    from mlgate.runtime import onnx_metadata

    return bool(onnx_metadata(read_mlmodel(folder)).get("passed"))


def rotations(items: Sequence[str], rounds: int) -> Iterator[tuple[int, list[str]]]:
    """Round ``r`` and the items in the order of that round: A, B, C; B, C, A; C, A, B; ... (so load that
    comes and goes, and whatever the first run of a round pays, hits every item alike)."""
    items = list(items)
    for r in range(rounds):
        k = r % len(items) if items else 0
        yield r, items[k:] + items[:k]


def spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """min / median / max of the values that are not None (None when there are none)."""
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    return {"min": min(kept), "median": statistics.median(kept), "max": max(kept), "n": len(kept)}


def load_avg() -> float:
    """The 1-minute load average now, rounded."""
    return round(os.getloadavg()[0], 2)


def fmt(s: dict[str, float] | None, digits: int = 1) -> str:
    """``min / median / max`` for a Markdown cell."""
    if not s:
        return "-"
    return " / ".join(f"{s[k]:,.{digits}f}" for k in ("min", "median", "max"))


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``2.35x`` (``-`` when either is missing)."""
    return f"{a / b:.2f}x" if a and b else "-"


def split_list(value: str) -> list[str]:
    """An argparse type: ``a,b`` (make-friendly) as well as ``a b`` (with ``nargs``/``extend``)."""
    return [v for v in value.split(",") if v]


def machine() -> dict[str, Any]:
    """What the figures were taken on."""
    import platform

    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_results(folder: Path, results: dict[str, Any], table: str) -> None:
    """``results.json`` (every run) and ``results.md`` (the Markdown table, also printed) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "results.md").write_text(table.rstrip("\n") + "\n")
    print(table)
