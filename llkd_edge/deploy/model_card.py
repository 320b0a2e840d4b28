"""MODEL_DIR/README.md: a Hugging Face model card for an exported student, written from what the folder and
its run already record (``llkd_edge.json`` and the export report). Pure: dicts in, Markdown out.

YAML front matter (pipeline tag, labels, the eval metrics as a ``model-index``), then what the model is, how
well it and its teacher did on the same texts, how to run it, how it was made, and its limits.
"""

from __future__ import annotations

import html
import json
import re

CARD = "README.md"
WEAK_F1 = 0.7  # a class the teacher labels with F1 below this is named as a weakness


def model_card(manifest: dict, report: dict) -> str:
    run = manifest.get("run") or {}
    return "\n".join([_front_matter(manifest, run), _about(manifest, report, run), _scores(run),
                      _usage(manifest), _provenance(manifest, report, run), _limits(manifest, run), ""])


def _md(value) -> str:
    """A name from the run (a label, a file, a teacher) as Markdown text: one line, HTML escaped, and the
    characters that would start a table cell, a link, emphasis or code taken literally."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", text)


def _code(value) -> str:
    """A value as a Markdown code span, fenced by more backticks than it holds (its text is shown as is)."""
    text = " ".join(str(value).split())  # (never used inside a table, where a | would still split the row)
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _names(values) -> str:
    return ", ".join(_md(v) for v in values)


def _yaml(value) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON scalar or list is valid YAML, quoted safely


def _front_matter(manifest: dict, run: dict) -> str:
    student, teacher = run.get("student") or {}, run.get("teacher") or {}
    lines = ["---", "pipeline_tag: text-classification", "library_name: onnx",
             f"tags: {_yaml(['llkd-edge', 'onnx'] + ([] if is_static(manifest) else ['transformers.js']) + ['knowledge-distillation', 'text-classification'])}"]
    if student.get("licence"):
        lines.append(f"license: {_yaml(student['licence'].lower())}")
    lines.append(f"labels: {_yaml(manifest['labels'])}")
    scores, eval_set = (run.get("eval") or {}).get("student"), (run.get("eval") or {}).get("set")
    if scores and eval_set:
        lines += ["model-index:", f"- name: {_yaml('llkd-edge student of ' + str(teacher.get('name', 'a GGUF teacher')))}",
                  "  results:", "  - task:", "      type: text-classification",
                  "    dataset:", f"      name: {_yaml(eval_set)}", f"      type: {_yaml(eval_set.split(':')[0])}",
                  "    metrics:", "    - type: accuracy", f"      value: {scores['accuracy']}",
                  "    - type: f1", "      name: macro-F1", f"      value: {scores['macro_f1']}"]
    lines.append("---")
    return "\n".join(lines)


def _about(manifest: dict, report: dict, run: dict) -> str:
    student, teacher = run.get("student") or {}, run.get("teacher") or {}
    sizes = manifest.get("sizes_mb") or {}
    files = ", ".join(f"`{f}` ({v}, {sizes.get(v, '?')} MB)" for v, f in manifest["variants"].items())
    if is_static(manifest):
        what = ("\nA static-embedding model: one vector per token (distilled from the sentence encoder "
                "all-MiniLM-L6-v2, then trained on the teacher's labels), their mean and a linear head; no attention, "
                "so a text costs a lookup per token. Its `int8` stores the token table in int8 with a scale per token; "
                "every variant scores texts batched by length (padded) with the same scores as alone.")
    else:
        what = ("\nA text gets the same scores whatever it is scored with: the runtimes give fp32 texts batched by "
                "length (padded), dynamic `int8` one text per call (its activation scales are computed per call) and "
                "`int8-static` only texts of one token length per call (its fixed ranges do not hold padding).")
    return "\n".join([
        f"\n# Text classifier: {_names(manifest['labels'])}\n",
        f"A small student model ({_md(student.get('name', 'a transformers encoder'))}, "
        f"{_millions(student.get('parameters'))} parameters) distilled by llkd-edge "
        f"from the labels of the GGUF teacher {_code(teacher.get('name', '?'))}, exported to ONNX.",
        f"It reads at most {manifest['max_length']} tokens of a text and gives one probability per label.\n",
        f"Files: {files}. Default: **{manifest['default']}** ({report.get('default_reason', '')}).",
        what,
    ])


def is_static(manifest: dict) -> bool:
    student = (manifest.get("run") or {}).get("student")
    return isinstance(student, dict) and student.get("architecture") == "static embeddings"


def _millions(n) -> str:
    return f"{n / 1e6:.1f}M" if isinstance(n, (int, float)) else "?"


def _scores(run: dict) -> str:
    ev = run.get("eval") or {}
    rows = [(name, ev.get(key)) for name, key in (("teacher (the LLM)", "teacher"), ("student (this model)", "student"),
                                                   ("gold-only probe", "gold_only")) if ev.get(key)]
    if not rows:
        return "\n## Quality\n\nThe run had no eval set with gold labels, so this model's quality was not measured."
    n = rows[0][1].get("n")
    lines = [f"\n## Quality\n\nOn {n} held-out texts of {_code(ev.get('set'))} with gold labels (never trained on), "
             "teacher and student scored on the same texts:\n",
             "| model | accuracy | macro-F1 |", "|---|---|---|"]
    lines += [f"| {name} | {s['accuracy']:.3f} | {s['macro_f1']:.3f} |" for name, s in rows]
    lines.append(f"\nMajority-class rate on these texts: {rows[0][1].get('majority_rate', float('nan')):.3f}.")
    per_class = ev.get("per_class_f1")
    if per_class:
        lines += ["\nF1 per class:\n", "| class | teacher | student |", "|---|---|---|"]
        lines += [f"| {_md(c)} | {per_class['teacher'].get(c, float('nan')):.3f} | {per_class['student'].get(c, float('nan')):.3f} |"
                  for c in per_class["student"]]
    return "\n".join(lines)


def _usage(manifest: dict) -> str:
    js = [] if is_static(manifest) else [  # transformers.js knows transformer architectures only
        "transformers.js (browser or Node), this folder as a local model:\n",
        "```js\nimport { pipeline, env } from \"@huggingface/transformers\";\nenv.localModelPath = \"/models/\";\n"
        "const classify = await pipeline(\"text-classification\", \"MODEL_DIR\", { dtype: \"fp32\" });\n"
        "await classify(\"some text\", { top_k: null });\n```\n"]
    return "\n".join([
        "\n## Use\n",
        "Python (`pip install \"llkd-edge[runtime]\"`: ONNX Runtime, tokenizers, numpy; no torch):\n",
        "```python\nfrom llkd_edge.runtime import Classifier\n\nclf = Classifier.load(\"MODEL_DIR\")\n"
        "clf.predict([\"some text\"]), clf.predict_proba([\"some text\"])\n```\n",
        "Node (`examples/node`: onnxruntime-node and @huggingface/tokenizers):\n",
        "```bash\nnode examples/node/predict.mjs MODEL_DIR \"some text\"\n```\n",
        *js,
        "An HTTP service with a page that classifies in the browser: `llkd-edge serve MODEL_DIR`.",
    ])


def _provenance(manifest: dict, report: dict, run: dict) -> str:
    teacher, config, data = run.get("teacher") or {}, run.get("config") or {}, run.get("data") or {}
    selection = run.get("selection") or {}
    train = config.get("train") or {}
    lines = ["\n## How it was made\n",
             f"- Teacher: {_code(teacher.get('name'))}, file sha256 {_code(teacher.get('sha256'))}, licence {_md(teacher.get('licence'))}.",
             f"- Prompt: {_code(json.dumps(teacher.get('prompt'), ensure_ascii=False))}; labels read from the teacher's "
             f"token log-probs (verbalisers {_names((config.get('scoring') or {}).get('labels', {}).get('verbalisers', []))}).",
             f"- Data: {data.get('pool_size')} unlabelled texts from {_code(data.get('pool'))}; eval set {_code((run.get('eval') or {}).get('set'))} "
             f"({data.get('eval_size')} texts).",
             f"- Student training: selection {_code(selection.get('method', train.get('selection')))} "
             f"(samples used at least once: {selection.get('fraction_used', '?')}), {train.get('epochs')} epochs, "
             f"seed {train.get('seed')}, {train.get('max_length')} tokens.",
             f"- Pool calibration: {(run.get('pool_calibration') or {}).get('method')}."]
    relabel = run.get("relabel")
    if relabel:
        lines.append(f"- Labels checked by a cross-fitted probe on the pool's sentence embeddings "
                     f"({_code('--relabel ' + str(relabel.get('method')))}): {relabel.get('changed', 0):.1%} of them "
                     "changed.")
    gold = run.get("gold")
    if gold:
        lines.append(f"- Gold texts: {gold.get('n')} ({_md(gold.get('file'))}); the pool was labelled by {_code(gold.get('chosen'))} "
                     f"({_md(gold.get('why'))}).")
    variants = report.get("variants") or {}
    for name, v in variants.items():
        gate = v.get("gate")
        agree = v.get("argmax_agreement_with_fp32")
        extra = f", same label as fp32 on {agree:.1%}" if agree is not None else ""
        lines.append(f"- ONNX {name}: max |logit - PyTorch| {v['max_abs_logit_diff']:.2g}{extra}"
                     + (f"; gate: {'passed' if gate['passed'] else 'failed'}" if gate else "") + ".")
    lines.append(f"- Run `{run.get('run_id')}`; versions: "
                 + ", ".join(f"{k} {v}" for k, v in (manifest.get("versions") or {}).items()) + ".")
    return "\n".join(lines)


def _limits(manifest: dict, run: dict) -> str:
    lines = ["\n## Intended use and limits",
             f"Sorting texts like those it was distilled on into {_names(manifest['labels'])}. It knows nothing "
             "outside these labels: every text gets one of them. It learnt from an LLM's labels, not from people, so "
             "it inherits the teacher's mistakes; check it on your own labelled texts before relying on it.",
             f"Texts longer than {manifest['max_length']} tokens are cut."]
    per_class = ((run.get("eval") or {}).get("per_class_f1") or {}).get("teacher") or {}
    weak = sorted((f, c) for c, f in per_class.items() if f < WEAK_F1)
    if weak:
        lines.append("The teacher was weak on " + ", ".join(f"{_md(c)} (F1 {f:.2f})" for f, c in weak)
                     + "; the student's labels for these classes deserve the least trust.")
    health = run.get("teacher_health") or {}
    if health.get("labels_never_named"):
        lines.append(f"The teacher never named {_names(health['labels_never_named'])} on the pool.")
    for warning in run.get("teacher_warnings") or []:
        lines.append(f"Teacher warning: {_md(warning)}")
    teacher, student = (run.get("eval") or {}).get("teacher"), (run.get("eval") or {}).get("student")
    if teacher and student and student["macro_f1"] < teacher["macro_f1"]:
        lines.append(f"**The student scores below its teacher** on the eval texts (macro-F1 {student['macro_f1']:.3f} "
                     f"against {teacher['macro_f1']:.3f}): it learnt from the teacher's labels, mistakes included, and did not get past them.")
    curve = run.get("learning_curve")
    if curve:
        pts = ", ".join(f"{p['texts']:,} texts {p['macro_f1']:.3f}" for p in curve["points"])
        lines.append(f"Learning curve (the same student trained on part of the pool, macro-F1 on the eval texts): "
                     f"{pts}; {curve['gain_per_doubling']:+.3f} a doubling of the pool: {_md(curve['verdict'])}. "
                     f"A rough guide from {len(curve['points'])} points.")
    gold = run.get("gold") or {}
    if gold.get("teacher_below_gold_only"):
        lines.append("On the gold texts the teacher scored below a probe trained on those texts alone.")
    return "\n\n".join(lines)
