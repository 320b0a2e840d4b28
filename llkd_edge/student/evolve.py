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

The pure parts (analysis, planning, prompts, parsing, screening, round figures) live in synthesis.py;
this module is the loop (``Evolution``), the only part that touches the teacher, the store and torch.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..config import EvolveConfig, ScoringConfig, TeacherConfig, TrainConfig, identity, stable_hash
from ..data import Dataset, read_dataset, text_key
from ..errors import DataError, UserError
from ..files import append_jsonl, read_json, read_jsonl, rounded, write_json, write_jsonl
from ..labels.labelling import check_gold, label_dataset
from ..metrics import classification_scores
from .plots import evolve_png
from .runs import is_store, open_run, prepare_run_folder, resolved, versions
from ..store import LabelRow, LabelStore
from .synthesis import (RoundRecord, Weakness, analyse, generation_schema, parse_texts, plan_requests, request_prompt,
                        round_summary, screen, synthetic_row, text_chars, verify)
from ..teacher.backend import Writer, open_backend

GENERATION_CTX = 4096  # the teacher's context while writing: the prompt and every new text must fit


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


class Evolution:
    """One evolve run: the inputs it reads once, the state it carries from round to round, and a round.

    ``run_round(n)`` runs round n (or takes it from rounds/NN/round.json when a killed run finished it) and
    returns its ``RoundRecord``; ``stopped`` turns true after two rounds in a row kept nothing; ``finish()``
    writes the final student, metrics.json and the plot.
    """

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
        self.pool = self.run.pool(relabelled=True)  # a retrained student learns the labels distill's learnt
        self.filled = self.run.filled()  # and, after a --label-budget run, the texts its probe filled
        self.evalset = self.run.eval_set()
        # never validated on: what the source student trained on (pool, filled, gold texts) or was scored on
        held = {text_key(t) for t in [r.text for r in self.pool] + self.filled[0]} | self.run.held_out_keys()
        self.val = _validation(config, self.run, held)
        self.out = _prepare_out(config, resume)
        teacher_config = TeacherConfig(model=model, n_threads=config.threads, n_gpu_layers=config.n_gpu_layers,
                                       n_ctx=GENERATION_CTX)
        if len(teacher_config.members) > 1:
            raise UserError(f"evolve writes and checks texts with one teacher; {self.run.path} was labelled by the "
                            f"ensemble {model}: pass --teacher with one of {', '.join(teacher_config.members)}")
        self.teacher = (teacher_factory or open_backend)(self.scoring, teacher_config)
        if not isinstance(self.teacher, Writer):
            self.teacher.close()
            raise UserError(f"evolve needs a teacher that writes texts; {model} cannot (a local GGUF model can)")
        self.warnings: list[str] = []
        if (self.run.metrics["data"].get("filled_size") or 0) and not self.filled[0]:
            self.warn(f"{self.run.path} predates recorded --fill-rest texts: evolve retrains on the teacher's labels "
                      "only, without the texts its probe filled")
        if provenance["config"].get("gold"):
            self.warn(f"{self.run.path} was trained with --gold; evolve retrains on the teacher's own labels of the pool "
                      "and on the written texts: the gold texts and the labels they corrected are not used yet")
        if not self.teacher.instruct:
            self.warn(f"{self.teacher.model.name} has no chat template (not instruction-tuned): it gets a plain "
                       "completion prompt, and its texts are likely poor; an instruct teacher such as "
                       "qwen2.5-coder-1.5b-instruct writes better ones")
        self.reference, self.reference_kind = self._val_reference()
        self.words = dict(zip(self.labels, self.scoring.labels.verbalisers))
        self.run_id = stable_hash(identity(config))[:12]
        self._val_probs: tuple[object, np.ndarray] | None = None
        self.started = time.perf_counter()
        # What the loop carries from round to round.
        self.student = None  # loaded by start()
        self.synthetic: list[LabelRow] = []
        self.history: list[RoundRecord] = []
        self.empty_streak = 0
        self.source_scores: dict | None = None  # the distill run's student, before round 1
        self._resumed = False  # whether the last round was taken from disk (its student is in OUT/student)

    def warn(self, message: str) -> None:
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
        references = [r.text for r in self.pool] + self.filled[0] + self.val.texts + [r.text for r in synthetic] + held_out
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
        from .pool import Pool
        from .train import build_student, train

        rows = [*self.pool, *synthetic]
        filled_texts, filled_probs = self.filled
        student = build_student(self.train_config.student, self.labels, self.train_config.seed)
        scratch = folder / "training"
        scratch.mkdir(exist_ok=True)
        probs = np.array([r.probs for r in rows], dtype=np.float64).reshape(-1, len(self.labels))
        stats = train(student, Pool([r.text for r in rows] + filled_texts, np.vstack([probs, filled_probs])),
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

    # -------------------------------------------------------------------------------- the run
    def start(self) -> None:
        """Write OUT/config.json (the source run's provenance plus ``evolve``) and load the source student."""
        from .train import load_student

        config, teacher = self.config, self.teacher
        provenance = dict(self.run.provenance)
        provenance["evolve"] = {
            "identity": identity(config),
            "config": asdict(config),
            "source_run": str(Path(config.run_dir).resolve()),
            "source_run_id": self.run.metrics.get("run_id"),
            "generator": {"name": teacher.model.name, "sha256": teacher.model.sha256,
                          "prompt_style": teacher.prompt_style, "config_hash": teacher.key.config_hash},
            "validation": {"data": self.val.name, "size": len(self.val.texts), "labels": self.reference_kind},
        }
        provenance["versions"] = versions("scikit-learn")
        write_json(self.out / "config.json", provenance)
        self.student = load_student(self.run.student_dir)

    @property
    def stopped(self) -> bool:
        """Two rounds in a row kept nothing: more rounds would not either."""
        return self.empty_streak >= 2

    def run_round(self, round_no: int) -> RoundRecord:
        """Round ``round_no``: analyse, write, screen and verify, store, retrain. A round a killed run finished is
        read back from its round.json (its kept texts join the synthetic set) instead of being run again."""
        from .train import load_student, save_student

        folder = self.out / "rounds" / f"{round_no:02d}"
        done = folder / "round.json"
        if done.exists():
            return self._finished_round(folder)
        if self._resumed and (self.out / "student").exists():
            self.student = load_student(self.out / "student")  # a resumed run: the latest retrained student
        self._resumed = False
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        weakness = self.weakness(self.student, folder)
        before = self.history[-1]["after"] if self.history else self.scores(self.student)
        self.source_scores = self.source_scores or before
        prompts = self.prompts(weakness, folder)
        t1 = time.perf_counter()
        attempts = self.generate(prompts, folder, round_no)
        t2 = time.perf_counter()
        records = self.judge(prompts, attempts, folder, round_no, self.synthetic)
        kept = [r for r in records if r["verdict"] == "accepted"]
        t3 = time.perf_counter()
        self.synthetic += [synthetic_row(r, self.labels) for r in kept]
        if kept:
            self.student, stats = self.retrain(self.synthetic, folder)
            after = self.scores(self.student)
            save_student(self.student, self.out / "student")
            self.empty_streak = 0
        else:
            stats, after = [], before
            self.empty_streak += 1
            self.warn(f"round {round_no}: no generated text passed the checks, so the student is unchanged"
                      + ("; two rounds in a row, so evolve stops here" if self.stopped else "; going on to the next round"))
        t4 = time.perf_counter()
        record: RoundRecord = {
            **round_summary(round_no, prompts, attempts, records,
                            {"analyse": t1 - t0, "generate": t2 - t1, "verify": t3 - t2, "train": t4 - t3}),
            "synthetic_total": len(self.synthetic), "before": before, "after": after,
            "train_epochs": [asdict(s) for s in stats],
        }
        write_json(done, record)
        self.history.append(record)
        if self.progress:
            _print_round(record)
        return record

    def _finished_round(self, folder: Path) -> RoundRecord:
        record: RoundRecord = read_json(folder / "round.json")
        kept = [r for r in read_jsonl(folder / "candidates.jsonl") if r["verdict"] == "accepted"]
        self.synthetic += [synthetic_row(r, self.labels) for r in kept]
        self.history.append(record)
        self.empty_streak = 0 if kept else self.empty_streak + 1
        self.source_scores = self.source_scores or record["before"]
        self._resumed = True
        return record

    def finish(self) -> dict:
        """Save the final student (the source one when no round kept anything), metrics.json and evolve.png."""
        from .train import save_student

        if not (self.out / "student").exists():
            save_student(self.student, self.out / "student")
        metrics = self._metrics(time.perf_counter() - self.started)
        write_json(self.out / "metrics.json", metrics)
        evolve_png(self.out / "evolve.png", self.history, self.run.labels)
        return metrics

    def _metrics(self, seconds: float) -> dict:
        """distill's metrics.json fields for the final student, plus ``evolve``: every round's figures."""
        source, history = self.run.metrics, self.history
        last = history[-1]["after"] if history else self.source_scores
        generated = sum(h["generated"] for h in history)
        accepted = sum(h["accepted"] for h in history)
        return {
            "teacher": source.get("teacher"),  # the source run's teacher on the same eval texts
            "student": last["eval"] if last else None,
            "selection": source.get("selection"),
            "data": {**source["data"], "pool_size": len(self.pool) + len(self.synthetic),
                     "synthetic": len(self.synthetic), "real_pool_size": len(self.pool)},
            "pool_teacher": source.get("pool_teacher"),
            "student_model": source.get("student_model"),
            "seconds": {"total": round(seconds, 2)},
            "run_id": self.run_id,
            "evolve": {
                "rounds_run": len(history),
                "generated": generated,
                "accepted": accepted,
                "acceptance_rate": round(accepted / generated, 4) if generated else None,
                "validation": {"size": len(self.val.texts), "labels": self.reference_kind},
                "before": self.source_scores,
                "after": last,
                "rounds": history,
                "warnings": self.warnings,
            },
        }


def evolve(config: EvolveConfig, resume: bool = False, progress: bool = True, teacher_factory=None) -> dict:
    """Run the rounds; returns the metrics also written to OUT/metrics.json."""
    # Paths as absolute ones, so the run folder means the same files from any directory.
    config = replace(config, run_dir=resolved(config.run_dir), val=resolved(config.val))
    ev = Evolution(config, resume, progress, teacher_factory)
    ev.start()
    for round_no in range(1, config.rounds + 1):
        ev.run_round(round_no)
        if ev.stopped:
            break
    return ev.finish()


def _print_round(s: dict) -> None:
    def f1(scores, part):
        return f"{scores[part]['macro_f1']:.3f}" if scores and scores.get(part) else "-"

    rate = f"{s['acceptance_rate']:.0%}" if s["acceptance_rate"] is not None else "-"
    print(f"round {s['round']}: kept {s['accepted']} of {s['generated']} generated texts ({rate}; "
          f"{s['failed_attempts']} failed generations); validation macro-F1 {f1(s['before'], 'validation')} -> "
          f"{f1(s['after'], 'validation')}, eval {f1(s['before'], 'eval')} -> {f1(s['after'], 'eval')}",
          file=sys.stderr)
