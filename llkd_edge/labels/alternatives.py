"""With ``--gold``: would the encoder teacher (``teacher.zeroshot``, milliseconds a text once loaded), or the run's
teacher pooled with it, label this task better than the run's teacher alone? The three are scored on the gold texts
as ``--gold`` ranks prompts (``prompts.gold_log_likelihood``: rows calibrated with the prior of a sample of the data
plus the gold texts); the run is not changed, the summary says which to try when one of the other two does better.

On the built-in sets (bench/RESULTS.md, "The gold texts choosing the teacher") this three-way choice gains 0.06-0.11
macro-F1 where the packaged LLM is weak on topics and costs at most 0.02 where it is strong; no label-free criterion
tells the two kinds of teacher apart, so without gold texts nothing is said.
"""

from __future__ import annotations

import numpy as np

from ..config import ScoringConfig, TeacherConfig
from ..data import text_key
from ..files import one_line
from ..teacher.ensemble import log_linear_pool
from ..teacher.prompts import gold_accuracy, gold_log_likelihood, sample_texts
from ..teacher.zeroshot import NAME as ENCODER

SAMPLE = 64  # data texts whose rows give the calibration prior (prompts.choose's sample size)
CANDIDATES = ("teacher", "encoder", "pool")  # ties go to the earlier: the run's teacher first


def compare_with_encoder(scoring: ScoringConfig, teacher: str, gold_texts: list[str], gold_labels: list[str],
                         gold_probs: np.ndarray, texts: list[str], probs: np.ndarray, seed: int = 0) -> dict | None:
    """The run's teacher, the encoder teacher and their log-linear pool on the gold texts: accuracy and
    log-likelihood of each, and the best (highest gold log-likelihood among those at least as accurate as the
    teacher). ``gold_probs``: the teacher's rows on
    ``gold_texts`` (G, K), as it gave them; ``probs``: its rows on ``texts`` (N, K), the data it labelled (gold
    texts among them are left out of the calibration sample). None when the teacher is the encoder already or
    one of an ensemble's members; ``{"error": ...}`` when the encoder could not run (the run goes on)."""
    if ENCODER in TeacherConfig(model=teacher).members or not gold_texts:
        return None
    names = list(scoring.labels.names)
    y = np.array([names.index(g) for g in gold_labels])
    held = {text_key(t) for t in gold_texts}
    index = {t: i for i, t in enumerate(texts) if text_key(t) not in held}
    sample = sample_texts(list(index), SAMPLE, seed)
    teacher_sample = np.asarray(probs, dtype=np.float64)[[index[t] for t in sample]].reshape(len(sample), len(names))
    try:
        from ..teacher.zeroshot import EncoderTeacher

        encoder = EncoderTeacher(scoring)
        try:
            enc_gold, enc_sample = encoder.predict_proba(gold_texts), encoder.predict_proba(sample)
        finally:
            encoder.close()
    except Exception as exc:  # advice only: a missing or broken encoder must not cost the run
        return {"teacher_name": teacher, "error": one_line(exc)}
    teacher_gold = np.asarray(gold_probs, dtype=np.float64)
    rows = {"teacher": (teacher_sample, teacher_gold), "encoder": (enc_sample, enc_gold),
            "pool": (log_linear_pool([teacher_sample, enc_sample]) if len(sample) else enc_sample,
                     log_linear_pool([teacher_gold, enc_gold]))}
    got = {who: {"accuracy": round(gold_accuracy(s, g, y), 4), "log_likelihood": round(gold_log_likelihood(s, g, y), 4)}
           for who, (s, g) in rows.items()}
    # among the candidates at least as accurate on the gold texts as the teacher, the most likely: a pool that
    # is likelier but wrong more often is not worth a change (it cost bbc-news, bench/gold_teacher.py)
    eligible = [c for c in CANDIDATES if got[c]["accuracy"] >= got["teacher"]["accuracy"]]
    best = max(eligible, key=lambda c: (got[c]["log_likelihood"], -CANDIDATES.index(c)))
    return {"teacher_name": teacher, "n": len(y), **got, "best": best}


def advice(compared: dict | None) -> str | None:
    """One line when the encoder teacher, or the teacher pooled with it, did better on the gold texts, else None."""
    if not compared or compared.get("best", "teacher") == "teacher":
        return None
    name, best = compared["teacher_name"], compared["best"]
    t, b = compared["teacher"], compared[best]
    what = ("the encoder teacher (--teacher encoder)" if best == "encoder"
            else f"{name} pooled with the encoder teacher (--teacher {name},encoder)")
    return (f"on your {compared['n']} gold texts {what} is right on {b['accuracy']:.0%} (log-likelihood "
            f"{b['log_likelihood']:.2f}) against {t['accuracy']:.0%} ({t['log_likelihood']:.2f}) for {name} alone: "
            "worth a try (the encoder labels in milliseconds a text)")
