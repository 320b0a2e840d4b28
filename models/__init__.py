"""The registry of known models (data only: see teachers.toml); packaged as ``llkd_edge.models``."""
