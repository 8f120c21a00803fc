"""Model version lifecycle: poll base paths, load and unload versions, route calls to them."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from tensorflow_serving.apis import get_model_status_pb2

from serving import metrics as m
from serving.model_config import ConfigError, ModelConfig, versions_on_disk
from serving.servable import LoadError, Servable
from serving.status import ServingError, invalid_argument, not_found
from serving.warmup import WarmupError

logger = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State
START = State.Value("START")
LOADING = State.Value("LOADING")
AVAILABLE = State.Value("AVAILABLE")
UNLOADING = State.Value("UNLOADING")
END = State.Value("END")

Loader = Callable[[str, int, str], Servable]
Preparer = Callable[[Servable], None]


@dataclass(frozen=True)
class ManagerOptions:
    """How versions are found, loaded and retried."""

    poll_wait_seconds: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval_seconds: float = 60.0
    num_load_threads: int = 1
    allow_version_labels_for_unavailable_models: bool = False


@dataclass
class VersionRecord:
    """One version of a model and where it is in TF Serving's state machine."""

    version: int
    path: str
    state: int = START
    error: ServingError | None = None
    servable: Servable | None = None
    inflight: int = 0


@dataclass(frozen=True)
class VersionStatus:
    """What GetModelStatus reports for one version."""

    version: int
    state: int
    error: ServingError | None

    @property
    def state_name(self) -> str:
        """START, LOADING, AVAILABLE, UNLOADING or END."""
        return str(State.Name(self.state))


@dataclass
class _Model:
    config: ModelConfig
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    on_disk: tuple[int, ...] = ()
    scanned: bool = False
    removed: bool = False
    warned_empty: bool = False


def _join(base: str, version: int) -> str:
    return f"{base.rstrip('/')}/{version}"


