"""The ``llkd-edge`` command: thin click wrappers that build a config and call one library function."""

from __future__ import annotations

import json
import os
import sys

import click

from . import __version__
from .config import (
    BACKENDS,
    DEFAULT_TASK,
    DEFAULT_TEACHER,
    DEVICES,
    LABEL_ROLES,
    LOW_INFORMATION,
    NEED_PASSES,
    POOL_CALIBRATIONS,
    PROMPT_MODES,
    SELECTION_METHODS,
    STRATEGIES,
    DistillConfig,
    LabelBudget,
    LabelRunConfig,
    ScoringConfig,
    ServeConfig,
    TeacherConfig,
    TrainConfig,
    default_threads,
)
from .errors import MissingDependencyError, UserError
from .files import one_line

# --budget-strategy (label) and --label-strategy (distill): the same rounds, active.py
STRATEGY_HELP = ("how each round picks (random: a random slice, the most robust in our study; active: what the "
                 "student's encoder finds unsure, spread out; confident: the same among texts the teacher is predicted "
                 "to be sure of; balanced: confident, shared equally over the classes; coverage: typical texts, "
                 "spread out).")


def _usage_error(exc: click.UsageError, command: str) -> None:
    """click's usage error as our one stderr line, naming the --help of the command it came from."""
    click.echo(f"error: {one_line(exc.format_message(), limit=None)} (see `{command} --help`)", err=True)


class _Group(click.Group):
    """Turns our UserErrors, and click's own usage errors (a bad option value, an unknown option, a missing
    argument), into one line on stderr and exit code 2, never a traceback or click's three-line usage block."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:  # the top level's own options (`llkd-edge --nope`): parsed before invoke
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            _usage_error(exc, info_name)
            raise SystemExit(2) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {one_line(exc, limit=None)}", err=True)
            ctx.exit(2)
        except click.exceptions.NoArgsIsHelpError:
            raise  # a bare command asks for its help: click prints it
        except click.UsageError as exc:
            _usage_error(exc, exc.ctx.command_path if exc.ctx else ctx.command_path)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: finished batches are saved; run the same command again to resume", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # The reader went away (`llkd-edge predict ... | head`): stop quietly, as Unix tools do. Point stdout
            # at /dev/null so the interpreter's final flush does not raise again.
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):  # stdout without a file descriptor (a test runner's)
                pass
            ctx.exit(141)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llkd-edge")
def main() -> None:
    """Distil a GGUF LLM's labels into a small, fast text classifier."""


