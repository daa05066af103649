"""Process-wide logging set-up, called by each service's entry point (never at import)."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    """Plain one-line records on stderr."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
