"""The teacher backend: what ``label_dataset`` and the stages that label (distill, evolve, bench) need from a
teacher, whatever runs it.

Four classes implement it: ``llama.Teacher`` (one llama.cpp model in this process), ``server.ServerTeacher``
(a model behind an OpenAI-compatible server, ``--teacher openai:URL``), ``zeroshot.EncoderTeacher`` (the
packaged sentence encoder, ``--teacher encoder``), all on the ``local`` backend, alone or as an
``ensemble.Ensemble`` of several; and ``ray_pool.RayTeacherPool`` (a teacher in each of N Ray actors).
``label`` and ``distill`` open their teacher here on any backend; ``bench`` times a local one; ``evolve`` needs
a ``Writer``. A new backend implements ``TeacherBackend`` and gets a factory in ``FACTORIES`` (and its name in
``config.BACKENDS``); nothing else changes.
Flow is one way: callers import this module, this module imports the backends only when asked for one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..config import AUTO_TEACHER, BACKENDS, DEFAULT_TEACHER, RayConfig, ScoringConfig, TeacherConfig
from ..errors import UserError

if TYPE_CHECKING:  # imported for the annotations only: loading them costs nothing at run time
    from ..registry import ModelFile
    from ..store import LabelRow, ScoringKey


@runtime_checkable
class TeacherBackend(Protocol):
    """A teacher that scores batches of texts against one label set.

    ``key`` identifies its answers in the label store (model sha256 + hash of everything that decides a
    distribution); ``details`` is the provenance recorded with them; ``retried_batches`` counts batches
    sent again after a worker was lost (0 for a backend that cannot lose one).
    """

    key: ScoringKey
    model: ModelFile
    scoring: ScoringConfig
    retried_batches: int
    prompt_style: str  # "chat" (the model's chat template) or "plain"
    members: list | None  # an ensemble's member teachers (each a TeacherBackend); None for one teacher

    @property
    def label_tokens(self) -> list[list[int]] | dict[str, list[list[int]]]:
        """Each label's token ids as the teacher reads them (an ensemble's: by member), recorded in a run."""
        ...

    @property
    def details(self) -> dict: ...

    @property
    def prompt(self) -> str:
        """The prompt as text, ``{text}`` where each text goes."""
        ...

    def use(self, scoring: ScoringConfig) -> None:
        """Ask with ``scoring`` (another prompt) from now on; ``key``, ``scoring`` and ``details`` follow."""
        ...

    def score_batches(self, batches: Iterable[list[str]]) -> Iterator[list[LabelRow]]:
        """Each batch's rows (one LabelRow per text, in the batch's order); batches may finish out of order."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Writer(TeacherBackend, Protocol):
    """A teacher that also writes texts, for ``evolve``: the local llama.cpp teacher (``llama.Teacher``)."""

    @property
    def instruct(self) -> bool:
        """Whether it follows instructions through a chat template (else it gets a plain completion prompt)."""
        ...

    def generate(self, instruction: str, schema: dict, max_tokens: int = 512, temperature: float = 0.9,
                 seed: int = 0, timeout_s: float | None = None):
        """Text for ``instruction`` constrained by the JSON ``schema`` (``llama.Generation``)."""
        ...


def _local(scoring: ScoringConfig, teacher: TeacherConfig, ray: RayConfig, progress: bool) -> TeacherBackend:
    """One llama.cpp model in this process, a model behind an OpenAI-compatible server (``openai:URL``), the
    packaged sentence encoder as a zero-shot teacher (``encoder``), or an ensemble of them (``a,b``)."""
    from .endpoint import is_server
    from .llama import load_teacher
    from .zeroshot import NAME as ENCODER_TEACHER

    if not any(is_server(name) or name == ENCODER_TEACHER for name in teacher.members):
        return load_teacher(scoring, teacher)  # model files only: every one verified before any is loaded
    from .ensemble import Ensemble

    loaded: list = []
    try:  # the members in turn: one that cannot be used fails before the next is loaded
        for name in teacher.members:
            one = replace(teacher, model=name)
            if is_server(name):
                from .server import ServerTeacher

                loaded.append(ServerTeacher(name, scoring, one))
            elif name == ENCODER_TEACHER:
                from .zeroshot import EncoderTeacher

                loaded.append(EncoderTeacher(scoring, one))
            else:
                loaded.append(load_teacher(scoring, one))
    except BaseException:
        for member in loaded:
            member.close()
        raise
    return loaded[0] if len(loaded) == 1 else Ensemble(loaded, teacher.weights)


def _ray(scoring: ScoringConfig, teacher: TeacherConfig, ray: RayConfig, progress: bool) -> TeacherBackend:
    """A teacher in each of N Ray actors, on this machine or a cluster."""
    from .endpoint import is_server
    from .ray_pool import RayTeacherPool

    if any(is_server(name) for name in teacher.members):
        raise UserError("a served teacher (openai:URL) gets its throughput from the server: use --parallel N "
                        "(requests in flight) on --backend local, not --backend ray")
    if "encoder" in teacher.members:
        raise UserError("the encoder teacher takes milliseconds a text in this process: use --backend local")
    if len(teacher.members) > 1:
        raise UserError(f"--backend ray runs one teacher per actor; label with the ensemble {teacher.model!r} "
                        "on --backend local, or with each member on its own Ray run into the same --store")
    return RayTeacherPool(scoring, teacher, ray, progress)


# The backends by name (their names, as choices, are ``config.BACKENDS``): a new one is a factory here.
FACTORIES: dict[str, Callable[[ScoringConfig, TeacherConfig, RayConfig, bool], TeacherBackend]] = {
    "local": _local, "ray": _ray}


def open_backend(scoring: ScoringConfig, teacher: TeacherConfig, backend: str = "local",
                 ray: RayConfig | None = None, progress: bool = True) -> TeacherBackend:
    """Load the teacher ``teacher`` describes on ``backend`` (a name in ``FACTORIES``)."""
    if backend not in FACTORIES:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if teacher.model == AUTO_TEACHER:
        raise UserError(f"--teacher {AUTO_TEACHER} is a choice distill makes on its pool; here name the teacher "
                        f"(e.g. {DEFAULT_TEACHER}, or {DEFAULT_TEACHER},encoder for both)")
    return FACTORIES[backend](scoring, teacher, ray or RayConfig(), progress)
