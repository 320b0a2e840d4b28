"""Which texts are worth the teacher's time (``distill --label-budget``): pure numpy and scikit-learn over
the student encoder's sentence embeddings (``encoder.embed``); no teacher, no torch.

The teacher labels the pool in rounds of ``step`` texts until the budget is spent:

- **Round 0, coverage.** k-means with ``step`` centroids over the embeddings of the whole pool; the text
  nearest each centroid is picked, so the first labels spread over what the pool holds, not its first rows.
- **Later rounds, ``active``.** A probe (``gold.Probe``: logistic regression on the same embeddings, the
  cheap stand-in for the student: seconds, not an epoch) is fitted on the teacher's labels so far and scores
  every text not yet labelled. The ``CANDIDATES * step`` texts with the smallest margin (top-1 minus top-2
  probability) are the candidates; k-means groups them into ``step`` clusters and the least certain text
  of each is picked: uncertainty, with diversity among the picks, so a round is not spent on ten copies of
  one confusing story.
- **``confident``**: LLKD's two gates applied to the choice of teacher calls: a text is worth asking about
  when the teacher is likely to be right on it and the student is unsure of it. A ridge regression on the
  same embeddings, fitted on the teacher's own (batch-calibrated) top probability for the texts labelled so
  far, predicts how sure the teacher will be on each of the rest; the texts predicted at least as sure as
  the teacher's mean so far pass (the teacher gate, at FreeMatch's global threshold), and among them the
  probe's least certain are picked, spread out as in ``active`` (when too few pass, the least certain of the
  others make up the round). Plain uncertainty picks the texts a small teacher gets wrong most often.
- **``balanced``**: ``confident`` with each round shared equally over the classes the probe predicts for the
  texts not labelled yet (a class with too few texts gives its share to the others), the picks of each class
  chosen as in ``confident``. Built because ``confident`` left the rare classes of a skewed set (reuters-r8's
  1000-text pool) short of labels; it brought that pool back to random's level at 40%, but fell below
  ``confident`` or random on the 1,500- and 4000-text pools (bench/RESULTS.md). Kept for the bench, not advised.
- **``coverage``**: every round as round 0, over the texts not labelled yet: k-means with ``step`` centroids,
  the text nearest each. Typical texts, spread out; a noisy teacher labels them right more often than the
  ones a probe finds confusing (bench/RESULTS.md "Fewer teacher calls").
- **``random``** (the default): each round ``step`` texts at random from those not yet labelled. Over three
  built-in sets and 3 seeds no strategy reliably beat it, and it varies least (bench/RESULTS.md).

**The rest, filled** (``fill_rest``): once the budget is spent, the probe fitted on every teacher label
gives its distribution for each text the teacher never saw; distill trains on those too (by default;
``--no-fill-rest`` leaves them out), kept apart from the teacher's labels in every record. The selection
method then weighs them as it weighs the teacher's: by their confidence. The probe is far surer than the
small teacher (reuters-r8: mean top probability 0.61-0.77 against 0.37-0.39), so distill tempers its
distributions (``tempered``: one temperature, labels unchanged) to the teacher's mean confidence; untempered,
the selection learnt mostly from the probe and the student fell on the skewed reuters-r8.

Picks come ordered (most informative first) and every round is a pure function of the pool, the labels so
far and the seed, so a run with a larger budget makes the same rounds first: the labels an earlier run paid
for are in the store and cost nothing again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CANDIDATES = 3  # candidates per pick in an active round: enough to choose diverse ones, few enough to stay unsure


def budget_count(budget: float, n: int) -> int:
    """How many pool texts the teacher labels: ``budget`` in (0, 1] is a share of ``n``, above 1 a count
    (capped at ``n``)."""
    if not budget > 0:
        raise ValueError(f"a label budget must be positive, got {budget}")
    count = round(budget * n) if budget <= 1 else int(budget)
    return max(1, min(n, count))


def margin(probs: np.ndarray) -> np.ndarray:
    """Shape (N, K) -> (N,): top-1 minus top-2 probability; small is unsure."""
    top = np.sort(np.asarray(probs, dtype=np.float64), axis=1)
    return top[:, -1] - top[:, -2] if top.shape[1] > 1 else top[:, -1]


def _kmeans(x: np.ndarray, k: int, seed: int):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x)


def coverage_picks(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` (N, D), the nearest to each of ``n`` k-means centroids; in order of
    cluster size, largest first (ties: by index)."""
    n = min(n, len(x))
    if n == len(x):
        return np.arange(len(x))
    fit = _kmeans(x, n, seed)
    dist = fit.transform(x)  # (N, n) distances to every centroid: never the (N, n, D) differences (GBs at N=4000)
    picks = []
    for c in np.argsort(-np.bincount(fit.labels_, minlength=n), kind="stable"):
        members = np.flatnonzero(fit.labels_ == c)
        if not len(members):
            continue
        picks.append(members[np.argmin(dist[members, c])])
    return _fill(np.array(picks, dtype=int), n, len(x))


