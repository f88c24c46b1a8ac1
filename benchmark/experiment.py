"""MLflow logging for benchmark runs (MLflow "experiment"/"run"; "tracking" means cells elsewhere).

Runs go to an explicit local SQLite store (``sqlite:///<cwd>/mlflow.db``; MLflow 3 refuses a new
file store) unless ``MLFLOW_TRACKING_URI`` says otherwise. Open the UI with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark import mutants
from benchmark.budget import BudgetExhausted
from benchmark.io import folder_lock, process_alive
from benchmark.machine import cpu_description, machine_class
from benchmark.paths import require_writable

if TYPE_CHECKING:
    import mlflow

logger = logging.getLogger(__name__)

#: tags naming the process that opened a run, so that a later run can close it when that process is gone
HOST_TAG, PID_TAG = "host", "pid"
PACKAGES = ("synthvid-benchmark", "torch", "diffusers", "voxelmorph", "tensorflow-cpu", "stardist", "py-ctcmetrics",
            "pytorch-fid", "mlflow", "numpy", "scikit-image", "scikit-learn")
EXPERIMENT_PREFIX = "synthvid"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else an absolute SQLite file in the current directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def configure() -> str:
    """Point MLflow at ``tracking_uri()`` after checking a local store can be written: an unwritable
    ``MLFLOW_TRACKING_URI`` fails here with one line naming it, not deep inside MLflow."""
    import mlflow  # here, not at module load: `python -m benchmark --help` stays fast

    uri = tracking_uri()
    store = _local_store(uri)
    if store is not None:
        require_writable(store, f"the MLflow store of MLFLOW_TRACKING_URI={uri}")
        if store.exists() and (store.is_dir() if uri.startswith("sqlite:") else not store.is_dir()):
            raise ValueError(f"{store}: MLflow store of MLFLOW_TRACKING_URI={uri} is of the wrong kind "
                             f"(a {'folder' if store.is_dir() else 'file'})")
    mlflow.set_tracking_uri(uri)
    return uri


def _local_store(uri: str) -> Path | None:
    """The file (SQLite) or folder (file store) a local tracking URI writes to; None for a server."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file://").removeprefix("file:"))
    if "://" not in uri:
        return Path(uri)
    return None


def experiment_name(dataset: str) -> str:
    return f"{EXPERIMENT_PREFIX}/{dataset}"


def ensure_experiment(name: str) -> str:
    """Experiment id for ``name``; artifacts live beside a SQLite store (``mlartifacts/``)."""
    import mlflow

    uri = configure()
    store = _local_store(uri)
    try:
        # two processes opening a new SQLite store at once race in MLflow's schema migration (one fails
        # with an alembic error), and both may create the experiment: one at a time per store
        with folder_lock(store) if store is not None else contextlib.nullcontext():
            existing = mlflow.get_experiment_by_name(name)
            if existing is not None:
                return existing.experiment_id
            location = None
            if uri.startswith("sqlite:///"):
                location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
            return mlflow.create_experiment(name, artifact_location=location)
    except Exception as exc:  # MLflow wraps SQLAlchemy/OS errors in many types; the user needs the store named
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"MLFLOW_TRACKING_URI={uri}: cannot open the MLflow store ({type(exc).__name__}: {first})") \
            from None


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def git_commit(path: Path | None = None) -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path or Path(__file__).parent,
                                capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"cpu:{platform.processor() or platform.machine()}x{os.cpu_count()}"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b": "value"} with values rendered as strings (MLflow params)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value, default=str) if not isinstance(value, str) else value
    return out


def clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numbers only: numpy scalars cast, None/NaN/non-numeric dropped (py-ctcmetrics returns None)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


@contextmanager
def start_run(
    run_name: str,
    dataset: str,
    config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
    run_id: str | None = None,
    parent_run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open (or resume, with ``run_id``) a run; log the whole config as params and ``config.json``,
    plus version, commit and device tags. ``parent_run_id`` nests a top-level run of this process under
    a run another process holds open (a sweep's parent: its tasks run in other processes)."""
    import mlflow

    experiment_id = ensure_experiment(experiment_name(dataset))
    if not nested and run_id is None:
        close_stale_runs(experiment_id)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, experiment_id=experiment_id,
                          nested=nested, parent_run_id=parent_run_id,
                          log_system_metrics=not nested and system_metrics_wanted()) as run:
        if run_id is None:
            all_tags = {f"version.{k}": v for k, v in package_versions().items()}
            all_tags.update({"device": device_name(), "machine_class": machine_class(), "cpu": cpu_description(),
                             HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), "dataset": dataset,
                             "ci": str(os.environ.get("CI", "false")).lower()})
            commit = git_commit()
            if commit:
                all_tags["git_commit"] = commit
            mutant = mutants.current()
            if mutant is not None:  # an injected regression (scripts/gate_mutants.sh): never a result to read
                all_tags["mutant"] = mutant
            all_tags.update(tags or {})
            mlflow.set_tags(all_tags)
            if config:
                params = flatten(config)
                for start in range(0, len(params), 100):
                    mlflow.log_params(dict(list(params.items())[start : start + 100]))
                mlflow.log_dict(dict(config), "config.json")
        try:
            yield run
        except (KeyboardInterrupt, BudgetExhausted):  # Ctrl-C, SIGTERM (made one by the CLI) or the deadline
            # (benchmark.budget): KILLED, not FAILED
            mlflow.end_run("KILLED")
            raise


