import os
import sys
from pathlib import Path

# bench/ is a package of the repository, not of the install: its scripts are tested from here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Nothing may come from a model hub, ever; and tests keep their model cache apart only if asked.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
