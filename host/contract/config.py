"""``plugins.yaml``: the host's configuration, decoded into strict msgspec Structs.

Unknown keys are rejected with the path of the bad key, so a typo never silently does
nothing. The file to read is named by ``PLUGHOST_CONFIG`` (default ``./plugins.yaml``).
Byte sizes may be written as integers or as strings such as ``"16GiB"`` or ``"512MB"``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import yaml

from host.contract.errors import parse_msgspec_error
from host.contract.pulled import find_installed, repo_of_folder
from host.contract.spec import Options, PlacementKind

OptionsT = TypeVar("OptionsT", bound=Options)

CONFIG_ENV = "PLUGHOST_CONFIG"
DEFAULT_CONFIG = "plugins.yaml"

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


class ConfigError(Exception):
    """The configuration is invalid; the message names the file and the offending key."""


def parse_bytes(value: int | str) -> int:
    """Parse ``1024``, ``"16GiB"``, ``"1.5GB"`` into a number of bytes."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"byte size must be >= 0, got {value}")
        return value
    match = _SIZE.match(value)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a byte size: {value!r} (try 16GiB, 512MB or a number of bytes)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


ByteSize = int | str


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of config sections: unknown keys are errors."""


class ServerConfig(Strict):
    """``server:`` how the HTTP server binds and what it accepts."""

    host: str = "127.0.0.1"
    port: int = 15530
    max_body_bytes: ByteSize = "32MiB"
    max_embedding_inputs: int = 8192
    max_rerank_documents: int = 1000
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    shutdown_timeout_s: float = 30.0
    stream_keepalive_s: float = 5.0
    #: Bearer keys every API route requires (``/health`` stays open); ``PLUGHOST_API_KEY`` adds one.
    api_keys: list[str] = msgspec.field(default_factory=list)
    #: Web origins (``https://app.example``) whose pages may call the API (CORS); none by default.
    cors_origins: list[str] = msgspec.field(default_factory=list)
    #: Host names the server answers to. ``None``: on a loopback bind only ``localhost``,
    #: ``127.0.0.1`` and ``[::1]`` (DNS-rebinding protection), any name otherwise. ``["*"]``: any.
    allowed_hosts: list[str] | None = None
    #: A client must send its request line and headers within this time (then the connection closes).
    header_timeout_s: float = 10.0
    #: ... and its whole body within this time after the handler starts reading it (408).
    body_timeout_s: float = 60.0
    #: An idle keep-alive connection is closed after this time.
    keep_alive_timeout_s: float = 5.0
    #: The dashboard at ``/ui`` (and the landing page at ``/``); ``false`` serves neither.
    ui: bool = True
    #: Objects of a ``response_format`` json_schema that list ``properties`` and say nothing about others:
    #: ``closed`` allows the declared keys only (OpenAI's strict mode, xgrammar's default); ``open`` keeps
    #: JSON Schema's meaning except for ``strict`` schemas (``host.serving.schemas``).
    json_schema_objects: Literal["closed", "open"] = "closed"


class PluginsConfig(Strict):
    """``plugins:`` where plugins are discovered and which are switched off.

    ``paths: null`` (the default) is the ``plugins/`` folder shipped next to the ``host`` package
    (the repository's), wherever the config file lives; listed paths resolve against the config
    file's folder.
    """

    paths: list[str] | None = None
    entry_points: bool = True
    disable: list[str] = msgspec.field(default_factory=list)


class GpuBudget(Strict):
    """One GPU's budget: its usable memory (``None``: measured) minus a headroom kept free."""

    total: ByteSize | None = None
    reserve: ByteSize = 0


class BudgetsConfig(Strict):
    """``budgets:`` memory the scheduler may fill. ``gpus: null`` detects the GPUs with torch."""

    gpus: list[GpuBudget] | None = None
    host: ByteSize | None = None
    host_reserve: ByteSize = "2GiB"


class SchedulerConfig(Strict):
    """``scheduler:`` admission, queueing and residency rules."""

    max_resident_per_task: int = 1
    queue_size: int = 256
    admission_timeout_s: float = 300.0
    min_residency_s: float = 2.0
    keep_alive_s: float | None = None


class AutoscalingConfig(Strict):
    """``models.<id>.autoscaling:`` replica bounds on Ray Serve (see docs/deployment.md).

    ``min_replicas: 0`` loads the model on first use and scales it to zero when idle.
    """

    min_replicas: Annotated[int, msgspec.Meta(ge=0)] = 1
    max_replicas: Annotated[int, msgspec.Meta(ge=1)] = 1
    target_ongoing_requests: Annotated[float, msgspec.Meta(gt=0)] = 2.0

    def __post_init__(self) -> None:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")


HubSource = Literal["huggingface", "modelscope"]
SourceChoice = Literal["auto", "huggingface", "modelscope"]


class WeightsRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``models.<id>.weights: {repo, source, revision}``: weights fetched from a hub by ``plughost pull``.

    ``source`` ``None`` means ``download.source``; ``revision`` ``None`` means the hub's default
    branch (``main`` on Hugging Face, ``master`` on ModelScope). A plain hub id string
    (``Qwen/Qwen3-Embedding-0.6B``) is the same as ``{repo: Qwen/Qwen3-Embedding-0.6B}``.
    """

    repo: str
    source: SourceChoice | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        if not is_hub_id(self.repo):
            raise ValueError(f"repo must be a hub id such as Qwen/Qwen3-Embedding-0.6B, got {self.repo!r}")


def is_hub_id(value: str) -> bool:
    """Whether ``value`` reads as a hub id (``owner/name``) rather than a folder or a demo model."""
    if value.startswith((".", "~", "/", "demo:", "tiny:")) or value.count("/") != 1:
        return False
    owner, name = value.split("/")
    return bool(owner) and bool(name) and not Path(os.path.expanduser(value)).exists()


class DownloadConfig(Strict):
    """``download:`` where ``plughost pull`` gets weights from and where it puts them.

    ``dir`` ``None``: ``$PLUGHOST_MODELS_DIR``, else ``~/.cache/plughost/models``. ``endpoints``
    override a hub's address (``huggingface: https://hf-mirror.com``); unset, ``HF_ENDPOINT`` and
    ``MODELSCOPE_ENDPOINT`` apply, else the hubs' own addresses.
    """

    dir: str | None = None
    source: SourceChoice = "auto"
    order: list[HubSource] = msgspec.field(default_factory=lambda: ["huggingface", "modelscope"])
    endpoints: dict[HubSource, str] = msgspec.field(default_factory=dict)
    on_first_use: bool = False
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    read_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0

    def __post_init__(self) -> None:
        if not self.order:
            raise ValueError("order must name at least one source (huggingface, modelscope)")
        if len(set(self.order)) != len(self.order):
            raise ValueError(f"order names a source twice: {self.order}")


class ModelConfig(Strict):
    """``models.<id>:`` per-model overrides of what the plugin declared.

    ``plugin`` asks a plugin that serves several sizes of a family (``embed_qwen3``) to declare this
    id as well; ``options`` are converted into the plugin's :class:`host.contract.spec.Options`.

    ``replicas`` and ``autoscaling`` apply on Ray Serve only (``host.ray``); one machine ignores them.
    """

    weights: str | WeightsRef | None = None
    plugin: str | None = None
    enabled: bool = True
    aliases: list[str] = msgspec.field(default_factory=list)
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    placements: list[PlacementKind] | None = None
    keep_alive_s: float | None = None
    pinned: bool = False
    replicas: Annotated[int, msgspec.Meta(ge=1)] | None = None
    autoscaling: AutoscalingConfig | None = None

    def __post_init__(self) -> None:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set either replicas (a fixed count) or autoscaling, not both")


class ResponsesConfig(Strict):
    """``responses:`` the stored responses of ``/v1/responses`` (``store: true``, the default), kept in
    memory for ``GET /v1/responses/{id}`` and ``previous_response_id``; the oldest go first."""

    max_stored: Annotated[int, msgspec.Meta(ge=0)] = 1000
    max_stored_bytes: ByteSize = "256MiB"
    max_age_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0


class HostConfig(Strict):
    """The whole configuration. ``base_dir`` (not a key) is where relative paths resolve."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    plugins: PluginsConfig = msgspec.field(default_factory=PluginsConfig)
    budgets: BudgetsConfig = msgspec.field(default_factory=BudgetsConfig)
    scheduler: SchedulerConfig = msgspec.field(default_factory=SchedulerConfig)
    models: dict[str, ModelConfig] = msgspec.field(default_factory=dict)
    download: DownloadConfig = msgspec.field(default_factory=DownloadConfig)
    responses: ResponsesConfig = msgspec.field(default_factory=ResponsesConfig)
    demo: bool | None = None
    base_dir: str = "."

    def model(self, model_id: str) -> ModelConfig:
        """The overrides for ``model_id`` (defaults when the file names none)."""
        return self.models.get(model_id) or ModelConfig()

    def model_options(self, model_id: str, options_type: type[OptionsT]) -> OptionsT:
        """``models.<id>.options`` as ``options_type`` (its defaults where the file says nothing).

        :raises ConfigError: an unknown key or a wrong type, naming ``models.<id>.options.<key>``.
        """
        try:
            return msgspec.convert(self.model(model_id).options, options_type)
        except msgspec.ValidationError as exc:
            raise ConfigError(_describe(exc, prefix=f"models.{model_id}.options")) from None

    def model_weights(self, model_id: str, default: str) -> str:
        """``models.<id>.weights`` (else ``default``) as the value both sizing and loading use.

        A relative folder (``./x``, ``../x``) is resolved against the config file's folder; weights
        from a hub (a hub id or ``{repo, source, revision}``) become their folder under
        ``download.dir`` once ``plughost pull`` has put them there, else stay the hub id.
        """
        ref = self.weights_ref(model_id, default)
        if ref is not None:
            found = find_installed(self.models_dir(), ref.repo, ref.revision)
            return str(found.folder) if found is not None else ref.repo
        weights = self.model(model_id).weights or default
        assert isinstance(weights, str)
        return str(self.resolve_path(weights)) if weights.startswith(("./", "../")) else weights

    def weights_ref(self, model_id: str, declared: str | None) -> WeightsRef | None:
        """What ``plughost pull`` fetches for ``model_id``: its configured ``{repo, source, revision}``
        or hub id, else ``declared`` (the plugin's default) when that is a hub id or a folder that an
        earlier pull made under ``download.dir``; ``None`` for local folders and demo models."""
        configured = self.model(model_id).weights
        if isinstance(configured, WeightsRef):
            return configured
        value = configured or declared
        if not value:
            return None
        if is_hub_id(value):
            return WeightsRef(repo=value)
        repo = repo_of_folder(self.models_dir(), value)
        return WeightsRef(repo=repo) if repo is not None else None

    def models_dir(self) -> Path:
        """``download.dir`` (``$PLUGHOST_MODELS_DIR``, else ``~/.cache/plughost/models``)."""
        if self.download.dir is not None:
            return self.resolve_path(self.download.dir)
        env = os.environ.get("PLUGHOST_MODELS_DIR")
        return Path(os.path.expanduser(env)) if env else Path.home() / ".cache" / "plughost" / "models"

    def resolve_path(self, path: str) -> Path:
        """A path from the config, resolved against the config file's folder."""
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else Path(self.base_dir) / p


def _check_sizes(config: HostConfig) -> None:
    fields: list[tuple[str, Any]] = [
        ("server.max_body_bytes", config.server.max_body_bytes),
        ("budgets.host", config.budgets.host),
        ("budgets.host_reserve", config.budgets.host_reserve),
        ("responses.max_stored_bytes", config.responses.max_stored_bytes),
    ]
    for i, gpu in enumerate(config.budgets.gpus or []):
        fields += [(f"budgets.gpus[{i}].total", gpu.total), (f"budgets.gpus[{i}].reserve", gpu.reserve)]
    for key, value in fields:
        if value is None:
            continue
        try:
            parse_bytes(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None


def config_from_dict(data: dict[str, Any] | None, *, base_dir: str | Path = ".", source: str = "config") -> HostConfig:
    """Build a :class:`HostConfig` from plain data, raising :class:`ConfigError` naming the bad key."""
    data = dict(data or {})
    if "base_dir" in data:
        raise ConfigError(f"{source}: unknown key 'base_dir'")
    data["base_dir"] = str(base_dir)
    models = data.get("models")
    if isinstance(models, dict):
        # msgspec reports a dict value's path as ``models[...]``; check each entry on its own so the
        # error names the model (``models.X.wieghts``).
        for model_id, section in models.items():
            try:
                msgspec.convert(section, ModelConfig)
            except msgspec.ValidationError as exc:
                raise ConfigError(f"{source}: {_describe(exc, prefix=f'models.{model_id}')}") from None
    try:
        config = msgspec.convert(data, HostConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    _check_sizes(config)
    return config


def _describe(exc: msgspec.ValidationError, prefix: str = "") -> str:
    """``"<dotted path of the bad key>: <problem>"``; an unknown key's own name ends the path."""
    message, path, field = parse_msgspec_error(exc)
    if field == "unknown":
        message = "unknown key"
    if prefix:
        path = f"{prefix}{'' if not path or path.startswith('[') else '.'}{path}"
    return f"{path or '<root>'}: {message}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key written twice in one mapping is an error (PyYAML keeps the
    last one silently: a second ``models:`` would replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {line}; first on line {seen[key]})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path | None = None) -> HostConfig:
    """Read the config file: ``path``, else ``$PLUGHOST_CONFIG``, else ``./plugins.yaml``.

    A missing default file yields the defaults; a missing named file is an error.
    """
    named = path if path is not None else os.environ.get(CONFIG_ENV)
    file = Path(named) if named else Path(DEFAULT_CONFIG)
    if not file.exists():
        if named:
            raise ConfigError(f"config file not found: {file} (named by {'argument' if path else CONFIG_ENV})")
        return config_from_dict({}, base_dir=Path.cwd())
    try:
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{file}: top level must be a mapping")
    return config_from_dict(data, base_dir=file.resolve().parent, source=str(file))
