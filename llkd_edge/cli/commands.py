"""The ``llkd-edge`` commands: thin click wrappers that build a config and call one library function; what they
print is summaries.py's."""

from __future__ import annotations

import json

import click

from .. import __version__
from ..config import (
    DEFAULT_EPOCHS,
    DEFAULT_TEACHER,
    HEADS,
    RELABEL_MIN_KAPPA,
    STRATEGIES,
    DistillConfig,
    EvolveConfig,
    LabelBudget,
    LabelRunConfig,
    TrainConfig,
)
from ..config_deploy import BenchConfig, ExportConfig, ServeConfig
from ..errors import MissingDependencyError, UserError
from .summaries import distill_summary, evolve_summary, export_summary, label_summary
from .options import (STRATEGY_HELP, Group, config_option, given, prompt_fields, ray_config, ray_options,
                      scoring_configs, teacher_options)

@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llkd-edge")
def main() -> None:
    """Distil a GGUF LLM's labels into a small, fast text classifier."""


def show(record: dict, as_json: bool, summary) -> None:
    """``--json``: the stage's record as one JSON object on stdout; else ``summary(record)``, for people."""
    if as_json:
        click.echo(json.dumps(record))
    else:
        summary(record)


@main.command()
@click.argument("data")
@teacher_options
@click.option("--limit", type=int, help="Only the first N rows of DATA.")
@click.option("--out", help="Also write this input's labels to FILE (.jsonl, .csv or .parquet).")
@config_option("--batch-size", LabelRunConfig, "commit_every",
               help="Texts per store commit (a killed run loses at most one).")
@ray_options
@config_option("--role", LabelRunConfig,
               help="What the texts are for, recorded in the store: pool (training data) or eval (held out: a store "
              "used as distill DATA never trains on them); auto: eval for a built-in test split, else pool.")
@click.option("--gold", "gold_file", help="A few gold-labelled texts (same format as DATA): the teacher's accuracy on "
              "them, with a 95% interval, is reported (they are labelled too, and marked as held out).")
@click.option("--budget", type=float, help="Label only this share of DATA (0-1) or this many texts, picked in rounds "
              "(as distill --label-budget; default: every text).")
@click.option("--budget-strategy", type=click.Choice(STRATEGIES), show_default="random",
              help="With --budget: " + STRATEGY_HELP)
@config_option("--budget-step", LabelBudget, "step", help="With --budget: texts per round, as a share of DATA.")
@config_option("--seed", LabelRunConfig, help="With --budget: the rounds' seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def label(data, limit, out, batch_size, backend, role, gold_file, budget, budget_strategy, budget_step, seed, as_json,
          **opts):
    """Label DATA (a file, or a built-in dataset such as bbc-news:test) with the teacher's distributions."""
    from ..labels.labelling import label_texts

    ray = ray_config(backend, opts)
    if budget is None and (budget_strategy is not None or budget_step != LabelBudget.step or seed != 0):
        raise UserError("--budget-strategy, --budget-step and --seed take effect with --budget only")
    scoring, teacher = scoring_configs(data, opts)
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
        ray=ray,
        role=role,
        gold=gold_file,
        budget=None if budget is None else LabelBudget(budget, step=budget_step, fill_rest=False,
                                                          **given(strategy=budget_strategy)),
        seed=seed,
        **prompt_fields(data, opts),
    )
    summary = label_texts(config)
    show(summary.to_dict(), as_json, lambda _: label_summary(summary))


@main.command()
@click.argument("data")
@click.option("--out", "run_dir", required=True, help="RUN_DIR: where the student, metrics and plots go.")
@click.option("--eval", "eval_data", help="Gold-labelled eval set: a file or a built-in split "
              "(default for a built-in DATA: its test split).")
@teacher_options
@ray_options
@config_option("--selection", TrainConfig)
@config_option("--soft-labels", TrainConfig, is_flag=True,
               help="Learn the teacher's full distribution (KL) instead of its label.")
@click.option("--head", type=click.Choice(HEADS), help="How the student's head starts: probe, a logistic regression "
              "on the student's own features of the pool (then fine-tuned); random; auto: probe where the signal test "
              "finds the teacher's labels predictable from the texts (kappa >= 0.25), else random. Default: the "
              "student's registered one (models/students.toml).")
@config_option("--student", TrainConfig, help="minilm-l6, minilm-l3, minilm-l2, tiny, static (static embeddings: no attention, the fastest by far), a local transformers model folder, or auto (with --max-latency-ms).")
@config_option("--max-latency-ms", TrainConfig, type=float, show_default=False,
               help="With --student auto: the most milliseconds a text may take at batch 1 through the exported model "
               "here; the best student that meets it is trained (each candidate is exported untrained and timed once "
               "per machine, with --threads).")
