"""``label --backend ray``: the teacher, loaded once in each of N Ray actors, scores batches for the driver.

Flow is one way, as in the local backend: ``label_dataset`` decides which texts the store lacks, cuts
them into batches and hands them to ``RayTeacherPool.score_batches``, which keeps every actor busy and
yields each batch's rows as it finishes; the driver alone writes the store. A batch whose actor dies
(killed, out of memory, node lost) is sent to another actor; Ray restarts the dead one, which reloads
its teacher. Only texts the store lacks are ever sent, so a killed driver resumes like a local run.

Every actor resolves the teacher on its own node (a registry name from that node's installed packages,
or a path that must exist there) and reports its store key; actors that disagree (a different file on
some node) stop the run before anything is written.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace

from ..config import RayConfig, ScoringConfig, TeacherConfig
from ..errors import MissingDependencyError, UserError
from ..files import one_line
from ..store import LabelRow

MAX_RESTARTS = 3  # per actor: enough for the odd killed worker, not a crash loop on a model that cannot load
REST_S = 10.0  # an actor that lost a batch gets no new work for this long (Ray is restarting it)


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--backend ray needs Ray: pip install 'llkd-edge[ray]'") from None
    return ray


class TeacherWorker:
    """One Ray actor's state: a loaded teacher (or the one-line reason it could not be loaded)."""

    def __init__(self, scoring: ScoringConfig, config: TeacherConfig):
        from .llama import load_teacher

        self.error: str | None = None
        try:
            self.teacher = load_teacher(scoring, config)
        except UserError as exc:  # reported by describe(); raising here would only make Ray restart us
            self.teacher, self.error = None, str(exc)

    def describe(self) -> dict:
        import ray

        where = {"pid": os.getpid(), "node": ray.util.get_node_ip_address()}
        if self.error:
            return {**where, "error": self.error}
        t = self.teacher
        return {**where, "key": t.key, "model": t.model, "details": t.details}

    def score(self, texts: list[str]) -> list[LabelRow]:
        return self.teacher.score(texts)

    def use(self, scoring: ScoringConfig) -> dict:
        self.teacher.use(scoring)
        return self.describe()

    def pid(self) -> int:
        return os.getpid()


def worker_teacher_config(config: TeacherConfig, ray_config: RayConfig) -> TeacherConfig:
    """Each actor's teacher: its reserved CPUs as threads; GPU layers only where it reserved a GPU."""
    if ray_config.gpus_per_worker == 0 and config.n_gpu_layers:
        raise UserError("--n-gpu-layers with --backend ray needs --gpus-per-worker (each worker's GPU share)")
    layers = config.n_gpu_layers if ray_config.gpus_per_worker > 0 else 0
    return replace(config, n_threads=ray_config.cpus_per_worker, n_gpu_layers=layers)


