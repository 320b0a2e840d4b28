"""Where the user stands when the student ends below its teacher (``distill --learning-curve``): the same student
trained on 25% and 50% of the pool (seeded subsets, the same settings), scored on the same eval texts as the run's
own student at 100%, and a line through macro-F1 against log pool size that says whether more teacher-labelled
texts are likely to help, and about how many.

Three points of a noisy curve are a rough guide, and the card and summary say so; ``advice`` is pure arithmetic,
the training is distill's own (``train.train``), each subset student resumable in ``RUN_DIR/curve/``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from ..files import read_json, write_json
from ..metrics import classification_scores
from .pool import Pool
from .runs import CURVE

SHARES = (0.25, 0.5)  # of the training pool; the run's own student is the 100% point
FLAT = 0.01  # macro-F1 gained a doubling of the pool under this: more texts of the same kind are unlikely to help
REACH = 16  # farthest extrapolation quoted, in multiples of the pool (4 doublings)
CURVE_MODES = ("auto", "always", "off")  # auto: only when the student ends below its teacher on the eval texts


def subset(pool: Pool, share: float, seed: int) -> Pool:
    """A seeded ``share`` of the pool (its trusted gold samples always kept), in pool order."""
    rng = np.random.default_rng(seed)
    free = np.flatnonzero(~pool.trusted)
    want = max(1, round(share * len(free)))
    keep = np.sort(np.concatenate([np.flatnonzero(pool.trusted), rng.choice(free, min(want, len(free)), replace=False)]))
    return Pool([pool.texts[i] for i in keep], pool.probs[keep], pool.trusted[keep], pool.weights[keep])


def noise(n_eval: int) -> float:
    """About one standard error of a score on ``n_eval`` texts (a share's at its widest, sqrt(0.25 / n))."""
    return math.sqrt(0.25 / max(n_eval, 1))


def advice(points: list[tuple[int, float]], teacher_f1: float, n_eval: int | None = None) -> dict:
    """From (pool texts, student macro-F1) points and the teacher's macro-F1 on the same ``n_eval`` texts: the gain
    a doubling (least squares of F1 on log2 n), and where the line meets the teacher, if within ``REACH`` pools. A
    gap to the teacher within ``noise(n_eval)`` is called level: that few texts cannot tell them apart."""
    n = np.array([p[0] for p in points], dtype=np.float64)
    f1 = np.array([p[1] for p in points])
    per_doubling = float(np.polyfit(np.log2(n), f1, 1)[0]) if len(set(n.tolist())) > 1 else 0.0
    largest, best = float(n.max()), float(f1[n.argmax()])
    out = {"points": [{"texts": int(a), "macro_f1": round(float(b), 4)} for a, b in points],
           "teacher_macro_f1": round(teacher_f1, 4), "gain_per_doubling": round(per_doubling, 4), "texts_needed": None}
    if best >= teacher_f1:
        out["verdict"] = "at or above its teacher"
    elif n_eval and teacher_f1 - best < noise(n_eval):
        out["verdict"] = (f"level with its teacher within the noise of {n_eval} eval texts (about "
                          f"+/-{noise(n_eval):.2f}): more eval texts would tell them apart")
    elif per_doubling <= -FLAT:
        out["verdict"] = ("falling: the student got worse as it learnt from more of this teacher's labels, a sign "
                          "they are wrong in ways the texts share; a better teacher or its labels checked (--gold, "
                          "--task) would help, more of the same would not")
    elif per_doubling < FLAT:
        out["verdict"] = ("flat: more texts labelled by this teacher are unlikely to lift the student to it; a better "
                          "teacher or its labels checked (--gold, --task) are")
    else:
        doublings = (teacher_f1 - best) / per_doubling
        if doublings <= math.log2(REACH):
            out["texts_needed"] = int(round(largest * 2 ** doublings, -1))
            out["verdict"] = (f"rising: at this rate it would reach its teacher at about {out['texts_needed']:,} "
                              f"texts ({2 ** doublings:.1f}x this pool)")
        else:
            out["verdict"] = (f"rising slowly: it would need more than {REACH}x this pool to reach its teacher at this "
                              "rate")
    return out


def summary_line(curve: dict) -> str:
    """The curve in one line, for the summary and the model card."""
    pts = ", ".join(f"{p['texts']:,} texts {p['macro_f1']:.3f}" for p in curve["points"])
    return (f"learning curve (student macro-F1 on the eval texts): {pts}; teacher {curve['teacher_macro_f1']:.3f}; "
            f"{curve['gain_per_doubling']:+.3f} a doubling: {curve['verdict']} (a rough guide from "
            f"{len(curve['points'])} points)")


def learning_curve(config, pool: Pool, full_f1: float, teacher_f1: float, n_eval: int, score, run_dir: Path,
                   progress: bool) -> dict:
    """Students on ``SHARES`` of ``pool`` (same ``config.train``), each scored by ``score(student) -> macro-F1``;
    with the run's own ``full_f1`` at 100%, ``advice``. Each subset trains in RUN_DIR/curve/pNN, resumed from its
    checkpoint when a killed run comes back (distill has checked the folder holds this run)."""
    from .train import build_student, train

    points = []
    for share in SHARES:
        part = subset(pool, share, config.train.seed)
        folder = run_dir / "curve" / f"p{round(share * 100)}"
        folder.mkdir(parents=True, exist_ok=True)
        student = build_student(config.train.student, config.scoring.labels.names, config.train.seed)
        train(student, part, config.train, folder, resume=True, progress=progress)
        points.append((len(part.texts), float(score(student))))
    points.append((len(pool.texts), full_f1))
    return advice(points, teacher_f1, n_eval)


def where_it_stands(config, evaluated, pool: Pool, metrics: dict, run_dir: Path, progress: bool) -> dict | None:
    """distill's phase 5a': with --learning-curve auto, where the student ends below its teacher on the eval texts
    (always: wherever both were scored), the learning curve: RUN_DIR/learning_curve.json and .png, kept for a
    resumed run.
    ``evaluated``: the eval texts with their gold labels (distill's ``Labels.evaluated``)."""
    from .plots import learning_curve_png
    from .train import predict_proba

    teacher, student = metrics.get("teacher"), metrics.get("student")
    below = bool(teacher and student) and student["macro_f1"] < teacher["macro_f1"]
    if config.learning_curve == "off" or not (teacher and student) or (config.learning_curve == "auto" and not below):
        return None
    saved = run_dir / CURVE
    if saved.exists():
        return read_json(saved)
    labels = config.scoring.labels
    keep = [i for i, g in enumerate(evaluated.gold) if g]
    gold, texts = [evaluated.gold[i] for i in keep], [evaluated.texts[i] for i in keep]

    def score(model) -> float:
        predicted = predict_proba(model, texts, config.train.max_length, progress=False).argmax(axis=1)
        return classification_scores(gold, [labels.names[j] for j in predicted], labels.names)["macro_f1"]

    if progress:
        print(f"the student ({student['macro_f1']:.3f}) ends below its teacher ({teacher['macro_f1']:.3f}): training "
              "it on 25% and 50% of the pool for a learning curve (--learning-curve off skips this)" if below else
              "training the student on 25% and 50% of the pool for a learning curve", file=sys.stderr)
    curve = learning_curve(config, pool, student["macro_f1"], teacher["macro_f1"], len(texts), score, run_dir,
                           progress)
    learning_curve_png(run_dir / "learning_curve.png", curve, f"{config.train.student} on {len(texts)} eval texts")
    write_json(saved, curve)
    return curve
