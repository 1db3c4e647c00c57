"""Writes the docs site's configuration page from the settings dataclasses' own help, so it cannot drift.

The page is the hand-written prose of ``docs/_configuration.md`` (where settings come from, the environment,
privacy and erasure) followed by one table per section — key, type, default, help — made by walking
``council.core.config.Settings`` (and the section dataclasses it holds, ``[engine]`` from
``council/core/engine_settings.py`` and ``memory_settings.py`` included) and reading each field's ``metadata["help"]``. A field without
help stops the build.

mkdocs-gen-files runs this file at build time (``mkdocs.yml``: ``plugins: gen-files: scripts``), so
``docs/configuration.md`` exists only in the built site. Run by hand, it writes the page to stdout::

    python docs/gen_config.py
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
if str(REPO) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from council.core import config  # noqa: E402  (after the path above)

PAGE = "configuration.md"
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
MARKUP = re.compile(r"[<>&*_\\\[\]]")  # escaped in help text, outside its code spans
ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
ENV_OF = {"home": "`COUNCIL_HOME` (or `--home`; council.toml is looked for there)"}
INTRO = DOCS / "_configuration.md"


def _toml(value: Any) -> str:
    """A default as it would be written in council.toml."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{key if BARE_KEY.fullmatch(key) else _toml(key)} = {_toml(item)}"
                                for key, item in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return repr(value)


def _default_cell(field: dataclasses.Field) -> str:
    """The default, as markdown: TOML in a code span; a folder of this repository named as such."""
    value = _default(field)
    if isinstance(value, Path) and value.is_absolute() and value.is_relative_to(REPO):
        return f"this repository's `{value.relative_to(REPO).as_posix()}/`"
    return f"`{_toml(value)}`"


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def _cell(text: str) -> str:
    """Help text safe inside a markdown table cell: one line, no pipes, and outside its `code spans` no
    character markdown or HTML would take for markup (``prompts/head_<name>.j2`` stays as written)."""
    parts = " ".join(text.split()).split("`")
    for i in range(0, len(parts), 2):  # even parts lie outside code spans
        parts[i] = MARKUP.sub(lambda match: ENTITIES.get(match[0], "\\" + match[0]), parts[i])
    return "`".join(parts).replace("|", "\\|")


def _type_name(tp: Any) -> str:
    """``str`` for ``<class 'str'>``; ``dict[str, str]`` as written (annotations not kept as strings)."""
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp)


def _short_env() -> dict[str, str]:
    """``server.host`` -> ``COUNCIL_HOST``: the short environment names some settings also have."""
    return {f"{section}.{key}": name for name, (section, key) in config._SHORT_ENV.items()}


def table(cls: type, section: str | None) -> list[str]:
    """The markdown table of one section's settings (not of the sections it holds)."""
    hints, short = typing.get_type_hints(cls), _short_env()
    rows = ["| key | type | default | help |", "| --- | --- | --- | --- |"]
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            continue  # a section: its own table
        dotted = f"{section}.{field.name}" if section else field.name
        help_text = field.metadata.get("help")
        if not help_text:
            raise SystemExit(f"{cls.__name__}.{field.name} ({dotted}) has no metadata help: add "
                             "field(..., metadata={\"help\": ...}) so the configuration page can describe it")
        env = f"COUNCIL__{section.upper()}__{field.name.upper()}" if section else f"COUNCIL__{field.name.upper()}"
        envs = ENV_OF.get(dotted) or (f"`{short[dotted]}` or `{env}`" if dotted in short else f"`{env}`")
        default = _default_cell(field).replace("|", "\\|")
        kind = field.type if isinstance(field.type, str) else _type_name(field.type)
        rows.append(f"| `{dotted}` | `{kind}` | {default} | "
                    f"{_cell(help_text)} Environment: {envs}. |")
    return rows


def sections() -> list[tuple[str | None, type]]:
    """(section name or None for the top level, its dataclass), in the order Settings declares them."""
    hints = typing.get_type_hints(config.Settings)
    found: list[tuple[str | None, type]] = [(None, config.Settings)]
    found += [(field.name, hints[field.name]) for field in dataclasses.fields(config.Settings)
              if dataclasses.is_dataclass(hints[field.name])]
    return found


def render() -> str:
    """The whole configuration page, as markdown."""
    out = ["# Configuration", "", INTRO.read_text(encoding="utf-8").strip(), "", "## Every setting", "",
           "Generated from the settings' own help (`council/core/config.py`, `engine_settings.py`, `memory_settings.py`) "
           "by `docs/gen_config.py` each time the site is built. Defaults are written as in `council.toml`; "
           "every setting can also come from the environment variable named in its row (string and path "
           "settings take the raw text, others are read as TOML).", ""]
    for section, cls in sections():
        out += ["### Top level" if section is None else f"### [{section}]", ""]
        out += table(cls, section) + [""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
elif __name__ == "<run_path>":  # mkdocs-gen-files runs this file with runpy.run_path while the site builds
    import mkdocs_gen_files

    with mkdocs_gen_files.open(PAGE, "w") as page:
        page.write(render())
    mkdocs_gen_files.set_edit_path(PAGE, "gen_config.py")