def _fill(picks: np.ndarray, n: int, total: int) -> np.ndarray:
    """``picks`` made up to ``n`` distinct indices with the lowest ones not picked (k-means can leave a
    cluster empty on duplicate texts)."""
    picks = list(dict.fromkeys(picks.tolist()))
    taken = set(picks)
    rest = (i for i in range(total) if i not in taken)
    while len(picks) < n:
        picks.append(next(rest))
    return np.array(picks[:n], dtype=int)


@dataclass(frozen=True)
class Round:
    """What a later round's strategy reads: the probe's distributions for the whole pool (N, K) or None, the
    embeddings ``x`` (N, D), the teacher gate ``trusted`` (N,) or None, the indices not labelled yet, how many
    to pick, the run's seed and the round's number."""

    probs: np.ndarray | None
    x: np.ndarray
    trusted: np.ndarray | None
    unlabelled: np.ndarray
    n: int
    seed: int
    number: int

    @property
    def kmeans_seed(self) -> int:
        return self.seed + self.number


@dataclass(frozen=True)
class Strategy:
    """How a round picks, and what it needs computed first: the probe (``reads_probe``, a fit per round) and the
    teacher gate (``reads_trust``: ``teacher_trusted``). ``pick(round) -> indices`` into the pool, best first.
    A new strategy is an entry in ``STRATEGIES`` (and its name in ``config.STRATEGIES``; a test holds them equal)."""

    name: str
    reads_probe: bool
    reads_trust: bool
    pick: Callable[[Round], np.ndarray]


def _random(r: Round) -> np.ndarray:
    return np.random.default_rng([r.seed, r.number]).permutation(r.unlabelled)[: r.n]


def _coverage(r: Round) -> np.ndarray:
    return r.unlabelled[coverage_picks(r.x[r.unlabelled], r.n, r.kmeans_seed)]


def _active(r: Round) -> np.ndarray:
    return _diverse(r.unlabelled, -margin(r.probs[r.unlabelled]), r.x, r.n, r.kmeans_seed)


def _trust_score(r: Round) -> np.ndarray:
    """The probe's least certain first, texts that pass the teacher gate before all others."""
    return (1.0 - margin(r.probs[r.unlabelled])) + np.asarray(r.trusted, dtype=bool)[r.unlabelled]


def _confident(r: Round) -> np.ndarray:
    return _diverse(r.unlabelled, _trust_score(r), r.x, r.n, r.kmeans_seed)


def _balanced(r: Round) -> np.ndarray:
    return _per_class(r.unlabelled, _trust_score(r), np.asarray(r.probs)[r.unlabelled].argmax(axis=1), r.x, r.n,
                      r.kmeans_seed)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("active", True, False, _active),
    Strategy("balanced", True, True, _balanced),
    Strategy("confident", True, True, _confident),
    Strategy("coverage", False, False, _coverage),
    Strategy("random", False, False, _random),
)}


