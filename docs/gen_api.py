"""Writes the docs site's HTTP API reference from the protocol models themselves, so it cannot drift.

For each endpoint of ``council.server.protocol.ENDPOINTS`` the page has its method, path and summary, then the
request body's fields as a table (type, required, default, constraints, description), the fields refused when
set (their description starts with "Refused when set") as a list of their own, the reply's fields and, for an
endpoint that streams, one streamed event's. The objects those fields hold (messages by role, tools, content
parts, items, ...) get tables of their own, found by walking the pydantic models: ``model_fields`` and each
field's annotation, ``Annotated`` metadata (ranges, lengths, patterns, descriptions) and unions included. A
union of several models that a protocol module names (``Message``, ``InputItem``, ...) is shown by that name.

mkdocs-gen-files runs this file at build time (``mkdocs.yml``: ``plugins: gen-files: scripts``), so
``docs/api-reference.md`` exists only in the built site. Run by hand, it writes the page to stdout::

    python docs/gen_api.py
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
for folder in (REPO, DOCS):  # runnable from a checkout without `pip install -e .`; gen_config beside it
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from gen_config import _cell  # noqa: E402  (after the path above): the same escaping as the configuration page
from pydantic import BaseModel  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from council.server import protocol  # noqa: E402

PAGE = "api-reference.md"
REFUSED = "Refused when set"
SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null", Any: "any",
           bytes: "string"}
BOUNDS = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")
BIG = {2**63 - 1: "2⁶³−1", -(2**63): "−2⁶³"}


def _number(value: float) -> str:
    if value in BIG:
        return BIG[value]
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace("-", "−")


def _meta(metadata: typing.Iterable[Any]) -> tuple[dict[str, Any], str | None, str | None]:
    """(bounds, description, discriminator field) from Annotated metadata / a FieldInfo's metadata."""
    bounds: dict[str, Any] = {}
    description = discriminator = None
    for item in metadata:
        if isinstance(item, FieldInfo):
            inner, text, _ = _meta(item.metadata)
            bounds.update(inner)
            description = item.description or text or description
            discriminator = item.discriminator if isinstance(item.discriminator, str) else discriminator
            continue
        bounds.update({key: getattr(item, key) for key in BOUNDS if getattr(item, key, None) is not None})
    return bounds, description, discriminator


def _range(kind: str, bounds: dict[str, Any]) -> str:
    """``integer ≥ 1``, ``number 0–2``: a number with its range."""
    low = ("≥", bounds["ge"]) if "ge" in bounds else (">", bounds["gt"]) if "gt" in bounds else None
    high = ("≤", bounds["le"]) if "le" in bounds else ("<", bounds["lt"]) if "lt" in bounds else None
    if low and high and low[0] == "≥" and high[0] == "≤":
        return f"{kind} {_number(low[1])}–{_number(high[1])}"
    return " ".join([kind] + [f"{bound[0]} {_number(bound[1])}" for bound in (low, high) if bound])


def _lengths(bounds: dict[str, Any], unit: str) -> list[str]:
    """``1–64 characters``, ``≤ 4 items``, ``pattern `...```."""
    low, high = bounds.get("min_length"), bounds.get("max_length")
    found = []
    if low is not None and high is not None:
        found.append(f"{low}–{high} {unit}")
    elif low is not None or high is not None:
        bound = low if low is not None else high
        found.append(f"{'≥' if low is not None else '≤'} {bound} {unit if bound != 1 else unit[:-1]}")
    if bounds.get("pattern"):
        found.append(f"pattern `{bounds['pattern']}`")
    return found


