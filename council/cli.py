"""The ``council`` command.

    council serve [--host H] [--port P]      run the chat server (embedded model by default)
    council prompts check                     validate every template in the prompts folder
    council records                           recent exchanges (--failed, --since, --user, paging)
    council forget --user ID                  erase one user's exchanges from the memory, files and logs
    council harvest | train | deploy | rollback | adapters | nightly | demo   the improvement loop

Subcommands are registered like plugins, Council's own included (``council/core/commands.py``).

Global options: ``--home DIR`` (state directory, also ``$COUNCIL_HOME``), ``--config FILE``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from council.core import exitcodes
from council.core.commands import Command, discover


def _parser(commands: list[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="council", description="Self-improving OpenAI-compatible chat server.")
    parser.add_argument("--home", help="state directory (default $COUNCIL_HOME or ~/.council)")
    parser.add_argument("--config", help="TOML config file (default $COUNCIL_CONFIG or <home>/council.toml)")
    parser.add_argument("--log-level", default=os.environ.get("COUNCIL_LOG_LEVEL", "INFO"),
                        help="debug, info, warning or error (default $COUNCIL_LOG_LEVEL or info); debug also shows "
                             "libraries' warnings and progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:  # each parses its own flags (and --help) from the rest of the line
        sub.add_parser(command.name, help=command.help, add_help=False)
    return parser


def _hoist_global_options(argv: list[str]) -> list[str]:
    """Let --home/--config/--log-level appear after the subcommand too (``council serve --home DIR``)."""
    front, back, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            takes_next = "=" not in arg and i + 1 < len(argv)
            front += argv[i:i + 2] if takes_next else [arg]
            i += 2 if takes_next else 1
        else:
            back.append(arg)
            i += 1
    return front + back


GLOBAL_OPTIONS = ("--home", "--config", "--log-level")


def _setup_logging(level: str) -> None:
    """Our log lines at ``level``; libraries' warnings, progress bars and chatter only at DEBUG."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)  # warnings.warn(...) become log records of "py.warnings"
    if level == "DEBUG":
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' weight-loading bars too
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    for noisy in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "faiss", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # faiss: "Could not load library with AVX2 ..."


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # else litellm fetches a price list at import
    argv = _hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    commands = {command.name: command for command in discover()}
    if not commands:
        sys.stderr.write("council: no subcommands are registered; install the package (pip install -e .)\n")
        return exitcodes.USAGE
    parser = _parser(list(commands.values()))
    args, rest = parser.parse_known_args(argv)
    _setup_logging(args.log_level.upper())
    from council.core.config import load_settings

    try:
        settings = load_settings(args.config, {"home": args.home})
    except ValueError as exc:
        sys.stderr.write(f"council: configuration error: {exc}\n")
        return exitcodes.USAGE
    return commands[args.command].function()(rest, settings)

if __name__ == "__main__":
    sys.exit(main())
