"""Ray, the engine a sweep runs on (``benchmark.sweep`` plans the tasks; this module places and watches them).

Where: a local Ray instance sized to this machine (``os.cpu_count()`` CPUs, no dashboard, Ray's own logging
at WARNING and workers' output kept in their log files, not mixed into the terminal) unless ``--address``
or ``$RAY_ADDRESS`` names an existing cluster. A Ray instance the caller already started (a test, a
notebook) is used as it is and left running.

What the workers see: the environment that decides where things are (``$SYNTHVID_CACHE``, the MLflow store,
the data root, the code's own folder on ``PYTHONPATH``) goes with every task as ``runtime_env`` env vars, as
absolute paths. On a cluster those paths (``--out``, the cache, the data, a SQLite MLflow store; or use an
MLflow server) must be on storage that every node mounts at the same place.

Resources: each task asks for what its stages declare (``stages.Resources``): CPUs, memory (clamped to the
largest node, so a hint never makes a task unschedulable), and a GPU for a fit that trains a network when
the cluster has one (required where the profile says ``device = "cuda"``: refused before submission on a
cluster without GPUs, rather than waiting forever). A task whose worker process dies is retried
(``max_retries``); an exception inside a task is not (it would fail the same way again).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmark import experiment
from benchmark.paths import cache_dir
from benchmark.stages import GPU_IF_AVAILABLE, GPU_REQUIRED
from benchmark.sweep_plan import SweepTask
from benchmark.sweep_tasks import SweepContext, TaskRunner, execute_task, task_record

logger = logging.getLogger(__name__)

#: env vars that change where a task reads or writes, passed on to every worker when set here
PASSED_ENV = ("SYNTHVID_DATA_ROOT", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL",
              "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "CI", "TF_CPP_MIN_LOG_LEVEL")
#: seconds between looks at the tasks (the running count and the ETA are refreshed this often)
POLL_S = 2.0
#: the object store of a local instance: tasks exchange small dicts only (the data stay on disk)
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20


def worker_env() -> dict[str, str]:
    """The environment every task gets: the cache, the MLflow store and this checkout's code, by absolute path."""
    code_root = str(Path(__file__).resolve().parents[1])
    python_path = os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH", "")) if p)
    env = {"SYNTHVID_CACHE": str(cache_dir().resolve()), "MLFLOW_TRACKING_URI": experiment.tracking_uri(),
           "PYTHONPATH": python_path}
    env.update({name: os.environ[name] for name in PASSED_ENV if name in os.environ})
    return env


#: seconds a TCP connect to ``--address`` may take before the cluster is declared unreachable
CONNECT_TIMEOUT_S = 5.0
#: Ray's client port (``ray://host`` without a port), and the GCS port of a bare ``host``
RAY_CLIENT_PORT, RAY_GCS_PORT = 10001, 6379


def cluster_address(address: str | None) -> tuple[str, str] | None:
    """``(address, where it came from)``: ``--address`` or ``$RAY_ADDRESS``; None for a local instance."""
    if address:
        return address, f"--address {address}"
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], f"$RAY_ADDRESS={os.environ['RAY_ADDRESS']}"
    return None


def check_address(address: str | None) -> None:
    """Fail fast, naming the address given, when no Ray cluster can answer there: a plain TCP connect with a
    short timeout, before ``ray.init`` (which retries for minutes and then names addresses of its own) and
    before the sweep's MLflow parent run is opened. ``auto``/``local`` and an instance this process already
    started are left to Ray."""
    given = cluster_address(address)
    if given is None or given[0] in ("auto", "local") or _ray_initialized():
        return
    value, source = given
    host, port = _host_port(value, source)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except TimeoutError:
        raise ValueError(f"{source}: no Ray cluster answers at {host}:{port} "
                         f"(no reply within {CONNECT_TIMEOUT_S:g} s)") from None
    except OSError as exc:
        raise ValueError(f"{source}: no Ray cluster answers at {host}:{port} "
                         f"({exc.strerror or exc})") from None


