"""Sample selection for distillation: LLKD and the baselines it must beat. Pure numpy, no torch.

Every function takes one training batch as arrays:

* ``conf``   shape (N,): the teacher's probability of its pseudo-label (from the label store);
* ``need``   shape (N,): the student's information need, the entropy of its current prediction
             divided by log K, so in [0, 1] (computed in the same forward pass that trains on the batch);
* ``pseudo`` shape (N,): the pseudo-label (class index in [0, K));

and returns ``(mask, weights, state)``: a boolean mask of shape (N,), non-negative finite weights of
shape (N,) (zero where not selected), and the new thresholding state (states are immutable).

LLKD (Li et al., NAACL Findings 2025) keeps a sample when the teacher is confident *and* the student
still has something to learn, with thresholds that adapt to the global training state and to each class:

    global EMAs  (m = momentum, batch means over the batch):
        g_T <- m g_T + (1 - m) mean(conf)            g_S <- m g_S + (1 - m) mean(need)
    class EMAs, for each pseudo-class c present in the batch (means over its samples):
        p_T(c) <- m p_T(c) + (1 - m) mean(conf | c)  p_S(c) <- m p_S(c) + (1 - m) mean(1 - need | c)
    thresholds (FreeMatch's self-adaptive pattern: global value scaled by the class's EMA relative to
    the largest class EMA):
        tau_T(c) = g_T * p_T(c) / max_c' p_T(c')     tau_S(c) = g_S * p_S(c) / max_c' p_S(c')
    select i  iff  conf_i >= tau_T(pseudo_i)  and  need_i >= tau_S(pseudo_i)

p_T(c) is how sure the teacher is about class c, and p_S(c) = 1 - mean need is how far the student has
got with class c. A class that lags on either (the teacher finds it hard, or the student has not learnt
it yet) has a smaller ratio and so a lower bar, which keeps it from being starved of samples; the
leading class faces the full global bar. (For the student the class EMA is taken on 1 - need, its
progress, rather than on need itself, so that "lagging" means the same thing for both signals.)

Weights: for a selected sample w_i = conf_i * need_i, rescaled so the selected weights average 1 (the
loss then has the scale of plain cross-entropy). A confident teacher makes a label trustworthy, a
student in need makes it informative; the product favours samples that are both. If every selected
sample has conf * need = 0 (a student certain of everything), the selected weights are all 1.

**What distill does by default** (``TrainConfig.llkd_floor = 1.0``, ``--llkd-floor``): the rule above with a full
floor, so every sample that passes the teacher's bar is kept and the student's need enters through the weights
only (w_i = conf_i * need_i): select i iff conf_i >= tau_T(pseudo_i). Why: with the default student on three
built-in sets over 3 seeds, the paper's student gate won one set and lost another and the two tie on the mean,
but only the full floor is at or above ``all`` on every set, and its seeds vary less (figures in bench/RESULTS.md,
"LLKD's rule, varied").
``--llkd-floor 0`` is the paper's rule; ``random`` draws as many samples per batch as the rule in force keeps.

``LlkdRule`` holds the variants issue 16's study measures (bench/llkd_rules.py); its defaults are the paper's rule:

* ``student_stats="teacher"``: the student EMAs (global and per class) are folded over the teacher-passed
  samples only, so samples the teacher gate already rejected (often wrong, so high need) do not raise the bar;
* ``class_terms="mass"``: the teacher's class EMA is FreeMatch's, the batch mean over *all* samples of
  conf * [pseudo = c], which carries the class's frequency (a class the teacher rarely names gets a low bar);
* ``class_terms="pool-median"``: a fixed teacher bar per class, the median of the teacher's confidence over the
  pool's samples of that class (``pool_median_bars``), so the surer half of every class passes, rare ones included;
* ``floor=f``: of the teacher-passed samples, at least the top share f by need is always kept, so the student
  gate cannot empty the batch;
* ``weights``: ``product`` (conf * need), ``conf`` or ``one``;
* ``warmup_steps=w``: for the first w batches the student gate is open (LLKD keeps what the teacher gate keeps):
  an untrained student's need says little about what it has still to learn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..config import LLKD_CLASS_TERMS as CLASS_TERMS
from ..config import LLKD_STUDENT_STATS as STUDENT_STATS
from ..config import LLKD_WEIGHTS as WEIGHTS



@dataclass(frozen=True)
class LlkdRule:
    """How LLKD's gates and weights are computed; the defaults are the paper's rule (module docstring)."""

    student_stats: str = "all"
    class_terms: str = "mean"
    floor: float = 0.0
    weights: str = "product"
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        for name, value, allowed in (("student_stats", self.student_stats, STUDENT_STATS),
                                     ("class_terms", self.class_terms, CLASS_TERMS), ("weights", self.weights, WEIGHTS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"floor must be in [0, 1], got {self.floor}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")


PAPER = LlkdRule()


def rule_of(config, total_steps: int = 0) -> LlkdRule:
    """The rule a ``config.TrainConfig`` asks for (its ``llkd_*`` fields); ``total_steps`` turns its warm-up share
    into batches."""
    return LlkdRule(config.llkd_student_stats, config.llkd_class_terms, config.llkd_floor, config.llkd_weights,
                    int(config.llkd_warmup * total_steps))


@dataclass(frozen=True)
class ThresholdState:
    """EMA state of the adaptive thresholds. ``class_*`` have shape (K,)."""

    global_teacher: float
    global_student: float
    class_teacher: np.ndarray
    class_student: np.ndarray
    momentum: float = 0.9
    steps: int = 0
    teacher_bars: np.ndarray | None = None  # class_terms="pool-median": tau_T per class, fixed for the run

    @classmethod
    def initial(cls, num_classes: int, momentum: float = 0.9, teacher_prior: float | None = None,
                rule: LlkdRule = PAPER, teacher_bars: np.ndarray | None = None) -> ThresholdState:
        """Start permissive, as FreeMatch does: the student bar at 0, no progress on any class (equal).

        ``teacher_prior`` (e.g. the pool's mean teacher confidence) starts the teacher EMA; default 1/K.
        With ``rule.class_terms == "mass"`` each class's teacher term starts at prior / K (a uniform share).
        With ``rule.class_terms == "pool-median"``, ``teacher_bars`` (``pool_median_bars`` of the pool) is required.

        Why the student EMA starts at 0, not at an untrained student's need (1): need falls fast in the
        first steps, and an EMA that starts above it lags above every sample, so nothing is selected, the
        student stops learning, and the bar takes ~1/(1 - momentum) steps to come down. On short runs
        (small pools) that starved LLKD outright (bbc-news, 200 texts: validation macro-F1 0.42-0.64 with
        a start at 1, 0.73-0.76 with a start at 0; bench/RESULTS.md). From 0 the bar rises to meet the
        student's need from below, so early lag lets samples through instead of shutting them out.
        """
        if num_classes < 2:
            raise ValueError(f"need at least 2 classes, got {num_classes}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if (rule.class_terms == "pool-median") != (teacher_bars is not None):
            raise ValueError("teacher_bars go with class_terms='pool-median', and only with it")
        if teacher_bars is not None and np.shape(teacher_bars) != (num_classes,):
            raise ValueError(f"teacher_bars must have shape ({num_classes},), got {np.shape(teacher_bars)}")
        prior = 1.0 / num_classes if teacher_prior is None else float(teacher_prior)
        per_class = prior / num_classes if rule.class_terms == "mass" else prior  # mass: conf x a uniform share
        return cls(
            global_teacher=prior,
            global_student=0.0,
            class_teacher=np.full(num_classes, per_class),
            class_student=np.full(num_classes, 1.0 / num_classes),
            momentum=momentum,
            teacher_bars=None if teacher_bars is None else np.asarray(teacher_bars, dtype=float),
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_teacher)

    def teacher_thresholds(self) -> np.ndarray:
        """Shape (K,): tau_T per class."""
        if self.teacher_bars is not None:
            return self.teacher_bars
        return self.global_teacher * _max_norm(self.class_teacher)

    def student_thresholds(self) -> np.ndarray:
        """Shape (K,): tau_S per class."""
        return self.global_student * _max_norm(self.class_student)

    def to_dict(self) -> dict:
        return {
            "global_teacher": self.global_teacher,
            "global_student": self.global_student,
            "class_teacher": self.class_teacher.tolist(),
            "class_student": self.class_student.tolist(),
            "momentum": self.momentum,
            "steps": self.steps,
            "teacher_bars": None if self.teacher_bars is None else self.teacher_bars.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ThresholdState:
        return cls(
            d["global_teacher"],
            d["global_student"],
            np.asarray(d["class_teacher"], dtype=float),
            np.asarray(d["class_student"], dtype=float),
            d["momentum"],
            d["steps"],
            None if d.get("teacher_bars") is None else np.asarray(d["teacher_bars"], dtype=float),
        )


def pool_median_bars(conf, pseudo, num_classes: int) -> np.ndarray:
    """Shape (K,): the median of the teacher's confidence over the pool's samples labelled c, for each class c
    (1.0 for a class the teacher never names): ``class_terms="pool-median"``'s fixed teacher bar, which passes
    the surer half of every class. The teacher's labels do not change during training, so unlike the student's
    statistics they need no EMA: the whole pool's are known before the first step."""
    conf, pseudo = np.asarray(conf, dtype=float), np.asarray(pseudo)
    return np.array([float(np.median(conf[pseudo == c])) if np.any(pseudo == c) else 1.0
                     for c in range(num_classes)])


def _max_norm(x: np.ndarray) -> np.ndarray:
    top = float(np.max(x))
    return x / top if top > 0 else np.ones_like(x)


def _check(conf, need, pseudo, num_classes: int):
    conf = np.asarray(conf, dtype=float)
    need = np.asarray(need, dtype=float)
    pseudo = np.asarray(pseudo)
    if conf.ndim != 1 or conf.shape != need.shape or conf.shape != pseudo.shape:
        raise ValueError(f"conf, need and pseudo must have the same shape (N,), got {conf.shape}, {need.shape}, {pseudo.shape}")
    if len(conf) == 0:
        raise ValueError("empty batch")
    if not np.all(np.isfinite(conf)) or not np.all(np.isfinite(need)):
        raise ValueError("conf and need must be finite")
    if conf.min() < 0 or conf.max() > 1 or need.min() < 0 or need.max() > 1 + 1e-6:
        raise ValueError("conf and need must lie in [0, 1]")
    if not np.issubdtype(pseudo.dtype, np.integer) or pseudo.min() < 0 or pseudo.max() >= num_classes:
        raise ValueError(f"pseudo must hold class indices in [0, {num_classes})")
    return conf, np.clip(need, 0.0, 1.0), pseudo


def update_state(state: ThresholdState, conf, need, pseudo, rule: LlkdRule = PAPER) -> ThresholdState:
    """Fold one batch into the EMAs (with ``class_terms="mean"`` classes absent from the batch keep their values).

    With ``rule.student_stats == "teacher"`` the student EMAs see only the samples that pass the teacher bar
    (computed with the teacher EMAs already updated); a batch with none leaves them as they were."""
    conf, need, pseudo = _check(conf, need, pseudo, state.num_classes)
    m = state.momentum
    class_teacher = state.class_teacher.copy()
    if rule.class_terms == "mass":
        mass = np.bincount(pseudo, weights=conf, minlength=state.num_classes) / len(conf)
        class_teacher = m * class_teacher + (1 - m) * mass
    else:
        for c in np.unique(pseudo):
            class_teacher[c] = m * class_teacher[c] + (1 - m) * conf[pseudo == c].mean()
    state = replace(state, global_teacher=m * state.global_teacher + (1 - m) * float(conf.mean()),
                    class_teacher=class_teacher, steps=state.steps + 1)
    rows = np.ones(len(conf), dtype=bool)
    if rule.student_stats == "teacher":
        rows = conf >= state.teacher_thresholds()[pseudo]
    class_student = state.class_student.copy()
    global_student = state.global_student
    if rows.any():
        for c in np.unique(pseudo[rows]):
            those = rows & (pseudo == c)
            class_student[c] = m * class_student[c] + (1 - m) * (1.0 - need[those]).mean()
        global_student = m * global_student + (1 - m) * float(need[rows].mean())
    return replace(state, global_student=global_student, class_student=class_student)


def llkd_weights(conf, need, mask, kind: str = "product") -> np.ndarray:
    """Shape (N,): conf * need (or conf, or 1: ``kind``) on selected samples, rescaled to mean 1 over them; 0 elsewhere."""
    conf, need, mask = np.asarray(conf, float), np.asarray(need, float), np.asarray(mask, bool)
    if kind not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {kind!r}")
    raw = conf * need if kind == "product" else conf if kind == "conf" else np.ones_like(conf)
    weights = np.where(mask, raw, 0.0)
    if mask.any():
        total = weights[mask].sum()
        weights = weights * (mask.sum() / total) if total > 0 else mask.astype(float)
    return weights


def with_floor(mask, teacher_ok, need, floor: float) -> np.ndarray:
    """``mask`` plus, when it keeps fewer, the top ``floor`` share of the teacher-passed samples by need."""
    mask, teacher_ok = np.asarray(mask, bool), np.asarray(teacher_ok, bool)
    passed = np.flatnonzero(teacher_ok)
    k = int(np.ceil(floor * len(passed)))
    if k == 0 or mask.sum() >= k:
        return mask
    out = mask.copy()
    out[passed[np.argsort(-np.asarray(need)[passed], kind="stable")[:k]]] = True
    return out


@dataclass(frozen=True)
class Batch:
    """One batch as a selection method reads it: the teacher's confidence, the student's need, both gates and
    what LLKD keeps (``kept``, which ``random`` draws as many as), shape (N,) each."""

    conf: np.ndarray
    need: np.ndarray
    teacher_ok: np.ndarray
    student_ok: np.ndarray
    kept: np.ndarray
    rule: LlkdRule
    rng: np.random.Generator | None
    topk_ratio: float


@dataclass(frozen=True)
class Method:
    """A selection method: its name, whether it reads the student's need (only those pay for
    ``need_pass="eval"``'s extra pass), and ``pick(batch) -> (mask, weights)``. A new method is an entry in
    ``METHODS`` (and its name in ``config.SELECTION_METHODS``, which a test holds equal)."""

    name: str
    reads_need: bool
    pick: Callable[[Batch], tuple[np.ndarray, np.ndarray]]


def _plain(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return mask, mask.astype(float)


def _topk(b: Batch) -> tuple[np.ndarray, np.ndarray]:
    n = len(b.conf)
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(-b.conf, kind="stable")[: max(1, int(round(b.topk_ratio * n)))]] = True
    return _plain(mask)


def _random(b: Batch) -> tuple[np.ndarray, np.ndarray]:
    """As many as LLKD keeps on this batch, drawn uniformly."""
    if b.rng is None:
        raise ValueError("random selection needs an rng")
    n = len(b.conf)
    mask = np.zeros(n, dtype=bool)
    mask[b.rng.choice(n, size=int(b.kept.sum()), replace=False)] = True
    return _plain(mask)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("llkd", True, lambda b: (b.kept, llkd_weights(b.conf, b.need, b.kept, b.rule.weights))),
    Method("all", False, lambda b: _plain(np.ones(len(b.conf), dtype=bool))),
    Method("random", True, _random),
    Method("confidence", False, lambda b: _plain(b.teacher_ok)),
    Method("uncertainty", True, lambda b: _plain(b.student_ok)),
    Method("topk", False, _topk),
)}


