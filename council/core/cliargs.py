"""Command-line flags generated from a stage's config dataclass, so flags, defaults and help never drift."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type, skip: tuple[str, ...] = ("settings",),
                         defaults: dict[str, Any] | None = None) -> None:
    """One ``--field-name`` flag per field of ``config_class`` (booleans become switches)."""
    defaults = defaults or {}
    for item in dataclasses.fields(config_class):
        if item.name in skip:
            continue
        flag = "--" + item.name.replace("_", "-")
        help_text = item.metadata.get("help", "").replace("%", "%%")
        default = defaults.get(item.name, item.default)
        if isinstance(item.default, bool):
            parser.add_argument(flag, action="store_true", default=default, help=help_text)
        else:
            shown = " (default: %(default)s)" if default not in ("", None) else ""
            parser.add_argument(flag, type=type(item.default), default=default, help=help_text + shown)
