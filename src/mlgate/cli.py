"""The one command line: `mlgate <step>` (also `python -m mlgate <step>`). Each command parses, loads the
config and calls one function; errors end in one line saying why."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from mlgate.client import apply_client_defaults
from mlgate.batch.options import DEFAULT_CHUNK_ROWS, DEFAULT_SPARK_MASTER, ENGINES, POOLS
from mlgate.config import (
    CLASSIFICATION,
    DEFAULT_CONFIG_PATH,
    REGRESSION,
    TASK_AUTO,
    DriftConfig,
    PipelineConfig,
    load_config,
)
from mlgate.errors import EXIT_DRIFT, EXIT_EMPTY, EXIT_ERROR, EXIT_REJECTED, describe_error
from mlgate.mlflow_noise import quiet_known_mlflow_noise
from mlgate.modelio import RUNTIMES
from mlgate.timing import timed

log = logging.getLogger("mlgate")


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("mlflow", "alembic", "urllib3", "botocore", "py4j", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# The pipeline's steps end with their duration (``train: done in 7.81s``); the other commands print results.
_TIMED_STEPS = {"validate", "train", "evaluate", "register", "promote", "rollback", "run"}


def step_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command body (a step logs its duration); any exception becomes a one-line reason and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        name = fn.__name__.removesuffix("_cmd")
        try:
            with timed(name) if name in _TIMED_STEPS else contextlib.nullcontext():
                return fn(*args, **kwargs)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI boundary reports every failure in one line
            log.debug("traceback", exc_info=True)
            ctx = click.get_current_context(silent=True)
            words = ctx.command_path.split()[1:] if ctx is not None else [name]  # after the program's name
            click.echo(f"mlgate {' '.join(words)} failed: {describe_error(exc)}", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    default=str(DEFAULT_CONFIG_PATH),
    show_default=True,
    envvar="MLGATE_CONFIG",
    help="The pipeline config file.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, with tracebacks.")
@click.pass_context
def cli(ctx: click.Context, config_path: str, verbose: bool) -> None:
    """mlgate: validate, train, evaluate, register and promote a tabular scikit-learn model with MLflow."""
    _configure_logging(verbose)
    quiet_known_mlflow_noise()
    apply_client_defaults()
    ctx.obj = {"config_path": config_path}


def _blank_is_none(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """MLproject passes unset optional parameters as empty strings."""
    return value or None


def _config(ctx: click.Context, **overrides: Any):
    return load_config(ctx.obj["config_path"], {k: v for k, v in overrides.items() if v is not None})


@cli.command("init")
@click.argument("data")
@click.option("--target", required=True, help="The column to predict.")
@click.option(
    "--task",
    type=click.Choice([TASK_AUTO, CLASSIFICATION, REGRESSION]),
    default=TASK_AUTO,
    show_default=True,
    help="auto: classification for text or a few whole numbers, regression for other numbers.",
)
@click.option("--out", default=None, help="Write the config to this file (default: print it).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@step_command
def init_cmd(data: str, target: str, task: str, out: str | None, force: bool) -> None:
    """Guess a commented pipeline config from a CSV or Parquet sample (types, ranges, classes, thresholds)."""
    from mlgate.scaffold import init_config

    text, guess = init_config(data, target, task, out, force)
    for note in guess.notes:
        click.echo(f"mlgate init: {note}", err=True)
    if out:
        click.echo(f"mlgate init: wrote {out}; review it, then `make pipeline CONFIG={out}`", err=True)
    else:
        click.echo(text, nl=False)


@cli.command("validate")
@click.option(
    "--data",
    "source",
    default=None,
    callback=_blank_is_none,
    help="Table to validate instead of data.source.",
)
@click.pass_context
@step_command
def validate_cmd(ctx: click.Context, source: str | None) -> None:
    """Check the data against the schema; quarantine bad rows; log the accepted dataset."""
    from mlgate.validate import validate

    validate(_config(ctx), source=source)


@cli.command("train")
@click.option("--data", "data_path", default=None, help="Validated table (default: validate's output).")
@click.pass_context
@step_command
def train_cmd(ctx: click.Context, data_path: str | None) -> None:
    """Fit the preprocessing + estimator pipeline and log it as an MLflow model."""
    from mlgate.train import train

    train(_config(ctx), data_path=data_path)


@cli.command("evaluate")
@click.pass_context
@step_command
def evaluate_cmd(ctx: click.Context) -> None:
    """Evaluate the candidate and the current champion on the held-out split; write the report."""
    from mlgate.evaluate import evaluate

    evaluate(_config(ctx))


@cli.command("register")
@click.pass_context
@step_command
def register_cmd(ctx: click.Context) -> None:
    """Register the candidate as a new model version with lineage tags and the challenger alias."""
    from mlgate.registry import register

    register(_config(ctx))


@cli.command("promote")
@click.option(
    "--dry-run",
    type=click.BOOL,
    is_flag=False,
    flag_value=True,
    default=False,
    help="Report the gate's decision without moving any alias (also --dry-run=true|false).",
)
@click.pass_context
@step_command
def promote_cmd(ctx: click.Context, dry_run: bool) -> None:
    """The gate: move the champion alias to the challenger if every threshold passes (exit 3 if not: "hold"
    when the evidence is inconclusive, "reject" when it is worse)."""
    from mlgate.registry import promote

    decision = promote(_config(ctx), dry_run=dry_run)
    if not decision.passed:
        click.echo(f"mlgate promote: {decision.verdict}: the champion stays at {decision.previous}", err=True)
        sys.exit(EXIT_REJECTED)


@cli.command("rollback")
@click.option(
    "--version",
    "version",
    default=None,
    callback=_blank_is_none,
    help="Version to restore (default: the previous champion).",
)
@click.option("--reason", default="manual rollback", show_default=True, help="Recorded in the audit trail.")
@click.option("--dry-run", is_flag=True, help="Only write which version it would be to rollback.json.")
@click.pass_context
@step_command
def rollback_cmd(ctx: click.Context, version: str | None, reason: str, dry_run: bool) -> None:
    """Move the champion alias back to the previous champion, or to a given version."""
    from mlgate.registry import rollback

    rollback(_config(ctx), version=version, reason=reason, dry_run=dry_run)


@cli.command("lineage")
@click.option("--force", is_flag=True, help="Report a change even when the lineage is the champion's.")
@click.pass_context
@step_command
def lineage_cmd(ctx: click.Context, force: bool) -> None:
    """Print `changed=true|false`: do the validated data, config and commit differ from the champion's?

    Run after validate. `changed=false` means a retrain would rebuild the champion: nothing to release.
    """
    from mlgate.registry import lineage

    result = lineage(_config(ctx))
    if result["changed"]:
        why = f"{', '.join(result['differs'])} differ from champion {result['champion']}"
    else:
        why = f"nothing changed: data, config and commit are champion {result['champion']}'s"
    changed = result["changed"] or force
    click.echo(f"mlgate lineage: {why}{' (--force: releasing anyway)' if force else ''}", err=True)
    click.echo(f"changed={str(changed).lower()}")


@cli.command("check-registry")
@click.pass_context
@step_command
def check_registry_cmd(ctx: click.Context) -> None:
    """Check the registry before using it: the champion alias and the audit trail's newest move agree."""
    from mlflow import MlflowClient

    from mlgate.models import version_by_alias
    from mlgate.registry import audit_trail, check_state

    cfg = _config(ctx)
    client = MlflowClient()
    problems = check_state(client, cfg)
    for problem in problems:
        click.echo(f"mlgate check-registry: {problem}", err=True)
    if problems:
        sys.exit(EXIT_ERROR)
    champion = version_by_alias(client, cfg.model_name, cfg.promotion.aliases.champion)
    moves = len(audit_trail(client, cfg.model_name)) if champion is not None else 0
    shown = "none" if champion is None else champion.version
    click.echo(f"registry state ok: champion {shown}, {moves} audit records")


