"""What the commands print: a summary of each stage's record (the JSON the library returns), for people.

``--json`` prints the record itself; these functions only format it.
"""

from __future__ import annotations

import click


def _prompt_choice(choice: dict | None) -> None:
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


def distill_summary(run_dir: str, m: dict) -> None:
    """What `distill` prints: the prompt choice, the labels' checks, the student against the teacher, timings."""
    _prompt_choice(m.get("prompt_choice"))
    if choice := m.get("teacher_choice"):
        click.echo(f"--teacher auto: {choice.get('teacher')} ({choice.get('why', '')})")
    sel, data = m["selection"], m["data"]
    _gold(m.get("gold"))
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
    t, s = m.get("teacher"), m.get("student")
    if t and s and s["macro_f1"] < t["macro_f1"]:
        click.echo(f"warning: the student (macro-F1 {s['macro_f1']:.3f}) ends below its teacher ({t['macro_f1']:.3f}) "
                   f"on these {s.get('n', '')} eval texts: it learnt from the teacher's labels, mistakes included, and did not get past them",
                   err=True)
    if curve := m.get("learning_curve"):
        from ..student.curve import summary_line

        click.echo(f"{summary_line(curve)}; {run_dir}/learning_curve.png", err=True)
    secs = m["seconds"]
    click.echo(f"time: label {secs['label']:.0f}s, train {secs['train']:.0f}s, eval {secs['eval']:.0f}s; wrote {run_dir}")


def _gold(g: dict | None) -> None:
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
    _other_teacher(g.get("encoder_on_gold"))


def _other_teacher(compared: dict | None) -> None:
    """--gold: the line saying the encoder teacher, or a pool with it, did better on the gold texts."""
    from ..labels.alternatives import advice

    if line := advice(compared):
        click.echo(f"try another teacher: {line}")


def label_summary(s) -> None:
    """What `label` prints: counts, the teacher's health, its score on gold texts, the budget's rounds."""
    _prompt_choice(s.prompt_choice)
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
    if sig := s.health.get("signal"):
        click.echo(f"signal test: a probe on the texts predicts the labels with kappa {sig['kappa']:.2f} beyond "
                   f"shuffled labels (z {sig['z']:.1f}, {sig['n']} texts): "
                   f"{'they follow the texts' if sig['signal'] else 'no better than chance'}")
    if s.accuracy is not None:
        click.echo(f"vs gold ({s.gold_count} texts): accuracy {s.accuracy:.3f}, macro-F1 {s.macro_f1:.3f} "
                   f"(majority class {s.majority_rate:.3f})")
    if s.gold:
        g = s.gold
        weakest = min(g["recall"], key=g["recall"].get)
        click.echo(f"on your {g['n']} gold texts: accuracy {g['accuracy']:.3f} (95% interval {g['interval'][0]:.2f}-"
                   f"{g['interval'][1]:.2f}), macro-F1 {g['macro_f1']:.3f}; weakest class {weakest} "
                   f"(recall {g['recall'][weakest]:.2f})")
        _other_teacher(g.get("encoder_on_gold"))
    if s.budget:
        b = s.budget
        click.echo(f"budget: the teacher labelled {b['texts_labelled']} of {b['pool_texts']} texts in {len(b['rounds'])} "
                   f"rounds ({b['strategy']}), {b['teacher_calls']} asked now; {b['left_unlabelled']} left unlabelled"
                   + (f", listed in {b['unlabelled_file']}" if b.get("unlabelled_file") else ""))
    if s.out:
        click.echo(f"wrote {s.out}")
    for warning in s.warnings:
        click.echo(f"warning: {warning}", err=True)


def evolve_summary(out: str, metrics: dict) -> None:
    """What `evolve` prints: what was written and kept, and the student before and after."""
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


def export_summary(model_dir: str, report: dict) -> None:
    """What `export` prints: each model's parity with PyTorch, and which became the default."""
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
