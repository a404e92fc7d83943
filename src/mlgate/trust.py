"""Which Python types loading a model artifact may build: decided by this repository, never by the artifact.

skops builds only the types it is told to trust; MLflow tells it the list the artifact's own ``MLmodel`` file
declares, so whoever can write a model version chooses what runs where it is loaded. mlgate instead reads the
types the skops file would build (``skops.io.get_untrusted_types``) and refuses the file, before building
anything, when one of them is outside ``TRUSTED_TYPES`` and the types the model's owners added on purpose (the
config's ``estimator.trusted_types``, or ``MLGATE_TRUSTED_TYPES`` where there is no config: the images). A
model that is not a skops file (pickle, cloudpickle) is refused outright. An ONNX model runs no Python.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

# What skops does not trust by default and the estimators mlgate ships with need (scikit-learn's trees and
# histogram gradient boosting, and numpy's dtype): measured with skops.io.get_untrusted_types on each.
TRUSTED_TYPES = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)
TRUSTED_TYPES_ENV = "MLGATE_TRUSTED_TYPES"  # comma-separated additions where no config is read (the images)


class UntrustedModelError(RuntimeError):
    """A model artifact would build types outside the allow-list, or is not a skops file."""


def extra_types(configured: Iterable[str] = ()) -> frozenset[str]:
    """The team's additions: the config's list and ``MLGATE_TRUSTED_TYPES``."""
    from_env = (t.strip() for t in os.environ.get(TRUSTED_TYPES_ENV, "").split(","))
    return frozenset(configured) | frozenset(t for t in from_env if t)


def check_types(found: Iterable[str], extra: Iterable[str] = (), what: str = "the model") -> list[str]:
    """The types to pass to skops: ``found`` when every one is allowed.

    Raises:
        UntrustedModelError: naming the types outside ``TRUSTED_TYPES`` and ``extra``.
    """
    found = sorted(set(found))
    refused = [t for t in found if t not in TRUSTED_TYPES and t not in frozenset(extra)]
    if refused:
        raise UntrustedModelError(
            f"{what} would build types outside mlgate's allow-list: {', '.join(refused)}; it was not loaded "
            f"(add a type your estimator needs to estimator.trusted_types in the config, or to "
            f"{TRUSTED_TYPES_ENV} for the images, only if you trust its code)"
        )
    return found


def checked_skops_types(path: str | Path, extra: Iterable[str] = ()) -> list[str]:
    """The types a skops file needs, read from the file (not from any list beside it) and checked."""
    import skops.io

    return check_types(skops.io.get_untrusted_types(file=Path(path)), extra, f"model file {Path(path).name}")


def check_model_folder(
    folder: str | Path, mlmodel: dict, extra: Iterable[str] = ()
) -> tuple[Path, list[str]]:
    """The skops file of an MLflow scikit-learn model folder and its checked types.

    Raises:
        UntrustedModelError: the model is not saved with skops, or needs a type outside the allow-list.
    """
    flavor = (mlmodel.get("flavors") or {}).get("sklearn") or {}
    if flavor.get("serialization_format") != "skops":
        raise UntrustedModelError(
            f"{folder}: the model is saved as {flavor.get('serialization_format') or 'unknown'}, not skops: "
            "mlgate loads no pickle (it runs code from the file); log it with serialization_format='skops'"
        )
    path = Path(folder) / flavor["pickled_model"]
    return path, checked_skops_types(path, extra)
