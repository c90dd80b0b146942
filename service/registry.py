"""Moved to ``service.contract`` (pointer history, previous version, pruning).

Re-exported so code written against the old path keeps importing; new code
imports ``service.contract``.
"""

from service.contract import (  # noqa: F401
    HISTORY_FILE,
    MAX_HISTORY_LINES,
    pointer_history,
    previous_version,
    prune_versions,
    set_current,
)