@cli.command(
    "mlflow-run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("entry_point")
@click.argument("mlflow_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def mlflow_run_cmd(ctx: click.Context, entry_point: str, mlflow_args: tuple[str, ...]) -> None:
    """`mlflow run . -e ENTRY_POINT --env-manager local` with this config, in its experiment.

    Extra arguments go to `mlflow run` (e.g. `-P dry_run=true`); the tracking client defaults apply to it.
    """
    cmd = [sys.executable, "-m", "mlflow", "run", ".", "-e", entry_point, "--env-manager", "local"]
    cmd += ["-P", f"config={ctx.obj['config_path']}", "--experiment-name", _config(ctx).experiment]
    sys.stdout.flush()
    # `mlflow run` reads MLFLOW_EXPERIMENT_ID as --experiment-id and refuses both: the config's experiment
    # wins
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    os.execv(sys.executable, [*cmd, *mlflow_args])  # nosec B606 - our interpreter, a fixed argument list


@cli.command("run")
@click.option("--dry-run", is_flag=True, help="Run every step but leave the champion alias where it is.")
@click.pass_context
@step_command
def run_cmd(ctx: click.Context, dry_run: bool) -> None:
    """The whole chain: validate, train, evaluate, register, promote; ends with a summary."""
    from mlgate.pipeline import run_pipeline

    summary = run_pipeline(_config(ctx), dry_run=dry_run)
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    if not summary["promoted"] and not summary["already_champion"]:
        sys.exit(EXIT_REJECTED)


@cli.command("show")
@click.argument("key")
@click.pass_context
@step_command
def show_cmd(ctx: click.Context, key: str) -> None:
    """Print one config value by dotted key (e.g. `mlgate show model_name`), for scripts and make."""
    value: Any = _config(ctx).model_dump(mode="json", by_alias=True)
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise click.BadParameter(f"no config key {key!r}", param_hint="KEY")
        value = value[part]
    click.echo(value if isinstance(value, str) else json.dumps(value))


@cli.command("gate-status")
@click.pass_context
@step_command
def gate_status_cmd(ctx: click.Context) -> None:
    """The gate's verdict from promotion.json: exit 0 promoted, 3 rejected (failing checks listed), 1 missing.

    The Markdown also goes to $GITHUB_STEP_SUMMARY when set. `mlflow run -e promote` exits 1 on a rejection,
    so workflows read the verdict back with this.
    """
    from mlgate.io import read_step_result
    from mlgate.report import gate_status

    code, text = gate_status(read_step_result(_config(ctx).outputs, "promotion"))
    click.echo(text)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    sys.exit(code)


@cli.command("result")
@click.argument("step")
@click.argument("field")
@click.pass_context
@step_command
def result_cmd(ctx: click.Context, step: str, field: str) -> None:
    """Print one field of a step's result file, e.g. `mlgate result rollback new` (an empty line for null)."""
    from mlgate.io import read_step_result

    data = read_step_result(_config(ctx).outputs, step)
    if field not in data:
        raise click.BadParameter(f"{step}.json has no field {field!r}; it has: {', '.join(sorted(data))}")
    click.echo("" if data[field] is None else data[field])


# --- serving commands (issue 8) ---


def _trust_configured_types(cfg: PipelineConfig) -> None:
    """The config's ``estimator.trusted_types`` reach every model load of this command and of the processes
    it starts (shadow, registry helper, batch workers) through ``MLGATE_TRUSTED_TYPES``; without a config file
    (the images) that variable alone adds types."""
    from mlgate.trust import TRUSTED_TYPES_ENV, extra_types

    os.environ[TRUSTED_TYPES_ENV] = ",".join(sorted(extra_types(cfg.estimator.trusted_types)))


def _champion_uri(cfg: PipelineConfig) -> str:
    return f"models:/{cfg.model_name}@{cfg.promotion.aliases.champion}"


@cli.command("serve")
@click.option(
    "--model", default=None, envvar="MLGATE_SERVE_MODEL", help="Model folder or URI [default: the champion]."
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=None,
    help="auto: ONNX Runtime when training proved the compiled model's parity, else scikit-learn "
    "[env MLGATE_SERVE_RUNTIME, default auto].",
)
@click.option("--host", default=None, help="Interface to bind [env MLGATE_SERVE_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [env PORT, default 8080].")
@click.option(
    "--workers", type=int, default=None, help="Worker processes [env MLGATE_SERVE_WORKERS, default 1]."
)
@click.option(
    "--follow/--no-follow",
    default=None,
    help="Swap in each new version the alias of models:/NAME@ALIAS points at [env MLGATE_SERVE_FOLLOW].",
)
@click.option(
    "--shadow",
    default=None,
    help="A challenger (folder or URI, e.g. models:/NAME@challenger) scoring a copy of each request off the "
    "response path [env MLGATE_SERVE_SHADOW].",
)
@click.option(
    "--follow-seconds",
    type=float,
    default=None,
    help="How often --follow looks the alias up [env MLGATE_SERVE_FOLLOW_SECONDS, default 30].",
)
@click.pass_context
@step_command
def serve_cmd(ctx: click.Context, model: str | None, **options: Any) -> None:
    """Serve a model over REST (MLflow's /invocations, a typed /predict, the V2 protocol, /metrics)."""
    from mlgate.serving.server import serve
    from mlgate.serving.settings import ServingSettings

    cfg = None
    if os.path.isfile(ctx.obj["config_path"]) or model is None:
        cfg = load_config(ctx.obj["config_path"], import_estimator=False)  # serving never fits
        _trust_configured_types(cfg)
    given = {"model": model or _champion_uri(cfg), **options}
    try:
        serve(ServingSettings(**{k: v for k, v in given.items() if v is not None}))
    except (ValueError, OSError, RuntimeError) as exc:  # the image has no MLflow to describe errors with
        raise click.ClickException(str(exc)) from exc


@cli.command("shadow-report")
@click.option(
    "--url", default="http://127.0.0.1:8080", show_default=True, help="The service started with --shadow."
)
@click.option("--output", default=None, help="Also write the report to this JSON file (e.g. for the gate).")
@step_command
def shadow_report_cmd(url: str, output: str | None) -> None:
    """Summarise shadow scoring from a running service's /metrics: agreement, probability gaps, latency."""
    import urllib.request

    from mlgate.serving.shadow import shadow_report

    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url}: an http(s) URL of the service", param_hint="--url")
    with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=30) as response:  # nosec B310
        report = shadow_report(response.read().decode())
    text = json.dumps(report, indent=2, sort_keys=True)
    if output:
        with open(output, "w") as f:
            f.write(text + "\n")
    click.echo(text)


