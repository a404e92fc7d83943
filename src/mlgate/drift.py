"""Drift report: the scored inputs against the training reference statistics stored with the model, counted
while streaming (PSI per numeric feature on the reference deciles, category share shifts for categoricals)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

# The name the model's own output goes by among the reference statistics and in the drift report (not a
# column name a table can have by accident).
PREDICTION = "(prediction)"
# A share of zero has no logarithm; PSI implementations floor shares at a small value.
SHARE_FLOOR = 1e-4


class FeatureDrift(BaseModel):
    """One feature's shares now and at training time; numeric features by reference bin, categoricals by
    category (with the shift of each share and the categories training never saw)."""

    type: str | None
    null_fraction: float
    reference_null_fraction: float | None
    psi: float | None
    drifted: bool
    bin_edges: list[float] | None = None
    reference_shares: list[float] | dict[str, float] | None = None
    shares: list[float] | dict[str, float] | None = None
    share_shift: dict[str, float] | None = None
    unseen_categories: list[str] | None = None


class DriftReport(BaseModel):
    """Per-feature drift of ``rows`` scored rows; ``drifted``: the features with PSI above the threshold."""

    rows: int
    psi_threshold: float
    drifted: list[str]
    features: dict[str, FeatureDrift]


class DriftCounts(BaseModel):
    """What a :class:`DriftAccumulator` counted, to add up counts made in other processes or machines."""

    rows: int = 0
    nulls: dict[str, int] = Field(default_factory=dict)
    bins: dict[str, list[int]] = Field(default_factory=dict)
    categories: dict[str, dict[str, int]] = Field(default_factory=dict)


def psi(expected: list[float] | np.ndarray, actual: list[float] | np.ndarray) -> float:
    """Population stability index of ``actual`` shares against ``expected`` shares (same bins)."""
    e = np.clip(np.asarray(expected, dtype=float), SHARE_FLOOR, None)
    a = np.clip(np.asarray(actual, dtype=float), SHARE_FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


class DriftAccumulator:
    """Counts per reference bin (numeric) and per category (categorical), fed one chunk at a time."""

    def __init__(self, reference: dict[str, Any]) -> None:
        self.reference = reference.get("features", {}) if reference else {}
        self.rows = 0
        self.nulls: Counter[str] = Counter()
        self.bins: dict[str, np.ndarray] = {}
        self.categories: dict[str, Counter[str]] = {}
        for name, ref in self.reference.items():
            if ref.get("type") == "numeric":
                self.bins[name] = np.zeros(max(len(ref.get("bin_shares") or []), 1), dtype=np.int64)
            else:
                self.categories[name] = Counter()

    def update(self, features: pd.DataFrame) -> None:
        """Add the rows of one chunk of valid, typed inputs."""
        self.rows += len(features)
        for name, counts in self.bins.items():
            if name not in features:
                continue
            values = features[name].to_numpy(dtype=float, na_value=np.nan)
            present = values[~np.isnan(values)]
            self.nulls[name] += len(values) - len(present)
            inner = np.asarray(self.reference[name].get("bin_edges") or [], dtype=float)[1:-1]
            # Values outside the reference range fall in the first or last bin, as np.histogram's edges would.
            idx = np.searchsorted(inner, present, side="right")
            counts += np.bincount(idx, minlength=len(counts))[: len(counts)]
        for name, counter in self.categories.items():
            if name not in features:
                continue
            col = features[name]
            present = col.value_counts(dropna=True, sort=False)  # one pass: no isna, no copy as text
            self.nulls[name] += len(col) - int(present.sum())
            for value, n in present.items():
                counter[str(value)] += int(n)

    def counts(self) -> DriftCounts:
        """What was counted so far."""
        return DriftCounts(
            rows=self.rows,
            nulls=dict(self.nulls),
            bins={n: c.tolist() for n, c in self.bins.items()},
            categories={n: dict(c) for n, c in self.categories.items()},
        )

    def add(self, counts: DriftCounts) -> None:
        """Add counts made elsewhere (another process or machine) for the same bins and categories."""
        self.rows += counts.rows
        self.nulls.update(counts.nulls)
        for name, bins in counts.bins.items():
            if name in self.bins:
                self.bins[name] += np.asarray(bins, dtype=np.int64)[: len(self.bins[name])]
        for name, counter in counts.categories.items():
            if name in self.categories:
                self.categories[name].update(counter)

    def report(self, threshold: float) -> DriftReport:
        """Per-feature drift against the reference; features with PSI above ``threshold`` have drifted."""
        features: dict[str, FeatureDrift] = {}
        for name, ref in self.reference.items():
            entry: dict[str, Any] = {
                "type": ref.get("type"),
                "null_fraction": self.nulls[name] / self.rows if self.rows else 0.0,
                "reference_null_fraction": ref.get("null_fraction"),
            }
            if name in self.bins:
                counts = self.bins[name]
                total = int(counts.sum())
                shares = (counts / total).tolist() if total else [0.0] * len(counts)
                entry.update(
                    bin_edges=ref.get("bin_edges"),
                    reference_shares=ref.get("bin_shares"),
                    shares=shares,
                    psi=psi(ref.get("bin_shares") or [1.0], shares) if total else None,
                )
            else:
                counter = self.categories[name]
                total = sum(counter.values())
                ref_shares: dict[str, float] = ref.get("category_shares") or {}
                names = sorted(set(ref_shares) | set(counter))
                shares_by = {c: (counter[c] / total if total else 0.0) for c in names}
                entry.update(
                    reference_shares=ref_shares,
                    shares=shares_by,
                    share_shift={c: shares_by[c] - ref_shares.get(c, 0.0) for c in names},
                    unseen_categories=sorted(set(counter) - set(ref_shares)),
                    psi=(
                        psi([ref_shares.get(c, 0.0) for c in names], [shares_by[c] for c in names])
                        if total
                        else None
                    ),
                )
            entry["drifted"] = entry["psi"] is not None and entry["psi"] > threshold
            features[name] = FeatureDrift(**entry)
        drifted = sorted(n for n, e in features.items() if e.drifted)
        return DriftReport(rows=self.rows, psi_threshold=threshold, drifted=drifted, features=features)


def to_markdown(report: DriftReport, title: str = "Drift report") -> str:
    """The drift report as a Markdown table, one row per feature, drifted features marked."""
    lines = [
        f"# {title}",
        "",
        f"{report.rows} scored rows against the training reference; PSI threshold {report.psi_threshold}.",
        "",
        f"**Drifted:** {', '.join(report.drifted) if report.drifted else 'none'}",
        "",
        "| feature | type | PSI | null fraction (ref -> now) | largest share shift | drifted |",
        "|---|---|---:|---|---|---|",
    ]
    for name, e in report.features.items():
        value = "n/a" if e.psi is None else f"{e.psi:.4f}"
        ref_null = e.reference_null_fraction
        nulls = f"{ref_null if ref_null is not None else float('nan'):.3f} -> {e.null_fraction:.3f}"
        if e.share_shift:
            cat, shift = max(e.share_shift.items(), key=lambda kv: abs(kv[1]))
            largest = f"{cat}: {shift:+.3f}"
        elif isinstance(e.shares, list) and e.shares:
            shifts = [s - r for s, r in zip(e.shares, e.reference_shares or [])]
            i = int(np.argmax(np.abs(shifts))) if shifts else 0
            largest = f"decile {i + 1}: {shifts[i]:+.3f}" if shifts and not math.isnan(shifts[i]) else "-"
        else:
            largest = "-"
        lines.append(
            f"| {name} | {e.type} | {value} | {nulls} | {largest} | {'**yes**' if e.drifted else 'no'} |"
        )
    return "\n".join(lines) + "\n"
