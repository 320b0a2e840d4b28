"""The ``evolve`` stage: the teacher writes the examples the student needs (EvoKD, Liu et al. 2024).

Starting from a finished ``distill`` run, each round
1. evaluates the current student on a validation slice (gold labels, or the teacher's) and analyses its
   weaknesses: per-class error rates, the confusions it makes, the texts it got wrong;
2. asks the teacher (an instruct GGUF model; generation through llama.cpp, constrained by a JSON grammar)
   for new texts of chosen labels: most aimed at a class's worst confusion ("hard"), some typical
   ("easy"); a generation that does not parse is retried and counted, never fatal;
3. screens the texts (too short, copies of the prompt's examples, exact/near duplicates of the pool,
   the validation or eval texts, earlier synthetic texts or each other) and verifies the rest with the teacher's
   own label scorer: a text is kept only when the teacher gives its intended label at least
   ``min_confidence``;
4. stores the kept texts in the label store (marked synthetic, with the round) and retrains the student
   from scratch on the pool plus every text kept so far, with the source run's training settings.

OUT receives:
  config.json        the source run's provenance plus ``evolve`` (settings, generator) and its own identity
  student/           the latest student (so ``export OUT`` works as on a distill run)
  rounds/NN/         weakness.json, prompts.json, generations.jsonl (every attempt, raw), candidates.jsonl
                     (every parsed text, its verdict and teacher scores), round.json (written last: a round
                     is finished when it exists; a killed run resumes in the round it stopped in and keeps
                     the generations already made)
  metrics.json       distill's fields for the final student, plus ``evolve``: every round's figures
  evolve.png         macro-F1 per round next to the texts kept per round

The first half of this module is pure (analysis, planning, prompts, parsing, screening); the loop below it
is the only part that touches the teacher, the store and torch.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .config import EvolveConfig, ScoringConfig, TeacherConfig, TrainConfig, identity, stable_hash
from .data import Dataset, read_dataset, text_key
from .errors import DataError, UserError
from .labelling import check_gold, label_dataset
from .teacher import load_teacher
from .files import append_jsonl, read_jsonl, rounded, save_figure, write_json, write_jsonl
from .metrics import classification_scores
from .runs import is_store, open_run, prepare_run_folder, resolved, versions
from .store import LabelRow, LabelStore

SHOWN_WORDS = 60  # a text shown in a prompt is cut to this many words
GENERATION_CTX = 4096


# ------------------------------------------------------------------------------------ weaknesses


@dataclass(frozen=True)
class Weakness:
    """Where a student goes wrong on the validation texts (reference labels: gold or the teacher's)."""

    labels: list[str]
    support: list[int]  # validation texts per reference label
    error_rate: list[float | None]  # 1 - recall per label; None where the label has no validation text
    confusions: list[tuple[str, str, int]]  # (reference, predicted, count), most frequent first
    mistakes: list[dict]  # {"text", "label", "predicted", "confidence"}: wrong, most confident first
    accuracy: float
    macro_f1: float

    def worst_confusion(self, label: str) -> str | None:
        """The label the student most often says for texts of ``label`` (None when it never errs there)."""
        return next((p for r, p, _ in self.confusions if r == label), None)


def analyse(texts: Sequence[str], reference: Sequence[str], probs: np.ndarray, labels: Sequence[str],
            keep: int = 60) -> Weakness:
    """The student's probabilities, shape (N, K), against reference labels -> its weaknesses."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(texts), len(labels)) or len(reference) != len(texts):
        raise ValueError(f"{len(texts)} texts and {len(reference)} references need probs of shape "
                         f"({len(texts)}, {len(labels)}), got {probs.shape}")
    if not texts:
        raise ValueError("no validation texts to analyse")
    predicted = [labels[j] for j in probs.argmax(axis=1)]
    support = Counter(reference)
    wrong = Counter((r, p) for r, p in zip(reference, predicted) if r != p)
    error_rate = [None if not support[lab] else sum(c for (r, _), c in wrong.items() if r == lab) / support[lab]
                  for lab in labels]
    confusions = sorted(((r, p, c) for (r, p), c in wrong.items()), key=lambda x: (-x[2], x[0], x[1]))
    order = np.argsort(-probs.max(axis=1), kind="stable")
    mistakes = [{"text": texts[i], "label": reference[i], "predicted": predicted[i],
                 "confidence": round(float(probs[i].max()), 4)} for i in order if reference[i] != predicted[i]]
    scores = classification_scores(list(reference), predicted, labels)
    return Weakness(list(labels), [support[lab] for lab in labels], error_rate, confusions, mistakes[:keep],
                    scores["accuracy"], scores["macro_f1"])


# ------------------------------------------------------------------------------------ requests


@dataclass(frozen=True)
class Request:
    """Ask for ``n`` texts of ``label``; ``versus`` is the label the student mistakes it for (a hard request)."""

    label: str
    n: int
    versus: str | None = None


def _largest_remainder(total: int, weights: np.ndarray) -> list[int]:
    share = total * weights / weights.sum()
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def plan_requests(weakness: Weakness, per_round: int, per_request: int, hard_share: float) -> list[Request]:
    """Split ``per_round`` texts over the labels by error rate (every label keeps a small share), then each
    label's texts into hard ones (aimed at its worst confusion) and easy ones, ``per_request`` per request."""
    rates = [r for r in weakness.error_rate if r is not None]
    unknown = float(np.mean(rates)) if rates else 0.5  # a label with no validation text: assume the average
    weights = np.array([unknown if r is None else r for r in weakness.error_rate]) + 0.1
    requests = []
    for label, quota in zip(weakness.labels, _largest_remainder(per_round, weights)):
        versus = weakness.worst_confusion(label)
        hard = round(quota * hard_share) if versus else 0
        for n, target in ((hard, versus), (quota - hard, None)):
            while n > 0:
                requests.append(Request(label, min(n, per_request), target))
                n -= per_request
    return requests


def _shown(text: str) -> str:
    words = text.split()
    return " ".join(words[:SHOWN_WORDS]) + (" ..." if len(words) > SHOWN_WORDS else "")


def request_prompt(request: Request, weakness: Weakness, task: str, verbalisers: dict[str, str],
                   style_examples: Sequence[str], n_examples: int) -> tuple[str, list[str]]:
    """The instruction for one request, and the excerpts it shows, as shown (a generated text must not copy
    them; the excerpt, not the whole text, is what a copy resembles).

    ``verbalisers`` maps label names to the words the teacher knows them by; ``style_examples`` are texts of
    the request's label to show when the student made no mistake worth showing.
    """
    word = verbalisers[request.label]
    listing = ", ".join(verbalisers.values())
    lines = [f"You are writing training examples for a text classifier. The task: {task.rstrip('.?!:')}. "
             f"The labels are: {listing}.", ""]
    trouble = []
    for label, rate in zip(weakness.labels, weakness.error_rate):
        if rate:
            versus = weakness.worst_confusion(label)
            trouble.append(f"- {verbalisers[label]}: {rate:.0%} wrong, most often taken for {verbalisers[versus]}")
    if trouble:
        lines += ["A small student classifier trained on this task still makes these mistakes on a validation set:",
                  *trouble, ""]
    if request.versus:
        wanted = [m for m in weakness.mistakes if m["label"] == request.label and m["predicted"] == request.versus]
    else:
        wanted = [m for m in weakness.mistakes if m["label"] == request.label]
    shown = [_shown(m["text"]) for m in wanted[:n_examples]]
    if shown:
        lines.append(f"Texts whose correct label is {word} but that the student got wrong:")
        for m, excerpt in zip(wanted, shown):
            lines.append(f'- "{excerpt}" (the student said {verbalisers[m["predicted"]]})')
    else:
        shown = [_shown(t) for t in style_examples[:n_examples]]
        if shown:
            lines.append(f"Texts whose correct label is {word}:")
            lines += [f'- "{excerpt}"' for excerpt in shown]
    lines.append("")
    if request.versus:
        other = verbalisers[request.versus]
        lines.append(f"Write {request.n} new texts whose correct label is clearly {word}, but that a weak "
                     f"classifier could mistake for {other}: they may share words or themes with {other}, "
                     f"while what they are about is {word}.")
    else:
        lines.append(f"Write {request.n} new, typical texts whose correct label is clearly {word}.")
    lines.append("Each text is 2 to 4 sentences in the style of the texts of this task, about a different "
                 "subject from the others; do not copy the examples above and do not name the label.")
    lines.append('Answer with JSON only: {"texts": ["...", ...]}')
    return "\n".join(lines), shown


CHARS_PER_TOKEN = 3  # a safe floor for English prose (about 4 on average)


def text_chars(n: int, max_new_tokens: int, min_chars: int = 40, cap: int = 700) -> int:
    """The longest text the grammar allows, so that ``n`` of them fit ``max_new_tokens``: an answer then ends
    inside its budget and parses, instead of being cut off at the token limit."""
    return max(2 * min_chars, min(cap, max_new_tokens * CHARS_PER_TOKEN // n - 16))


def generation_schema(n: int, min_chars: int = 40, max_chars: int = 700) -> dict:
    """The JSON schema (and so the llama.cpp grammar) of an answer: exactly ``n`` texts."""
    text = {"type": "string", "minLength": min_chars, "maxLength": max_chars}
    return {"type": "object", "properties": {"texts": {"type": "array", "items": text, "minItems": n, "maxItems": n}},
            "required": ["texts"], "additionalProperties": False}


def parse_texts(raw: str, n: int) -> list[str]:
    """The ``n`` texts of a generation; ValueError saying why when it is not that."""
    try:
        answer = json.loads(raw, strict=False)  # a raw newline or tab inside a text is no reason to drop it
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc.args[0][:60]})") from None
    texts = answer.get("texts") if isinstance(answer, dict) else None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError('no "texts" list of strings')
    texts = [" ".join(t.split()) for t in texts]
    if len(texts) != n:
        raise ValueError(f"{len(texts)} texts, asked for {n}")
    return texts


# ------------------------------------------------------------------------------------ screening


def screen(candidates: Sequence[str], shown: Sequence[Sequence[str]], references: Sequence[str], min_words: int,
           threshold: float) -> list[str | None]:
    """A verdict per candidate before the teacher sees it: None (keep) or why it is dropped.

    ``shown[i]`` are the texts candidate i's prompt showed ("copies_prompt" when it is as close as
    ``threshold`` to one); ``references`` are texts it must not repeat (pool, validation, earlier synthetic):
    a candidate that close to one of them, or to an earlier kept candidate, is a "duplicate". Closeness is
    the cosine similarity of TF-IDF character 3-5-gram vectors, so exact copies score 1.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(shown) != len(candidates):
        raise ValueError(f"{len(candidates)} candidates but {len(shown)} lists of shown texts")
    verdicts: list[str | None] = [None] * len(candidates)
    if not candidates:
        return verdicts
    shown_texts = sorted({t for group in shown for t in group})
    vectoriser = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), lowercase=True, sublinear_tf=True)
    matrix = vectoriser.fit_transform([*candidates, *references, *shown_texts])
    cand = matrix[: len(candidates)]
    ref = matrix[len(candidates) : len(candidates) + len(references)]
    shown_vecs = matrix[len(candidates) + len(references) :]
    shown_index = {t: i for i, t in enumerate(shown_texts)}
    ref_max = (cand @ ref.T).max(axis=1).toarray().ravel() if len(references) else np.zeros(len(candidates))
    among = (cand @ cand.T).toarray()
    kept: list[int] = []
    for i, text in enumerate(candidates):
        if len(text.split()) < min_words:
            verdicts[i] = "too_short"
        elif shown[i] and (cand[i] @ shown_vecs[[shown_index[t] for t in shown[i]]].T).max() >= threshold:
            verdicts[i] = "copies_prompt"
        elif ref_max[i] >= threshold or any(among[i, j] >= threshold for j in kept):
            verdicts[i] = "duplicate"
        else:
            kept.append(i)
    return verdicts


def verify(intended: Sequence[str], rows: Sequence[LabelRow], min_confidence: float) -> list[str | None]:
    """The teacher's verdict per scored text: None (accept), "teacher_disagrees" or "low_confidence"."""
    out: list[str | None] = []
    for label, row in zip(intended, rows, strict=True):
        if row.label != label:
            out.append("teacher_disagrees")
        elif row.confidence < min_confidence:
            out.append("low_confidence")
        else:
            out.append(None)
    return out


# ------------------------------------------------------------------------------------ the loop


def _prepare_out(config: EvolveConfig, resume: bool) -> Path:
    return prepare_run_folder(Path(config.out), identity(config), resume, ("evolve", "identity"), "evolve run")


def _check_val_source(config: EvolveConfig, run) -> None:
    source = run.provenance["config"]
    if not config.val and (is_store(source["data"]) or not source["limit"]):
        raise UserError(f"{run.path} trained on all of {source['data']}, so no texts are left for validation; "
                        "pass --val FILE (texts, with a `label` column if you have gold labels)")


def _validation(config: EvolveConfig, run, exclude: set[str]) -> Dataset:
    """The validation texts: --val, else the rows of the run's DATA after its --limit; never a pool or eval text
    (``exclude`` holds their ``text_key``s), each text once."""
    source = run.provenance["config"]
    _check_val_source(config, run)
    if config.val:
        data = read_dataset(config.val, source["text_column"], None)
        start = 0
    else:
        data = read_dataset(source["data"], source["text_column"], source["label_column"])
        start = source["limit"]
    seen = set(exclude)
    keep = []
    for i in range(start, len(data.texts)):
        key = text_key(data.texts[i])
        if data.texts[i].strip() and key not in seen:
            seen.add(key)
            keep.append(i)
    keep = keep[: config.val_limit]
    if not keep:
        raise DataError(f"{config.val or source['data']}: no validation texts left after the pool and eval texts")
    gold = None if data.gold is None else [data.gold[i] for i in keep]
    return Dataset(f"{data.name}[validation]", [data.texts[i] for i in keep], gold)


def _seed(*parts) -> int:
    return int(stable_hash(list(parts))[:8], 16)


@dataclass
class _State:
    """What the loop carries from round to round."""

    student: object
    synthetic: list[LabelRow] = field(default_factory=list)
    empty_streak: int = 0
    history: list[dict] = field(default_factory=list)


class _Evolution:
    """One evolve run: the inputs it reads once, and the steps of a round."""

    def __init__(self, config: EvolveConfig, resume: bool, progress: bool, teacher_factory):
        self.config = config
        self.progress = progress
        self.run = open_run(config.run_dir)
        if "evolve" in self.run.provenance:
            raise UserError(f"{self.run.path} is itself an evolve run; evolve its source run "
                            f"({self.run.provenance['evolve']['source_run']}) with more --rounds instead")
        _check_val_source(config, self.run)  # before anything is read or loaded
        provenance = self.run.provenance
        try:
            self.scoring = ScoringConfig.from_dict(provenance["config"]["scoring"])
            self.train_config = TrainConfig(**{**provenance["config"]["train"], "threads": config.threads,
                                                "device": "auto"})
            model = config.teacher or provenance["config"]["teacher"]["model"]
        except (KeyError, TypeError):
            raise UserError(f"{self.run.path}/config.json lacks the run's scoring, training or teacher settings; "
                            "distil again") from None
        self.labels = list(self.scoring.labels.names)
        if self.labels != self.run.labels:
            raise UserError(f"{self.run.path}: config.json and metrics.json disagree about the labels; distil again")
        self.pool = self.run.pool()
        self.evalset = self.run.eval_set()
        held = {text_key(t) for t in [r.text for r in self.pool] + (self.evalset.texts if self.evalset else [])}
        self.val = _validation(config, self.run, held)
        self.out = _prepare_out(config, resume)
        teacher_config = TeacherConfig(model=model, n_threads=config.threads, n_gpu_layers=config.n_gpu_layers,
                                       n_ctx=GENERATION_CTX)
        self.teacher = (teacher_factory or load_teacher)(self.scoring, teacher_config)
        self.warnings: list[str] = []
        if not self.teacher.instruct:
            self._warn(f"{self.teacher.model.name} has no chat template (not instruction-tuned): it gets a plain "
                       "completion prompt, and its texts are likely poor; an instruct teacher such as "
                       "qwen2.5-coder-1.5b-instruct writes better ones")
        self.reference, self.reference_kind = self._val_reference()
        self.words = dict(zip(self.labels, self.scoring.labels.verbalisers))
        self.run_id = stable_hash(identity(config))[:12]
        self._val_probs: tuple[object, np.ndarray] | None = None

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f"warning: {message}", file=sys.stderr)

    def _val_reference(self) -> tuple[list[str], str]:
        gold = self.val.gold
        has_gold = gold is not None and all(gold)
        if self.config.val_labels == "gold" or (self.config.val_labels == "auto" and has_gold):
            if not has_gold:
                raise DataError(f"{self.val.name}: --val-labels gold needs a gold label on every validation text")
            check_gold(gold, self.scoring.labels, self.val.name)
            return list(gold), "gold"
        labelled = label_dataset(Dataset(self.val.name, self.val.texts), self.teacher, self.run.store,
                                 progress=self.progress, role="validation")
        by_text = {t: r.label for t, r in zip(labelled.texts, labelled.rows)}
        return [by_text[t] for t in self.val.texts], "teacher"

    # -------------------------------------------------------------------------------- a round
    def val_probs(self, student) -> np.ndarray:
        """Shape (N, K): the student's probabilities on the validation texts, computed once per student (the
        round's analysis and the scores before/after share them)."""
        from .train import predict_proba

        if self._val_probs is None or self._val_probs[0] is not student:
            self._val_probs = (student, predict_proba(student, self.val.texts, self.train_config.max_length))
        return self._val_probs[1]

    def weakness(self, student, folder: Path) -> Weakness:
        saved = folder / "weakness.json"
        if saved.exists():  # a resumed round asks for what it asked for before
            d = json.loads(saved.read_text())
            return Weakness(**{**d, "confusions": [tuple(c) for c in d["confusions"]]})
        weakness = analyse(self.val.texts, self.reference, self.val_probs(student), self.labels)
        write_json(saved, asdict(weakness))
        return weakness

    def prompts(self, weakness: Weakness, folder: Path) -> list[dict]:
        saved = folder / "prompts.json"
        if saved.exists():
            return json.loads(saved.read_text())
        cfg = self.config
        by_label = {lab: [t for t, r in zip(self.val.texts, self.reference) if r == lab] for lab in self.labels}
        prompts = []
        for request in plan_requests(weakness, cfg.per_round, cfg.per_request, cfg.hard_share):
            text, shown = request_prompt(request, weakness, self.scoring.task, self.words, by_label[request.label],
                                         cfg.prompt_examples)
            prompts.append({"request": asdict(request), "prompt": text, "shown": shown})
        write_json(saved, prompts)
        return prompts

    def generate(self, prompts: list[dict], folder: Path, round_no: int) -> list[list[dict]]:
        """Every attempt per request (appended to generations.jsonl as made; a resumed round skips done ones)."""
        from tqdm.auto import tqdm

        cfg = self.config
        log = folder / "generations.jsonl"
        attempts: list[list[dict]] = [[] for _ in prompts]
        made = read_jsonl(log)
        if made:  # rewrite without a line a kill may have torn, so new lines append cleanly
            write_jsonl(log, made)
        for record in made:
            attempts[record["request_index"]].append(record)
        bar = tqdm(total=len(prompts), desc=f"round {round_no}: writing", unit="request", disable=not self.progress,
                   dynamic_ncols=True)
        for i, item in enumerate(prompts):
            n = item["request"]["n"]
            while not any(a["texts"] for a in attempts[i]) and len(attempts[i]) <= cfg.retries:
                seed = _seed(cfg.seed, round_no, i, len(attempts[i]))
                schema = generation_schema(n, max_chars=text_chars(n, cfg.max_new_tokens))
                g = self.teacher.generate(item["prompt"], schema, cfg.max_new_tokens, cfg.temperature, seed, cfg.timeout_s)
                try:
                    texts, error = parse_texts(g.text, n), None
                except ValueError as exc:
                    texts = None
                    error = f"timed out after {cfg.timeout_s:g}s" if g.timed_out else (
                        f"cut at {cfg.max_new_tokens} tokens" if g.finish_reason == "length" else str(exc))
                record = {"request_index": i, "attempt": len(attempts[i]), "seed": seed, "raw": g.text,
                          "texts": texts, "error": error, "finish_reason": g.finish_reason,
                          "timed_out": g.timed_out, "prompt_tokens": g.prompt_tokens, "new_tokens": g.new_tokens,
                          "seconds": round(g.seconds, 2)}
                append_jsonl(log, record)
                attempts[i].append(record)
            bar.update(1)
            bar.set_postfix(failed=sum(1 for a in attempts for r in a if r["error"]))
        bar.close()
        return attempts

    def judge(self, prompts, attempts, folder: Path, round_no: int, synthetic: list[LabelRow]) -> list[dict]:
        """Screen and verify every parsed text; the accepted ones go into the store. -> candidate records."""
        candidates, shown, intended, requests = [], [], [], []
        for i, (item, tries) in enumerate(zip(prompts, attempts)):
            good = next((a for a in tries if a["texts"]), None)
            for text in good["texts"] if good else []:
                candidates.append(text)
                shown.append(item["shown"])
                intended.append(item["request"]["label"])
                requests.append(i)
        # The eval texts too: the writer never sees them, but it may have read them in pre-training, and a
        # copy trained on would inflate the eval score.
        held_out = self.evalset.texts if self.evalset else []
        references = [r.text for r in self.pool] + self.val.texts + [r.text for r in synthetic] + held_out
        verdicts = screen(candidates, shown, references, self.config.min_words, self.config.near_duplicate)
        to_score = [i for i, v in enumerate(verdicts) if v is None]
        rows = dict(zip(to_score, self.teacher.score([candidates[i] for i in to_score])))
        checked = verify([intended[i] for i in to_score], [rows[i] for i in to_score], self.config.min_confidence)
        for i, v in zip(to_score, checked):
            verdicts[i] = v
        records = []
        for i, text in enumerate(candidates):
            row = rows.get(i)
            records.append({"text": text, "intended": intended[i], "request_index": requests[i],
                            "verdict": verdicts[i] or "accepted",
                            "teacher_label": row.label if row else None,
                            "teacher_confidence": round(row.confidence, 4) if row else None,
                            "probs": list(row.probs) if row else None})
        accepted = [(candidates[i], intended[i], rows[i]) for i in to_score if verdicts[i] is None]
        if accepted:
            teacher = self.teacher
            generator = {"teacher": teacher.model.name, "sha256": teacher.model.sha256,
                         "prompt_style": teacher.prompt_style, "temperature": self.config.temperature}
            with LabelStore(self.run.store) as store:
                store.register(teacher.key, teacher.model.name, self.labels, teacher.details)
                store.add(teacher.key, [row for _, _, row in accepted])
                store.mark_synthetic(teacher.key, [(t, lab) for t, lab, _ in accepted], self.run_id, round_no, generator)
        write_jsonl(folder / "candidates.jsonl", records)
        return records

    def retrain(self, synthetic: list[LabelRow], folder: Path):
        from .train import Pool, build_student, train

        rows = [*self.pool, *synthetic]
        student = build_student(self.train_config.student, self.labels, self.train_config.seed)
        scratch = folder / "training"
        scratch.mkdir(exist_ok=True)
        stats = train(student, Pool([r.text for r in rows], np.array([r.probs for r in rows], dtype=np.float64)),
                      self.train_config, scratch, progress=self.progress)
        shutil.rmtree(scratch)  # the optimiser state is large and a round retrains from scratch anyway
        return student, stats

    def scores(self, student) -> dict:
        """The student on the validation texts (against their reference) and on the gold eval set."""
        from .train import predict_proba

        def score(probs, gold):
            return rounded(classification_scores(gold, [self.labels[j] for j in probs.argmax(axis=1)], self.labels))

        out = {"validation": score(self.val_probs(student), self.reference), "eval": None}
        if self.evalset:
            pairs = [(t, g) for t, g in zip(self.evalset.texts, self.evalset.gold) if g]
            probs = predict_proba(student, [t for t, _ in pairs], self.train_config.max_length)
            out["eval"] = score(probs, [g for _, g in pairs])
        return out


