"""The ``llkd-edge`` command: thin click wrappers that build a config and call one library function."""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .config import DEFAULT_TASK, DEFAULT_TEACHER, LabelRunConfig, ScoringConfig, TeacherConfig, default_threads
from .errors import UserError


class _Group(click.Group):
    """Turns our UserErrors into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {' '.join(str(exc).split())}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: finished batches are saved; run the same command again to resume", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llkd-edge")
def main() -> None:
    """Distil a GGUF LLM's labels into a small, fast text classifier."""


@main.command()
@click.argument("data")
@click.option("--labels", help='Label set: "a,b,c", "sci_tech=science and technology,...", or a labels file. '
              "Defaults to the built-in dataset's labels.")
@click.option("--teacher", default=DEFAULT_TEACHER, show_default=True,
              help="A registered teacher name (see `llkd-edge teachers`) or a .gguf path.")
@click.option("--store", default="labels.sqlite", show_default=True, help="The label store (sqlite) to reuse and fill.")
@click.option("--limit", type=int, help="Only the first N rows of DATA.")
@click.option("--out", help="Also write this input's labels to FILE (.jsonl, .csv or .parquet).")
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", help="Gold label column (default: `label` when present); gold enables accuracy.")
@click.option("--task", help="What the teacher is asked to do (default: the built-in dataset's, or a generic one).")
@click.option("--few-shot", "few_shot", help="File of labelled examples (text and label columns) put in the prompt.")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Contextual calibration against content-free inputs.")
@click.option("--max-text-tokens", default=256, show_default=True, help="Truncate each text to this many tokens.")
@click.option("--threads", type=int, default=default_threads, show_default="all cores", help="CPU threads for llama.cpp.")
@click.option("--n-gpu-layers", default=0, show_default=True, help="Layers to offload to a GPU (-1: all).")
@click.option("--batch-size", default=16, show_default=True, help="Texts per store commit (a killed run loses at most one).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def label(data, labels, teacher, store, limit, out, text_column, label_column, task, few_shot, calibrate,
          max_text_tokens, threads, n_gpu_layers, batch_size, as_json):
    """Label DATA (a file, or a built-in dataset such as bbc-news:test) with the teacher's distributions."""
    from .data import read_dataset
    from .labelling import label_texts, resolve_labels

    source = read_dataset(data, text_column, label_column)  # cheap; gives a built-in's default labels and task
    label_set = resolve_labels(labels, source)
    examples = ()
    if few_shot:
        shots = read_dataset(few_shot, "text", "label")
        examples = tuple((t, g) for t, g in zip(shots.texts, shots.gold) if t.strip())
    scoring = ScoringConfig(
        labels=label_set,
        task=task or source.task or DEFAULT_TASK,
        calibrate=calibrate,
        max_text_tokens=max_text_tokens,
        few_shot=examples,
    )
    config = LabelRunConfig(
        data=data,
        scoring=scoring,
        teacher=TeacherConfig(model=teacher, n_threads=threads, n_gpu_layers=n_gpu_layers),
        store=store,
        text_column=text_column,
        label_column=label_column,
        limit=limit,
        out=out,
        commit_every=batch_size,
    )
    summary = label_texts(config)
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
    else:
        _print_label_summary(summary)


def _print_label_summary(s) -> None:
    rate = f" ({s.texts_per_second} texts/s)" if s.texts_per_second else ""
    click.echo(f"labelled {s.labelled}, cached {s.cached}, skipped {s.skipped} empty, "
               f"{s.duplicates} duplicates, in {s.seconds:.1f}s{rate}")
    click.echo(f"teacher {s.teacher} (sha256 {s.teacher_sha256[:12]}), store {s.store}")
    width = max(len(name) for name in s.labels)
    n = sum(s.label_counts.values())
    for name in s.labels:
        c = s.label_counts[name]
        click.echo(f"  {name:<{width}}  {c:>6}  {c / n:6.1%}")
    click.echo(f"mean confidence {s.mean_confidence:.3f}, label-token mass {s.mean_label_mass:.3f}, "
               f"{s.truncated} texts truncated")
    if s.accuracy is not None:
        click.echo(f"vs gold ({s.gold_count} texts): accuracy {s.accuracy:.3f}, macro-F1 {s.macro_f1:.3f} "
                   f"(majority class {s.majority_rate:.3f})")
    if s.out:
        click.echo(f"wrote {s.out}")
    for warning in s.warnings:
        click.echo(f"warning: {warning}", err=True)


@main.command()
def teachers() -> None:
    """List the registered teachers and whether their packages are installed."""
    from importlib import metadata

    from .teacher import registry

    for name, entry in registry().items():
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
