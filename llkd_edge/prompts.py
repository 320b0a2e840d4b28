"""Choosing the teacher's prompt without gold labels (``--prompt auto``).

A user who writes no ``--task`` should not get a prompt that only suits news topics. ``candidates``
builds a few prompts from the label set: task wordings (the given one, a generic one, one that lists the
label words) times answer cues ("Category:", "Answer:", ...; chat teachers answer in their own turn, so
only the wording varies for them). ``choose`` scores a seeded sample of the pool under each and keeps the
one whose answers tell the texts apart best: the mutual information between inputs and answers
(Sorensen et al., 2022), read after batch calibration, as the student will read the labels
(bench/prompt_choice.py measured the alternatives). No gold label is used.

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

from .config import DEFAULT_ANSWER_CUE, DEFAULT_TASK, ScoringConfig
from .data import Dataset, text_key
from .distributions import answer_information

CUES = (DEFAULT_ANSWER_CUE, "Label:", "Topic:")  # "Answer:" was tried and lost on every built-in set



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

    def record(self) -> dict:
        return {"method": "auto", "criterion": "answer information (mutual information after batch calibration, share of log K)", "sample": self.sample,
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


def choose(teacher, texts: list[str], label, sample: int, progress: bool = True) -> Choice:
    """Try every candidate on a sample of ``texts``; leave ``teacher`` asking with the winner.

    ``label(dataset) -> labelling.Labelled`` labels a dataset with the teacher as it stands, through the label
    store (``labelling.label_dataset``), so rows already paid for are read back, not asked for again.
    """
    started = time.perf_counter()
    chosen_from = sample_texts(texts, sample)
    data = Dataset("prompt choice sample", chosen_from, None)
    ranking, scorings = [], []
    evaluations = 0
    options = candidates(teacher.scoring, chat=teacher.prompt_style == "chat")
    for candidate in tqdm(options, desc=f"choosing a prompt ({len(options)} on {len(chosen_from)} texts)",
                          unit="prompt", dynamic_ncols=True, disable=not progress, leave=False):
        teacher.use(candidate.scoring)
        got = label(data)
        evaluations += got.labelled
        probs = np.array([r.probs for r in got.rows])
        ranking.append({"name": candidate.name, "task": candidate.scoring.task, "cue": candidate.scoring.answer_cue,
                        "score": round(answer_information(probs), 4),
                        "label_mass": round(float(np.mean([r.label_mass for r in got.rows])), 4)})
        scorings.append(candidate.scoring)
    order = sorted(range(len(ranking)), key=lambda i: -ranking[i]["score"])  # stable: ties keep the earlier one
    best = scorings[order[0]]
    ranking = [ranking[i] for i in order]
    teacher.use(best)
    return Choice(best, ranking, len(chosen_from), evaluations, time.perf_counter() - started)
