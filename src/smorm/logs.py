"""Where smorm's log messages go: the command line sends them to stderr through rich.

Library modules only call ``logging.getLogger(__name__)``; configuring handlers is the
application's job, so :func:`setup_logging` is called by the CLI and by nothing in the library.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

LEVELS = ("debug", "info", "warning", "error")


class _SmormHandler(RichHandler):
    """A RichHandler we can tell apart from handlers that someone else attached."""


def setup_logging(level: str | int = "info") -> None:
    """Show smorm's messages at ``level`` and above on stderr, formatted by rich.

    Only the ``smorm`` logger is touched, so other libraries keep their own settings. Calling it
    again (the CLI is invoked many times in one test process) replaces the handler, not adds one.
    """
    numeric = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    logger = logging.getLogger("smorm")
    for handler in [h for h in logger.handlers if isinstance(h, _SmormHandler)]:
        logger.removeHandler(handler)
    # Console(stderr=True) looks sys.stderr up at each write, so redirected stderr (pytest, click's
    # CliRunner) is honoured; the source path is noise except when debugging.
    handler = _SmormHandler(console=Console(stderr=True), log_time_format="[%X]",
                            show_path=numeric <= logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(numeric)
