"""Shared helpers for the absl entry points: one-line errors instead of tracebacks."""

from __future__ import annotations

import sys

from absl import flags


def parse_flags(argv: list[str]) -> list[str]:
    """``app.run(main, flags_parser=parse_flags)``: a bad flag or config override exits with one line.

    A misspelled ``--config.a.b=v`` (the ConfigDict is locked) names the field that does not exist.
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        # A config file that raised: keep the flag line and the exception line, drop the traceback.
        msg = lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}"
        sys.exit(f"error: {msg}")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        bad = [a.split("=", 1)[0].lstrip("-") for a in argv[1:] if a.startswith("--config.")]
        detail = str(e).strip("\"'")
        sys.exit(f"error: invalid config override ({', '.join(bad) or 'see --config'}): "
                 f"no such field or bad value: {detail}")
