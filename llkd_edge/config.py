"""Configuration as data: frozen dataclasses, validated on construction, saved with every artefact."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from .errors import LabelSpecError, UserError
from .labelset import LabelSet  # noqa: F401  (configs hold one; imported from here by most callers)

DEFAULT_TEACHER = "gemma3-270m"
AUTO_TEACHER = "auto"  # distill --teacher auto: the LLM, or its pool with the encoder teacher (labels/teacher_choice.py)
DEFAULT_TASK = "Classify the text into one of the categories"
DEFAULT_CONTENT_FREE = ("N/A", "", "[MASK]")
DEFAULT_ANSWER_CUE = "Category:"


def stable_hash(obj) -> str:
    """sha256 of the canonical JSON form of ``obj`` (dict key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# Field metadata for settings that decide how work is spread (cores, devices, where labels are cached), not
# what is computed: two runs that differ only in these are the same run (``identity``).
RUNTIME = {"identity": False}


def identity(config) -> dict:
    """``asdict(config)`` without the fields marked ``RUNTIME``, at any depth: what makes a run that run."""
    return {f.name: identity(v) if is_dataclass(v := getattr(config, f.name)) else copy.deepcopy(v)
            for f in fields(config) if f.metadata.get("identity", True)}


def choice(choices: tuple, default, **metadata):
    """A field whose value must be one of ``choices``: ``check_choices`` refuses any other, and the CLI offers
    exactly these (and the default) for the option of the same name (cli.config_option)."""
    return field(default=default, metadata={"choices": choices, **metadata})


def check_choices(config) -> None:
    """Every ``choice`` field of ``config`` holds one of its choices, else one line naming the option."""
    for f in fields(config):
        value, choices = getattr(config, f.name), f.metadata.get("choices")
        if choices is not None and value not in choices:
            option = f.metadata.get("option", "--" + f.name.replace("_", "-"))
            raise UserError(f"unknown {option} {value!r}; use one of {', '.join(map(str, choices))}")


def _at_least_one(config, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")


@dataclass(frozen=True)
class ScoringConfig:
    """Everything that changes the teacher's distribution for a text (so it is part of the store key)."""

    labels: LabelSet
    task: str = DEFAULT_TASK
    calibrate: bool = True
    content_free: tuple[str, ...] = DEFAULT_CONTENT_FREE
    max_text_tokens: int = 256
    few_shot: tuple[tuple[str, str], ...] = ()
    answer_cue: str = DEFAULT_ANSWER_CUE  # what the answer follows in a plain (non-chat) prompt

    def __post_init__(self) -> None:
        if not self.answer_cue.strip():
            raise UserError("the answer cue is empty")
        if self.max_text_tokens < 1:
            raise UserError(f"--max-text-tokens must be at least 1, got {self.max_text_tokens}")
        if not self.task.strip():
            raise UserError("the task description is empty")
        if self.calibrate and not self.content_free:
            raise UserError("calibration needs at least one content-free input")
        unknown = sorted({label for _, label in self.few_shot if label not in self.labels.names})
        if unknown:
            raise LabelSpecError(f"few-shot examples use labels not in the label set: {', '.join(unknown)}")

    @classmethod
    def from_dict(cls, d: dict) -> ScoringConfig:
        """Read back ``asdict(config)`` as saved in a run's config.json."""
        return cls(
            labels=LabelSet(tuple(d["labels"]["names"]), tuple(d["labels"]["verbalisers"])),
            task=d["task"],
            calibrate=d["calibrate"],
            content_free=tuple(d["content_free"]),
            max_text_tokens=d["max_text_tokens"],
            few_shot=tuple(tuple(x) for x in d["few_shot"]),
            answer_cue=d.get("answer_cue", DEFAULT_ANSWER_CUE),  # configs written before prompts were chosen
        )


MAX_PARALLEL = 64  # sequences per decode; llama.cpp's own limit is 256


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


WEIGHT_MARK = "*"  # --teacher a,b*2: b's weight in the ensemble's log-linear pool
MAX_WEIGHT = 1e6  # a member's largest weight: the pool's sum of weights stays finite


@dataclass(frozen=True)
class TeacherConfig:
    """How to run the teacher (does not change its answers, so not part of the store key)."""

    model: str = DEFAULT_TEACHER
    n_threads: int = field(default_factory=default_threads, metadata=RUNTIME)
    # None: all layers when the llama.cpp build can offload, else none; -1: all
    n_gpu_layers: int | None = field(default=None, metadata=RUNTIME)
    n_ctx: int = 0  # 0: just enough for the prompt plus max_text_tokens
    # texts scored per llama.cpp decode (multi-sequence batching); 0: 8 on a GPU, 1 on a CPU;
    # for a teacher behind a server (openai:URL): requests in flight, 0: 8
    parallel: int = field(default=0, metadata=RUNTIME)

    def __post_init__(self) -> None:
        names = self.members
        if not all(names) or len(set(names)) < len(names):
            raise UserError(f"--teacher {self.model!r}: give one teacher, or several distinct ones separated by "
                            "commas (an ensemble)")
        self.weights  # noqa: B018  (a bad weight fails here, with the option's name)
        if self.n_threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.n_threads}")
        if self.n_gpu_layers is not None and self.n_gpu_layers < -1:
            raise UserError(f"--n-gpu-layers must be -1 (all), 0 or more, got {self.n_gpu_layers}")
        if not 0 <= self.parallel <= MAX_PARALLEL:
            raise UserError(f"--parallel must be between 0 (auto) and {MAX_PARALLEL}, got {self.parallel}")

    @property
    def members(self) -> tuple[str, ...]:
        """The teacher names in ``model``: one, or an ensemble's (``a,b,...``; ensemble.py), weights left off."""
        return tuple(name.split(WEIGHT_MARK)[0].strip() for name in self.model.split(","))

    @property
    def weights(self) -> tuple[float, ...] | None:
        """An ensemble's member weights in the pool (``a,b*2``: b counts twice; unmarked members 1); None when
        no member is weighted (equal weights, as ensembles always pooled)."""
        parts = [name.split(WEIGHT_MARK) for name in self.model.split(",")]
        if all(len(p) == 1 for p in parts):
            return None
        if len(parts) < 2:
            raise UserError(f"--teacher {self.model!r}: a weight ({WEIGHT_MARK}N) is for an ensemble's member")
        weights = []
        for part in parts:
            try:
                weight = float(part[1]) if len(part) == 2 else 1.0 if len(part) == 1 else -1.0
            except ValueError:
                weight = -1.0
            if not (0 < weight <= MAX_WEIGHT):
                raise UserError(f"--teacher {self.model!r}: a member's weight is a positive number up to {MAX_WEIGHT:g} "
                                f"after {WEIGHT_MARK} (e.g. {DEFAULT_TEACHER},encoder{WEIGHT_MARK}2)")
            weights.append(weight)
        return None if len(set(weights)) == 1 else tuple(weights)  # a*2,b*2 pools as a,b does


BACKENDS = ("local", "ray")
PROMPT_MODES = ("auto", "fixed")
LABEL_ROLES = ("auto", "pool", "eval")  # what `label` marks its texts as in the store (auto: eval for a test split)
# --relabel probe needs the probe to reproduce the teacher's labels at least this far from chance to perfect
# (labels.signal's kappa): below it the probe learns the labels' noise and only makes them surer. Set on 600-text
# pools: any floor from 0.17 to 0.39 splits the five built-in sets the same way on every seed (slo-sentiment,
# 0.15-0.17, is the one where relabelling cost the student); 0.25 keeps every 60%-right synthetic teacher on the
# topic sets (lowest 0.29). A probe learns less from fewer texts, so on small pools the floor errs towards leaving
# the labels as they are. bench/RESULTS.md, "Signal or chance".
RELABEL_MIN_KAPPA = 0.25


@dataclass(frozen=True)
class RayConfig:
    """Where and how ``label --backend ray`` runs its teacher actors (none of it changes the labels)."""

    address: str | None = None  # None: join the Ray instance this process already has, else start a local one
    workers: int = 2  # actors, each holding one loaded teacher
    cpus_per_worker: int = 1  # reserved per actor; also its llama.cpp threads
    gpus_per_worker: float = 0.0  # reserved per actor; > 0 offloads the teacher's layers to that GPU
    in_flight: int = 2  # batches queued per actor, so none waits for the driver between batches
    attempts: int = 3  # a batch whose worker dies is sent elsewhere, up to this many tries in all

    def __post_init__(self) -> None:
        _at_least_one(self, "workers", "cpus_per_worker", "in_flight", "attempts")
        if self.gpus_per_worker < 0:
            raise UserError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")


@dataclass(frozen=True)
class LabelRunConfig:
    """One ``llkd-edge label`` run."""

    data: str
    scoring: ScoringConfig
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    store: str = "labels.sqlite"
    text_column: str = "text"
    label_column: str | None = None
    limit: int | None = None
    out: str | None = None
    commit_every: int = 16
    backend: str = choice(BACKENDS, "local")
    ray: RayConfig = field(default_factory=RayConfig)
    role: str = choice(LABEL_ROLES, "auto")
    prompt: str = choice(PROMPT_MODES, "fixed")  # auto: choose the prompt on a sample (prompts.choose); fixed: as given
    prompt_sample: int = 12  # texts each candidate prompt is tried on (12 x 12 candidates: 14% of labelling 1000)
    gold: str | None = None  # a few gold-labelled texts (--gold): the teacher's accuracy on them is reported
    budget: LabelBudget | None = None  # --budget: label only the part of DATA that active rounds pick
    seed: int = 0  # the rounds' seed (with --budget)

    def __post_init__(self) -> None:
        check_choices(self)
        if self.budget is not None and self.role not in ("auto", "pool"):
            raise UserError("--budget picks training texts: it labels a pool, not held-out texts (--role)")
        _at_least_one(self, "prompt_sample")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
        if self.commit_every < 1:
            raise UserError("commit_every must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)


SELECTION_METHODS = ("llkd", "all", "random", "confidence", "uncertainty", "topk")
POOL_CALIBRATIONS = ("none", "batch")  # "em" (distributions.pool_divisor) restores the bias: RESULTS.md
NEED_PASSES = ("train", "eval")  # where the student's need (normalised entropy) is read; see TrainConfig.need_pass
DEVICES = ("auto", "cpu", "cuda")
HEADS = ("random", "probe", "auto")  # how the student's head starts (student/head.py; auto: head.auto_head)
# which texts the --label-budget rounds pick (active.py); random won or tied in bench/active.py
STRATEGIES = ("active", "balanced", "confident", "coverage", "random")
# LLKD rule variants (selection.LlkdRule, bench/llkd_rules.py): the first of each is the paper's rule
LLKD_STUDENT_STATS = ("all", "teacher")
LLKD_CLASS_TERMS = ("mean", "mass", "pool-median")
LLKD_WEIGHTS = ("product", "conf", "one")


DEFAULT_EPOCHS = 4  # a student's passes over the pool unless models/students.toml gives it its own


def _student_default(student: str, key: str, fallback):
    """``key`` from the registered student ``student`` (models/students.toml); ``fallback`` for a model folder."""
    from .registry import registry

    return registry("students").get(student, {}).get(key, fallback)


@dataclass(frozen=True)
class TrainConfig:
    """How the student is built and trained (all of it decides the result, so all of it is saved)."""

    student: str = "minilm-l6"  # "auto": the best registered student within max_latency_ms here (deploy/latency.py)
    max_latency_ms: float | None = None  # with student "auto": the budget per text at batch 1, through the runtime
    selection: str = choice(SELECTION_METHODS, "llkd")
    soft_labels: bool = False
    # probe: the head starts as a logistic regression on the student's own features of the pool (student/head.py);
    # auto: probe where the signal test's kappa clears RELABEL_MIN_KAPPA, else random (decided in distill, from the
    # labels, and recorded resolved); None: the student's registered default (students.toml `head`, else random)
    head: str | None = None
    epochs: int | None = None  # None: the student's registered count (students.toml `epochs`, else DEFAULT_EPOCHS)
    batch_size: int = 32
    max_length: int = 128
    learning_rate: float | None = None  # None: the student's registered default
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    # Loss weight of a gold-labelled (--gold) sample; the selected teacher-labelled ones average 1.
    gold_weight: float = 3.0
    momentum: float = 0.9  # of the LLKD threshold EMAs
    topk_ratio: float = 0.5
    # The student's need for LLKD/uncertainty/random selection: "train" reads it from the training forward pass
    # (dropout on, free); "eval" from an extra no-grad pass in eval mode (no dropout noise, ~1/3 more compute).
    need_pass: str = choice(NEED_PASSES, "train")
    # LLKD's rule (selection.LlkdRule; bench/llkd_rules.py measures the variants)
    llkd_student_stats: str = choice(LLKD_STUDENT_STATS, "all")
    llkd_class_terms: str = choice(LLKD_CLASS_TERMS, "mean")
    # distill's default: every teacher-passed sample is kept and the student's need only weights (1.0); 0.0 is
    # the paper's rule, where the need also gates. With the default student over three built-in sets (3 seeds) the
    # two tie on the mean and only 1.0 is at or above `all` on every set (bench/RESULTS.md "LLKD's rule, varied").
    llkd_floor: float = 1.0
    llkd_weights: str = choice(LLKD_WEIGHTS, "product")
    llkd_warmup: float = 0.0  # share of the training steps before the student gate opens
    seed: int = 0
    threads: int = field(default_factory=default_threads, metadata=RUNTIME)
    # auto: CUDA when torch sees a GPU (bf16 autocast where the GPU supports it), else CPU
    device: str = choice(DEVICES, "auto", **RUNTIME)

    def __post_init__(self) -> None:
        check_choices(self)
        if (self.student == "auto") != (self.max_latency_ms is not None):
            raise UserError("--student auto and --max-latency-ms go together: auto picks the best student that runs "
                            "within the budget here")
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            raise UserError(f"--max-latency-ms must be positive, got {self.max_latency_ms}")
        # resolved here, so the run's record holds the number it trained with (auto: once a student is chosen)
        if self.epochs is None and self.student != "auto":
            object.__setattr__(self, "epochs", _student_default(self.student, "epochs", DEFAULT_EPOCHS))
        if self.head is None and self.student != "auto":
            object.__setattr__(self, "head", _student_default(self.student, "head", None))
        if self.head is not None and self.head not in HEADS:
            raise UserError(f"--head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if not 0 <= self.llkd_floor <= 1:
            raise UserError(f"llkd_floor must be in [0, 1], got {self.llkd_floor}")
        if not 0 <= self.llkd_warmup < 1:
            raise UserError(f"llkd_warmup must be in [0, 1), got {self.llkd_warmup}")
        _at_least_one(self, *(("epochs",) if self.epochs is not None else ()), "batch_size", "max_length", "threads")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise UserError(f"--learning-rate must be positive, got {self.learning_rate}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"--momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.topk_ratio <= 1:
            raise UserError(f"--topk-ratio must be in (0, 1], got {self.topk_ratio}")
        if not self.gold_weight > 0:
            raise UserError(f"--gold-weight must be positive, got {self.gold_weight}")


@dataclass(frozen=True)
class LabelBudget:
    """``--label-budget``: the teacher labels only part of the pool, in rounds chosen by ``active.py``."""

    budget: float  # (0, 1]: a share of the pool; above 1: a count of texts
    # or "active", "balanced", "confident", "coverage" (active.py); random won or tied in bench/active.py
    strategy: str = choice(STRATEGIES, "random", option="--label-strategy")
    step: float = 0.05  # texts per round: a share of the pool (at least 2 per label)
    fill_rest: bool = True  # distill: the student also learns the rest, labelled by the rounds' probe (label: off)

    def __post_init__(self) -> None:
        check_choices(self)
        if not self.budget > 0 or (self.budget > 1 and self.budget != int(self.budget)):
            raise UserError(f"--label-budget must be a share in (0, 1] or a whole count of texts, got {self.budget}")
        if not 0 < self.step <= 1:
            raise UserError(f"--label-step must be a share of the pool in (0, 1], got {self.step}")


@dataclass(frozen=True)
class DistillConfig:
    """One ``llkd-edge distill`` run: label the pool (through the store), train, evaluate."""

    data: str
    out: str
    scoring: ScoringConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    eval: str | None = None
    # None: DATA itself when DATA is a label store, else labels.sqlite
    store: str | None = field(default=None, metadata=RUNTIME)
    text_column: str = "text"
    label_column: str | None = None
    limit: int | None = None
    eval_limit: int | None = None
    min_per_class: int = 5
    # How the pool's teacher distributions are read before training: "batch" divides out the teacher's mean
    # distribution over the pool (distributions.batch_calibrated), "none" takes them as stored. batch is the
    # default: it raised every student of bench/calibration.py, on three datasets and three seeds.
    pool_calibration: str = choice(POOL_CALIBRATIONS, "batch")
    prompt: str = choice(PROMPT_MODES, "fixed")  # auto: choose the prompt on a sample of the pool (prompts.choose)
    prompt_sample: int = 12
    gold: str | None = None  # a few gold-labelled texts (--gold): judge the teacher, correct it, train on them
    label_budget: LabelBudget | None = None  # None: the teacher labels the whole pool
    # "probe": the teacher's pool distributions times a cross-fitted probe's (relabel.py); None: as they are.
    # probe is the default: it made more pool labels right on all four built-in sets and raised the student on
    # bbc-news and 20newsgroups in both study regimes (bench/RESULTS.md). With --gold it is not applied: the gold
    # texts' probe corrects the teacher's labels instead (gold.py). Nor (decided in distill, from the labels) when
    # the probe cannot reproduce the teacher's labels (labels.signal kappa under RELABEL_MIN_KAPPA): there it only
    # made noisy labels surer.
    relabel: str | None = choice((None, "probe"), "probe")
    # auto: where the student ends below its teacher on the eval texts, students on 25% and 50% of the pool say
    # whether more teacher-labelled texts are likely to help (student/curve.py); always; off. Not part of the run.
    learning_curve: str = choice(("auto", "always", "off"), "auto", **RUNTIME)
    backend: str = choice(BACKENDS, "local", **RUNTIME)  # where the teacher runs (teacher/backend.FACTORIES)
    ray: RayConfig = field(default_factory=RayConfig, metadata=RUNTIME)  # with backend "ray"

    def __post_init__(self) -> None:
        check_choices(self)
        if self.gold:  # not applied with --gold, so not recorded as applied (config.json, the run's identity)
            object.__setattr__(self, "relabel", None)
        _at_least_one(self, "prompt_sample")
        for name in ("limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.min_per_class < 1:
            raise UserError("--min-per-class must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)


VAL_LABELS = ("auto", "gold", "teacher")


@dataclass(frozen=True)
class EvolveConfig:
    """``llkd-edge evolve``: rounds of LLM-written examples aimed at a distill run's student's weaknesses."""

    run_dir: str  # the finished distill run to start from
    out: str
    rounds: int = 3
    per_round: int = 24  # texts asked for per round
    per_request: int = 4  # texts asked for in one generation
    teacher: str | None = None  # the generator and verifier; None: the run's teacher
    val: str | None = None  # validation texts; None: the rows of the run's DATA after its --limit
    val_limit: int = 200
    val_labels: str = choice(VAL_LABELS, "auto")  # gold when every validation text has one, else the teacher's
    min_confidence: float = 0.5  # the teacher must give the intended label at least this probability
    hard_share: float = 0.75  # of each class's texts, the share aimed at its worst confusion
    prompt_examples: int = 3  # student mistakes shown per request
    near_duplicate: float = 0.85  # cosine similarity (TF-IDF, character 3-5 grams) that counts as a copy
    min_words: int = 8
    max_new_tokens: int = 960  # per generation; each text's length is capped so that all of them fit
    temperature: float = 0.9
    retries: int = 2  # more attempts for a generation that does not parse
    timeout_s: float = 180.0  # per generation
    seed: int = 0
    threads: int = field(default_factory=default_threads, metadata=RUNTIME)
    n_gpu_layers: int | None = field(default=None, metadata=RUNTIME)

    def __post_init__(self) -> None:
        _at_least_one(self, "rounds", "per_round", "per_request", "val_limit", "min_words", "max_new_tokens", "threads")
        for name in ("retries", "prompt_examples"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(self, name)}")
        for name in ("min_confidence", "hard_share", "near_duplicate"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        check_choices(self)
        if not self.temperature >= 0:
            raise UserError(f"--temperature must be at least 0, got {self.temperature}")
        if not self.timeout_s > 0:
            raise UserError(f"--timeout must be positive, got {self.timeout_s}")
        if Path(self.out).resolve() == Path(self.run_dir).resolve():
            raise UserError(f"--out {self.out} is the source run itself; choose a new folder")
