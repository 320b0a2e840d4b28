"""The student: build it, train it on teacher labels with sample selection, evaluate it, checkpoint it.

Reads top to bottom: ``build_student`` -> ``train`` (one epoch at a time, a checkpoint after each) ->
``predict_proba``. The selection maths lives in ``selection.py``; this module only feeds it the
teacher's confidence and the student's normalised entropy for each batch, from the same forward pass
that trains on the batch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..errors import ModelError, UserError
from ..files import atomic_path, one_line, read_json, write_json
from ..teacher.encoder import model_folder, require_torch
from ..registry import registry
from ..distributions import softmax  # the runtime's own, so PyTorch and ONNX probabilities are computed alike
from .checkpoint import CHECKPOINT, EpochStats, check_resumable, load_checkpoint, save_checkpoint
from .pool import Pool
from .selection import METHODS, ThresholdState, pool_median_bars, rule_of, select
from . import static
from .head import set_from_probe

def kept_layers(total: int, keep: int) -> list[int]:
    """``keep`` evenly spaced layer indices out of ``total``, always the first and the last."""
    if not 1 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} layers")
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


@dataclass
class Student:
    model: object  # transformers PreTrainedModel
    tokenizer: object
    name: str
    info: dict = field(default_factory=dict)


def build_student(name: str, labels: Sequence[str], seed: int) -> Student:
    """A registered student name or a local transformers folder, with a new K-way classification head."""
    torch = require_torch()
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialised head" is expected, not news
    torch.manual_seed(seed)
    id2label = dict(enumerate(labels))
    label2id = {v: k for k, v in id2label.items()}
    known = registry("students")
    if name in known:
        entry = known[name]
        folder = model_folder(entry)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if "static" in entry:
            model = static.build(folder, labels, entry["static"]["dims"], seed)
            info = {"base": "static", "architecture": static.ARCHITECTURE, "distilled_from": str(folder),
                    **entry["static"], "licence": entry["licence"]}
        elif "fresh" in entry:
            config = BertConfig(vocab_size=tokenizer.vocab_size, num_labels=len(labels), id2label=id2label,
                                label2id=label2id, **entry["fresh"])
            model = BertForSequenceClassification(config)
            info = {"base": "fresh", **entry["fresh"]}
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                folder, num_labels=len(labels), id2label=id2label, label2id=label2id)
            total = model.config.num_hidden_layers
            keep = kept_layers(total, entry["layers"])
            if len(keep) < total:
                encoder = model.base_model.encoder
                encoder.layer = torch.nn.ModuleList([encoder.layer[i] for i in keep])
                model.config.num_hidden_layers = len(keep)
            info = {"base": str(folder), "layers_kept": keep, "licence": entry["licence"]}
        info["default_learning_rate"] = entry["learning_rate"]
        info["default_head"] = entry.get("head", "random")
    else:
        folder = Path(name)
        if not (folder / "config.json").is_file():
            raise UserError(f"unknown student {name!r}: use one of {', '.join(known)} or a transformers model folder")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=len(labels), id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True)
        info = {"base": str(folder.resolve()), "default_learning_rate": 5e-5}
    info["parameters"] = sum(p.numel() for p in model.parameters())
    return Student(model, tokenizer, name, info)


def encode(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def collate(torch, ids: list[list[int]], pad_id: int):
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return input_ids, mask


# ------------------------------------------------------------------------------------------ training


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when PyTorch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    torch = require_torch()
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: PyTorch sees no CUDA GPU here (no GPU, or a CPU-only torch build)")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _autocast(torch, device: str):
    """bf16 mixed precision on a GPU that supports it (no loss scaling needed); fp32 otherwise."""
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), "bf16 autocast"
    return contextlib.nullcontext(), "fp32"


def train(
    student: Student,
    pool: Pool,
    config: TrainConfig,
    checkpoint_dir: Path,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train ``student`` on ``pool`` with ``config.selection``; a checkpoint is written after every epoch.

    With ``resume``, training continues after the last checkpointed epoch, and ends where an
    uninterrupted run would have (the data order, dropout and random selection are all restored).
    """
    torch = require_torch()
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    autocast, precision = _autocast(torch, device)
    student.info.update(device=device, precision=precision)
    model = student.model.to(device)
    k = model.config.num_labels
    n = len(pool.texts)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    lr = config.learning_rate or student.info["default_learning_rate"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    rule = rule_of(config, total_steps)
    labelled = ~pool.trusted  # the teacher's samples: gold ones are never judged
    bars = (pool_median_bars(pool.conf[labelled], pool.pseudo[labelled], k) if rule.class_terms == "pool-median"
            else None)
    state = ThresholdState.initial(k, momentum=config.momentum, rule=rule, teacher_bars=bars,
                                   teacher_prior=float(pool.conf[labelled].mean()) if labelled.any() else None)
    rng = np.random.default_rng(config.seed)
    ever = np.zeros(n, dtype=bool)
    stats: list[EpochStats] = []
    start_epoch = 0
    ckpt = Path(checkpoint_dir) / CHECKPOINT
    fingerprint = pool.fingerprint()
    ids = encode(student.tokenizer, pool.texts, config.max_length)
    pad_id = student.tokenizer.pad_token_id or 0
    resuming = resume and ckpt.exists()
    student.info["head"] = config.head or student.info.get("default_head", "random")
    probe_record = Path(checkpoint_dir) / "head_probe.json"
    if student.info["head"] == "probe" and not resuming:  # a resumed model has its head in the checkpoint
        batches = ((a.to(device), b.to(device)) for a, b in
                   (collate(torch, ids[i : i + 64], pad_id) for i in range(0, n, 64)))
        counts = pool.weights * np.where(pool.trusted, config.gold_weight, 1.0)  # as the loss weighs them
        student.info["head_probe"] = set_from_probe(torch, model, batches, pool.pseudo,
                                                    None if np.all(counts == counts[0]) else counts)
        write_json(probe_record, student.info["head_probe"])
    elif student.info["head"] == "probe" and probe_record.is_file():
        with contextlib.suppress(ValueError, OSError):
            record = read_json(probe_record)
            if isinstance(record, dict):
                student.info["head_probe"] = record
    if resuming:
        saved = load_checkpoint(ckpt, map_location=device)
        check_resumable(ckpt, saved, n, fingerprint, device)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = ThresholdState.from_dict(saved["selection_state"])
        ever = saved["ever_selected"]
        stats = [EpochStats(**s) for s in saved["stats"]]
        torch.set_rng_state(saved["torch_rng"].cpu())
        if device == "cuda" and saved["cuda_rng"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in saved["cuda_rng"]])
        rng.bit_generator.state = saved["numpy_rng"]
        start_epoch = saved["epoch"] + 1

    targets_hard = torch.tensor(pool.pseudo, dtype=torch.long, device=device)
    targets_soft = torch.tensor(pool.probs, dtype=torch.float32, device=device)
    conf, pseudo = pool.conf, pool.pseudo
    log_k = math.log(k)
    # Only methods that read the student's need pay for the extra pass, whatever need_pass says.
    eval_need = config.need_pass == "eval" and METHODS[config.selection].reads_need

    def need_of(logits) -> np.ndarray:
        p = torch.softmax(logits.float(), dim=-1)
        return (-(p * torch.log(p.clamp_min(1e-12))).sum(-1) / log_k).cpu().numpy()

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        model.train()
        order = np.random.default_rng([config.seed, epoch]).permutation(n)  # same order on a resumed run
        selected = seen = 0
        need_seconds = 0.0
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", unit="step",
                   disable=not progress, dynamic_ncols=True, leave=False)
        for step in bar:
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            input_ids, attention = collate(torch, [ids[i] for i in batch], pad_id)
            input_ids, attention = input_ids.to(device), attention.to(device)
            if eval_need:  # the student's need without dropout noise: a no-grad pass in eval mode first
                tick = time.perf_counter()
                model.eval()
                with torch.no_grad(), autocast:
                    need = need_of(model(input_ids=input_ids, attention_mask=attention).logits)
                model.train()
                need_seconds += time.perf_counter() - tick
            with autocast:
                logits = model(input_ids=input_ids, attention_mask=attention).logits
            logits = logits.float()  # losses and the selection signal in fp32, whatever the forward pass used
            if not eval_need:
                with torch.no_grad():
                    need = need_of(logits)
            trusted = pool.trusted[batch]
            judged = ~trusted  # gold samples neither move the thresholds nor are judged by them
            mask = trusted.copy()
            weights = np.where(trusted, config.gold_weight, 0.0)
            if judged.any():
                picked, picked_w, state = select(config.selection, conf[batch][judged], need[judged],
                                                 pseudo[batch][judged], state, rng=rng, topk_ratio=config.topk_ratio,
                                                 rule=rule)
                mask[judged], weights[judged] = picked, picked_w * pool.weights[batch][judged]
            seen += len(batch)
            if mask.any():
                rows = torch.from_numpy(np.flatnonzero(mask)).to(device)
                w = torch.tensor(weights[mask], dtype=torch.float32, device=device)
                chosen = torch.from_numpy(batch[mask]).to(device)
                if config.soft_labels:
                    logp = torch.log_softmax(logits[rows], dim=-1)
                    t = targets_soft[chosen]
                    per_sample = (t * (torch.log(t.clamp_min(1e-12)) - logp)).sum(-1)  # KL(teacher || student)
                else:
                    per_sample = torch.nn.functional.cross_entropy(logits[rows], targets_hard[chosen], reduction="none")
                loss = (w * per_sample).sum() / w.sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                losses.append(loss.item())
                selected += int(mask.sum())
                ever[batch[mask]] = True
            scheduler.step()  # the schedule follows steps, selected or not, so every method sees the same one
            bar.set_postfix(loss=f"{np.mean(losses[-20:]) if losses else float('nan'):.3f}", kept=f"{selected}/{seen}")
        bar.close()
        stats.append(EpochStats(
            epoch=epoch + 1,
            steps=steps_per_epoch,
            selected=selected,
            seen=seen,
            ever_selected=int(ever.sum()),
            mean_loss=float(np.mean(losses)) if losses else float("nan"),
            teacher_thresholds=[round(float(x), 5) for x in state.teacher_thresholds()],
            student_thresholds=[round(float(x), 5) for x in state.student_thresholds()],
            seconds=round(time.perf_counter() - started, 2),
            need_seconds=round(need_seconds, 2),
        ))
        save_checkpoint(ckpt, torch, model, optimizer, scheduler, state, ever, stats, epoch, rng, config,
                         fingerprint, device)
        if on_epoch:
            on_epoch(stats[-1])
    return stats


