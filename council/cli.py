"""The ``council`` command.

    council serve [--host H] [--port P]      run the chat server (embedded model by default)
    council prompts check                     validate every template in the prompts folder
    council records                           recent exchanges (--failed, --since, --user, paging)
    council forget --user ID                  erase one user's exchanges from the memory, files and logs
    council harvest | train | deploy | rollback | adapters | nightly | demo   the improvement loop

Global options: ``--home DIR`` (state directory, also ``$COUNCIL_HOME``), ``--config FILE``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from council.core import exitcodes
from council.core.errors import CouncilError

# stage subcommand -> "module:function" taking (argv, settings) and returning an exit code
STAGES = {
    "harvest": ("harvest.main:cli", "rewrite yesterday's failures into training JSONL (Agent-0 council)"),
    "train": ("training.main:cli", "train a LoRA adapter from harvested JSONL"),
    "deploy": ("deploy.main:cli", "canary-test, swap in and monitor an adapter"),
    "rollback": ("deploy.rollback:cli", "go back to the previous good adapter"),
    "adapters": ("deploy.registry:cli_list", "list adapter versions, their state and what each learned"),
    "records": ("council.memory.records:cli", "list recent exchanges (--failed, --since, --user, paging)"),
    "forget": ("council.memory.erasure:cli", "erase every exchange of one user for good (--user ID)"),
    "nightly": ("cron.nightly:cli", "harvest -> train -> deploy -> cleanup, with alerts"),
    "demo": ("cron.demo:cli", "one-command before/after demo of the nightly loop"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="council", description="Self-improving OpenAI-compatible chat server.")
    parser.add_argument("--home", help="state directory (default $COUNCIL_HOME or ~/.council)")
    parser.add_argument("--config", help="TOML config file (default $COUNCIL_CONFIG or <home>/council.toml)")
    parser.add_argument("--log-level", default=os.environ.get("COUNCIL_LOG_LEVEL", "INFO"),
                        help="debug, info, warning or error (default $COUNCIL_LOG_LEVEL or info); debug also shows "
                             "libraries' warnings and progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the chat server",
                           epilog="Also: --home DIR, --config FILE, --log-level LEVEL (before or after 'serve').")
    serve.add_argument("--host", help="address to bind (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port to bind (default: server.port, 8000)")
    prompts = sub.add_parser("prompts", help="prompt template tools")
    prompts.add_argument("action", choices=["check"])
    for name, (_, help_text) in STAGES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _listen(host: str, port: int) -> socket.socket:
    """Bind the server's socket before anything loads, so a busy port is one line, not a traceback later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror} (another server there? pick another "
                         "--port)") from exc
    sock.listen(128)
    return sock


def _check_model_source(settings) -> None:  # noqa: ANN001
    """A missing base model is one line before anything loads (hub ids are left to the loader)."""
    from council.engine.model_files import embedded_gguf_path

    source = settings.model.source
    if not source:
        try:
            embedded_gguf_path()
        except CouncilError as exc:
            raise ValueError(exc.message) from exc
    elif source.startswith(("/", ".", "~")) and not Path(source).expanduser().is_dir():
        raise ValueError(f"model.source {source} is not a folder; point it at a model folder or a hub id")


def _serve(settings) -> int:  # noqa: ANN001
    try:
        _check_model_source(settings)
        sock = _listen(settings.server.host, settings.server.port)  # before the slow imports below
    except ValueError as exc:
        sys.stderr.write(f"council: {exc}\n")
        return exitcodes.USAGE
    from aiohttp import web

    from council.server import keys
    from council.server.access_log import AccessLogger
    from council.server.app import create_app
    log = logging.getLogger("council.serve")
    url = f"http://{settings.server.host}:{settings.server.port}"
    app = create_app(settings, background_start=True)
    startup = app[keys.STARTUP]
    startup.on_ready.append(lambda: log.info("ready on %s (home %s, %.1f s to load)", url, settings.home,
                                             startup.ready_seconds))
    startup.on_failure.append(lambda error: (log.error("could not start: %s", error),
                                             signal.raise_signal(signal.SIGINT)))
    log.info("loading models; %s/health says \"starting\" until they are ready", url)
    # handler_cancellation: a client that hangs up cancels its handler, which stops its generation
    web.run_app(app, sock=sock, print=None, access_log_class=AccessLogger,
                access_log=logging.getLogger("council.access"), handler_cancellation=True)
    return exitcodes.FAILURE if startup.error else exitcodes.OK


def _check_prompts(settings) -> int:  # noqa: ANN001
    from council.routing.prompts import PromptStore

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
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    _setup_logging(args.log_level.upper())
    from council.core.config import load_settings

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