class Page:
    """The objects the page documents, each once (first use), by a name unique on the page."""

    def __init__(self) -> None:
        self.aliases = _named_unions()
        self.names: dict[str, Any] = {}  # display name -> class or alias
        self.anchor: dict[int, tuple[str, str]] = {}  # id(object) -> (display name, anchor)
        self.done: set[int] = set()

    def link(self, obj: Any, name: str, module: str) -> str:
        if id(obj) not in self.anchor:
            shown = name if self.names.get(name, obj) is obj else f"{module.rpartition('.')[2]}.{name}"
            self.names[shown] = obj
            self.anchor[id(obj)] = shown, re.sub(r"[^a-z0-9]+", "-", f"{module.rpartition('.')[2]}-{name}".lower())
        shown, anchor = self.anchor[id(obj)]
        return f"[{shown}](#{anchor})"

    def alias(self, tp: Any) -> tuple[str, str] | None:
        return next(((name, module) for obj, name, module in self.aliases if obj is tp), None)

    def type(self, tp: Any, queue: list[Any], keep_null: bool = True) -> tuple[str, list[str], str | None]:
        """(the type as markdown, constraints of the outermost value, a description found inside)."""
        found = self.alias(tp)
        if found:
            queue.append(tp)
            return self.link(tp, *found), [], None
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is Annotated:
            bounds, description, _ = _meta(args[1:])
            inner, constraints, inner_text = self.type(args[0], queue, keep_null)
            inner = _range(inner, bounds) if inner in ("integer", "number") else inner
            unit = "items" if inner.startswith(("list", "object")) else "characters"
            return inner, _lengths(bounds, unit) + constraints, description or inner_text
        if origin in (Union, types.UnionType):
            found = [self.type(arg, queue) for arg in args if keep_null or arg is not type(None)]
            if len(found) == 1:
                return found[0]
            return " \\| ".join(kind for kind, _, _ in found), [], next((text for *_, text in found if text), None)
        if origin is Literal:
            return " \\| ".join(f"`{json.dumps(value)}`" for value in args), [], None
        if origin is list:
            inner, constraints, text = self.type(args[0], queue)
            each = f" (each: {', '.join(constraints)})" if constraints else ""
            return f"list\\[{inner}\\]{each}", [], text
        if origin is dict:
            value = self.type(args[1], queue)[0] if args else "any"
            return ("object" if value == "any" else f"object (string → {value})"), [], None
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            queue.append(tp)
            return self.link(tp, tp.__name__.lstrip("_"), tp.__module__), [], None
        return SCALARS.get(tp, getattr(tp, "__name__", str(tp))), [], None

    def table(self, cls: type[BaseModel], queue: list[Any]) -> tuple[list[str], list[str]]:
        """The markdown table of one model's fields, and the list of its fields refused when set."""
        rows = ["| field | type | required | default | constraints | description |",
                "| --- | --- | --- | --- | --- | --- |"]
        refused = []
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if (field.description or "").startswith(REFUSED):
                why = field.description.removeprefix(REFUSED).lstrip(": ")
                refused.append(f"- `{key}`: {_cell(why)}")
                continue
            required = field.is_required()
            kind, constraints, inner_text = self.type(field.annotation, queue, keep_null=required)
            bounds, _, _ = _meta(field.metadata)
            kind = _range(kind, bounds) if kind in ("integer", "number") else kind
            constraints = _lengths(bounds, "items" if kind.startswith(("list", "object")) else "characters") \
                + constraints
            rows.append(f"| `{key}` | {kind} | {'yes' if required else ''} | {_default(field)} | "
                        f"{'; '.join(constraints)} | {_cell(_rst(field.description or inner_text or ''))} |")
        return (rows if len(rows) > 2 else []), refused

    def section(self, obj: Any, queue: list[Any]) -> list[str]:
        """A nested object's own heading and table (or, for a named union, its members)."""
        self.done.add(id(obj))
        link = self.link(obj, *(self.alias(obj) or (obj.__name__.lstrip("_"), obj.__module__)))
        shown, anchor = self.anchor[id(obj)]
        out = [f"#### {shown} {{#{anchor}}}", ""]
        if not isinstance(obj, type):  # a named union: its members
            members: list[str] = []
            discriminator = _union(obj, members, self, queue)
            by = f", by `{discriminator}`" if discriminator else ""
            return out + [f"One of{by}: " + " · ".join(members), ""]
        doc = obj.__dict__.get("__doc__")
        if doc:
            out += [_cell(_rst(doc.strip().split("\n\n")[0])), ""]
        rows, refused = self.table(obj, queue)
        out += rows + [""] if rows else ([] if doc else ["No fields.", ""])
        if refused:
            out += [f"Refused when set in {link}:", ""] + refused + [""]
        return out