class ModelManager:
    """Holds every served model's versions; loads what the policy aspires, unloads the rest.

    Availability is preserved: a version leaves service only once a version the
    policy wants is AVAILABLE (or none is wanted at all), so a new version that
    fails to load leaves the old one serving. An unloading version is taken out
    of routing at once and released when its last in-flight call returns.
    """

    def __init__(
        self,
        options: ManagerOptions,
        loader: Loader = Servable.load,
        prepare: Preparer | None = None,
        metrics: m.Metrics | None = None,
    ) -> None:
        self.options = options
        self._loader = loader
        self._prepare = prepare
        self._metrics = metrics or m.Metrics()
        self._cond = threading.Condition()
        self._models: dict[str, _Model] = {}
        self._closing = threading.Event()
        self._loads = ThreadPoolExecutor(max_workers=max(1, options.num_load_threads), thread_name_prefix="load")
        self._unloads: list[threading.Thread] = []
        self._poller: threading.Thread | None = None

    # -- configuration -------------------------------------------------------------------------

    def apply_config(self, configs: Sequence[ModelConfig]) -> None:
        """Serve exactly these models: add new ones, update policies and labels, drop the rest."""
        names = {config.name for config in configs}
        with self._cond:
            for config in configs:
                model = self._models.get(config.name)
                if model is None or model.removed:
                    self._models[config.name] = _Model(config=config)
                    logger.info(
                        "model added model=%s base_path=%s policy=%s", config.name, config.base_path, config.policy.kind
                    )
                elif model.config != config:
                    self._check_labels(config)
                    model.config = config
                    logger.info("model updated model=%s", config.name)
            for name, model in self._models.items():
                if name not in names and not model.removed:
                    model.removed = True
                    logger.info("model removed model=%s", name)
        self.poll()

    def check_labels(self) -> None:
        """Raise ConfigError when a version label names a version that is not AVAILABLE."""
        with self._cond:
            for model in self._models.values():
                if not model.removed:
                    self._check_labels(model.config)

    def _check_labels(self, config: ModelConfig) -> None:
        if self.options.allow_version_labels_for_unavailable_models:
            return
        model = self._models.get(config.name)
        for label, version in config.labels.items():
            record = model.versions.get(version) if model else None
            if record is None or record.state != AVAILABLE:
                raise ConfigError(
                    f"Request to assign label to version {version} of model {config.name}, "
                    f"which is not currently available for inference (label {label})"
                )

    # -- polling -------------------------------------------------------------------------------

    def poll(self) -> None:
        """Look at every base path once and start the loads and unloads that follow."""
        with self._cond:
            targets = [(name, model.config.base_path) for name, model in self._models.items()]
        found = {name: tuple(versions_on_disk(base)) for name, base in targets}
        with self._cond:
            for name, versions in found.items():
                model = self._models.get(name)
                if model is None:
                    continue
                if not versions and not model.removed and not model.warned_empty:
                    logger.warning("no versions model=%s base_path=%s", name, model.config.base_path)
                model.warned_empty = not versions
                model.on_disk = versions
                model.scanned = True
                self._reconcile(model)

    def start_polling(self) -> None:
        """Poll every poll_wait_seconds on a background thread (once only when it is <= 0)."""
        self.poll()
        if self.options.poll_wait_seconds <= 0:
            return
        self._poller = threading.Thread(target=self._poll_loop, name="fs-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._closing.wait(self.options.poll_wait_seconds):
            self.poll()

    def _reconcile(self, model: _Model) -> None:
        """Under the lock: load aspired versions, unload superseded ones."""
        name = model.config.name
        aspired = set() if model.removed else model.config.policy.aspired(model.on_disk)
        for version, record in list(model.versions.items()):
            if version not in model.on_disk and record.state == END:
                del model.versions[version]
        for version in sorted(aspired):
            if self._closing.is_set():
                break
            known = model.versions.get(version)
            if known is None or (known.state == END and known.error is None):
                fresh = VersionRecord(version=version, path=_join(model.config.base_path, version))
                model.versions[version] = fresh
                logger.info("version aspired model=%s version=%d", name, version)
                self._loads.submit(self._load, name, fresh)
        aspired_available = any(model.versions[v].state == AVAILABLE for v in aspired if v in model.versions)
        for version, record in model.versions.items():
            if record.state == AVAILABLE and version not in aspired and (aspired_available or not aspired):
                self._start_unload(name, record)
        finished = model.removed and all(r.state == END for r in model.versions.values())
        if finished and self._models.get(name) is model:
            del self._models[name]
        self._update_gauge(name, model)
        self._cond.notify_all()

    def _update_gauge(self, name: str, model: _Model) -> None:
        available = sum(1 for r in model.versions.values() if r.state == AVAILABLE)
        self._metrics.set(m.MODEL_VERSIONS_AVAILABLE, available, model_name=name)

    # -- loading and unloading -----------------------------------------------------------------

    def _load(self, name: str, record: VersionRecord) -> None:
        with self._cond:
            if self._closing.is_set() or record.state != START:
                return
            record.state = LOADING
        logger.info("version loading model=%s version=%d path=%s", name, record.version, record.path)
        started = time.monotonic()
        servable: Servable | None = None
        error: ServingError | None = None
        for attempt in range(self.options.max_num_load_retries + 1):
            try:
                servable = self._load_once(name, record)
                break
            except ServingError as failure:
                error = failure
            self._metrics.inc(m.LOAD_ATTEMPT_COUNT, model_path=record.path, status="fail")
            logger.warning(
                "version load failed model=%s version=%d attempt=%d error=%r",
                name,
                record.version,
                attempt + 1,
                error.message if error else "",
            )
            if attempt < self.options.max_num_load_retries and self._closing.wait(
                self.options.load_retry_interval_seconds
            ):
                break
        with self._cond:
            model = self._models.get(name)
            if servable is not None and not self._closing.is_set():
                self._metrics.inc(m.LOAD_ATTEMPT_COUNT, model_path=record.path, status="success")
                record.servable, record.state, record.error = servable, AVAILABLE, None
                logger.info(
                    "version available model=%s version=%d seconds=%.3f",
                    name,
                    record.version,
                    time.monotonic() - started,
                )
            else:
                if servable is not None:
                    servable.release()
                record.state = END
                record.error = error or ServingError(grpc.StatusCode.CANCELLED, "server is shutting down")
            if model is not None:
                self._reconcile(model)
            self._cond.notify_all()

    def _load_once(self, name: str, record: VersionRecord) -> Servable:
        try:
            servable = self._loader(name, record.version, record.path)
        except LoadError as error:
            raise ServingError(error.code, str(error)) from error
        except Exception as error:  # a loader bug must end in END+error, not a stuck LOADING
            logger.exception("version load crashed model=%s version=%d", name, record.version)
            raise ServingError(grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}") from error
        if self._prepare is not None:
            try:
                self._prepare(servable)
            except WarmupError as error:
                servable.release()
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"warm-up failed: {error}") from error
            except ServingError as error:
                servable.release()
                raise ServingError(error.code, f"warm-up failed: {error.message}") from error
        return servable

    def _start_unload(self, name: str, record: VersionRecord) -> None:
        record.state = UNLOADING
        logger.info("version unloading model=%s version=%d inflight=%d", name, record.version, record.inflight)
        thread = threading.Thread(
            target=self._unload, args=(name, record), name=f"unload-{name}-{record.version}", daemon=True
        )
        self._unloads = [t for t in self._unloads if t.is_alive()]
        self._unloads.append(thread)
        thread.start()

    def _unload(self, name: str, record: VersionRecord) -> None:
        with self._cond:
            while record.inflight > 0:
                self._cond.wait()
            servable, record.servable = record.servable, None
            record.state = END
            model = self._models.get(name)
            if model is not None:
                self._reconcile(model)
            self._cond.notify_all()
        if servable is not None:
            servable.release()
        logger.info("version unloaded model=%s version=%d", name, record.version)

    # -- serving -------------------------------------------------------------------------------

    def resolve_label(self, name: str, label: str) -> int:
        """The version a label points to, or INVALID_ARGUMENT as TF Serving answers."""
        with self._cond:
            model = self._models.get(name)
            if model is not None and label in model.config.labels:
                return model.config.labels[label]
        raise invalid_argument(f"Unrecognized servable version label: {label}")

    @contextlib.contextmanager
    def acquire(self, name: str, version: int | None = None) -> Iterator[Servable]:
        """Hold a servable for one call: the latest AVAILABLE version, or the one asked for."""
        with self._cond:
            model = self._models.get(name)
            record: VersionRecord | None = None
            if model is not None and not model.removed:
                if version is None:
                    available = [r for r in model.versions.values() if r.state == AVAILABLE]
                    record = max(available, key=lambda r: r.version) if available else None
                else:
                    candidate = model.versions.get(version)
                    record = candidate if candidate is not None and candidate.state == AVAILABLE else None
            if record is None or record.servable is None:
                wanted = f"Latest({name})" if version is None else f"Specific({name}, {version})"
                raise not_found(f"Servable not found for request: {wanted}")
            record.inflight += 1
            servable = record.servable
        try:
            yield servable
        finally:
            with self._cond:
                record.inflight -= 1
                if record.inflight == 0:
                    self._cond.notify_all()

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Version states of a model, newest first (GetModelStatus semantics)."""
        with self._cond:
            model = self._models.get(name)
            versions = model.versions if model is not None else {}
            if version is not None:
                record = versions.get(version)
                if record is None:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [VersionStatus(record.version, record.state, record.error)]
            if not versions:
                raise not_found(f"Could not find any versions of model {name}")
            return [
                VersionStatus(r.version, r.state, r.error)
                for r in sorted(versions.values(), key=lambda r: r.version, reverse=True)
            ]

    def model_names(self) -> list[str]:
        """Names of the models being served."""
        with self._cond:
            return sorted(name for name, model in self._models.items() if not model.removed)

    def wait_until_settled(self, timeout: float | None = None, stop: threading.Event | None = None) -> bool:
        """Wait until every model has looked at its base path and each aspired version is
        AVAILABLE or END, as TF Serving waits before opening its ports. False on timeout or stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._settled():
                if stop is not None and stop.is_set():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.2 if remaining is None else min(0.2, remaining))
            return True

    def _settled(self) -> bool:
        for model in self._models.values():
            if model.removed:
                continue
            aspired = model.config.policy.aspired(model.on_disk)
            if not model.scanned or not aspired:
                return False
            if any(v not in model.versions or model.versions[v].state not in (AVAILABLE, END) for v in aspired):
                return False
        return True

    def load_failures(self) -> list[str]:
        """Models with no AVAILABLE version, each with its versions' load errors."""
        failures = []
        with self._cond:
            for name, model in self._models.items():
                if model.removed or any(r.state == AVAILABLE for r in model.versions.values()):
                    continue
                errors = [f"version {r.version}: {r.error.message}" for r in model.versions.values() if r.error]
                failures.append(f"model {name}: " + ("; ".join(errors) or "no version available"))
        return failures

    def close(self, timeout: float = 10.0) -> None:
        """Stop polling, unload every version once its calls are done, stop the loaders."""
        self._closing.set()
        if self._poller is not None:
            self._poller.join(timeout)
        self._loads.shutdown(wait=True, cancel_futures=True)
        with self._cond:
            for name, model in self._models.items():
                for record in model.versions.values():
                    if record.state == AVAILABLE:
                        self._start_unload(name, record)
            threads = list(self._unloads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
