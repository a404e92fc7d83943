"""The serving images, built from a bundle of the session's champion, run, and called over HTTP: the ONNX
image (the champion has a parity-proven onnx/model.onnx, so scripts/build-image.sh picks it) is small, has
no scikit-learn, scipy, pandas or skops, and answers as the scikit-learn pipeline does; the scikit-learn
image (MLGATE_IMAGE_RUNTIME=sklearn) still builds and serves. Each image is built and started once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess  # nosec B404 - the test drives the docker CLI with fixed arguments
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest

from tests.conftest import REPO, require
from tests.serving.conftest import free_port, records

pytestmark = [pytest.mark.slow, pytest.mark.container]
ONNX_SIZE_LIMIT_BYTES = 300 * 1000 * 1000
SKLEARN_SIZE_LIMIT_BYTES = 500 * 1000 * 1000
REVISION = "test-revision"
NOT_IN_ONNX_IMAGE = ("sklearn", "scipy", "pandas", "skops")


def _engine_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    return (
        subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
    )  # nosec B603 B607


def _docker(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout
    )  # nosec B603 B607
    assert done.returncode == 0, f"docker {args[0]} failed: {done.stderr[-2000:]}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def bundle(trained_model: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The champion bundled as `make model-bundle` does: ``path`` and what mlgate_bundle.json records."""
    require(_engine_ready(), "no Docker-compatible engine (run ../shared/container-engine/setup)")
    from mlgate.bundle import model_bundle

    dest = tmp_path_factory.mktemp("image") / "bundle"
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = trained_model["tracking_uri"]
    mlflow.set_tracking_uri(trained_model["tracking_uri"])
    try:
        record = model_bundle(f"models:/{trained_model['config'].model_name}@champion", dest)
    finally:
        mlflow.set_tracking_uri(None)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    return {**record, "path": dest}


def _build(bundle: dict[str, Any], runtime: str | None) -> Iterator[dict[str, Any]]:
    """Build the serving image of ``bundle`` with scripts/build-image.sh (MLGATE_IMAGE_RUNTIME=``runtime``,
    unset for auto), start it, wait for /ready; yield tag, url, the inspected image and the build's output."""
    tag = f"mlgate-serving-test:{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "MLGATE_IMAGE_RUNTIME"}
    if runtime:
        env["MLGATE_IMAGE_RUNTIME"] = runtime
    build = subprocess.run(  # nosec B603 - fixed argument list
        [str(REPO / "scripts" / "build-image.sh"), "serving", str(bundle["path"]), tag, REVISION],
        capture_output=True, text=True, timeout=1800, env=env,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    name = f"mlgate-serving-test-{uuid.uuid4().hex[:8]}"
    try:
        inspected = json.loads(_docker("image", "inspect", tag))[0]
        port = free_port()
        _docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", tag)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"the container never got ready: {_docker('logs', name)[-2000:]}")
        yield {"tag": tag, "url": url, "image": inspected, "build_log": build.stdout + build.stderr}
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)  # nosec B603 B607
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)  # nosec B603 B607


