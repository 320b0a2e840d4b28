"""What every report shares, in the package and in bench/: the machine it ran on and Markdown tables.
Standard library only."""

from __future__ import annotations

import platform
from collections.abc import Iterable, Sequence
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine(threads: int) -> dict:
    return {"cpu": cpu_model(), "threads": threads, "python": platform.python_version(), "platform": platform.platform()}


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A Markdown table; cells are written as given (format numbers before)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