def teacher_options(func):
    """The options that choose the teacher and its prompt (shared by label and distill)."""
    options = [
        click.option("--labels", help='Label set: "a,b,c", "sci_tech=science and technology,...", or a labels file. '
                     "Defaults to the built-in dataset's labels."),
        click.option("--teacher", default=DEFAULT_TEACHER, show_default=True,
                     help="A registered teacher name (see `llkd-edge teachers`) or a .gguf path; several, comma-separated, "
                          "for an ensemble (each labels into the store, their answers are pooled)."),
        click.option("--store", help="The label store (sqlite) to reuse and fill [default: labels.sqlite; for "
                     "distill from a store: that store]."),
        click.option("--text-column", default="text", show_default=True),
        click.option("--label-column", help="Gold label column (default: `label` when present)."),
        click.option("--task", help="What the teacher is asked to do (default: the built-in dataset's, or a generic one)."),
        click.option("--few-shot", "few_shot", help="File of labelled examples (text and label columns) put in the prompt."),
        click.option("--prompt", type=click.Choice(PROMPT_MODES),
                     show_default="fixed with --task, --few-shot or a built-in dataset's task, else auto",
                     help="auto: try a few task wordings and answer cues on a sample of the texts and keep the one whose "
                     "answers tell them apart best (no gold labels used; the ranking is printed); fixed: as given."),
        click.option("--prompt-sample", default=12, show_default=True, help="Texts each candidate prompt is tried on."),
        click.option("--calibrate/--no-calibrate", default=True, show_default=True,
                     help="Contextual calibration against content-free inputs."),
        click.option("--max-text-tokens", default=256, show_default=True, help="Truncate each text to this many tokens."),
        click.option("--threads", type=int, default=default_threads, show_default="all cores", help="CPU threads."),
        click.option("--n-gpu-layers", type=int, show_default="all when llama.cpp was built for a GPU, else 0",
                     help="Teacher layers to offload to a GPU (-1: all)."),
        click.option("--parallel", default=0, show_default="8 on a GPU, 1 on a CPU",
                     help="Texts the teacher scores per llama.cpp decode (multi-sequence batching)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _given(**options) -> dict:
    """The options the user gave (not None), as keyword arguments: the rest keep the config's defaults."""
    return {k: v for k, v in options.items() if v is not None}


def _prompt(data, opts) -> dict:
    """--prompt and --prompt-sample as config fields: auto unless a person wrote the task (--task, --few-shot, or
    a built-in dataset's own task, which beat the auto choice on 3 of 4 built-in sets: bench/RESULTS.md)."""
    from .data import builtin_spec

    written = opts["task"] or opts["few_shot"] or builtin_spec(data) is not None
    return {"prompt": opts["prompt"] or ("fixed" if written else "auto"), "prompt_sample": opts["prompt_sample"]}


def _scoring(data, opts) -> tuple[ScoringConfig, TeacherConfig]:
    """Build the teacher's configs from the shared options (DATA gives a built-in's default labels/task)."""
    from .config import LabelSet
    from .data import builtin_spec, read_dataset
    from .student.runs import is_store
    from .labels.labelling import resolve_labels

    if is_store(data):
        if not opts["labels"]:
            raise UserError("training from a label store needs --labels (the label set it was made with)")
        label_set, source_task = LabelSet.parse(opts["labels"]), None
    else:
        builtin = builtin_spec(data)  # only a built-in brings defaults; the stage itself reads DATA, once
        label_set = resolve_labels(opts["labels"], builtin.labels if builtin else None)
        source_task = builtin.task if builtin else None
    examples = ()
    if opts["few_shot"]:
        shots = read_dataset(opts["few_shot"], "text", "label")
        examples = tuple((t, g) for t, g in zip(shots.texts, shots.gold) if t.strip())
    scoring = ScoringConfig(
        labels=label_set,
        task=opts["task"] or source_task or DEFAULT_TASK,
        calibrate=opts["calibrate"],
        max_text_tokens=opts["max_text_tokens"],
        few_shot=examples,
    )
    teacher = TeacherConfig(model=opts["teacher"], n_threads=opts["threads"], n_gpu_layers=opts["n_gpu_layers"],
                            parallel=opts["parallel"])
    return scoring, teacher


@main.command()
@click.argument("data")
@teacher_options
@click.option("--limit", type=int, help="Only the first N rows of DATA.")
@click.option("--out", help="Also write this input's labels to FILE (.jsonl, .csv or .parquet).")
@click.option("--batch-size", default=16, show_default=True, help="Texts per store commit (a killed run loses at most one).")
@click.option("--backend", type=click.Choice(BACKENDS), default="local", show_default=True,
              help="local: this process; ray: a pool of Ray actors, each with its own loaded teacher.")
@click.option("--address", help="Ray cluster to join (e.g. ray://head:10001 or auto) [default: start a local one].")
@click.option("--workers", type=int, help="Ray actors [default: 2].")
@click.option("--cpus-per-worker", type=int, help="CPUs each Ray actor reserves, and its threads [default: 1].")
@click.option("--gpus-per-worker", type=float, help="GPUs each Ray actor reserves (0.5: two per GPU) [default: 0].")
@click.option("--role", type=click.Choice(LABEL_ROLES), default="auto", show_default=True,
              help="What the texts are for, recorded in the store: pool (training data) or eval (held out: a store "
              "used as distill DATA never trains on them); auto: eval for a built-in test split, else pool.")
@click.option("--gold", "gold_file", help="A few gold-labelled texts (same format as DATA): the teacher's accuracy on "
              "them, with a 95% interval, is reported (they are labelled too, and marked as held out).")
@click.option("--budget", type=float, help="Label only this share of DATA (0-1) or this many texts, picked in rounds "
              "(as distill --label-budget; default: every text).")
@click.option("--budget-strategy", type=click.Choice(STRATEGIES), show_default="random",
              help="With --budget: " + STRATEGY_HELP)
@click.option("--budget-step", default=0.05, show_default=True, help="With --budget: texts per round, as a share of DATA.")
@click.option("--seed", default=0, show_default=True, help="With --budget: the rounds' seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def label(data, limit, out, batch_size, backend, address, workers, cpus_per_worker, gpus_per_worker, role, gold_file,
          budget, budget_strategy, budget_step, seed, as_json, **opts):
    """Label DATA (a file, or a built-in dataset such as bbc-news:test) with the teacher's distributions."""
    from .config import RayConfig
    from .labels.labelling import label_texts

    given = {"--address": address, "--workers": workers, "--cpus-per-worker": cpus_per_worker,
             "--gpus-per-worker": gpus_per_worker}
    if backend != "ray" and any(v is not None for v in given.values()):
        raise UserError(f"{', '.join(k for k, v in given.items() if v is not None)}: only with --backend ray")
    ray_config = RayConfig(**{k.lstrip("-").replace("-", "_"): v for k, v in given.items() if v is not None})
    if budget is None and (budget_strategy is not None or budget_step != 0.05 or seed != 0):
        raise UserError("--budget-strategy, --budget-step and --seed take effect with --budget only")
    scoring, teacher = _scoring(data, opts)
    config = LabelRunConfig(
        data=data,
        scoring=scoring,
        teacher=teacher,
        store=opts["store"] or "labels.sqlite",
        text_column=opts["text_column"],
        label_column=opts["label_column"],
        limit=limit,
        out=out,
        commit_every=batch_size,
        backend=backend,
        ray=ray_config,
        role=role,
        gold=gold_file,
        budget=None if budget is None else LabelBudget(budget, step=budget_step, fill_rest=False,
                                                          **_given(strategy=budget_strategy)),
        seed=seed,
        **_prompt(data, opts),
    )
    summary = label_texts(config)
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
    else:
        _print_label_summary(summary)


@main.command()
@click.argument("data")
@click.option("--out", "run_dir", required=True, help="RUN_DIR: where the student, metrics and plots go.")
@click.option("--eval", "eval_data", help="Gold-labelled eval set: a file or a built-in split "
              "(default for a built-in DATA: its test split).")
@teacher_options
@click.option("--selection", type=click.Choice(SELECTION_METHODS), default="llkd", show_default=True)
@click.option("--soft-labels", is_flag=True, help="Learn the teacher's full distribution (KL) instead of its label.")
@click.option("--student", default="minilm-l6", show_default=True,
              help="minilm-l6, minilm-l3, minilm-l2, tiny, or a local transformers model folder.")
@click.option("--epochs", default=4, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--max-length", default=128, show_default=True, help="Student's token budget per text.")
@click.option("--learning-rate", type=float, help="Default: the student's registered rate.")
@click.option("--seed", default=0, show_default=True)
@click.option("--momentum", default=0.9, show_default=True, help="EMA momentum of the LLKD thresholds.")
@click.option("--llkd-floor", type=click.FloatRange(0, 1), default=TrainConfig.llkd_floor, show_default=True,
              help="LLKD: the share of the samples that pass the teacher's bar always kept, the student's neediest first. "
              "1: the student's need only weights them; 0: the paper's rule, where it also gates.")
@click.option("--topk-ratio", default=0.5, show_default=True, help="Fraction kept per batch by --selection topk.")
@click.option("--need-pass", type=click.Choice(NEED_PASSES), default="train", show_default=True,
              help="Where LLKD reads the student's uncertainty: the training forward pass (dropout on, free) or an "
              "extra eval-mode pass (no dropout noise, ~1/3 more training compute).")
@click.option("--pool-calibration", type=click.Choice(POOL_CALIBRATIONS), default=DistillConfig.pool_calibration,
              show_default=True, help="batch: divide the teacher's distributions by their mean over the pool before "
              "training (removes the teacher's bias towards some labels; read-time, the store is unchanged).")
@click.option("--gold", "gold_file", help="A few gold-labelled texts (say 8 per class; same format as DATA): they judge "
              "the teacher, correct its labels through a gold-only probe, and train the student as trusted samples.")
@click.option("--gold-weight", default=3.0, show_default=True, help="Loss weight of a --gold text (teacher-labelled "
              "texts average 1).")
@click.option("--relabel", type=click.Choice(("none", "probe")), default="probe", show_default=True,
              help="probe: check the teacher's labels against a probe on the pool's sentence embeddings, cross-fitted, "
              "and train on the product of the two (overrules labels that similar texts contradict); none: train on "
              "the teacher's labels as they are. Not applied with --gold, whose probe corrects the labels instead, nor "
              "when the teacher's answers look no better than chance "
              f"(answer information < {LOW_INFORMATION:.2f}: the run warns).")
@click.option("--label-budget", type=float, help="Let the teacher label only this share of DATA (0-1) or this many "
              "texts, picked in rounds (default: every text).")
@click.option("--label-strategy", type=click.Choice(STRATEGIES), show_default="random",
              help="With --label-budget: " + STRATEGY_HELP)
@click.option("--label-step", default=0.05, show_default=True, help="With --label-budget: texts per round, as a share "
              "of DATA.")
@click.option("--fill-rest/--no-fill-rest", default=None, help="With --label-budget: the student also learns the "
              "texts the teacher never labelled, each with the distribution of the probe fitted on the teacher's labels, "
              "no surer on average than the teacher's (never stored or counted as teacher labels)  [default: on].")
@click.option("--limit", type=int, help="Only the first N texts of DATA.")
@click.option("--eval-limit", type=int, help="Only the first N texts of the eval set.")
@click.option("--min-per-class", default=5, show_default=True, help="Refuse to train with fewer pseudo-labels per class.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where the student trains: auto uses CUDA when PyTorch sees a GPU (bf16 mixed precision if supported).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in RUN_DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json.")
def distill(data, run_dir, eval_data, selection, soft_labels, student, epochs, batch_size, max_length, learning_rate,
            seed, momentum, llkd_floor, topk_ratio, need_pass, pool_calibration, relabel, gold_file, gold_weight,
            label_budget, label_strategy, label_step, fill_rest, limit, eval_limit, min_per_class, device, resume,
            as_json, **opts):
    """Train a student on the teacher's labels of DATA (a file, a built-in dataset, or a label store)."""
    from .student.distill import distill as run_distill

    if label_budget is None and (label_strategy is not None or label_step != 0.05 or fill_rest is not None):
        raise UserError("--label-strategy, --label-step and --fill-rest take effect with --label-budget only")
    scoring, teacher = _scoring(data, opts)
    config = DistillConfig(
        data=data,
        out=run_dir,
        scoring=scoring,
        teacher=teacher,
        train=TrainConfig(student=student, selection=selection, soft_labels=soft_labels, epochs=epochs,
                          batch_size=batch_size, max_length=max_length, learning_rate=learning_rate, seed=seed,
                          momentum=momentum, llkd_floor=llkd_floor, topk_ratio=topk_ratio, need_pass=need_pass,
                          gold_weight=gold_weight, threads=opts["threads"], device=device),
        eval=eval_data,
        store=opts["store"],
        text_column=opts["text_column"],
        label_column=opts["label_column"],
        limit=limit,
        eval_limit=eval_limit,
        min_per_class=min_per_class,
        pool_calibration=pool_calibration,
        gold=gold_file,
        relabel=None if relabel == "none" else relabel,
        label_budget=None if label_budget is None else LabelBudget(
            label_budget, step=label_step, fill_rest=fill_rest is not False, **_given(strategy=label_strategy)),
        **_prompt(data, opts),
    )
    metrics = run_distill(config, resume=resume)
    if as_json:
        click.echo(json.dumps(metrics))
    else:
        _print_distill_summary(run_dir, metrics)


def _print_prompt_choice(choice: dict | None) -> None:
    """The candidates, best first, with their scores: what --prompt auto tried and kept."""
    if not choice:
        return
    click.echo(f"prompt chosen on {choice['sample']} texts ({choice['evaluations']} teacher calls, "
               f"{choice['seconds']:.0f}s), by {choice['criterion']}:")
    for i, r in enumerate(choice["ranking"][:5]):
        right = f" (accuracy {r['gold_accuracy']:.2f})" if "gold_accuracy" in r else ""
        click.echo(f"  {'*' if i == 0 else ' '} {r['score']:.3f}{right}  {r['name']}: {r['task']!r}, cue {r['cue']!r}")
    if len(choice["ranking"]) > 5:
        click.echo(f"    ... {len(choice['ranking']) - 5} more in the JSON summary")


def _print_distill_summary(run_dir: str, m: dict) -> None:
    _print_prompt_choice(m.get("prompt_choice"))
    sel, data = m["selection"], m["data"]
    _print_gold(m.get("gold"))
    if m.get("relabel"):
        r = m["relabel"]
        right = r.get("pool_accuracy")
        click.echo(f"relabel: the probe changed {r['changed']:.1%} of the pool's labels" + (
            f" (pool labels right: teacher {right['teacher']:.3f}, relabelled {right['relabelled']:.3f})" if right else ""))
    if m.get("label_budget"):
        b = m["label_budget"]
        click.echo(f"label budget: the teacher labelled {b['texts_labelled']} of {b['pool_texts']} pool texts in "
                   f"{len(b['rounds'])} rounds ({b['strategy']}; {b['teacher_calls']} teacher calls this run, the rest "
                   "from the store)")
        if data.get("filled_size"):
            right = b.get("filled_labels_right")
            click.echo(f"fill: the student also learnt {data['filled_size']} texts the teacher never saw, labelled by "
                       "the rounds' probe" + (f" ({right:.1%} right by DATA's gold labels)" if right is not None else ""))
    click.echo(f"student {m['student_model']['name']} trained with {sel['method']} selection on {data['pool_size']} "
               f"texts; {sel['fraction_used']:.1%} of the pool used; selected per epoch {sel['selected_per_epoch']}")
    if m["student"]:
        t, s = m["teacher"], m["student"]
        click.echo(f"on {data['eval_size']} eval texts ({data['eval']}):")
        cal = m["pool_calibration"]
        was = f" (before pool calibration {cal['teacher_as_stored']['macro_f1']:.3f})" if cal["prior"] else ""
        click.echo(f"  teacher  accuracy {t['accuracy']:.3f}  macro-F1 {t['macro_f1']:.3f}{was}")
        for name, row in (("gold-only", m.get("gold_only")), ("taught", m.get("taught_labels"))):
            if row:  # with --gold: the probe on the gold texts alone, and the labels the student learnt from
                click.echo(f"  {name:<8} accuracy {row['accuracy']:.3f}  macro-F1 {row['macro_f1']:.3f}")
        click.echo(f"  student  accuracy {s['accuracy']:.3f}  macro-F1 {s['macro_f1']:.3f}  "
                   f"(majority class {s['majority_rate']:.3f})")
    else:
        health = m.get("teacher_health") or {}
        click.echo(f"no gold eval set (--eval): quality not measured; the teacher's mean confidence on the pool is "
                   f"{health.get('mean_confidence', 0):.3f} (a rough guide to its accuracy)", err=True)
    for warning in m.get("teacher_warnings") or []:
        click.echo(f"warning: {warning}", err=True)
    secs = m["seconds"]
    click.echo(f"time: label {secs['label']:.0f}s, train {secs['train']:.0f}s, eval {secs['eval']:.0f}s; wrote {run_dir}")


def _print_gold(g: dict | None) -> None:
    """--gold: each label source's accuracy on the gold texts (95% interval) and which one taught (a teacher
    below the gold-only probe is named among the teacher warnings)."""
    if not g:
        return
    names = {"teacher": "teacher", "gold_only": "gold-only probe (cross-validated)",
             "combined": "teacher x probe (cross-validated)"}
    click.echo(f"on your {g['n']} gold texts:")
    for source, label in names.items():
        r = g["scores"][source]
        mark = "*" if source == g["chosen"] else " "
        click.echo(f"  {mark} {label:<34} accuracy {r['accuracy']:.3f}  (95% interval {r['interval'][0]:.2f}-"
                   f"{r['interval'][1]:.2f})")
    click.echo("the student learns from the starred labels, plus the gold texts themselves")


def _print_label_summary(s) -> None:
    _print_prompt_choice(s.prompt_choice)
    rate = f" ({s.texts_per_second} texts/s)" if s.texts_per_second else ""
    click.echo(f"labelled {s.labelled}, cached {s.cached}, skipped {s.skipped} empty, "
               f"{s.duplicates} duplicates, in {s.seconds:.1f}s{rate}")
    click.echo(f"teacher {s.teacher} (sha256 {s.teacher_sha256[:12]}), store {s.store} (texts marked as {s.role})")
    if s.backend == "ray":
        click.echo(f"Ray backend: {s.workers} workers, {s.retried_batches} batches resent after a worker died")
    width = max(len(name) for name in s.labels)
    n = sum(s.label_counts.values())
    for name in s.labels:
        c = s.label_counts[name]
        click.echo(f"  {name:<{width}}  {c:>6}  {c / n:6.1%}")
    click.echo(f"mean confidence {s.mean_confidence:.3f} (a rough guide to accuracy), answer information "
               f"{s.health.get('answer_information', 0):.2f}, label-token mass {s.mean_label_mass:.3f}, "
               f"{s.truncated} texts truncated")
    if s.accuracy is not None:
        click.echo(f"vs gold ({s.gold_count} texts): accuracy {s.accuracy:.3f}, macro-F1 {s.macro_f1:.3f} "
                   f"(majority class {s.majority_rate:.3f})")
    if s.gold:
        g = s.gold
        weakest = min(g["recall"], key=g["recall"].get)
        click.echo(f"on your {g['n']} gold texts: accuracy {g['accuracy']:.3f} (95% interval {g['interval'][0]:.2f}-"
                   f"{g['interval'][1]:.2f}), macro-F1 {g['macro_f1']:.3f}; weakest class {weakest} "
                   f"(recall {g['recall'][weakest]:.2f})")
    if s.budget:
        b = s.budget
        click.echo(f"budget: the teacher labelled {b['texts_labelled']} of {b['pool_texts']} texts in {len(b['rounds'])} "
                   f"rounds ({b['strategy']}), {b['teacher_calls']} asked now; {b['left_unlabelled']} left unlabelled"
                   + (f", listed in {b['unlabelled_file']}" if b.get("unlabelled_file") else ""))
    if s.out:
        click.echo(f"wrote {s.out}")
    for warning in s.warnings:
        click.echo(f"warning: {warning}", err=True)


@main.command()
@click.argument("run_dir")
@click.option("--out", required=True, help="OUT: the new run folder (student, rounds, metrics); `export OUT` works on it.")
@click.option("--rounds", default=3, show_default=True, help="Rounds of write -> verify -> retrain.")
@click.option("--per-round", default=24, show_default=True, help="Texts asked of the teacher per round.")
@click.option("--per-request", default=4, show_default=True, help="Texts asked for in one generation.")
@click.option("--teacher", help="Generator and verifier: a registered name or .gguf path [default: the run's teacher]; "
              "an instruct model such as qwen2.5-coder-1.5b-instruct writes far better texts.")
@click.option("--val", help="Validation texts (file or built-in split; gold `label` column optional) "
              "[default: the rows of the run's DATA after its --limit].")
@click.option("--val-limit", default=200, show_default=True, help="At most this many validation texts.")
@click.option("--val-labels", type=click.Choice(["auto", "gold", "teacher"]), default="auto", show_default=True,
              help="Judge the student against gold labels or the teacher's (auto: gold when every text has one).")
@click.option("--min-confidence", default=0.5, show_default=True,
              help="Keep a text only if the teacher gives its intended label at least this probability.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generations.")
@click.option("--temperature", default=0.9, show_default=True)
@click.option("--max-new-tokens", default=960, show_default=True,
              help="Tokens per generation; each text's length is capped so that all of them fit.")
@click.option("--retries", default=2, show_default=True, help="More attempts for a generation that does not parse.")
@click.option("--timeout", "timeout_s", default=180.0, show_default=True, help="Seconds allowed per generation.")
@click.option("--threads", type=int, default=default_threads, show_default="all cores")
@click.option("--n-gpu-layers", type=int, show_default="all when llama.cpp was built for a GPU, else 0",
              help="Teacher layers to offload to a GPU (-1: all).")
@click.option("--resume", is_flag=True, help="Continue an interrupted evolve run in OUT.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json.")
def evolve(run_dir, out, rounds, per_round, per_request, teacher, val, val_limit, val_labels, min_confidence, seed,
           temperature, max_new_tokens, retries, timeout_s, threads, n_gpu_layers, resume, as_json):
    """Have the teacher write labelled texts aimed at RUN_DIR's student's mistakes, round after round (EvoKD)."""
    from .config import EvolveConfig
    from .student.evolve import evolve as run_evolve

    config = EvolveConfig(run_dir=run_dir, out=out, rounds=rounds, per_round=per_round, per_request=per_request,
                          teacher=teacher, val=val, val_limit=val_limit, val_labels=val_labels,
                          min_confidence=min_confidence, seed=seed, temperature=temperature,
                          max_new_tokens=max_new_tokens, retries=retries,
                          timeout_s=timeout_s, threads=threads, n_gpu_layers=n_gpu_layers)
    metrics = run_evolve(config, resume=resume)
    if as_json:
        click.echo(json.dumps(metrics))
        return
    e = metrics["evolve"]
    rate = f" ({e['acceptance_rate']:.0%})" if e["acceptance_rate"] is not None else ""
    click.echo(f"{e['rounds_run']} rounds: kept {e['accepted']} of {e['generated']} generated texts{rate}; "
               f"the student trained on {metrics['data']['real_pool_size']} pool + {metrics['data']['synthetic']} "
               f"written texts")
    before, after = e["before"], e["after"]
    for part in ("eval", "validation"):
        if before and before.get(part):
            b, a = before[part], after[part]
            click.echo(f"  {part:<10} accuracy {b['accuracy']:.3f} -> {a['accuracy']:.3f}   "
                       f"macro-F1 {b['macro_f1']:.3f} -> {a['macro_f1']:.3f}  ({b['n']} texts)")
    if metrics["teacher"]:
        click.echo(f"  teacher    accuracy {metrics['teacher']['accuracy']:.3f}   macro-F1 "
                   f"{metrics['teacher']['macro_f1']:.3f}  (the run's teacher on the eval texts)")
    click.echo(f"wrote {out}")


@main.command()
@click.argument("run_dir")
@click.option("--out", "model_dir", required=True, help="MODEL_DIR: where the ONNX model folder goes.")
@click.option("--optimize", type=click.Choice(["O1", "O2", "none"]), default="O2", show_default=True,
              help="ONNX Runtime graph optimisation level.")
@click.option("--quantize", type=click.Choice(["int8", "static", "both", "none"]), default="int8", show_default=True,
              help="Also write int8 models: int8 (dynamic), static (calibrated on pool texts) or both; one "
                   "becomes the default model only if it passes the accuracy gate.")
@click.option("--max-accuracy-drop", default=0.01, show_default=True,
              help="int8 may lose at most this much accuracy against fp32 on the check texts.")
@click.option("--min-agreement", default=0.99, show_default=True,
              help="int8 must give fp32's label on at least this share of the check texts.")
@click.option("--check-limit", default=1000, show_default=True, help="At most this many texts for the parity check.")
@click.option("--threads", type=int, default=default_threads, show_default="all cores")
@click.option("--json", "as_json", is_flag=True, help="Print export_report.json.")
def export(run_dir, model_dir, optimize, quantize, max_accuracy_drop, min_agreement, check_limit, threads, as_json):
    """Export RUN_DIR's student to ONNX (fp32 and int8), check each against PyTorch, write MODEL_DIR with a model card."""
    from .config import ExportConfig
    from .deploy.export import export_run

    config = ExportConfig(run_dir=run_dir, out=model_dir, optimize=optimize, quantize=quantize,
                          max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement,
                          check_limit=check_limit, threads=threads)
    report = export_run(config)
    if as_json:
        click.echo(json.dumps(report))
        return
    ref = {"pool, gold": "their gold labels", "pool, teacher": "the teacher's labels"}.get(report["reference"],
                                                                                          "no labels")
    click.echo(f"parity with PyTorch on {report['texts']} pool texts (quality against {ref}):")
    rows = [("pytorch", None, report["pytorch"]["quality"])]
    rows += [(name, v, v["quality"]) for name, v in report["variants"].items()]
    for name, v, q in rows:
        diff = f"max |d logit| {v['max_abs_logit_diff']:.2g}, same label {v['argmax_agreement_with_pytorch']:.1%}" if v else ""
        score = f"accuracy {q['accuracy']:.3f}  macro-F1 {q['macro_f1']:.3f}" if q else ""
        click.echo(f"  {name:<11} {score}  {diff}".rstrip())
    click.echo(f"default model: {report['default']} ({report['default_reason']})")
    click.echo(f"wrote {model_dir}")


@main.command()
@click.argument("model_dir")
@click.argument("texts", nargs=-1)
@click.option("--input", "input_file", help="Read texts from FILE (CSV, TSV, JSONL, Parquet or one text per line).")
@click.option("--text-column", default="text", show_default=True)
@click.option("--out", help="Write JSONL here instead of to stdout.")
@click.option("--variant", type=click.Choice(["fp32", "int8", "int8-static"]), help="Default: the folder's default model.")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--threads", type=int, help="CPU threads [default: all cores].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def predict(model_dir, texts, input_file, text_column, out, variant, batch_size, threads, device):
    """Label TEXTs (or --input FILE) with an exported model; writes JSONL: text, label, probabilities."""
    from .deploy.predict import predict_stream

    if bool(texts) == bool(input_file):
        raise UserError("give either TEXT arguments or --input FILE")
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    summary = predict_stream(model_dir, list(texts) if texts else None, input_file, text_column, out,
                             variant=variant, batch_size=batch_size, threads=threads, device=device)
    click.echo(summary, err=True)


@main.command()
@click.argument("model_dir")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True)
@click.option("--variant", type=click.Choice(["fp32", "int8", "int8-static"]), help="Default: the folder's default model.")
@click.option("--threads", type=int, help="ONNX Runtime CPU threads [default: all cores].")
@click.option("--max-texts", default=ServeConfig.max_texts, show_default=True, help="Most texts one request may send.")
@click.option("--max-body", default=ServeConfig.max_body, show_default=True,
              help="Largest request body, in bytes (else 413).")
@click.option("--js-libs", help="node_modules folder with onnxruntime-web and @huggingface/tokenizers for the page "
                                "[default: examples/web/node_modules in a checkout, else a CDN].")
@click.option("--allowed-hosts", default="", help="Comma-separated Host header names to answer besides localhost, "
              "127.0.0.1, ::1 and --host (*.example.com: a domain's names; *: any). Others get 400, so a web page "
              "cannot reach the service by DNS rebinding.")
@click.option("--read-timeout", default=ServeConfig.read_timeout, show_default=True,
              help="Seconds a client may take to send a request's headers, and then its body (else closed, or 408).")
def serve(model_dir, host, port, variant, threads, max_texts, max_body, js_libs, allowed_hosts, read_timeout):
    """Serve MODEL_DIR over HTTP: POST /predict, GET /health, a page at / that classifies in the browser."""
    try:
        from .deploy.serve import serve as run_service
        import fastapi, uvicorn  # noqa: F401,E401
    except ImportError:
        raise MissingDependencyError("serve needs FastAPI and uvicorn: pip install 'llkd-edge[serve]'") from None
    hosts = tuple(h.strip() for h in allowed_hosts.split(",") if h.strip())
    run_service(ServeConfig(model_dir, host=host, port=port, threads=threads, variant=variant, max_texts=max_texts,
                            max_body=max_body, js_libs=js_libs, allowed_hosts=hosts, read_timeout=read_timeout))


@main.command()
@click.argument("model_dir")
@click.option("--run", "run_dir", help="The distill run (for the PyTorch student) [default: the one MODEL_DIR records].")
@click.option("--teacher", help="Teacher to time: a registered name or .gguf path, or `none` [default: the run's].")
@click.option("--data", help="Texts to time on: a file or built-in split [default: the run's eval texts].")
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", help="Gold label column (default: `label` when present).")
@click.option("--limit", default=100, show_default=True, help="Number of texts.")
@click.option("--batch-size", default=32, show_default=True, help="Batch size for the throughput figures.")
@click.option("--rounds", default=3, show_default=True, help="Alternating timing rounds for the students.")
@click.option("--threads", type=int, default=default_threads, show_default="all cores",
              help="CPU threads for every contender.")
@click.option("--out", help="Folder for bench.json and bench.png [default: MODEL_DIR/bench].")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="Where the students run (cuda: ONNX Runtime's CUDA provider and PyTorch on the GPU).")
@click.option("--json", "as_json", is_flag=True, help="Print bench.json.")
def bench(model_dir, run_dir, teacher, data, text_column, label_column, limit, batch_size, rounds, threads, out,
          device, as_json):
    """Time the teacher, the PyTorch student and the ONNX models side by side on the same texts."""
    from .deploy.bench import format_report, run_bench
    from .config import BenchConfig

    config = BenchConfig(model_dir=model_dir, run_dir=run_dir, teacher=teacher, data=data, text_column=text_column,
                         label_column=label_column, limit=limit, batch_size=batch_size, rounds=rounds,
                         threads=threads, out=out, device=device)
    report = run_bench(config)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(format_report(report))
    click.echo(f"wrote {', '.join(report['wrote'])}")


@main.command()
def teachers() -> None:
    """List the registered teachers and whether their packages are installed."""
    from importlib import metadata

    from .registry import registry

    for name, entry in registry("teachers").items():
        dists = [d for d, _ in entry["chunks"]] if entry["source"] == "chunks" else [entry["package"]]
        try:
            for dist in dists:
                metadata.distribution(dist)
            state = "installed"
        except metadata.PackageNotFoundError:
            state = f"not installed: {entry['install']}"
        default = " (default)" if name == DEFAULT_TEACHER else ""
        click.echo(f"{name}{default}: {entry['description']}, {entry['licence']}; {state}")


@main.command()
def datasets() -> None:
    """List the built-in real datasets."""
    from .data import BUILTINS

    for name, spec in BUILTINS.items():
        click.echo(f"{name}: {spec.description}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
