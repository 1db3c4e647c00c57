"""The harvest stage's subcommand (see ``council/core/commands.py``)."""

from council.core.commands import Command

COMMANDS = [Command("harvest", "rewrite failures into training JSONL (Agent-0 council)", "harvest.main:cli", 30)]
