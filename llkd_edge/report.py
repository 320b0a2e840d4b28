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


def instruction_sets() -> str:
    """The vector instruction sets that move int8 and llama.cpp speeds (AVX2, AVX-512 with VNNI, AMX), from
    /proc/cpuinfo; "unknown" elsewhere. Speed figures are only comparable between machines that share them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return " ".join(sorted(f for f in flags if f.startswith(("avx", "amx")))) or "none"
    except OSError:
        pass
    return "unknown"


def machine(threads: int) -> dict:
    return {"cpu": cpu_model(), "instruction_sets": instruction_sets(), "threads": threads,
            "python": platform.python_version(), "platform": platform.platform()}


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A Markdown table; cells are written as given (format numbers before)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
