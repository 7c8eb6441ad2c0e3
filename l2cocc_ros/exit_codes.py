"""Exit codes of every ``l2cocc`` command and of ``l2cocc_node`` (README, "Exit codes"): one convention for
the whole package (a module of its own, below every layer).

* :data:`OK` (0): done.
* :data:`FAILED` (1): the command started and failed, or its check failed: bad data met while working
  (a truncated file, a damaged bag), a checkpoint that does not fit, a run without a result.
* :data:`USAGE` (2): refused before any work: wrong, missing or contradicting arguments, and inputs checked up
  front (a path that does not exist, an output that already exists, an unknown preset, an unreadable or unsafe
  file named on the command line, invalid node parameters). argparse exits with 2 for its own errors too.
"""
from __future__ import annotations

__all__ = ["OK", "FAILED", "USAGE"]

OK = 0
FAILED = 1
USAGE = 2