@config_option("--epochs", TrainConfig, type=int, show_default=False,
               help=f"Passes over the pool. Default: the student's registered count (models/students.toml; else {DEFAULT_EPOCHS}).")
@config_option("--batch-size", TrainConfig)
@config_option("--max-length", TrainConfig, help="Student's token budget per text.")
@config_option("--learning-rate", TrainConfig, type=float, show_default=False,
               help="Default: the student's registered rate.")
@config_option("--seed", TrainConfig)
@config_option("--momentum", TrainConfig, help="EMA momentum of the LLKD thresholds.")
@config_option("--llkd-floor", TrainConfig, type=click.FloatRange(0, 1),
               help="LLKD: the share of the samples that pass the teacher's bar always kept, the student's neediest first. "
              "1: the student's need only weights them; 0: the paper's rule, where it also gates.")
@config_option("--topk-ratio", TrainConfig, help="Fraction kept per batch by --selection topk.")
@config_option("--need-pass", TrainConfig,
               help="Where LLKD reads the student's uncertainty: the training forward pass (dropout on, free) or an "
              "extra eval-mode pass (no dropout noise, ~1/3 more training compute).")
@config_option("--pool-calibration", DistillConfig, help="batch: divide the teacher's distributions by their mean over the pool before "
              "training (removes the teacher's bias towards some labels; read-time, the store is unchanged).")
@click.option("--gold", "gold_file", help="A few gold-labelled texts (say 8 per class; same format as DATA): they judge "
              "the teacher, correct its labels through a gold-only probe, and train the student as trusted samples.")
@config_option("--gold-weight", TrainConfig, help="Loss weight of a --gold text (teacher-labelled "
              "texts average 1).")
@click.option("--relabel", type=click.Choice(("none", "probe")), default=DistillConfig.relabel or "none", show_default=True,
              help="probe: check the teacher's labels against a probe on the pool's sentence embeddings, cross-fitted, "
              "and train on the product of the two (overrules labels that similar texts contradict); none: train on "
              "the teacher's labels as they are. Not applied with --gold, whose probe corrects the labels instead, nor "
              "when a probe on the texts can hardly reproduce the teacher's labels "
              f"(kappa < {RELABEL_MIN_KAPPA}: the run says so).")
@click.option("--label-budget", type=float, help="Let the teacher label only this share of DATA (0-1) or this many "
              "texts, picked in rounds (default: every text).")
@click.option("--label-strategy", type=click.Choice(STRATEGIES), show_default="random",
              help="With --label-budget: " + STRATEGY_HELP)
@config_option("--label-step", LabelBudget, "step", help="With --label-budget: texts per round, as a share "
              "of DATA.")
@click.option("--fill-rest/--no-fill-rest", default=None, help="With --label-budget: the student also learns the "
              "texts the teacher never labelled, each with the distribution of the probe fitted on the teacher's labels, "
              "no surer on average than the teacher's (never stored or counted as teacher labels)  [default: on].")
@click.option("--limit", type=int, help="Only the first N texts of DATA.")
@click.option("--eval-limit", type=int, help="Only the first N texts of the eval set.")
@config_option("--min-per-class", DistillConfig, help="Refuse to train with fewer pseudo-labels per class.")
@config_option("--device", TrainConfig,
               help="Where the student trains: auto uses CUDA when PyTorch sees a GPU (bf16 mixed precision if supported).")
@config_option("--learning-curve", DistillConfig, help="auto: when the student ends below its teacher on the eval "
              "texts, train it on 25% and 50% of the pool too and say whether more teacher-labelled texts are likely "
              "to help, and about how many (learning_curve.png); always; off.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in RUN_DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json.")
