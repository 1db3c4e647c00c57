"""Council's own server-side subcommands, registered like any plugin's (see ``council/core/commands.py``)."""

from council.core.commands import Command

COMMANDS = [
    Command("serve", "run the chat server (embedded model by default)", "council.server.main:cli", 10),
    Command("prompts", "prompt template tools ('council prompts check')", "council.routing.prompts:cli", 20),
    Command("records", "list recent exchanges (--failed, --since, --user, paging)", "council.memory.records:cli", 80),
    Command("forget", "erase every exchange of one user for good (--user ID)", "council.memory.erasure:cli", 90),
]
