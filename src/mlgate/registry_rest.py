"""Resolving and downloading a registered model through the tracking server's REST API, without importing
MLflow (importing it costs seconds: most of a short scoring job's start-up).

Only for what MLflow itself would do over plain HTTP: a tracking (and registry) URI ``http(s)://``, a model
URI ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``, and a version whose files the server serves through
its artifact proxy (``mlflow-artifacts:`` locations, also behind a ``runs:/`` source). Anything else (a
``sqlite:///`` or local store, an ``s3://`` location the client reads itself, an auth plugin, a workspace)
is left to MLflow: :func:`rest_registry` and :meth:`RestRegistry.artifact_location` say None, and the caller
falls back to it.

What MLflow's client honours is honoured here the same way: ``MLFLOW_TRACKING_TOKEN``,
``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` (or ``~/.mlflow/credentials``), ``MLFLOW_TRACKING_INSECURE_TLS``,
``MLFLOW_TRACKING_SERVER_CERT_PATH``, ``MLFLOW_TRACKING_CLIENT_CERT_PATH``, and its retries: the same urllib3
``Retry`` MLflow builds, from ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``_BACKOFF_FACTOR``, ``_BACKOFF_JITTER``,
``_TIMEOUT`` (mlgate's defaults of :mod:`mlgate.client` when unset),
``MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER`` and ``MLFLOW_ALLOW_HTTP_REDIRECTS``. requests reads proxies and CA
bundles from the environment as it does for MLflow.
"""

from __future__ import annotations

import configparser
import os
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlgate.client import CLIENT_DEFAULTS

REGISTRY_API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
# MLflow's transient failures (mlflow.utils.request_utils._TRANSIENT_FAILURE_RESPONSE_CODES): retried.
RETRY_CODES = frozenset({408, 429, 500, 502, 503, 504})
# Settings this client does not implement: when one is set, MLflow resolves the model.
_MLFLOW_ONLY_ENV = ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_AWS_SIGV4", "MLFLOW_WORKSPACE")
# The error codes of an alias lookup that mean "no such model or alias" (the server's and MLflow's client's).
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")
_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)/?(?P<path>.*)$")


