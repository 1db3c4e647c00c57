"""The training stage's subcommand (see ``council/core/commands.py``)."""

from council.core.commands import Command

COMMANDS = [Command("train", "train a LoRA adapter from harvested JSONL", "training.main:cli", 40)]