def system_metrics_wanted() -> bool:
    """CPU, memory and disk use of the machine as ``system/*`` metrics of every parent run (MLflow's monitor,
    a thread sampling with psutil), unless ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false``. One sample every
    10 s, written every 6 samples (a multi-hour fit adds a few hundred rows, not thousands), unless
    ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` / ``..._SAMPLES_BEFORE_LOGGING`` say otherwise."""
    if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true").lower() in ("false", "0"):
        return False
    try:
        import psutil  # noqa: F401 - MLflow's monitor needs it
    except ImportError:
        return False
    import mlflow.system_metrics as system_metrics

    if "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL" not in os.environ:
        system_metrics.set_system_metrics_sampling_interval(10)
    if "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING" not in os.environ:
        system_metrics.set_system_metrics_samples_before_logging(6)
    return True


def close_stale_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the runs left RUNNING by a process of this host that no longer exists (SIGKILL, power
    loss: nothing in the process could close them), nested stage runs included. Returns their ids.

    A run of a live process, or of another host, is left alone: it may still be working.
    """
    import mlflow

    client = mlflow.MlflowClient()
    host, stale = socket.gethostname(), []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        if tags.get(HOST_TAG) != host or not str(tags.get(PID_TAG, "")).isdigit():
            continue
        if process_alive(int(tags[PID_TAG])):
            continue
        client.set_terminated(run.info.run_id, "KILLED")
        stale.append(run.info.run_id)
    if stale:
        logger.warning("MLflow: marked %d run(s) KILLED that a killed process left RUNNING", len(stale))
    return stale


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None:
    import mlflow

    clean = clean_metrics(metrics)
    if clean:
        mlflow.log_metrics({f"{prefix}{k}": v for k, v in clean.items()}, step=step)


def _active_run_id() -> str | None:
    """The active MLflow run, without importing MLflow where nothing has (then no run can be active)."""
    mlflow = sys.modules.get("mlflow")
    run = mlflow.active_run() if mlflow is not None else None
    return run.info.run_id if run is not None else None


class TrainingStream:
    """Training curves into the active MLflow run while the model trains, batched: ``stream(step, {...})``.

    A loss curve of thousands of steps logged one ``log_metric`` at a time costs a database write each;
    here points are buffered and sent with ``log_batch`` every ``every_s`` seconds and at ``flush``/exit.
    With no active run (a library call, a test) it does nothing, so training code can always stream.
    A failing store never stops training: the first error is logged and streaming stops.
    """

    def __init__(self, prefix: str = "", every_s: float = 10.0) -> None:
        self.prefix = prefix
        self.every_s = every_s
        self.run_id = _active_run_id()
        self._pending: list[tuple[str, float, int, int]] = []
        self._last = time.monotonic()

    def __call__(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self.run_id is None:
            return
        stamp = int(time.time() * 1000)
        for key, value in clean_metrics(metrics).items():
            self._pending.append((f"{self.prefix}{_metric_key(key)}", value, stamp, int(step)))
        if time.monotonic() - self._last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if self.run_id is None or not self._pending:
            return
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        pending, self._pending = self._pending, []
        try:
            client = MlflowClient()
            for start in range(0, len(pending), 1000):  # MLflow's per-request limit
                client.log_batch(self.run_id, metrics=[Metric(*p) for p in pending[start:start + 1000]])
        except Exception as exc:  # noqa: BLE001 - the curve is a convenience; the training result is not
            logger.warning("MLflow: streaming %s metrics stopped (%s: %s)", self.prefix or "training",
                           type(exc).__name__, exc)
            self.run_id = None

    def __enter__(self) -> TrainingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def _metric_key(key: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . / space``: anything else becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in str(key))


def log_dataset(folder: str | Path, name: str, digest: str, context: str) -> None:
    """Record a CTC sequence the active run used (``mlflow.log_input``): its name, where it was read and the
    content digest its stage keys use, under ``context`` (training, testing, synthetic). The MLflow UI then
    shows which bytes every run saw, and runs on the same data share a digest."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both candidates are the local source
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(Path(folder).resolve().as_uri())
    mlflow.log_input(MetaDataset(source, name=name, digest=digest[:16]), context=context)