class RestApiError(RuntimeError):
    """The server answered a registry call with an error (``ERROR_CODE: message``, as MLflow words it)."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code


def _true(value: str | None, default: bool = False) -> bool:
    return default if value is None else value.strip().lower() in ("true", "1")


def _credentials(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """User name and password: the environment first, then ``~/.mlflow/credentials`` (MLflow's order)."""
    user, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
    path = Path("~/.mlflow/credentials").expanduser()
    if (user and password) or not path.is_file():
        return user, password
    parser = configparser.ConfigParser()
    parser.read(path)
    section = parser["mlflow"] if "mlflow" in parser else {}
    return user or section.get("mlflow_tracking_username"), password or section.get(
        "mlflow_tracking_password"
    )


def _is_http(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def rest_registry(environ: Mapping[str, str] | None = None) -> RestRegistry | None:
    """A client for the configured tracking server, or None when MLflow must do it (see the module)."""
    env = os.environ if environ is None else environ
    tracking = env.get("MLFLOW_TRACKING_URI", "")
    registry = env.get("MLFLOW_REGISTRY_URI") or tracking
    if not (_is_http(tracking) and _is_http(registry)) or any(env.get(k) for k in _MLFLOW_ONLY_ENV):
        return None
    try:
        import requests  # noqa: F401 - installed with MLflow (mlflow-skinny); without it, MLflow's path
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return RestRegistry(tracking, registry, env)


class RestRegistry:
    """The registry and artifact proxy of one tracking server: a requests session with MLflow's retries."""

    def __init__(self, tracking_uri: str, registry_uri: str, env: Mapping[str, str]) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.tracking_uri = tracking_uri.rstrip("/")
        self.registry_uri = registry_uri.rstrip("/")

        def setting(key: str) -> str:
            return env.get(key) or CLIENT_DEFAULTS[key]

        retries = int(setting("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            redirect=retries,
            status=retries,
            status_forcelist=RETRY_CODES,
            backoff_factor=float(setting("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")),
            backoff_jitter=float(setting("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")),
            allowed_methods=None,
            raise_on_status=True,
            respect_retry_after_header=_true(env.get("MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER"), True),
        )
        self.timeout = float(setting("MLFLOW_HTTP_REQUEST_TIMEOUT"))
        self.allow_redirects = _true(env.get("MLFLOW_ALLOW_HTTP_REDIRECTS"), True)
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        user, password = _credentials(env)
        if user and password:
            session.auth = (user, password)
        elif env.get("MLFLOW_TRACKING_TOKEN"):
            session.headers["Authorization"] = f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"
        if env.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            session.verify = env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
        elif _true(env.get("MLFLOW_TRACKING_INSECURE_TLS")):
            session.verify = False
        if env.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
            session.cert = env["MLFLOW_TRACKING_CLIENT_CERT_PATH"]
        self.session = session

    def _get(self, url: str, **kwargs: Any) -> Any:
        """GET ``url`` with MLflow's retries; a server that cannot be reached raises as MLflow words it."""
        import requests

        try:
            return self.session.get(url, timeout=self.timeout, allow_redirects=self.allow_redirects, **kwargs)
        except requests.exceptions.Timeout as exc:
            raise RuntimeError(
                f"API request to {url} failed with timeout exception {exc}. To increase the timeout, set the "
                "environment variable MLFLOW_HTTP_REQUEST_TIMEOUT to a larger value."
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise RuntimeError(f"API request to {url} failed with exception {exc}") from exc

    def _call(self, endpoint: str, params: dict[str, str], base: str | None = None) -> dict[str, Any]:
        """A registry or tracking API call: its JSON, or :class:`RestApiError` with the server's error."""
        response = self._get(f"{base or self.registry_uri}{REGISTRY_API}/{endpoint}", params=params)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            if isinstance(body, dict) and "error_code" in body:
                raise RestApiError(body["error_code"], body.get("message", ""))
            raise RuntimeError(
                f"API request to endpoint {REGISTRY_API}/{endpoint} failed with error code "
                f"{response.status_code} != 200. Response body: '{response.text[:300]}'"
            )
        if not isinstance(body, dict):
            raise RuntimeError(f"{REGISTRY_API}/{endpoint}: the response is not a JSON object")
        return body

    def version_by_alias(self, name: str, alias: str) -> dict[str, Any] | None:
        """The model version (its JSON fields) ``alias`` points at, or None when the model or alias does
        not exist."""
        try:
            found = self._call("registered-models/alias", {"name": name, "alias": alias})
        except RestApiError as exc:
            if exc.error_code in NOT_FOUND_CODES:
                return None
            raise
        return found["model_version"]

    def download_uri(self, name: str, version: str) -> str:
        """Where the files of version ``version`` of ``name`` are (``get-download-uri``)."""
        return self._call("model-versions/get-download-uri", {"name": name, "version": version})[
            "artifact_uri"
        ]

    def artifact_location(self, uri: str) -> tuple[str, str] | None:
        """The artifact proxy's base URL and root path for a download URI, or None when the files are not
        served by the proxy (MLflow reads them itself then). A ``runs:/`` URI is the run's artifact URI."""
        if match := _RUNS_URI.match(uri):
            run = self._call("runs/get", {"run_id": match["run_id"]}, base=self.tracking_uri)["run"]
            uri = (
                posixpath.join(run["info"]["artifact_uri"], match["path"])
                if match["path"]
                else run["info"]["artifact_uri"]
            )
        parsed = urlparse(uri)
        if parsed.scheme != "mlflow-artifacts":
            return None
        tracking = urlparse(self.tracking_uri)
        # as MlflowArtifactsRepository.resolve_uri: the URI's host if it names one, else the tracking server
        base = f"{tracking.scheme}://{parsed.netloc or tracking.netloc}{tracking.path.rstrip('/')}"
        return base, parsed.path.strip("/")

    def download(self, base: str, root: str, dest: Path) -> list[str]:
        """Every file under ``root`` of the artifact proxy at ``base`` into ``dest`` (made), as MLflow
        downloads a folder: subfolders (empty ones too) and files. Returns the files' relative paths.

        Raises:
            ValueError: the server listed a path outside ``root`` (``..``, absolute).
        """
        dest.mkdir(parents=True, exist_ok=True)
        written: list[str] = []
        pending = [""]
        while pending:
            sub = pending.pop()
            listing = self._get(
                f"{base}{ARTIFACTS_API}", params={"path": posixpath.join(root, sub).strip("/")}
            )
            listing.raise_for_status()
            for entry in listing.json().get("files", []):
                rel = _safe_relative(posixpath.join(sub, entry["path"]) if sub else entry["path"])
                if entry.get("is_dir"):
                    (dest / rel).mkdir(parents=True, exist_ok=True)
                    pending.append(rel)
                    continue
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with self._get(f"{base}{ARTIFACTS_API}/{posixpath.join(root, rel)}", stream=True) as response:
                    response.raise_for_status()
                    with open(target, "wb") as out:
                        for block in response.iter_content(chunk_size=1 << 20):
                            out.write(block)
                written.append(rel)
        return sorted(written)


def _safe_relative(path: str) -> str:
    """A listed path as a relative path inside the download folder (MLflow's validate_path_is_safe)."""
    norm = posixpath.normpath(path)
    if not path or norm.startswith(("/", "..")) or "\\" in path or ":" in norm.split("/")[0]:
        raise ValueError(f"the server listed an unsafe artifact path: {path!r}")
    return norm
