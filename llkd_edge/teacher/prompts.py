"""Choosing the teacher's prompt without gold labels (``--prompt auto``).

A user who writes no ``--task`` should not get a prompt that only suits news topics. ``candidates``
builds a few prompts from the label set: task wordings (the given one, a generic one, one that lists the
label words) times answer cues ("Category:", "Answer:", ...; chat teachers answer in their own turn, so
only the wording varies for them). ``choose`` scores a seeded sample of the pool under each and keeps the
one whose answers tell the texts apart best: the mutual information between inputs and answers
(Sorensen et al., 2022), read after batch calibration, as the student will read the labels
(bench/prompt_choice.py measured the alternatives). No gold label is used.

With gold texts (``--gold``), the candidates are ranked by their accuracy on (up to GOLD_FOR_CHOICE of) those
texts instead, batch-calibrated with the prior of the pool sample and the gold texts together; answer
information breaks ties (bench/gold_prompt.py measured the choosers).

The sample's rows go through the label store under each candidate's key, so a re-run or a resumed run
chooses again at no teacher cost, and the winner's rows are reused when the pool is labelled. Cost: 12
candidates x 12 texts = 144 teacher calls, 14% of labelling a 1000-text pool.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace

import numpy as np
from tqdm.auto import tqdm

from ..config import DEFAULT_ANSWER_CUE, DEFAULT_TASK, ScoringConfig
from ..data import Dataset, text_key
from ..distributions import answer_information, batch_calibrated, pool_prior

CUES = (DEFAULT_ANSWER_CUE, "Label:", "Topic:")  # "Answer:" was tried and lost on every built-in set
GOLD_FOR_CHOICE = 48  # gold texts each candidate is tried on, at most (spread over the classes, seeded)
TEXT_PLACEHOLDER = "\x00TEXT\x00"  # where each text goes in a prompt


def instruction(scoring: ScoringConfig, cut) -> str:
    """The task, the label words and the few-shot examples, ending ``Text:`` and ``TEXT_PLACEHOLDER``; every
    teacher (in-process or served) asks with it. ``cut(text) -> str`` cuts an example to the text budget."""
    words = ", ".join(scoring.labels.verbalisers)
    lines = [f"{scoring.task.rstrip('.?!:')}. Answer with one of: {words}.", ""]
    for text, label in scoring.few_shot:
        lines += [f"Text: {cut(text).strip()}",
                  f"{scoring.answer_cue} {scoring.labels.verbalisers[scoring.labels.index(label)]}", ""]
    lines.append(f"Text:{TEXT_PLACEHOLDER}")
    return "\n".join(lines)


def variants(word: str) -> list[str]:
    """A verbaliser's case and space forms (" sport", "sport", " Sport", "Sport"): a label's answer may start
    with any of them, so its probability is theirs summed."""
    forms = [word, word.lower(), word[:1].upper() + word[1:]]
    out = []
    for form in forms:
        for v in (" " + form, form):
            if v not in out:
                out.append(v)
    return out


@dataclass(frozen=True)
class Candidate:
    name: str  # "<wording> / <cue>", for the ranking a user reads
    scoring: ScoringConfig


@dataclass
class Choice:
    """What ``choose`` did: the winner, every candidate's score, and what it cost."""

    scoring: ScoringConfig
    ranking: list[dict] = field(default_factory=list)  # best first: name, task, cue, score, label_mass
    sample: int = 0
    evaluations: int = 0  # texts the teacher evaluated for the choice (cached rows cost nothing)
    seconds: float = 0.0

    gold: int = 0  # gold texts the candidates were ranked on (0: answer information alone)

    def record(self) -> dict:
        criterion = (f"log-likelihood of the right label on {self.gold} gold texts (ties: answer information)"
                     if self.gold else
                     "answer information (mutual information after batch calibration, share of log K)")
        return {"method": "auto", "criterion": criterion, "sample": self.sample, "gold": self.gold,
                "evaluations": self.evaluations, "seconds": round(self.seconds, 2),
                "chosen": self.ranking[0]["name"] if self.ranking else None, "ranking": self.ranking}


def wordings(scoring: ScoringConfig) -> dict[str, str]:
    words = list(scoring.labels.verbalisers)
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    out = {"given": scoring.task} if scoring.task != DEFAULT_TASK else {}
    out.update({"generic": DEFAULT_TASK, "label words": f"Is this text about {listed}?",
                "which fits": "Which of these words fits the text best?"})
    return out


def candidates(scoring: ScoringConfig, chat: bool) -> list[Candidate]:
    """The prompts to try, the given one first (ties keep it)."""
    out = []
    for name, task in wordings(scoring).items():
        for cue in ((scoring.answer_cue,) if chat else CUES):
            out.append(Candidate(name if chat else f"{name} / {cue}", replace(scoring, task=task, answer_cue=cue)))
    return out


def sample_texts(texts: list[str], n: int, seed: int = 0) -> list[str]:
    """A seeded sample of ``n`` distinct non-empty texts, in their order (files sorted by label stay fair)."""
    seen, unique = set(), []
    for t in texts:
        if t.strip() and text_key(t) not in seen:  # the one key duplicates are judged on (data.text_key)
            seen.add(text_key(t))
            unique.append(t)
    if len(unique) <= n:
        return unique
    keep = sorted(random.Random(seed).sample(range(len(unique)), n))
    return [unique[i] for i in keep]