@pytest.fixture(scope="module")
def onnx_image(bundle: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The image build-image.sh picks for the champion by itself: ONNX Runtime, running."""
    yield from _build(bundle, None)


@pytest.fixture(scope="module")
def sklearn_image(bundle: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The scikit-learn image, forced with MLGATE_IMAGE_RUNTIME=sklearn, running."""
    yield from _build(bundle, "sklearn")


@pytest.fixture(scope="module")
def expected(trained_model: dict[str, Any], test_rows: pd.DataFrame) -> list[Any]:
    """The scikit-learn pipeline's own predictions for the first five held-out rows."""
    from mlgate.runtime import load_runtime

    pipeline = load_runtime(trained_model["model_dir"], choice="sklearn")
    return [str(p) for p in pipeline.predict(test_rows.head(5))]


def _assert_image(image: dict[str, Any], bundle: dict[str, Any], runtime: str, limit: int) -> None:
    inspected = image["image"]
    labels = inspected["Config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == REVISION
    assert (labels["io.mlgate.model.name"], labels["io.mlgate.model.version"]) == (
        bundle["name"],
        bundle["version"],
    )
    assert labels["io.mlgate.runtime"] == runtime
    assert f"the serving image runs on {runtime}" in image["build_log"]
    assert inspected["Config"]["User"] not in ("", "root", "0")
    size = int(_docker("image", "inspect", "--format", "{{.Size}}", image["tag"]))
    assert size <= limit, f"the {runtime} image is {size / 1e6:.0f} MB (limit {limit / 1e6:.0f} MB)"


def _assert_serves(
    image: dict[str, Any], bundle: dict[str, Any], rows: pd.DataFrame, expected: list[Any], runtime: str
) -> dict[str, Any]:
    url = image["url"]
    assert httpx.get(f"{url}/ready").status_code == 200
    response = httpx.post(f"{url}/invocations", json={"dataframe_records": records(rows.head(5))})
    assert response.status_code == 200, response.text
    meta = httpx.get(f"{url}/metadata").json()
    predictions = response.json()["predictions"]
    assert set(predictions) <= set(meta["classes"]) and predictions == expected
    assert (meta["name"], meta["version"], meta["alias"]) == (bundle["name"], bundle["version"], "champion")
    assert meta["runtime"] == runtime
    assert meta["image_revision"] == REVISION
    assert "/opt/model" not in json.dumps(meta)
    for path in ("/docs", "/openapi.json"):  # MLGATE_SERVE_DOCS=false in the image
        assert httpx.get(f"{url}{path}").status_code == 404
    return meta


def _python_in(tag: str, code: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in a container of the image. Not with --rm: podman's Docker API loses the exit code
    of a removed container."""
    name = f"mlgate-serving-python-{uuid.uuid4().hex[:8]}"
    try:
        return subprocess.run(  # nosec B603 B607 - fixed argument list
            ["docker", "run", "--name", name, "--entrypoint", "python", tag, "-c", code],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)  # nosec B603 B607


def test_onnx_image_is_small_non_root_and_has_no_scikit_learn(
    onnx_image: dict[str, Any], bundle: dict[str, Any]
) -> None:
    _assert_image(onnx_image, bundle, "onnx", ONNX_SIZE_LIMIT_BYTES)
    imports = _python_in(onnx_image["tag"], "import sklearn")
    assert imports.returncode != 0 and "No module named 'sklearn'" in imports.stderr, imports.stderr
    found = _python_in(
        onnx_image["tag"],
        "import importlib.util as u; print([m for m in %r if u.find_spec(m)])" % (NOT_IN_ONNX_IMAGE,),
    )
    assert (
        found.returncode == 0 and found.stdout.strip() == "[]"
    ), f"the ONNX image has {found.stdout}{found.stderr}"


def test_onnx_image_answers_as_the_pipeline_does(
    onnx_image: dict[str, Any], bundle: dict[str, Any], test_rows: pd.DataFrame, expected: list[Any]
) -> None:
    meta = _assert_serves(onnx_image, bundle, test_rows, expected, "onnx")
    assert meta["onnx"]["passed"] is True
    assert "onnxruntime" in meta["packages"]
    assert not {"scikit-learn", "scipy", "pandas", "skops"} & set(meta["packages"])
    csv = "\n".join(  # text/csv, as the CI smoke run posts it, is read without pandas
        [",".join(test_rows.columns), *(",".join(map(str, r)) for r in test_rows.dropna().head(2).values)]
    )
    response = httpx.post(
        f"{onnx_image['url']}/invocations", content=csv, headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200 and len(response.json()["predictions"]) == 2, response.text


def test_sklearn_image_still_builds_and_serves(
    sklearn_image: dict[str, Any], bundle: dict[str, Any], test_rows: pd.DataFrame, expected: list[Any]
) -> None:
    _assert_image(sklearn_image, bundle, "sklearn", SKLEARN_SIZE_LIMIT_BYTES)
    meta = _assert_serves(sklearn_image, bundle, test_rows, expected, "sklearn")
    assert "scikit-learn" in meta["packages"]
