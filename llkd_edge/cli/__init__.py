"""The ``llkd-edge`` command (the top rank: it may call every stage): ``commands`` defines it, ``options`` builds
configs from its options, ``summaries`` prints each stage's record."""

from .commands import main

__all__ = ["main"]
