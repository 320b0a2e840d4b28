import os
import sys
from pathlib import Path

# bench/ is a package of the repository, not of the install: its scripts are tested from here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Nothing may come from a model hub, ever; and tests keep their model cache apart only if asked.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items):
    """Every test under tests/integration/ uses the real models: marked `integration` by its folder, not by a
    line each file must remember (``-m "not integration"`` deselects them)."""
    import pytest

    for item in items:
        if Path(item.fspath).resolve().is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)