@cli.command("model-bundle")
@click.option("--model", default=None, help="Model URI [default: models:/<model_name>@<champion alias>].")
@click.option("--dest", default="serving/model", show_default=True, help="Folder to fill (replaced).")
@click.pass_context
@step_command
def model_bundle_cmd(ctx: click.Context, model: str | None, dest: str) -> None:
    """Download a registered model into a folder for the serving image to bake in."""
    from mlgate.bundle import model_bundle

    uri = model or _champion_uri(load_config(ctx.obj["config_path"], import_estimator=False))
    click.echo(json.dumps(model_bundle(uri, dest), sort_keys=True))


# --- batch commands (issue 9) ---


@cli.command("score")
@click.option(
    "--model",
    "model_uri",
    default=None,
    callback=_blank_is_none,
    envvar="MLGATE_SCORE_MODEL",
    help="models:/name@alias, any MLflow model URI or a local model folder (default: the champion).",
)
@click.option(
    "--input", "input_path", required=True, help="CSV/Parquet file, folder or glob; local or s3://."
)
@click.option(
    "--output",
    "output_path",
    required=True,
    help="Scores, .parquet or .csv, local or s3:// (reports beside it).",
)
@click.option(
    "--key", "keys", multiple=True, help="Input column copied to the output to join back (repeatable)."
)
@click.option("--engine", type=click.Choice(ENGINES), default=ENGINES[0], show_default=True)
@click.option(
    "--spark-master",
    default=DEFAULT_SPARK_MASTER,
    show_default=True,
    help="Spark master URL for --engine spark.",
)
@click.option(
    "--fail-on-drift", is_flag=True, help=f"Exit {EXIT_DRIFT} when any feature drifts past the threshold."
)
@click.option(
    "--drift-threshold",
    type=float,
    default=None,
    help="PSI above which a feature drifts [default: drift.psi_threshold of the config].",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK_ROWS,
    show_default=True,
    help="Rows per chunk.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Prediction threads or processes (default: one per core; 0: in the reading thread).",
)
@click.option(
    "--pool",
    type=click.Choice(POOLS),
    default=POOLS[0],
    show_default=True,
    help="threads share one model; processes hold one each (for a model whose predict holds the GIL).",
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=RUNTIMES[0],
    show_default=True,
    help="auto: ONNX Runtime when training proved the compiled model's parity, else scikit-learn.",
)
@click.option("--allow-empty", is_flag=True, help=f"Exit 0, not {EXIT_EMPTY}, when no row was scored.")
@click.pass_context
@step_command
def score_cmd(
    ctx: click.Context,
    model_uri: str | None,
    input_path: str,
    output_path: str,
    drift_threshold: float | None,
    fail_on_drift: bool,
    allow_empty: bool,
    **options: Any,
) -> None:
    """Score a file, folder or glob in chunks; quarantine bad rows; write a run summary and a drift report.

    Without a config file (the batch image has none) --model is needed and the threshold is the config's
    default."""
    from mlgate.batch import ScoreOptions, score

    cfg = None
    config_given = ctx.find_root().get_parameter_source("config_path") != click.core.ParameterSource.DEFAULT
    if config_given or os.path.isfile(ctx.obj["config_path"]):
        cfg = load_config(ctx.obj["config_path"], import_estimator=False)  # scoring never fits
    elif model_uri is None:
        raise click.UsageError(f"no config file {ctx.obj['config_path']}: pass --model")
    if cfg is not None:
        _trust_configured_types(cfg)
    if model_uri is None:
        model_uri = _champion_uri(cfg)
    if drift_threshold is None:
        drift_threshold = (cfg.drift if cfg else DriftConfig()).psi_threshold
    summary = score(
        ScoreOptions(
            model_uri=model_uri,
            input=input_path,
            output=output_path,
            keys=tuple(options.pop("keys")),
            psi_threshold=drift_threshold,
            **options,
        )
    )
    if summary.rows_scored == 0 and not allow_empty:
        click.echo(
            f"mlgate score: no row scored ({summary.rows_in} rows in, {summary.rows_quarantined} "
            f"quarantined, {summary.files_unreadable} unreadable file(s)): see {summary.outputs.quarantine}",
            err=True,
        )
        sys.exit(EXIT_EMPTY)
    if fail_on_drift and summary.drifted_features:
        click.echo(
            f"mlgate score: drift past the threshold in {', '.join(summary.drifted_features)}", err=True
        )
        sys.exit(EXIT_DRIFT)