def distill(data, run_dir, eval_data, backend, selection, soft_labels, head, student, max_latency_ms, epochs, batch_size, max_length,
            learning_rate, seed, momentum, llkd_floor, topk_ratio, need_pass, pool_calibration, relabel, gold_file,
            gold_weight, label_budget, label_strategy, label_step, fill_rest, limit, eval_limit, min_per_class, device,
            learning_curve, resume, as_json, **opts):
    """Train a student on the teacher's labels of DATA (a file, a built-in dataset, or a label store)."""
    from ..student.distill import distill as run_distill

    ray = ray_config(backend, opts)
    if label_budget is None and (label_strategy is not None or label_step != LabelBudget.step or fill_rest is not None):
        raise UserError("--label-strategy, --label-step and --fill-rest take effect with --label-budget only")
    scoring, teacher = scoring_configs(data, opts)
    config = DistillConfig(
        data=data,
        out=run_dir,
        scoring=scoring,
        teacher=teacher,
        train=TrainConfig(student=student, max_latency_ms=max_latency_ms, selection=selection, soft_labels=soft_labels, head=head, epochs=epochs,
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
        learning_curve=learning_curve,
        backend=backend,
        ray=ray,
        label_budget=None if label_budget is None else LabelBudget(
            label_budget, step=label_step, fill_rest=fill_rest is not False, **given(strategy=label_strategy)),
        **prompt_fields(data, opts),
    )
    choose = None
    if student == "auto":
        from ..deploy.latency import choose
    show(run_distill(config, resume=resume, choose_student=choose), as_json, lambda m: distill_summary(run_dir, m))


@main.command()
@click.argument("run_dir")
@click.option("--out", required=True, help="OUT: the new run folder (student, rounds, metrics); `export OUT` works on it.")
@config_option("--rounds", EvolveConfig, help="Rounds of write -> verify -> retrain.")
@config_option("--per-round", EvolveConfig, help="Texts asked of the teacher per round.")
@config_option("--per-request", EvolveConfig, help="Texts asked for in one generation.")
@click.option("--teacher", help="Generator and verifier: a registered name or .gguf path [default: the run's teacher]; "
              "an instruct model such as qwen2.5-coder-1.5b-instruct writes far better texts.")
@click.option("--val", help="Validation texts (file or built-in split; gold `label` column optional) "
              "[default: the rows of the run's DATA after its --limit].")
@config_option("--val-limit", EvolveConfig, help="At most this many validation texts.")
@config_option("--val-labels", EvolveConfig,
               help="Judge the student against gold labels or the teacher's (auto: gold when every text has one).")
@config_option("--min-confidence", EvolveConfig,
               help="Keep a text only if the teacher gives its intended label at least this probability.")
@config_option("--seed", EvolveConfig, help="Seed of the generations.")
@config_option("--temperature", EvolveConfig)
@config_option("--max-new-tokens", EvolveConfig,
               help="Tokens per generation; each text's length is capped so that all of them fit.")
@config_option("--retries", EvolveConfig, help="More attempts for a generation that does not parse.")
@config_option("--timeout", EvolveConfig, "timeout_s", help="Seconds allowed per generation.")
@config_option("--threads", EvolveConfig, type=int, show_default="all cores")
@config_option("--n-gpu-layers", EvolveConfig, type=int, show_default="all when llama.cpp was built for a GPU, else 0",
               help="Teacher layers to offload to a GPU (-1: all).")
@click.option("--resume", is_flag=True, help="Continue an interrupted evolve run in OUT.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json.")
def evolve(run_dir, out, rounds, per_round, per_request, teacher, val, val_limit, val_labels, min_confidence, seed,
           temperature, max_new_tokens, retries, timeout, threads, n_gpu_layers, resume, as_json):
    """Have the teacher write labelled texts aimed at RUN_DIR's student's mistakes, round after round (EvoKD)."""
    from ..student.evolve import evolve as run_evolve

    config = EvolveConfig(run_dir=run_dir, out=out, rounds=rounds, per_round=per_round, per_request=per_request,
                          teacher=teacher, val=val, val_limit=val_limit, val_labels=val_labels,
                          min_confidence=min_confidence, seed=seed, temperature=temperature,
                          max_new_tokens=max_new_tokens, retries=retries,
                          timeout_s=timeout, threads=threads, n_gpu_layers=n_gpu_layers)
    show(run_evolve(config, resume=resume), as_json, lambda m: evolve_summary(out, m))


@main.command()
@click.argument("run_dir")
@click.option("--out", "model_dir", required=True, help="MODEL_DIR: where the ONNX model folder goes.")
@config_option("--optimize", ExportConfig, help="ONNX Runtime graph optimisation level.")
@config_option("--quantize", ExportConfig, help="Also write int8 models: int8 (dynamic), static (calibrated on pool texts) or both; one "
                   "becomes the default model only if it passes the accuracy gate.")
@config_option("--keep", ExportConfig, help="Which ONNX models stay in MODEL_DIR after the gate: all, or only the "
                   "default (the smallest folder to ship; the report keeps every variant's figures).")
@config_option("--max-accuracy-drop", ExportConfig,
               help="int8 may lose at most this much accuracy against fp32 on the check texts.")
@config_option("--min-agreement", ExportConfig, help="int8 must give fp32's label on at least this share of the check texts.")
@config_option("--check-limit", ExportConfig, help="At most this many texts for the parity check.")
@config_option("--threads", ExportConfig, type=int, show_default="all cores")
@click.option("--json", "as_json", is_flag=True, help="Print export_report.json.")
def export(run_dir, model_dir, optimize, quantize, keep, max_accuracy_drop, min_agreement, check_limit, threads, as_json):
    """Export RUN_DIR's student to ONNX (fp32 and int8), check each against PyTorch, write MODEL_DIR with a model card."""
    from ..deploy.export import export_run

    config = ExportConfig(run_dir=run_dir, out=model_dir, optimize=optimize, quantize=quantize, keep=keep,
                          max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement,
                          check_limit=check_limit, threads=threads)
    show(export_run(config), as_json, lambda r: export_summary(model_dir, r))


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
    from ..deploy.predict import predict_stream

    if bool(texts) == bool(input_file):
        raise UserError("give either TEXT arguments or --input FILE")
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    summary = predict_stream(model_dir, list(texts) if texts else None, input_file, text_column, out,
                             variant=variant, batch_size=batch_size, threads=threads, device=device)
    click.echo(summary, err=True)


@main.command()
@click.argument("model_dir")
@config_option("--host", ServeConfig, help="Address to bind (0.0.0.0: every interface).")
@config_option("--port", ServeConfig)
@click.option("--variant", type=click.Choice(["fp32", "int8", "int8-static"]), help="Default: the folder's default model.")
@click.option("--threads", type=int, help="ONNX Runtime CPU threads [default: all cores].")
@config_option("--max-texts", ServeConfig, help="Most texts one request may send.")
@config_option("--max-body", ServeConfig, help="Largest request body, in bytes (else 413).")
@click.option("--js-libs", help="node_modules folder with onnxruntime-web and @huggingface/tokenizers for the page "
                                "[default: examples/web/node_modules in a checkout, else a CDN].")
@click.option("--allowed-hosts", default="", help="Comma-separated Host header names to answer besides localhost, "
              "127.0.0.1, ::1 and --host (*.example.com: a domain's names; *: any). Others get 400, so a web page "
              "cannot reach the service by DNS rebinding.")
@config_option("--read-timeout", ServeConfig,
              help="Seconds a client may take to send a request's headers, and then its body (else closed, or 408).")
def serve(model_dir, host, port, variant, threads, max_texts, max_body, js_libs, allowed_hosts, read_timeout):
    """Serve MODEL_DIR over HTTP: POST /predict, GET /health, a page at / that classifies in the browser."""
    try:
        from ..deploy.serve import serve as run_service
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
@config_option("--text-column", BenchConfig)
@click.option("--label-column", help="Gold label column (default: `label` when present).")
@config_option("--limit", BenchConfig, help="Number of texts.")
@config_option("--batch-size", BenchConfig, help="Batch size for the throughput figures.")
@config_option("--rounds", BenchConfig, help="Alternating timing rounds for the students.")
@config_option("--threads", BenchConfig, type=int, show_default="all cores", help="CPU threads for every contender.")
@click.option("--out", help="Folder for bench.json and bench.png [default: MODEL_DIR/bench].")
@config_option("--device", BenchConfig,
               help="Where the students run (cuda: ONNX Runtime's CUDA provider and PyTorch on the GPU).")
@click.option("--json", "as_json", is_flag=True, help="Print bench.json.")
def bench(model_dir, run_dir, teacher, data, text_column, label_column, limit, batch_size, rounds, threads, out,
          device, as_json):
    """Time the teacher, the PyTorch student and the ONNX models side by side on the same texts."""
    from ..deploy.bench import format_report, run_bench

    config = BenchConfig(model_dir=model_dir, run_dir=run_dir, teacher=teacher, data=data, text_column=text_column,
                         label_column=label_column, limit=limit, batch_size=batch_size, rounds=rounds,
                         threads=threads, out=out, device=device)
    show(run_bench(config), as_json, lambda r: click.echo(f"{format_report(r)}\nwrote {', '.join(r['wrote'])}"))


@main.command()
def teachers() -> None:
    """List the registered teachers and whether their packages are installed."""
    from importlib import metadata

    from ..registry import registry

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
    click.echo("encoder: the packaged sentence encoder (all-MiniLM-L6-v2) as a zero-shot teacher, milliseconds a "
               "text, Apache-2.0; installed with the students")
    click.echo("openai:http://HOST:PORT/v1[#MODEL]: a model behind an OpenAI-compatible server (llama-server, vLLM, "
               "Ollama, ...); key in $LLKD_EDGE_API_KEY")


@main.command()
def datasets() -> None:
    """List the built-in real datasets."""
    from ..data import BUILTINS

    for name, spec in BUILTINS.items():
        click.echo(f"{name}: {spec.description}")
