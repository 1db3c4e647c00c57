"""The nightly loop's subcommands (see ``council/core/commands.py``)."""

from council.core.commands import Command

COMMANDS = [
    Command("nightly", "harvest -> train -> deploy -> cleanup, with alerts", "cron.nightly:cli", 100),
    Command("demo", "one-command before/after demo of the nightly loop", "cron.demo:cli", 110),
]
