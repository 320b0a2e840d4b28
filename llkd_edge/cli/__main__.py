"""``python -m llkd_edge.cli``: the same as the ``llkd-edge`` command."""

import sys

from .commands import main

sys.exit(main())
