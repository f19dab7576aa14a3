"""What every entry point shares: one way to say a config, one-line errors instead of tracebacks.

Every CLI that takes a config takes it the same way: ``--config=FILE[:ARG]`` (``ARG`` goes to the
file's ``get_config``) plus any number of ``--config.a.b=value`` overrides; the ConfigDict is
locked, so a misspelled field is refused.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from absl import flags
from ml_collections import config_flags

from vdm_jax.config import Config, ConfigError, from_configdict

FLAGS = flags.FLAGS


def define_config_flag(required: bool = True, what: str = "") -> flags.FlagHolder:
    """``--config=FILE[:ARG]`` with ``--config.a.b=value`` overrides (a locked ConfigDict)."""
    holder = config_flags.DEFINE_config_file(
        "config", None, f"Config file, e.g. configs/moving_digits.py[:smoke]{what}; override any field "
                        "with --config.a.b=value.", lock_config=True)
    if required:
        flags.mark_flag_as_required("config")
    return holder


def config_spec() -> str:
    """The ``FILE[:ARG]`` given to ``--config``."""
    return config_flags.get_config_filename(FLAGS["config"])


def config_overrides() -> dict[str, Any]:
    """The ``--config.a.b=value`` overrides given, as ``{"a.b": value}`` (parsed values)."""
    return dict(config_flags.get_override_values(FLAGS["config"]))


def typed_config(configdict: Any) -> Config:
    """The validated config of a ConfigDict; an invalid value exits with one line naming the field."""
    try:
        return from_configdict(configdict)
    except ConfigError as e:
        sys.exit(f"error: {e}")


def parse_flags(argv: list[str]) -> list[str]:
    """``app.run(main, flags_parser=parse_flags)``: a bad flag or config override exits with one line.

    A misspelled ``--config.a.b=v`` (the ConfigDict is locked) names the field that does not exist.
    """
    _check_config_path(argv)
    try:
        rest = FLAGS(argv)
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
    if "workdir" in FLAGS and FLAGS["workdir"].value:
        workdir = FLAGS["workdir"].value
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            sys.exit(f"error: --workdir={workdir} is a file, not a directory")
    return rest


def _check_config_path(argv: list[str]) -> None:
    """``--config=FILE[:ARG]`` names a readable file (not a directory): one line otherwise."""
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
        else:
            continue
        path = spec.split(":", 1)[0]
        if os.path.isdir(path):
            sys.exit(f"error: --config={spec}: {path} is a directory, not a config file "
                     "(e.g. configs/moving_digits.py)")
        if not os.path.isfile(path):
            sys.exit(f"error: --config={spec}: no such config file {path}")