def next_picks(strategy: str, probs: np.ndarray | None, x: np.ndarray, unlabelled: np.ndarray, n: int, seed: int,
               round_: int, trusted: np.ndarray | None = None) -> np.ndarray:
    """Indices (into the pool) of the next ``n`` texts for the teacher, most informative first.

    ``probs``: shape (N, K), the probe's distributions for the whole pool (read by the strategies with
    ``reads_probe``; None will do for the others); ``x``: (N, D) embeddings; ``trusted``: (N,) booleans, the
    texts the teacher is predicted to be sure of (``reads_trust``; ``teacher_trusted``);
    ``unlabelled``: indices not labelled yet. A partial round (the budget's last) takes the first picks of a full one
    (``next_picks(..., step, ...)[:r]``): a larger budget's rounds then hold a smaller one's.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    unlabelled = np.asarray(unlabelled, dtype=int)
    n = min(n, len(unlabelled))
    return STRATEGIES[strategy].pick(Round(probs, x, trusted, unlabelled, n, seed, round_))


def _diverse(unlabelled: np.ndarray, score: np.ndarray, x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` of ``unlabelled`` by ``score`` (higher: more informative), spread out: the ``CANDIDATES * n``
    best-scored are grouped by k-means into ``n`` clusters and the best of each is picked, best first (ties:
    by index); an empty cluster's place goes to the next best candidate."""
    order = np.argsort(-score, kind="stable")[: CANDIDATES * n]
    candidates = unlabelled[order]
    if len(candidates) <= n:
        return candidates
    fit = _kmeans(x[candidates], n, seed)
    score_of = dict(zip(candidates.tolist(), score[order].tolist()))

    def key(i) -> tuple[float, int]:
        return -score_of[int(i)], int(i)

    picks = sorted((min(candidates[fit.labels_ == c], key=key) for c in range(n) if (fit.labels_ == c).any()),
                   key=key)
    chosen = list(dict.fromkeys(int(i) for i in picks))
    for i in candidates.tolist():
        if len(chosen) >= n:
            break
        if i not in chosen:
            chosen.append(i)
    return np.array(chosen[:n], dtype=int)


def shares(counts: np.ndarray, n: int) -> np.ndarray:
    """``n`` picks shared as equally as ``counts`` (texts available per class) allow: no class gets more than
    it has, what a small class cannot take goes to the others equally, and a remainder goes to the largest
    classes first (ties: lower index)."""
    counts = np.asarray(counts, dtype=int)
    share = np.zeros(len(counts), dtype=int)
    n = min(n, int(counts.sum()))
    while share.sum() < n:
        room = np.flatnonzero(share < counts)
        each = (n - share.sum()) // len(room)
        if each == 0:  # fewer picks left than classes with room: the largest classes take one each
            for k in sorted(room, key=lambda k: (-counts[k], k))[: n - share.sum()]:
                share[k] += 1
            break
        share[room] = np.minimum(counts[room], share[room] + each)
    return share


def _per_class(unlabelled: np.ndarray, score: np.ndarray, predicted: np.ndarray, x: np.ndarray, n: int,
               seed: int) -> np.ndarray:
    """``n`` of ``unlabelled`` shared over their ``predicted`` classes (``shares``), each class's picked by
    ``_diverse``; all of them ordered by ``score``, best first (ties: by index)."""
    classes, counts = np.unique(predicted, return_counts=True)
    masks = [predicted == c for c in classes]
    picks = np.concatenate([_diverse(unlabelled[m], score[m], x, int(k), seed)
                            for m, k in zip(masks, shares(counts, n)) if k] or [np.zeros(0, dtype=int)])
    score_of = dict(zip(unlabelled.tolist(), score.tolist()))
    return np.array(sorted(picks.tolist(), key=lambda i: (-score_of[i], i)), dtype=int)


def as_read(probs: np.ndarray, calibration: str = "batch") -> np.ndarray:
    """The teacher's distributions ``probs`` (M, K) as distill reads them: divided by the pool calibration's
    divisor fitted on them (``distributions.pool_divisor``); ``none``: as the teacher gave them."""
    from ..distributions import batch_calibrated, pool_divisor

    divisor = pool_divisor(probs, calibration)
    return probs if divisor is None else batch_calibrated(probs, divisor)


def teacher_trusted(x_labelled: np.ndarray, probs: np.ndarray, x: np.ndarray, calibration: str = "batch") -> np.ndarray:
    """Shape (N,) booleans: the rows of ``x`` (N, D) on which the teacher is predicted to be at least as sure as
    its mean over the texts labelled so far. The prediction is a ridge regression on their embeddings
    ``x_labelled`` (M, D), fitted on the top probability of their teacher distributions ``probs`` (M, K),
    calibrated over them as distill reads them (``as_read``)."""
    from sklearn.linear_model import Ridge

    sure = as_read(probs, calibration).max(axis=1)
    return Ridge(alpha=1.0).fit(x_labelled, sure).predict(x) >= sure.mean()


