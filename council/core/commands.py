"""The ``council`` command's subcommands, found the way plugins are found.

Every package — Council's own stages included — lists its subcommands in a ``COMMANDS`` list of ``Command``
and names that list under the ``council.commands`` entry-point group of its ``pyproject.toml``::

    [project.entry-points."council.commands"]
    mytool = "mytool.commands:COMMANDS"      # COMMANDS = [Command("mytool", "what it does", "mytool.main:cli")]

``council/cli.py`` reads the lists (cheap: only these small modules are imported, so ``--help`` stays fast) and
imports a command's module only when that command runs. Its function takes ``(argv, settings)`` and returns
an exit code (``council/core/exitcodes.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

GROUP = "council.commands"


@dataclass(frozen=True)
class Command:
    """One subcommand: ``council <name>``, its one-line ``help``, ``target`` = "module:function"; ``order``
    places it in ``council --help`` (lower first; Council's own use 10-110)."""

    name: str
    help: str
    target: str
    order: int = 1000

    def function(self) -> Callable[[list[str], Any], int]:
        """The command's function, imported now. Raises ImportError/AttributeError when ``target`` is wrong."""
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


def discover() -> list[Command]:
    """Every installed package's commands, in ``order``. Raises ValueError when two packages claim one name
    or an entry point does not hold a list of Command."""
    found: dict[str, Command] = {}
    for point in entry_points(group=GROUP):
        commands = point.load()
        if not isinstance(commands, list | tuple) or not all(isinstance(c, Command) for c in commands):
            raise ValueError(f"entry point {point.name} = {point.value} ({GROUP}) must name a list of Command")
        for command in commands:
            if command.name in found:
                raise ValueError(f"two packages define 'council {command.name}': {found[command.name].target} and "
                                 f"{command.target}; uninstall one")
            found[command.name] = command
    return sorted(found.values(), key=lambda c: (c.order, c.name))