def save_student(student: Student, folder: str | Path) -> Path:
    """The student and its tokenizer (transformers ``save_pretrained``), replacing ``folder`` only once complete."""
    with atomic_path(folder) as tmp:
        student.model.save_pretrained(tmp)
        student.tokenizer.save_pretrained(tmp)
    return Path(folder)


def load_student(folder: str | Path) -> Student:
    """A trained student as ``distill`` saved it (RUN_DIR/student).

    The folder may come from someone else: weights are read from safetensors only (never a pickled
    ``pytorch_model.bin``), no code it names is run (``trust_remote_code`` off) and nothing is fetched; anything
    transformers cannot read that way is one ModelError line.
    """
    require_torch()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    safe = {"trust_remote_code": False, "local_files_only": True}
    try:
        if static.is_static(Path(folder)):
            model = static.load(Path(folder))
        else:
            model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True, **safe)
        tokenizer = AutoTokenizer.from_pretrained(folder, **safe)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise ModelError(f"{folder}: not a student this tool saved, or unsafe to load "
                         f"({one_line(exc, limit=160, first_line=True)})") from None
    model.eval()
    return Student(model, tokenizer, str(folder))


def predict_logits(student: Student, texts: Sequence[str], max_length: int, batch_size: int = 64,
                   progress: bool = False) -> np.ndarray:
    """Shape (N, K): the student's raw scores."""
    torch = require_torch()
    from tqdm.auto import tqdm

    model = student.model
    model.eval()
    device = next(model.parameters()).device  # where training left it
    ids = encode(student.tokenizer, texts, max_length)
    pad_id = student.tokenizer.pad_token_id or 0
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(ids), batch_size), desc="evaluating", disable=not progress, leave=False):
            input_ids, attention = collate(torch, ids[start : start + batch_size], pad_id)
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            out.append(logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels), dtype=np.float32)


def predict_proba(student: Student, texts: Sequence[str], max_length: int, batch_size: int = 64,
                  progress: bool = False) -> np.ndarray:
    """Shape (N, K): the student's class probabilities."""
    return softmax(predict_logits(student, texts, max_length, batch_size, progress))
