"""What the benchmark scripts share: their arguments, the record every report carries (the command that
made it, the machine, the versions), writing a report, and Markdown tables (the CLI's too)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llkd_edge.config import default_threads
from llkd_edge.files import save_figure, write_json, write_text
from llkd_edge.report import cpu_model, machine, markdown_table
from llkd_edge.student.runs import versions

__all__ = ["RESULTS", "arguments", "cache_options", "command", "cpu_model", "current_export", "finished_run", "machine",
           "markdown_table", "record", "save_plot", "write_report"]

RESULTS = Path(__file__).parent / "results"


def arguments(doc: str, threads: bool = True) -> argparse.ArgumentParser:
    """A parser described by the first line of the script's docstring, with --threads unless told otherwise."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    if threads:
        parser.add_argument("--threads", type=int, default=default_threads())
    return parser


def cache_options(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """--report-only, --cache (runs/NAME/scores.json) and --out (bench/results/NAME.json): for a bench that caches
    the teacher's rows and can re-render its report from them alone."""
    parser.add_argument("--report-only", action="store_true", help="re-render the report from the cache")
    parser.add_argument("--cache", default=f"runs/{name}/scores.json")
    parser.add_argument("--out", default=str(RESULTS / f"{name}.json"))
    return parser


def command() -> str:
    """This run as a command to paste: ``python -m bench.NAME ARGS`` (or the script path it was started by)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    start = f"python -m {spec.name}" if spec and spec.name else f"python {sys.argv[0]}"
    return " ".join([start, *sys.argv[1:]])


def record(threads: int, *packages: str) -> dict:
    """The fields every report starts with: command, machine, versions (the package's, plus ``packages``)."""
    return {"command": command(), "machine": machine(threads), "versions": versions(*packages)}


def save_plot(fig, path: Path) -> Path:
    """A matplotlib figure written atomically, then closed."""
    import matplotlib.pyplot as plt

    save_figure(fig, path)
    plt.close(fig)
    return path


def write_report(path: Path, report: dict, markdown: str | None = None) -> Path:
    """REPORT as JSON at ``path`` (and ``markdown`` beside it as .md), each written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    if markdown is not None:
        write_text(path.with_suffix(".md"), markdown)
    return path


def finished_run(run_dir: Path, config) -> bool:
    """Whether ``run_dir`` holds the finished distill run of ``config`` (a ``DistillConfig``), to be reused. A
    finished run of other settings (made by an older version of the study, say) stops the study with a line
    naming what differs, rather than being reported as this one."""
    from llkd_edge.config import identity
    from llkd_edge.student.distill import with_paths_resolved
    from llkd_edge.student.runs import _diff

    if not (run_dir / "metrics.json").exists():
        return False
    saved = json.loads((run_dir / "config.json").read_text())["identity"]
    changed = sorted(_diff(saved, json.loads(json.dumps(identity(with_paths_resolved(config))))))
    if changed:
        raise SystemExit(f"{run_dir} holds a finished run of other settings ({', '.join(changed[:4])}): "
                         "move it away or choose another --work")
    return True


def current_export(model_dir: Path, run_dir: Path) -> bool:
    """Whether ``model_dir`` holds an export of the run now in ``run_dir`` (its run id), to be reused."""
    try:
        manifest = json.loads((model_dir / "llkd_edge.json").read_text())
        run_id = json.loads((run_dir / "metrics.json").read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return False
    return (model_dir / "export_report.json").exists() and manifest.get("run", {}).get("run_id") == run_id