def _ray_initialized() -> bool:
    """Whether this process already holds a Ray instance (without importing Ray where nothing has)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def _host_port(value: str, source: str) -> tuple[str, int]:
    """``host:port``, ``ray://host[:port]`` or a bare ``host`` as (host, port); one line for anything else."""
    scheme, _, rest = value.rpartition("://")
    if scheme not in ("", "ray"):
        raise ValueError(f"{source}: unknown scheme {scheme!r}; expected HOST:PORT or ray://HOST:PORT")
    rest = rest.rstrip("/")
    host, colon, port = rest.rpartition(":") if rest.count(":") == 1 or rest.startswith("[") else ("", "", "")
    if not colon:
        host, port = rest, str(RAY_CLIENT_PORT if scheme else RAY_GCS_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{source}: expected HOST:PORT or ray://HOST:PORT")
    return host, int(port)


@contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Connect to the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local instance sized to this
    machine; shut down only what this call started."""
    import ray

    if ray.is_initialized():
        yield
        return
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        logger.info("Ray: connecting to the cluster at %s", address)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        logger.info("Ray: starting a local instance with %d CPUs", os.cpu_count() or 1)
        ray.init(num_cpus=os.cpu_count() or 1, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet)
    try:
        yield
    finally:
        ray.shutdown()


@dataclass
class TaskResults:
    status: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def task_options(task: SweepTask, nodes: list[dict[str, float]], max_retries: int) -> tuple[SweepTask, dict[str, Any]]:
    """Ray options from the task's declared resources, fitted to the cluster's largest node; the task with the
    GPU count it will get (the task body reads it to choose its device)."""
    wants = task.resources
    gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    if wants.gpu == GPU_REQUIRED and gpus < 1:
        raise ValueError(f"task {task.label}: its config puts the generator on CUDA (device = "
                         f"{task.config.generator_params.get('device')!r}) but the Ray cluster has no GPU")
    num_gpus = 1.0 if wants.gpu == GPU_REQUIRED or (wants.gpu == GPU_IF_AVAILABLE and gpus >= 1) else 0.0
    cpus = max((n.get("CPU", 0.0) for n in nodes), default=1.0)
    memory = max((n.get("memory", 0.0) for n in nodes), default=0.0)
    options: dict[str, Any] = {"num_cpus": min(wants.cpus, cpus), "num_gpus": num_gpus, "max_retries": max_retries,
                               "retry_exceptions": False, "name": task.id}
    if memory > 0:
        options["memory"] = int(min(wants.memory_gb * 2**30, 0.9 * memory))
    return replace(task, num_gpus=num_gpus), options


def run_tasks(tasks: list[SweepTask], earlier: Mapping[str, dict[str, Any]], context: SweepContext,
              runner: TaskRunner, address: str | None = None, max_retries: int = 2,
              progress: bool | None = None, fresh_workers: bool = True) -> TaskResults:
    """Submit every task not finished ``earlier`` (each after the tasks it needs, as Ray object refs) and wait
    for all, with a live count; Ctrl-C cancels what is still queued or running and re-raises.
    ``fresh_workers``: one worker process per task (Ray's ``max_calls=1``), as ``python -m benchmark run`` is
    one process per run: TensorFlow and torch keep graphs, threads and caches per process, and a task of
    minutes does not miss the start-up. Tests of cheap tasks reuse workers instead."""
    import ray
    from tqdm.contrib.logging import logging_redirect_tqdm

    results = TaskResults()
    for task_id in earlier:
        results.status[task_id] = "earlier"
    todo = [t for t in tasks if t.id not in earlier]
    if not todo:
        logger.info("sweep %s: every task finished earlier; nothing to run", context.name)
        return results
    with ray_session(address):
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        remote = ray.remote(max_calls=1 if fresh_workers else 0)(execute_task)
        env = {"env_vars": worker_env()}
        refs: dict[str, Any] = {}
        pending: dict[Any, SweepTask] = {}
        planned = [task_options(task, nodes, max_retries) for task in todo]  # every refusal before any submission
        for task, options in planned:
            task_record(context.folder, task.id, "started").unlink(missing_ok=True)  # an earlier attempt's
            upstream = [refs[n] for n in task.needs if n in refs]
            refs[task.id] = remote.options(**options, runtime_env=env).remote(task, context, runner, *upstream)
            pending[refs[task.id]] = task
        watch = Progress(len(tasks), len(earlier), context, progress)
        # log lines go above the bar, not through it
        with logging_redirect_tqdm() if not watch.bar.disable else nullcontext(), DeferredInterrupt() as interrupt:
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                    interrupt.act()
                    for ref in ready:
                        task = pending.pop(ref)
                        _collect(ray, ref, task, results)
                        watch.refresh(list(pending.values()))
                        watch.finished(task, results.status[task.id], results.errors.get(task.id))
                    watch.refresh(list(pending.values()))
            except KeyboardInterrupt:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
            finally:
                watch.close()
    return results


class DeferredInterrupt:
    """While the driver waits on Ray, Ctrl-C and SIGTERM only record themselves; ``act()`` (once per poll,
    so within ``POLL_S``) then calls the handler that was there before, which raises ``KeyboardInterrupt``
    and the loop cancels the tasks.

    Why not let the handler raise where the signal lands: Python runs a signal handler at whatever bytecode
    the main thread is on. When that is a finaliser (the cyclic GC calling a ``__del__`` of TensorFlow or
    torch garbage, or any weakref callback) the ``KeyboardInterrupt`` is "ignored" (printed as unraisable)
    and the sweep goes on as if nothing had been pressed. Recording a flag cannot be lost that way. A second
    signal before the loop acts raises at once, for a user who insists. Only the main thread can own
    handlers; elsewhere, and for a signal left at the OS default (SIGTERM outside the CLI), nothing changes."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.received: int | None = None

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                handler = signal.getsignal(signum)
                if callable(handler):
                    self.previous[signum] = handler
                    signal.signal(signum, self._record)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        previous, self.previous = self.previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if exc_type is None and self.received is not None:  # pressed after the last poll: act on it now
            signum, self.received = self.received, None
            previous[signum](signum, None)

    def _record(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            self.previous[signum](signum, frame)
        self.received = signum

    def act(self) -> None:
        """Call the earlier handler of a signal recorded since the last call (it raises ``KeyboardInterrupt``
        under Python's default SIGINT handler and the CLI's SIGTERM one)."""
        if self.received is not None:
            signum, self.received = self.received, None
            self.previous[signum](signum, None)


def _collect(ray: Any, ref: Any, task: SweepTask, results: TaskResults) -> None:
    """The outcome of one finished ref: its record, or the failure (``blocked`` when a task it needs failed:
    Ray hands the dependency's error down without running it)."""
    try:
        results.records[task.id] = ray.get(ref)
        results.status[task.id] = "done"
    except ray.exceptions.RayError as exc:
        failed_needs = [n for n in task.needs if results.status.get(n) in ("failed", "blocked")]
        if failed_needs:
            results.status[task.id] = "blocked"
            results.errors[task.id] = f"not run: it needs {', '.join(failed_needs)}, which failed"
            return
        results.status[task.id] = "failed"
        results.errors[task.id] = error_text(exc)


def error_text(exc: BaseException) -> str:
    """One line for a task's failure: the original exception's type and message (not Ray's traceback dump),
    or what happened to its worker."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        return f"{type(cause).__name__}: {first}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class Progress:
    """The live count (done / running / failed / queued) and an ETA, as a tqdm bar on a terminal and as a log
    line whenever a task ends. ``running`` counts tasks whose attempt has begun (``tasks/<id>.started.json``
    on the shared storage), so it is right on a cluster too. The ETA is the remaining tasks at the pace of
    the tasks finished so far in this session."""

    def __init__(self, total: int, earlier: int, context: SweepContext, show: bool | None) -> None:
        from tqdm import tqdm

        self.total, self.earlier, self.context = total, earlier, context
        self.counts = {"done": 0, "failed": 0, "blocked": 0}
        self.start = time.monotonic()
        self.running = 0
        self.bar = tqdm(total=total, initial=earlier, unit="task", desc=f"sweep {context.name}", file=sys.stderr,
                        disable=(not show) if show is not None else None, dynamic_ncols=True)

    @property
    def ended(self) -> int:
        return sum(self.counts.values())

    def eta_s(self) -> float | None:
        if not self.counts["done"]:
            return None
        left = self.total - self.earlier - self.ended
        return (time.monotonic() - self.start) / self.ended * left

    def summary(self) -> str:
        eta = self.eta_s()
        queued = self.total - self.earlier - self.ended - self.running
        return (f"{self.earlier + self.counts['done']}/{self.total} done, {self.running} running, "
                f"{self.counts['failed'] + self.counts['blocked']} failed, {queued} queued"
                + (f", ETA {eta / 60:.0f} min" if eta is not None else ""))

    def finished(self, task: SweepTask, status: str, error: str | None) -> None:
        self.counts[status] += 1
        self.bar.update(1)
        line = f"[{task.id}] {status}" + (f": {error}" if error else "") + f"; sweep: {self.summary()}"
        (logger.error if error else logger.info)(line)

    def refresh(self, pending: list[SweepTask]) -> None:
        self.running = sum(1 for t in pending if task_record(self.context.folder, t.id, "started").is_file())
        self.bar.set_postfix_str(self.summary().split(", ", 1)[1], refresh=True)

    def close(self) -> None:
        self.bar.close()
        logger.info("sweep %s: %s in %.1f min", self.context.name, self.summary(), (time.monotonic() - self.start) / 60)