def gold_sample(gold: Dataset, n: int = GOLD_FOR_CHOICE, seed: int = 0) -> Dataset:
    """At most ``n`` of the gold texts, taken a class at a time in turn (each class's texts in a seeded order),
    so every class is tried before any class twice."""
    if len(gold.texts) <= n:
        return gold
    rng = random.Random(seed)
    queues = {}
    for i, label in enumerate(gold.gold):
        queues.setdefault(label, []).append(i)
    for q in queues.values():
        rng.shuffle(q)
    keep = []
    while len(keep) < n:
        for q in queues.values():
            if q and len(keep) < n:
                keep.append(q.pop())
    keep.sort()
    return Dataset(gold.name, [gold.texts[i] for i in keep], [gold.gold[i] for i in keep])


def _gold_rows(sample_probs: np.ndarray, gold_probs: np.ndarray) -> np.ndarray:
    """The gold rows batch-calibrated as the pool's will be, with the prior of everything the candidate labelled
    for the choice (pool sample and gold texts: a few texts of every class)."""
    return batch_calibrated(gold_probs, pool_prior(np.vstack([sample_probs, gold_probs])))


def gold_accuracy(sample_probs: np.ndarray, gold_probs: np.ndarray, gold_y: np.ndarray) -> float:
    """A candidate's accuracy on the gold texts, its rows calibrated as in ``_gold_rows`` (reported, not ranked by)."""
    return float(np.mean(_gold_rows(sample_probs, gold_probs).argmax(axis=1) == gold_y))


def gold_log_likelihood(sample_probs: np.ndarray, gold_probs: np.ndarray, gold_y: np.ndarray) -> float:
    """Mean log-probability of the right label on the gold texts, rows calibrated as in ``_gold_rows``; what
    ``choose`` ranks by with gold texts. It beat accuracy and answer information as a chooser on all four
    built-in sets at 8 gold per class (bench/gold_prompt.py): it also credits how sure a prompt is when right and
    penalises confident mistakes, where accuracy on a few dozen texts moves in coarse steps."""
    q = _gold_rows(sample_probs, gold_probs)
    return float(np.mean(np.log(np.clip(q[np.arange(len(gold_y)), gold_y], 1e-9, 1.0))))


def choose(teacher, texts: list[str], label, sample: int, progress: bool = True, gold: Dataset | None = None,
           label_gold=None) -> Choice:
    """Try every candidate on a sample of ``texts``; leave ``teacher`` asking with the winner.

    ``label(dataset) -> labelling.Labelled`` labels a dataset with the teacher as it stands, through the label
    store (``labelling.label_dataset``), so rows already paid for are read back, not asked for again. With
    ``gold`` (a Dataset with gold labels) the candidates are ranked by ``gold_log_likelihood`` on ``gold_sample(gold)``,
    labelled by ``label_gold`` (the store marks those texts as held out, not as pool).
    """
    started = time.perf_counter()
    chosen_from = sample_texts(texts, sample)
    data = Dataset("prompt choice sample", chosen_from, None)
    tried = gold_sample(gold) if gold is not None else None
    ranking, scorings = [], []
    evaluations = 0
    options = candidates(teacher.scoring, chat=teacher.prompt_style == "chat")
    size = f"{len(chosen_from)} texts" + (f" + {len(tried.texts)} gold" if tried else "")
    for candidate in tqdm(options, desc=f"choosing a prompt ({len(options)} on {size})",
                          unit="prompt", dynamic_ncols=True, disable=not progress, leave=False):
        teacher.use(candidate.scoring)
        got = label(data)
        evaluations += got.labelled
        probs = np.array([r.probs for r in got.rows])
        info = round(answer_information(probs), 4)
        entry = {"name": candidate.name, "task": candidate.scoring.task, "cue": candidate.scoring.answer_cue,
                 "score": info, "answer_information": info,
                 "label_mass": round(float(np.mean([r.label_mass for r in got.rows])), 4)}
        if tried:
            judged = label_gold(tried)
            evaluations += judged.labelled
            names = list(candidate.scoring.labels.names)
            y = np.array([names.index(g) for g in judged.gold])
            rows = np.array([r.probs for r in judged.rows])
            entry["score"] = entry["gold_log_likelihood"] = round(gold_log_likelihood(probs, rows, y), 4)
            entry["gold_accuracy"] = round(gold_accuracy(probs, rows, y), 4)
        ranking.append(entry)
        scorings.append(candidate.scoring)
    # stable: exact ties keep the earlier candidate (the given prompt first)
    order = sorted(range(len(ranking)), key=lambda i: (-ranking[i]["score"], -ranking[i]["answer_information"]))
    best = scorings[order[0]]
    ranking = [ranking[i] for i in order]
    teacher.use(best)
    return Choice(best, ranking, len(chosen_from), evaluations, time.perf_counter() - started,
                  len(tried.texts) if tried else 0)