# --- stack commands (issue 3) ---


@cli.group("stack")
def stack_group() -> None:
    """The local tracking stack: PostgreSQL + S3 (moto) + `mlflow server` on loopback, in .stack/."""


_STACK_ROOT = click.option(
    "--root", default=".stack", show_default=True, envvar="MLGATE_STACK_ROOT", help="Data, logs, pid files."
)


@stack_group.command("up")
@_STACK_ROOT
@step_command
def stack_up_cmd(root: str) -> None:
    """Start the stack (or the services of it that are down); print the tracking URI."""
    from mlgate.stack import up

    click.echo(up(root).tracking_uri)


@stack_group.command("down")
@_STACK_ROOT
@click.option("--keep", is_flag=True, help="Keep the folder (data, logs); by default it is deleted.")
@step_command
def stack_down_cmd(root: str, keep: bool) -> None:
    """Stop exactly the processes `stack up` started (by their pid files)."""
    from mlgate.stack import down

    stopped = down(root, keep=keep)
    click.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_group.command("status")
@_STACK_ROOT
@step_command
def stack_status_cmd(root: str) -> None:
    """Which services run, their pids and addresses (JSON); exit 1 if any is down."""
    from mlgate.stack import status

    state = status(root)
    click.echo(json.dumps(state, indent=2))
    services = state["services"]
    if not all(s["running"] for s in services.values()) or not services["mlflow"]["healthy"]:
        sys.exit(EXIT_ERROR)