def _union(tp: Any, members: list[str], page: Page, queue: list[Any]) -> str | None:
    """Fill ``members`` with a union's member types; the discriminating field, when one is named."""
    discriminator = None
    if typing.get_origin(tp) is Annotated:
        discriminator = _meta(typing.get_args(tp)[1:])[2]
        tp = typing.get_args(tp)[0]
    for arg in typing.get_args(tp):
        members.append(page.type(arg, queue)[0])
    return discriminator


def _named_unions() -> list[tuple[Any, str, str]]:
    """(union, name, module) for every module-level union of two or more models in the protocol modules, each
    under the module of its models (not one that imports it)."""
    found: dict[int, tuple[Any, str, str]] = {}
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith(protocol.__name__ + "."):
            continue
        for name, value in vars(module).items():
            inner = typing.get_args(value)[0] if typing.get_origin(value) is Annotated else value
            models = [arg for arg in map(_bare, typing.get_args(inner))
                      if isinstance(arg, type) and issubclass(arg, BaseModel)]
            if typing.get_origin(inner) in (Union, types.UnionType) and len(models) >= 2 and (
                    id(value) not in found or models[0].__module__ == module_name):
                found[id(value)] = (value, name, module_name)
    return list(found.values())


def _bare(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _rst(text: str) -> str:
    """reStructuredText ``code`` as markdown `code`."""
    return text.replace("``", "`")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return ""
    value = field.default_factory() if field.default is PydanticUndefined else field.default  # type: ignore[call-arg,misc]
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return f"`{json.dumps(value)}`".replace("|", "\\|")


def endpoint(page: Page, spec: protocol.Endpoint) -> list[str]:
    """One endpoint's section: its request, reply and streamed event, then the objects they hold."""
    anchor = re.sub(r"[^a-z0-9]+", "-", f"{spec.method} {spec.path}".lower()).strip("-")
    out = [f"## `{spec.method} {spec.path}` {{#{anchor}}}", "", _cell(spec.summary), ""]
    queue: list[Any] = []
    parts = [("Request body", spec.request), ("Query", getattr(spec, "query", None)), ("Reply", spec.reply),
             ("Streamed event (`\"stream\": true`; each server-sent event's `data`)", spec.stream)]
    for title, name in parts:
        if name is None:
            if title == "Request body":
                out += ["### Request body", "", "None.", ""]
            continue
        cls = protocol.model(name)
        page.done.add(id(cls))
        page.link(cls, cls.__name__, cls.__module__)
        shown, anchor = page.anchor[id(cls)]
        out += [f"### {title}: {shown} {{#{anchor}}}", ""]
        rows, refused = page.table(cls, queue)
        out += rows + [""]
        if refused:
            out += ["**Refused by name** (any value but `null` is a 400 `unsupported_parameter`, never ignored):",
                    ""] + refused + [""]
    nested: list[str] = []
    while queue:
        obj = queue.pop(0)
        if id(obj) not in page.done:
            nested += page.section(obj, queue)
    if nested:
        out += ["### Objects in these bodies", ""] + nested
    return out


def render() -> str:
    """The whole API reference page, as markdown."""
    for spec in protocol.ENDPOINTS:  # import every protocol module first: the named unions are read from them
        for name in (spec.request, spec.reply, spec.stream):
            if name:
                protocol.model(name)
    page = Page()
    out = ["# API reference", "",
           "Generated from the protocol models (`council/server/protocol/`) by `docs/gen_api.py` each time the site "
           "is built; [HTTP API](api.md) says what each endpoint does. Requests are strict: a key not listed here, "
           "at any level, is a 400 `unknown_parameter` whose `param` is its path; a value of the wrong JSON type "
           "is `invalid_type` (`\"10\"` is not an integer); `null` means \"not set\" for every optional field.", ""]
    for spec in protocol.ENDPOINTS:
        out += endpoint(page, spec)
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
elif __name__ == "<run_path>":  # mkdocs-gen-files runs this file with runpy.run_path while the site builds
    import mkdocs_gen_files

    with mkdocs_gen_files.open(PAGE, "w") as page_file:
        page_file.write(render())
    mkdocs_gen_files.set_edit_path(PAGE, "gen_api.py")
