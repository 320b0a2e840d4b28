import os

# Nothing may come from a model hub, ever; and tests keep their model cache apart only if asked.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
