"""llkd-edge: distil a GGUF LLM's labels into a small, fast text classifier."""

__version__ = "0.1.0"
