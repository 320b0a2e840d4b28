"""The command line's plumbing: one error line instead of a traceback (``Group``), options whose defaults and
choices are the config fields' (``config_option``), the option groups label and distill share, and the configs
built from them."""

from __future__ import annotations

import os
import sys
from dataclasses import MISSING, fields

import click

from ..config import (
    DEFAULT_TASK,
    PROMPT_MODES,
    LabelRunConfig,
    RayConfig,
    ScoringConfig,
    TeacherConfig,
)
from ..errors import UserError
from ..files import one_line

# --budget-strategy (label) and --label-strategy (distill): the same rounds, active.py
STRATEGY_HELP = ("how each round picks (random: a random slice, the most robust in our study; active: what the "
                 "student's encoder finds unsure, spread out; confident: the same among texts the teacher is predicted "
                 "to be sure of; balanced: confident, shared equally over the classes; coverage: typical texts, "
                 "spread out).")


def usage_error(exc: click.UsageError, command: str) -> None:
    """click's usage error as our one stderr line, naming the --help of the command it came from."""
    click.echo(f"error: {one_line(exc.format_message(), limit=None)} (see `{command} --help`)", err=True)


class Group(click.Group):
    """Turns our UserErrors, and click's own usage errors (a bad option value, an unknown option, a missing
    argument), into one line on stderr and exit code 2, never a traceback or click's three-line usage block."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:  # the top level's own options (`llkd-edge --nope`): parsed before invoke
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            usage_error(exc, info_name)
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
            usage_error(exc, exc.ctx.command_path if exc.ctx else ctx.command_path)
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


def config_option(flag: str, config: type, name: str | None = None, **kwargs):
    """A click option whose default and choices are the config field's (``config.choice``): one home for both.
    ``name``: the field, when it is not the flag's own name."""
    f = {f.name: f for f in fields(config)}[name or flag.split("/")[0].lstrip("-").replace("-", "_")]
    default = f.default if f.default is not MISSING else f.default_factory
    choices = f.metadata.get("choices")
    if choices is not None:
        kwargs.setdefault("type", click.Choice([c for c in choices if c is not None]))
    return click.option(flag, default=default, show_default=kwargs.pop("show_default", True), **kwargs)


def ray_options(func):
    """Where the teacher runs: this process or a pool of Ray actors (label and distill)."""
    options = [
        config_option("--backend", LabelRunConfig,
                      help="local: this process; ray: a pool of Ray actors, each with its own loaded teacher."),
        click.option("--address", help="Ray cluster to join (e.g. ray://head:10001 or auto) [default: start a local one]."),
        click.option("--workers", type=int, help=f"Ray actors [default: {RayConfig.workers}]."),
        click.option("--cpus-per-worker", type=int,
                     help=f"CPUs each Ray actor reserves, and its threads [default: {RayConfig.cpus_per_worker}]."),
        click.option("--gpus-per-worker", type=float, help="GPUs each Ray actor reserves (0.5: two per GPU) "
                     f"[default: {RayConfig.gpus_per_worker:g}]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def ray_config(backend: str, opts: dict) -> RayConfig:
    """--address, --workers, ... as a RayConfig; refused unless the backend is ray."""
    asked = {k: opts.pop(k) for k in ("address", "workers", "cpus_per_worker", "gpus_per_worker")}
    named = [f"--{k.replace('_', '-')}" for k, v in asked.items() if v is not None]
    if backend != "ray" and named:
        raise UserError(f"{', '.join(named)}: only with --backend ray")
    return RayConfig(**given(**asked))


def teacher_options(func):
    """The options that choose the teacher and its prompt (shared by label and distill)."""
    options = [
        click.option("--labels", help='Label set: "a,b,c", "sci_tech=science and technology,...", or a labels file. '
                     "Defaults to the built-in dataset's labels."),
        config_option("--teacher", TeacherConfig, "model",
                      help="A registered teacher name (see `llkd-edge teachers`), a .gguf path, or a model behind an "
                          "OpenAI-compatible server: openai:http://HOST:PORT/v1[#MODEL] (openai-chat:... to ask through "
                          "its chat API; API key from $LLKD_EDGE_API_KEY); several, comma-separated, "
                          "for an ensemble (each labels into the store, their answers are pooled; a,b*2 weights b twice). "
                          "distill also takes `auto`: the LLM and the encoder teacher both label the pool, and their "
                          "pool is used where they agree beyond chance, else the LLM."),
        click.option("--store", help="The label store (sqlite) to reuse and fill [default: labels.sqlite; for "
                     "distill from a store: that store]."),
        config_option("--text-column", LabelRunConfig),
        click.option("--label-column", help="Gold label column (default: `label` when present)."),
        click.option("--task", help="What the teacher is asked to do (default: the built-in dataset's, or a generic one)."),
        click.option("--few-shot", "few_shot", help="File of labelled examples (text and label columns) put in the prompt."),
        click.option("--prompt", type=click.Choice(PROMPT_MODES),
                     show_default="fixed with --task, --few-shot or a built-in dataset's task, else auto",
                     help="auto: try a few task wordings and answer cues on a sample of the texts and keep the one whose "
                     "answers tell them apart best (no gold labels used; the ranking is printed); fixed: as given."),
        config_option("--prompt-sample", LabelRunConfig, help="Texts each candidate prompt is tried on."),
        config_option("--calibrate/--no-calibrate", ScoringConfig, help="Contextual calibration against content-free inputs."),
        config_option("--max-text-tokens", ScoringConfig, help="Truncate each text to this many tokens."),
        config_option("--threads", TeacherConfig, "n_threads", type=int, show_default="all cores", help="CPU threads."),
        click.option("--n-gpu-layers", type=int, show_default="all when llama.cpp was built for a GPU, else 0",
                     help="Teacher layers to offload to a GPU (-1: all)."),
        config_option("--parallel", TeacherConfig, show_default="8 on a GPU, 1 on a CPU; 8 for a server",
                     help="Texts the teacher scores per llama.cpp decode (multi-sequence batching); for a served "
                     "teacher, requests in flight."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def given(**options) -> dict:
    """The options the user gave (not None), as keyword arguments: the rest keep the config's defaults."""
    return {k: v for k, v in options.items() if v is not None}


def prompt_fields(data, opts) -> dict:
    """--prompt and --prompt-sample as config fields: auto unless a person wrote the task (--task, --few-shot, or
    a built-in dataset's own task, which beat the auto choice on 3 of 4 built-in sets: bench/RESULTS.md)."""
    from ..data import builtin_spec

    written = opts["task"] or opts["few_shot"] or builtin_spec(data) is not None
    return {"prompt": opts["prompt"] or ("fixed" if written else "auto"), "prompt_sample": opts["prompt_sample"]}


def scoring_configs(data, opts) -> tuple[ScoringConfig, TeacherConfig]:
    """Build the teacher's configs from the shared options (DATA gives a built-in's default labels/task)."""
    from ..config import LabelSet
    from ..data import builtin_spec, read_dataset
    from ..student.runs import is_store
    from ..labels.labelling import resolve_labels

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