# --- release commands: what pipeline.yml and rollback.yml run (mlgate.release) ---


@cli.group("release")
def release_group() -> None:
    """The release path: immutable version tags, the images' champion tag by digest, kept on the alias."""


_REGISTRY = click.option("--registry", required=True, envvar="CI_REGISTRY", help="Image registry host.")
_REPOSITORY = click.option(
    "--repository",
    required=True,
    envvar="CI_IMAGE_REPO",
    help="owner/repo: images are <registry>/<repo>-<kind>.",
)
_REFS = click.option(
    "--refs",
    "refs_path",
    required=True,
    help="Write the champion images' name@digest here (for the manifests).",
)


def _image_names(registry: str, repository: str) -> dict[str, str]:
    from mlgate.release import KINDS, image_name

    return {kind: image_name(registry, repository, kind) for kind in KINDS}


@release_group.command("check-ref")
@step_command
def release_check_ref_cmd() -> None:
    """Refuse a run that is not on the repository's default branch (GITHUB_REF, GITHUB_EVENT_PATH)."""
    from mlgate.release import check_ref, release_environment

    ref, event, default = release_environment()
    check_ref(ref, default, event)
    click.echo(f"releasing from {ref}")


@release_group.command("version")
@click.option("--bundle", default="serving/model", show_default=True, help="A model bundle folder.")
@step_command
def release_version_cmd(bundle: str) -> None:
    """Print the model version of the bundle ($MODEL_VERSION wins when set)."""
    from pathlib import Path

    from mlgate.release import bundle_version

    click.echo(bundle_version(Path(bundle), os.environ.get("MODEL_VERSION")))