def select(
    method: str,
    conf,
    need,
    pseudo,
    state: ThresholdState,
    rng: np.random.Generator | None = None,
    topk_ratio: float = 0.5,
    rule: LlkdRule = PAPER,
) -> tuple[np.ndarray, np.ndarray, ThresholdState]:
    """Select and weight one batch with ``method`` (a name in METHODS); see the module docstring.

    The thresholds are updated with the batch before it is judged (FreeMatch's order), for every
    method, so ``random`` can draw exactly as many samples as LLKD would have kept.
    """
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; use one of {', '.join(METHODS)}")
    if not 0.0 < topk_ratio <= 1.0:
        raise ValueError(f"topk_ratio must be in (0, 1], got {topk_ratio}")
    conf, need, pseudo = _check(conf, need, pseudo, state.num_classes)
    state = update_state(state, conf, need, pseudo, rule)
    teacher_ok = conf >= state.teacher_thresholds()[pseudo]
    student_ok = need >= state.student_thresholds()[pseudo]
    gates = teacher_ok & (student_ok | (state.steps <= rule.warmup_steps))
    kept = with_floor(gates, teacher_ok, need, rule.floor)  # what LLKD keeps (random draws as many)
    mask, weights = METHODS[method].pick(Batch(conf, need, teacher_ok, student_ok, kept, rule, rng, topk_ratio))
    return mask, weights, state