def _round_summary(round_no: int, prompts, attempts, records, seconds: dict) -> dict:
    tries = [a for group in attempts for a in group]
    verdicts = Counter(r["verdict"] for r in records)
    accepted = [r for r in records if r["verdict"] == "accepted"]
    gen_seconds = sum(a["seconds"] for a in tries)
    return {
        "round": round_no,
        "requests": len(prompts),
        "texts_asked": sum(p["request"]["n"] for p in prompts),
        "attempts": len(tries),
        "failed_attempts": sum(1 for a in tries if a["error"]),
        "timeouts": sum(1 for a in tries if a["timed_out"]),
        "requests_without_texts": sum(1 for group in attempts if not any(a["texts"] for a in group)),
        "generated": len(records),
        "accepted": len(accepted),
        "acceptance_rate": round(len(accepted) / len(records), 4) if records else None,
        "verdicts": dict(verdicts),
        "accepted_per_label": dict(Counter(r["intended"] for r in accepted)),
        "hard_accepted": sum(1 for r in accepted if prompts[r["request_index"]]["request"]["versus"]),
        "new_tokens": sum(a["new_tokens"] for a in tries),
        "tokens_per_second": round(sum(a["new_tokens"] for a in tries) / gen_seconds, 2) if gen_seconds else None,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def evolve(config: EvolveConfig, resume: bool = False, progress: bool = True, teacher_factory=None) -> dict:
    """Run the rounds; returns the metrics also written to OUT/metrics.json."""
    from .train import load_student, save_student

    started = time.perf_counter()
    # Paths as absolute ones, so the run folder means the same files from any directory.
    config = replace(config, run_dir=resolved(config.run_dir), val=resolved(config.val))
    ev = _Evolution(config, resume, progress, teacher_factory)
    out = ev.out
    provenance = dict(ev.run.provenance)
    provenance["evolve"] = {
        "identity": identity(config),
        "config": asdict(config),
        "source_run": str(Path(config.run_dir).resolve()),
        "source_run_id": ev.run.metrics.get("run_id"),
        "generator": {"name": ev.teacher.model.name, "sha256": ev.teacher.model.sha256,
                      "prompt_style": ev.teacher.prompt_style, "config_hash": ev.teacher.key.config_hash},
        "validation": {"data": ev.val.name, "size": len(ev.val.texts), "labels": ev.reference_kind},
    }
    provenance["versions"] = versions("scikit-learn")
    write_json(out / "config.json", provenance)

    source_scores = None
    state = _State(student=load_student(ev.run.student_dir))
    skipped = False  # whether finished rounds were passed over (a resumed run)
    for round_no in range(1, config.rounds + 1):
        folder = out / "rounds" / f"{round_no:02d}"
        done = folder / "round.json"
        if done.exists():  # finished before a kill: take its kept texts, and its student if it made one
            summary = json.loads(done.read_text())
            kept = [r for r in read_jsonl(folder / "candidates.jsonl") if r["verdict"] == "accepted"]
            state.synthetic += [_row(r, ev.labels) for r in kept]
            state.history.append(summary)
            state.empty_streak = 0 if kept else state.empty_streak + 1
            source_scores = source_scores or summary["before"]
            skipped = True
            if state.empty_streak >= 2:
                break
            continue
        if skipped and (out / "student").exists():
            state.student = load_student(out / "student")  # a resumed run: the latest retrained student
        skipped = False
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        weakness = ev.weakness(state.student, folder)
        before = state.history[-1]["after"] if state.history else ev.scores(state.student)
        source_scores = source_scores or before
        prompts = ev.prompts(weakness, folder)
        t1 = time.perf_counter()
        attempts = ev.generate(prompts, folder, round_no)
        t2 = time.perf_counter()
        records = ev.judge(prompts, attempts, folder, round_no, state.synthetic)
        kept = [r for r in records if r["verdict"] == "accepted"]
        t3 = time.perf_counter()
        state.synthetic += [_row(r, ev.labels) for r in kept]
        if kept:
            state.student, stats = ev.retrain(state.synthetic, folder)
            after = ev.scores(state.student)
            save_student(state.student, out / "student")
            state.empty_streak = 0
        else:
            stats, after = [], before
            state.empty_streak += 1
            ev._warn(f"round {round_no}: no generated text passed the checks, so the student is unchanged"
                     + ("; two rounds in a row, so evolve stops here" if state.empty_streak >= 2 else
                        "; going on to the next round"))
        t4 = time.perf_counter()
        summary = _round_summary(round_no, prompts, attempts, records,
                                 {"analyse": t1 - t0, "generate": t2 - t1, "verify": t3 - t2, "train": t4 - t3})
        summary.update({"synthetic_total": len(state.synthetic), "before": before, "after": after,
                        "train_epochs": [asdict(s) for s in stats]})
        write_json(done, summary)
        state.history.append(summary)
        if progress:
            _print_round(summary)
        if state.empty_streak >= 2:
            break

    if not (out / "student").exists():  # no round kept anything: the source student stands
        save_student(state.student, out / "student")
    metrics = _final_metrics(ev, state, source_scores, time.perf_counter() - started)
    write_json(out / "metrics.json", metrics)
    _plot(out / "evolve.png", state.history, ev.run.labels)
    return metrics


def _row(record: dict, labels: list[str]) -> LabelRow:
    from .distributions import entropy

    p = np.asarray(record["probs"], dtype=np.float64)
    return LabelRow(record["text"], tuple(record["probs"]), labels[int(p.argmax())], float(p.max()),
                    float(entropy(p[None])[0]), 0.0, 0, False)


def _final_metrics(ev: _Evolution, state: _State, source_scores: dict | None, seconds: float) -> dict:
    source = ev.run.metrics
    history = state.history
    last = history[-1]["after"] if history else source_scores
    generated = sum(h["generated"] for h in history)
    accepted = sum(h["accepted"] for h in history)
    metrics = {
        "teacher": source.get("teacher"),  # the source run's teacher on the same eval texts
        "student": last["eval"] if last else None,
        "selection": source.get("selection"),
        "data": {**source["data"], "pool_size": len(ev.pool) + len(state.synthetic), "synthetic": len(state.synthetic),
                 "real_pool_size": len(ev.pool)},
        "pool_teacher": source.get("pool_teacher"),
        "student_model": source.get("student_model"),
        "seconds": {"total": round(seconds, 2)},
        "run_id": ev.run_id,
        "evolve": {
            "rounds_run": len(history),
            "generated": generated,
            "accepted": accepted,
            "acceptance_rate": round(accepted / generated, 4) if generated else None,
            "validation": {"size": len(ev.val.texts), "labels": ev.reference_kind},
            "before": source_scores,
            "after": last,
            "rounds": history,
            "warnings": ev.warnings,
        },
    }
    return metrics


def _print_round(s: dict) -> None:
    def f1(scores, part):
        return f"{scores[part]['macro_f1']:.3f}" if scores and scores.get(part) else "-"

    rate = f"{s['acceptance_rate']:.0%}" if s["acceptance_rate"] is not None else "-"
    print(f"round {s['round']}: kept {s['accepted']} of {s['generated']} generated texts ({rate}; "
          f"{s['failed_attempts']} failed generations); validation macro-F1 {f1(s['before'], 'validation')} -> "
          f"{f1(s['after'], 'validation')}, eval {f1(s['before'], 'eval')} -> {f1(s['after'], 'eval')}",
          file=sys.stderr)


def _plot(path: Path, history: list[dict], labels: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    rounds = [0] + [h["round"] for h in history]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for part, style in (("eval", "o-"), ("validation", "s--")):
        points = [history[0]["before"]] + [h["after"] for h in history]
        values = [p[part]["macro_f1"] if p and p.get(part) else math.nan for p in points]
        if not all(math.isnan(v) for v in values):
            ax.plot(rounds, values, style, label=f"{part} macro-F1")
    ax.set_xlabel("round (0: the distill run's student)")
    ax.set_ylabel("macro-F1")
    ax.set_xticks(rounds)
    ax.legend()
    ax.grid(alpha=0.3)
    bottom = np.zeros(len(history))
    for verdict in ("accepted", "teacher_disagrees", "low_confidence", "duplicate", "copies_prompt", "too_short"):
        counts = np.array([h["verdicts"].get(verdict, 0) for h in history])
        if counts.any():
            bx.bar(rounds[1:], counts, bottom=bottom, label=verdict.replace("_", " "))
            bottom += counts
    bx.set_xlabel("round")
    bx.set_ylabel("generated texts")
    bx.set_xticks(rounds[1:])
    bx.legend(fontsize=8)
    fig.suptitle(f"evolve: {len(labels)} labels")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
