"""The ``council`` command.

    council serve [--host H] [--port P]      run the chat server (embedded model by default)
    council prompts check                     validate every template in the prompts folder
    council harvest | train | deploy | rollback | adapters | nightly | demo   the improvement loop

Global options: ``--home DIR`` (state directory, also ``$COUNCIL_HOME``), ``--config FILE``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from council import exitcodes

# stage subcommand -> "module:function" taking (argv, settings) and returning an exit code
STAGES = {
    "harvest": ("harvest.main:cli", "rewrite yesterday's failures into training JSONL (Agent-0 council)"),
    "train": ("training.main:cli", "train a LoRA adapter from harvested JSONL"),
    "deploy": ("deploy.main:cli", "canary-test, swap in and monitor an adapter"),
    "rollback": ("deploy.rollback:cli", "go back to the previous good adapter"),
    "adapters": ("deploy.registry:cli_list", "list adapter versions and their state"),
    "nightly": ("cron.nightly:cli", "harvest -> train -> deploy -> cleanup, with alerts"),
    "demo": ("deploy.demo:cli", "one-command before/after demo of the nightly loop"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="council", description="Self-improving OpenAI-compatible chat server.")
    parser.add_argument("--home", help="state directory (default $COUNCIL_HOME or ~/.council)")
    parser.add_argument("--config", help="TOML config file (default $COUNCIL_CONFIG or <home>/council.toml)")
    parser.add_argument("--log-level", default=os.environ.get("COUNCIL_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the chat server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    prompts = sub.add_parser("prompts", help="prompt template tools")
    prompts.add_argument("action", choices=["check"])
    for name, (_, help_text) in STAGES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _serve(settings) -> int:  # noqa: ANN001
    from aiohttp import web

    from council.app import create_app

    logging.getLogger(__name__).info("serving on http://%s:%d (home %s)", settings.server.host,
                                     settings.server.port, settings.home)
    # handler_cancellation: a client that hangs up cancels its handler, which stops its generation
    web.run_app(create_app(settings), host=settings.server.host, port=settings.server.port, print=None,
                access_log=None, handler_cancellation=True)
    return exitcodes.OK


def _check_prompts(settings) -> int:  # noqa: ANN001
    from council.prompts import PromptStore

    store = PromptStore(settings.prompts_dir)
    problems = store.check_all()
    if problems:
        sys.stderr.write(f"bad template: {problems[0]}\n")
        return exitcodes.FAILURE
    sys.stdout.write(f"{len(store.names())} templates OK in {settings.prompts_dir}\n")
    return exitcodes.OK


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


def main(argv: list[str] | None = None) -> int:
    argv = _hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):  # litellm logs INFO lines to stdout
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from council.config import load_settings

    overrides = {"home": args.home}
    if args.command == "serve":
        overrides.update({"server.host": args.host, "server.port": args.port})
    try:
        settings = load_settings(args.config, overrides)
    except ValueError as exc:
        sys.stderr.write(f"council: configuration error: {exc}\n")
        return exitcodes.USAGE
    if args.command in STAGES:
        module_name, _, function = STAGES[args.command][0].partition(":")
        stage_cli = getattr(importlib.import_module(module_name), function)
        return stage_cli(rest, settings)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "serve":
        return _serve(settings)
    return _check_prompts(settings)


if __name__ == "__main__":
    sys.exit(main())
