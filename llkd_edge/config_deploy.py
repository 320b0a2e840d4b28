"""The deploy stage's configs (export, bench, serve): frozen dataclasses, validated on construction, saved with
every artefact, made like the others (``config.choice``, ``config.RUNTIME``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import DEVICES, RUNTIME, _at_least_one, check_choices, choice, default_threads
from .errors import UserError

OPTIMIZE_LEVELS = ("O1", "O2", "none")
QUANTIZE_MODES = ("int8", "static", "both", "none")
KEEP_MODES = ("all", "default")  # export: every variant written, or only the one the folder serves (smallest folder)


@dataclass(frozen=True)
class ExportConfig:
    """``llkd-edge export``: a distill run -> an ONNX model folder, with a parity report and an int8 gate."""

    run_dir: str
    out: str = field(metadata=RUNTIME)  # where the model folder goes, not what it holds
    optimize: str = choice(OPTIMIZE_LEVELS, "O2")
    quantize: str = choice(QUANTIZE_MODES, "int8")  # dynamic; "static" (calibrated) and "both" go through the same gate
    keep: str = choice(KEEP_MODES, "all")
    max_accuracy_drop: float = 0.01  # int8 may lose at most this much accuracy against fp32 ...
    min_agreement: float = 0.99  # ... and must give fp32's label on at least this share of texts
    check_limit: int | None = 1000  # texts for the parity check
    threads: int = field(default_factory=default_threads, metadata=RUNTIME)

    def __post_init__(self) -> None:
        check_choices(self)
        if not 0 <= self.min_agreement <= 1:
            raise UserError(f"--min-agreement must be in [0, 1], got {self.min_agreement}")
        if self.check_limit is not None and self.check_limit < 1:
            raise UserError(f"--check-limit must be at least 1, got {self.check_limit}")
        if self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")


@dataclass(frozen=True)
class BenchConfig:
    """``llkd-edge bench``: teacher, PyTorch student and ONNX variants timed side by side on the same texts."""

    model_dir: str
    run_dir: str | None = None  # None: the run recorded in the model folder, when it still exists
    teacher: str | None = None  # None: the run's teacher; "none": leave the teacher out
    data: str | None = None  # None: the run's eval texts
    text_column: str = "text"
    label_column: str | None = None
    limit: int = 100
    batch_size: int = 32
    rounds: int = 3
    threads: int = field(default_factory=default_threads)
    out: str | None = None  # None: MODEL_DIR/bench
    device: str = choice(DEVICES, "cpu")  # where the students run: cpu, cuda (ONNX Runtime's CUDA provider, PyTorch on the GPU), auto

    def __post_init__(self) -> None:
        check_choices(self)
        _at_least_one(self, "limit", "batch_size", "rounds", "threads")


@dataclass(frozen=True)
class ServeConfig:
    """``llkd-edge serve``: an exported model over HTTP, with the limits that keep one client from taking the
    others down (deploy/serve.py)."""

    model_dir: str
    host: str = "127.0.0.1"  # loopback: see SECURITY.md before binding anything else
    port: int = 8000
    threads: int | None = None
    variant: str | None = None
    max_texts: int = 256  # per request
    max_body: int = 1_000_000  # bytes per request body (else 413)
    js_libs: str | None = None  # a node_modules folder holding the page's libraries; None: the repo's, else CDN
    allowed_hosts: tuple[str, ...] = ()  # Host header names allowed besides localhost and the bind address; "*": any
    read_timeout: float = 10.0  # seconds a client may take to send a request's head, then its body, or take a reply
    max_queue: int = 256  # requests waiting for the model; more are answered 503
    max_connections: int = 512  # open connections (uvicorn's limit_concurrency, answered 503); well under the fd limit

    def __post_init__(self) -> None:
        if self.max_texts < 1 or self.max_body < 1:
            raise UserError("--max-texts and --max-body must be at least 1")
        if not self.read_timeout > 0:
            raise UserError("--read-timeout must be more than 0 seconds")
        if self.max_queue < 1 or self.max_connections < 1:
            raise UserError("the queue and connection limits must be at least 1")
