"""The label set: label names and the words the teacher is asked to say for each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import LabelSpecError


@dataclass(frozen=True)
class LabelSet:
    """Label names and the words the teacher is asked to say for each (its verbalisers).

    Parse from ``"a,b,c"``, ``"sci_tech=science and technology,sports"`` or a file with one ``name`` or
    ``name=verbaliser`` per line (blank lines and ``#`` comments ignored).
    """

    names: tuple[str, ...]
    verbalisers: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.verbalisers):
            raise ValueError("names and verbalisers must have the same length")
        if any(not n for n in self.names) or any(not v for v in self.verbalisers):
            raise LabelSpecError("empty label name or verbaliser in the label set")
        if len(self.names) < 2:
            raise LabelSpecError(f"need at least 2 labels, got {len(self.names)}: {', '.join(self.names)}")
        dupes = sorted({n for n in self.names if self.names.count(n) > 1})
        if dupes:
            raise LabelSpecError(f"duplicate labels: {', '.join(dupes)}")
        lowered = [v.lower() for v in self.verbalisers]
        dupes = sorted({v for v in lowered if lowered.count(v) > 1})
        if dupes:
            raise LabelSpecError(f"two labels share the verbaliser {dupes[0]!r}; give each label its own word")

    @classmethod
    def parse(cls, spec: str) -> LabelSet:
        spec = spec.strip()
        if not spec:
            raise LabelSpecError("no labels given: use --labels a,b,c or --labels labels.txt")
        path = Path(spec)
        if "," not in spec and (path.is_file() or path.suffix in {".txt", ".labels"}):
            if not path.is_file():
                raise LabelSpecError(f"{spec}: no such labels file")
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError:
                raise LabelSpecError(f"{spec}: the labels file is not valid UTF-8") from None
            items = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        else:
            items = [item.strip() for item in spec.split(",")]
        names, verbalisers = [], []
        for item in items:
            name, sep, word = item.partition("=")
            name, word = name.strip(), word.strip()
            names.append(name)
            verbalisers.append(word if sep else name.replace("_", " "))
        return cls(tuple(names), tuple(verbalisers))

    def spec(self) -> str:
        """The canonical text form, which ``parse`` reads back."""
        return ",".join(n if n.replace("_", " ") == v else f"{n}={v}" for n, v in zip(self.names, self.verbalisers))

    def index(self, name: str) -> int:
        return self.names.index(name)