class RayTeacherPool:
    """N teacher actors behind one ``backend.TeacherBackend``: batches go to the least busy actor."""

    def __init__(self, scoring: ScoringConfig, config: TeacherConfig, ray_config: RayConfig, progress: bool = True):
        ray = _ray()
        self._ray = ray
        self.scoring = scoring
        self.ray_config = ray_config
        self.progress = progress
        self.retried_batches = 0
        self._started = False
        self._actors: list = []
        worker_config = worker_teacher_config(config, ray_config)
        if not ray.is_initialized():
            _check_reachable(ray_config.address)
            try:
                ray.init(address=ray_config.address, include_dashboard=False, logging_level="WARNING",
                         configure_logging=True, log_to_driver=False)
            except Exception as exc:  # Ray raises ConnectionError, ValueError, RuntimeError or its own types
                where = ray_config.address or "a new local instance"
                raise UserError(f"cannot start or reach Ray ({where}): {one_line(exc, limit=200, first_line=True)}") from None
            self._started = True
        self._check_resources()
        actor = ray.remote(TeacherWorker).options(
            num_cpus=ray_config.cpus_per_worker, num_gpus=ray_config.gpus_per_worker,
            max_restarts=MAX_RESTARTS,  # a dead actor comes back (and reloads its teacher), a few times
            max_task_retries=0,  # its lost batch is ours to resend, to another actor
        )
        try:
            self._actors = [actor.remote(scoring, worker_config) for _ in range(ray_config.workers)]
            first = _agreed(ray.get([a.describe.remote() for a in self._actors]))
        except ray.exceptions.RayActorError as exc:  # crashed while loading (e.g. llama.cpp died), restarts spent
            self.close()
            raise UserError(f"a Ray worker died while loading the teacher: {one_line(exc, limit=200, first_line=True)}") from None
        except BaseException:
            self.close()
            raise
        self._described(first)

    def _described(self, first: dict) -> None:
        self.key = first["key"]
        self.model = first["model"]
        self.details = {**first["details"], "backend": "ray", "workers": self.ray_config.workers, "nodes": first["nodes"]}

    members = None  # one teacher in every actor, not an ensemble

    @property
    def label_tokens(self) -> list[list[int]]:
        return self.details["label_tokens"]

    @property
    def prompt_style(self) -> str:
        return self.details["prompt_style"]

    @property
    def prompt(self) -> str:
        return self.details["prompt_prefix"] + "{text}" + self.details["prompt_suffix"]

    def use(self, scoring: ScoringConfig) -> None:
        """Every actor asks with ``scoring`` from now on (``Teacher.use``): prompt choice runs through the pool."""
        self._described(_agreed(self._ray.get([a.use.remote(scoring) for a in self._actors])))
        self.scoring = scoring

    def _check_resources(self) -> None:
        """Refuse a pool the cluster can never hold (its actors would wait for ever)."""
        total = self._ray.cluster_resources()
        rc = self.ray_config
        for name, each in (("CPU", rc.cpus_per_worker), ("GPU", rc.gpus_per_worker)):
            need, have = rc.workers * each, total.get(name, 0)
            if need > have:
                raise UserError(f"{rc.workers} workers x {each:g} {name}s need {need:g} {name}s but the Ray cluster "
                                f"has {have:g}; lower --workers or --{name.lower()}s-per-worker")

    def pids(self, wait_s: float = 120.0) -> list[int]:
        """Each actor's current process id (it changes when Ray restarts the actor; a restarting one is waited for)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self._ray.get([a.pid.remote() for a in self._actors])
            except self._ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def score_batches(self, batches: Iterable[list[str]]) -> Iterator[list[LabelRow]]:
        """Each batch's rows, in the order the batches finish (not the order given)."""
        ray = self._ray
        rc = self.ray_config
        queue = iter(batches)
        pending: dict = {}  # ObjectRef -> (texts, actor index, attempt)
        load = [0] * len(self._actors)  # batches in flight per actor
        resting: dict[int, float] = {}  # actor index -> until when it gets no work (it just lost a batch)

        def send(texts: list[str], attempt: int) -> None:
            now = time.monotonic()
            ready = [i for i in range(len(self._actors)) if resting.get(i, 0.0) <= now] or range(len(self._actors))
            i = min(ready, key=lambda j: load[j])  # the least busy: a faster node ends up doing more
            load[i] += 1
            pending[self._actors[i].score.remote(texts)] = (texts, i, attempt)

        for texts in itertools.islice(queue, rc.workers * rc.in_flight):
            send(texts, 1)
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            texts, i, attempt = pending.pop(done)
            load[i] -= 1
            try:
                rows = ray.get(done)
            except ray.exceptions.RayActorError as exc:  # died, or still restarting (ActorUnavailableError)
                if attempt >= rc.attempts:
                    raise UserError(f"a batch of {len(texts)} texts was lost {attempt} times (its Ray workers died: "
                                    f"{one_line(exc, limit=200, first_line=True)}); finished batches are saved, run again to resume") from None
                self.retried_batches += 1
                resting[i] = time.monotonic() + REST_S
                if self.progress:
                    print(f"Ray worker {i} lost a batch of {len(texts)} texts (it died or is restarting); "
                          "sending the batch to another worker", file=sys.stderr)
                send(texts, attempt + 1)
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else None
                if isinstance(cause, UserError):
                    raise cause from None
                raise
            yield rows
            nxt = next(queue, None)
            if nxt is not None:
                send(nxt, 1)

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
        if self._started:
            self._ray.shutdown()
            self._started = False


def _agreed(described: list[dict]) -> dict:
    """The workers' common description (with every node listed), or the one-line reason there is none."""
    for i, d in enumerate(described):
        if "error" in d:
            raise UserError(f"Ray worker {i} (node {d['node']}): {d['error']}")
    first = described[0]
    for i, d in enumerate(described[1:], 1):
        if d["key"] != first["key"]:
            raise UserError(
                f"Ray workers disagree about the teacher: worker 0 (node {first['node']}) has sha256 "
                f"{first['key'].teacher_sha256[:12]}, worker {i} (node {d['node']}) {d['key'].teacher_sha256[:12]}; "
                "every node needs the same GGUF file")
    return {**first, "nodes": sorted({d["node"] for d in described})}


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address must accept a connection: Ray itself retries for minutes."""
    if not address or ":" not in address.removeprefix("ray://"):
        return  # none (a local instance), or "auto": Ray finds it on this machine
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        raise UserError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); is `ray start --head` "
                        "running there?") from None

