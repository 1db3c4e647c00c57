"""Every prompt Council sends is a jinja2 file in the prompts folder, re-read when it changes.

Templates render in a ``SandboxedEnvironment`` with ``StrictUndefined``. When an edit fails to parse or
render, the last good version keeps serving and the error is kept for ``/health`` and the log.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from council.core.errors import PromptError

log = logging.getLogger(__name__)
TEMPLATE_SUFFIX = ".j2"
SYSTEM_TEMPLATE = "system.j2"  # Agent-0's system prompt
TOOLS_TEMPLATE = "tools.j2"  # the tools a request offers, for models that read them from the prompt


@dataclass
class _Entry:
    mtime_ns: int
    source: str
    template: Template | None  # last good compiled version


def _describe(name: str, exc: Exception) -> str:
    line = getattr(exc, "lineno", None)
    where = f"{name}:{line}" if line else name
    return f"{where}: {type(exc).__name__}: {exc}"


class PromptStore:
    """Loads, caches and renders the templates of one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"prompts folder {self.folder} does not exist; set prompts_dir in council.toml")
        self.env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)
        self._entries: dict[str, _Entry] = {}
        self._errors: dict[str, str] = {}
        self._rendered: dict[str, Template] = {}  # name -> its last version that rendered without error
        self._lock = threading.Lock()

    @property
    def errors(self) -> dict[str, str]:
        """Template name -> why its newest version is not in use."""
        return dict(self._errors)

    def path(self, name: str) -> Path:
        return self.folder / name

    def _load(self, name: str) -> _Entry:
        path = self.path(name)
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError as exc:
            raise PromptError(f"prompt template {path} does not exist") from exc
        entry = self._entries.get(name)
        if entry is not None and entry.mtime_ns == mtime:
            return entry
        source = path.read_text(encoding="utf-8")
        previous = entry.template if entry else None
        try:
            template = self.env.from_string(source)
        except TemplateSyntaxError as exc:
            self._fail(name, exc)
            entry = _Entry(mtime, source, previous)
        else:
            entry = _Entry(mtime, source, template)
            self._errors.pop(name, None)
        self._entries[name] = entry
        return entry

    def _fail(self, name: str, exc: Exception) -> None:
        message = _describe(name, exc)
        if self._errors.get(name) != message:
            log.error("prompt %s: keeping the last good version", message)
        self._errors[name] = message

    def render(self, name: str, **variables: Any) -> str:
        """Render ``name`` (e.g. ``"system.j2"``) with ``variables``. When the newest version fails to render,
        the last version that rendered is tried; PromptError when neither can."""
        with self._lock:
            template = self._load(name).template
            if template is None:
                raise PromptError(f"prompt {self._errors.get(name, name)} and no earlier good version exists")
            try:
                text = template.render(**variables).strip()
            except TemplateError as exc:
                self._fail(name, exc)
                return self._render_last_good(name, template, variables, exc)
            if name not in self._errors:  # a version that parsed and rendered: the fallback from now on
                self._rendered[name] = template
            return text

    def _render_last_good(self, name: str, failed: Template, variables: dict[str, Any], exc: TemplateError) -> str:
        good = self._rendered.get(name)
        if good is not None and good is not failed:
            try:
                return good.render(**variables).strip()
            except TemplateError:
                pass
        raise PromptError(f"prompt {_describe(name, exc)}") from exc

    def names(self) -> list[str]:
        return sorted(p.name for p in self.folder.glob(f"*{TEMPLATE_SUFFIX}"))

    def check_all(self, samples: dict[str, dict[str, Any]] | None = None) -> list[str]:
        """Parse every template (and render those with sample variables); return problems as 'file:line: why'."""
        problems: list[str] = []
        for name in self.names():
            source = self.path(name).read_text(encoding="utf-8")
            try:
                template = self.env.from_string(source)
                if samples and name in samples:
                    template.render(**samples[name])
            except TemplateError as exc:
                problems.append(_describe(str(self.path(name)), exc))
        return problems


def tools_section(store: PromptStore, tools: list[dict[str, Any]] | None, tool_choice: Any = "auto",
                  parallel: bool = True) -> str:
    """The system prompt's part that shows a model the request's tools (``prompts/tools.j2``); "" without tools
    or with ``tool_choice`` "none". Serving (``council/routing/router.py``) and training use the same one."""
    choice = tool_choice or "auto"
    functions = [t["function"] for t in tools or [] if t.get("type") == "function"]
    if not functions or choice == "none":
        return ""
    named = choice["function"]["name"] if isinstance(choice, dict) else choice
    return store.render(TOOLS_TEMPLATE, tools=functions, tool_choice=named, parallel=parallel)


def serving_system_prompt(store: PromptStore) -> str:
    """Agent-0's system prompt without memory context: what an adapter sees when it serves.

    Training and the canary use it so an adapter is trained and checked on the prompt it will answer under.
    """
    return store.render(SYSTEM_TEMPLATE, context=[], client_system="")


def cli(argv: list[str], settings: Any) -> int:
    """``council prompts check``: render-check every template; exit 0 when all are fine, 1 naming the first bad one."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="council prompts", description="Prompt template tools.")
    parser.add_argument("action", choices=["check"], help="check: parse every template in the prompts folder")
    parser.parse_args(argv)
    store = PromptStore(settings.prompts_dir)
    problems = store.check_all()
    if problems:
        sys.stderr.write(f"bad template: {problems[0]}\n")
        return 1
    sys.stdout.write(f"{len(store.names())} templates OK in {settings.prompts_dir}\n")
    return 0