@release_group.command("publish")
@click.option("--image", "kind", required=True, type=click.Choice(["serving", "batch"]))
@click.option("--version", required=True, help="The model version (from `mlgate release version`).")
@click.option("--sha", "short_sha", required=True, help="The commit's short SHA (tag sha-<sha>-v<version>).")
@click.option("--record", required=True, help="Write the published image (name, version, digest) here.")
@_REGISTRY
@_REPOSITORY
@step_command
def release_publish_cmd(
    kind: str, version: str, short_sha: str, record: str, registry: str, repository: str
) -> None:
    """Push the built image under its immutable tags (an existing one is refused); print name= and digest=."""
    from pathlib import Path

    from mlgate.release import publish

    image = publish(_image_names(registry, repository)[kind], kind, version, short_sha, Path(record))
    click.echo(f"name={image.name}\ndigest={image.digest}")


@release_group.command("champion")
@click.option("--version", required=True, help="The version whose images become the champion images.")
@click.option(
    "--published", default=None, help="Folder of the publish jobs' records (default: the version's own tags)."
)
@_REGISTRY
@_REPOSITORY
@_REFS
@click.pass_context
@step_command
def release_champion_cmd(
    ctx: click.Context, version: str, published: str | None, registry: str, repository: str, refs_path: str
) -> None:
    """Verify the version's images by digest, record them on the version, point the champion tag at them."""
    from pathlib import Path

    from mlflow import MlflowClient

    from mlgate.release import move_champion_tags, read_published, record_images, recorded_images

    cfg = _config(ctx)
    client = MlflowClient()
    names = _image_names(registry, repository)
    if published:
        images = read_published(Path(published), version)
        record_images(client, cfg.model_name, images)
    else:
        images = recorded_images(client, cfg.model_name, version, names)
    move_champion_tags(images, Path(refs_path))
    click.echo(Path(refs_path).read_text(), nl=False)


@release_group.command("reconcile")
@_REGISTRY
@_REPOSITORY
@_REFS
@click.pass_context
@step_command
def release_reconcile_cmd(ctx: click.Context, registry: str, repository: str, refs_path: str) -> None:
    """Point the images' champion tag at the champion alias's images, wherever a failed run left it."""
    from pathlib import Path

    from mlflow import MlflowClient

    from mlgate.release import reconcile

    names = _image_names(registry, repository)
    click.echo(reconcile(MlflowClient(), _config(ctx), names, Path(refs_path)))


def main() -> None:
    """Console entry point."""
    cli(prog_name="mlgate")