def _probe(x: np.ndarray, probs: np.ndarray, calibration: str = "batch"):
    """The rounds' probe: fitted on the teacher's labels so far (``probs``, rows of ``x``), calibrated over them
    as distill reads them (``as_read``)."""
    from .gold import Probe

    y = as_read(probs, calibration).argmax(axis=1)
    return Probe.fit(x, y, probs.shape[1])


def tempered(probs: np.ndarray, confidence: float) -> np.ndarray:
    """``probs`` (N, K) flattened by one temperature T >= 1 (each row ``p ** (1 / T)``, renormalised) so that
    the mean top probability is at most ``confidence``; unchanged when it already is."""
    probs = np.asarray(probs, dtype=np.float64)
    if not len(probs) or probs.max(axis=1).mean() <= confidence:
        return probs

    def at(t: float) -> np.ndarray:
        q = np.exp(np.log(np.clip(probs, 1e-12, 1.0)) / t)
        return q / q.sum(axis=1, keepdims=True)

    low, high = 1.0, 2.0
    while at(high).max(axis=1).mean() > confidence and high < 1e6:
        low, high = high, high * 2
    for _ in range(50):  # bisection on T: the mean top probability falls as T grows
        mid = (low + high) / 2
        low, high = (mid, high) if at(mid).max(axis=1).mean() > confidence else (low, mid)
    return at(high)


def fill_rest(x: np.ndarray, picked: np.ndarray, probs: np.ndarray, temper: bool = False,
              calibration: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """The texts the teacher never labelled, with the distribution of a probe fitted on the ``picked`` rows'
    teacher distributions ``probs`` (M, K): their indices into ``x`` (N, D), ascending, and (N - M, K).
    ``temper``: the probe's distributions flattened (``tempered``) to be no more confident on average than
    the teacher's own, calibrated as the probe learns them (``as_read`` with ``calibration``)."""
    rest = np.setdiff1d(np.arange(len(x)), picked)
    if not len(rest):
        return rest, np.zeros((0, probs.shape[1]))
    probs = np.asarray(probs, dtype=np.float64)
    filled = _probe(x[picked], probs, calibration).predict(x[rest])
    if temper:
        filled = tempered(filled, float(as_read(probs, calibration).max(axis=1).mean()))
    return rest, filled


def run_rounds(x: np.ndarray, total: int, step: int, strategy: str, seed: int, ask: Callable[[np.ndarray], np.ndarray],
               calibration: str = "batch") -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Pick ``total`` of the N texts embedded in ``x`` (N, D), ``step`` per round, asking the teacher for
    each round's picks: ``ask(indices) -> (M, K)`` distributions. The probe of a round learns the labels so
    far, calibrated over them as distill reads them (``calibration``: the pool calibration, ``as_read``). Returns the picks in order, their
    distributions, and each round's selection seconds (the teacher's time is the caller's to measure)."""
    picked: list[int] = []
    probs: list[np.ndarray] = []
    seconds: list[float] = []
    while len(picked) < total:
        tick = time.perf_counter()
        size = min(step, total - len(picked))
        if not picked:
            chosen = coverage_picks(x, step, seed)[:size]
        else:
            # random and coverage rounds skip fitting the probe and the teacher gate
            told = np.vstack(probs)
            how = STRATEGIES[strategy]
            scores = _probe(x[picked], told, calibration).predict(x) if how.reads_probe else None
            trusted = teacher_trusted(x[picked], told, x, calibration) if how.reads_trust else None
            chosen = next_picks(strategy, scores, x, np.setdiff1d(np.arange(len(x)), picked), step, seed,
                                len(seconds), trusted)[:size]
        seconds.append(time.perf_counter() - tick)
        probs.append(np.asarray(ask(chosen), dtype=np.float64))
        picked.extend(int(i) for i in chosen)
    return np.array(picked, dtype=int), np.vstack(probs), seconds
