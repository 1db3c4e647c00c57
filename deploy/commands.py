"""The deploy stage's subcommands (see ``council/core/commands.py``)."""

from council.core.commands import Command

COMMANDS = [
    Command("deploy", "canary-test, swap in and monitor an adapter", "deploy.main:cli", 50),
    Command("rollback", "go back to the previous good adapter", "deploy.rollback:cli", 60),
    Command("adapters", "list adapter versions, their state and what each learned", "deploy.registry:cli_list", 70),
]
