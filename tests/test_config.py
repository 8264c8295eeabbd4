"""``plugins.yaml``: defaults, strict decoding with errors naming the key, byte sizes, the
``PLUGHOST_CONFIG`` switch, and per-model overrides applied by the registry."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest

from host import hookimpl
from host.contract.config import CONFIG_ENV, ConfigError, HostConfig, config_from_dict, load_config, parse_bytes
from host.contract.spec import GiB, ModelSpec, Options, Placement, PlacementKind, Task
from host.plugins import PluginError, make_plugin_manager
from host.registry import ModelRegistry, build_registry
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.pytest_plugin import make_config

# -- defaults -----------------------------------------------------------------------------------


def test_defaults() -> None:
    config = config_from_dict({})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 15530)
    assert parse_bytes(config.server.max_body_bytes) == 32 * 2**20
    assert config.plugins.paths is None  # the bundled plugins/ folder, wherever the file is (host.plugins)
    assert config.plugins.entry_points is True
    assert config.plugins.disable == []
    assert config.budgets.gpus is None  # measured with torch at start-up
    assert config.scheduler.max_resident_per_task == 1
    assert config.models == {}
    unknown = config.model("no-such-model")  # defaults for a model the file does not name
    assert (unknown.weights, unknown.enabled, unknown.aliases, unknown.options, unknown.placements) == (
        None,
        True,
        [],
        {},
        None,
    )


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    file = tmp_path / "empty.yaml"
    file.write_text("# nothing configured\n")
    config = load_config(file)
    assert config.server.port == 15530
    assert Path(config.base_dir) == tmp_path


# -- strict decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"sever": {}}, "sever"),
        ({"server": {"prot": 8080}}, "server.prot"),
        ({"plugins": {"disabled": ["x"]}}, "plugins.disabled"),
        ({"budgets": {"gpus": [{"total": "8GiB"}, {"totl": "8GiB"}]}}, "budgets.gpus[1].totl"),
        ({"scheduler": {"keep_alive": 30}}, "scheduler.keep_alive"),
        (
            {"models": {"Qwen3-Embedding-0.6B": {"wieghts": "Qwen/Qwen3-Embedding-0.6B"}}},
            "models.Qwen3-Embedding-0.6B.wieghts",
        ),
    ],
)
def test_unknown_key_is_an_error_naming_its_path(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, source="plugins.yaml")
    assert f"plugins.yaml: {key}: unknown key" in str(err.value)


def test_base_dir_is_not_a_config_key() -> None:
    with pytest.raises(ConfigError, match="base_dir"):
        config_from_dict({"base_dir": "/etc"})


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"server": {"port": "http"}}, "server.port", "Expected `int`, got `str`"),
        ({"plugins": {"paths": "plugins"}}, "plugins.paths", "Expected `array | null`, got `str`"),
        ({"plugins": {"entry_points": "no"}}, "plugins.entry_points", "Expected `bool`"),
        ({"scheduler": {"queue_size": 1.5}}, "scheduler.queue_size", "Expected `int`, got `float`"),
        ({"models": {"m": {"placements": ["tpu"]}}}, "models.m.placements[0]", "Invalid enum value 'tpu'"),
        ({"models": {"m": {"aliases": "other"}}}, "models.m.aliases", "Expected `array`, got `str`"),
        ({"models": ["m"]}, "models", "Expected `object`, got `array`"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(data: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert f"{key}: " in str(err.value)
    assert problem in str(err.value)


# -- byte sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (1024, 1024),
        ("1024", 1024),
        ("16GiB", 16 * 2**30),
        ("16 GiB", 16 * 2**30),
        ("512MB", 512 * 10**6),
        ("512mib", 512 * 2**20),
        ("1.5GB", 1_500_000_000),
        ("2k", 2000),
    ],
)
def test_byte_sizes_parse(text: int | str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["16 parsecs", "GiB", "-1GiB", "1e9", "", -5])
def test_bad_byte_sizes_are_rejected(text: int | str) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)


def test_config_byte_sizes() -> None:
    config = config_from_dict(
        {
            "server": {"max_body_bytes": "1MiB"},
            "budgets": {"host": "16GiB", "gpus": [{"total": "24GiB", "reserve": 512}]},
        }
    )
    assert parse_bytes(config.server.max_body_bytes) == 2**20
    assert parse_bytes(config.budgets.host) == 16 * GiB
    assert parse_bytes(config.budgets.gpus[0].total) == 24 * GiB


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"server": {"max_body_bytes": "16 parsecs"}}, "server.max_body_bytes"),
        ({"budgets": {"host": "lots"}}, "budgets.host"),
        ({"budgets": {"host_reserve": -1}}, "budgets.host_reserve"),
        ({"budgets": {"gpus": [{"total": "8GiB"}, {"total": "8 bananas"}]}}, "budgets.gpus[1].total"),
    ],
)
def test_bad_byte_size_in_config_names_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert str(err.value).startswith(f"{key}: ")


# -- which file ------------------------------------------------------------------------------------


def test_plughost_config_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "conf" / "mine.yaml"
    file.parent.mkdir()
    file.write_text("server:\n  port: 18000\nmodels:\n  m:\n    weights: ./weights/m\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "plugins.yaml").write_text("server:\n  port: 1\n")  # must be ignored
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv(CONFIG_ENV, str(file))
    config = load_config()
    assert config.server.port == 18000
    assert config.model("m").weights == "./weights/m"
    # Relative paths in the file resolve against the file's folder, not the working directory.
    assert config.resolve_path("plugins") == file.parent / "plugins"


def test_default_file_is_plugins_yaml_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_config().server.port == 15530  # no file: the defaults
    (tmp_path / "plugins.yaml").write_text("server:\n  port: 18001\n")
    assert load_config().server.port == 18001


def test_an_explicit_path_wins_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "explicit.yaml"
    file.write_text("server:\n  port: 18002\n")
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.yaml"))
    assert load_config(file).server.port == 18002


def test_a_named_missing_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv(CONFIG_ENV, str(missing))
    with pytest.raises(ConfigError, match=rf"config file not found: .*nope\.yaml.*{CONFIG_ENV}"):
        load_config()
    monkeypatch.delenv(CONFIG_ENV)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(missing)


def test_errors_name_the_file(tmp_path: Path) -> None:
    file = tmp_path / "typo.yaml"
    file.write_text("server:\n  prot: 1\n")
    with pytest.raises(ConfigError, match=rf"^{file}: server\.prot: unknown key"):
        load_config(file)


@pytest.mark.parametrize(
    ("text", "problem"), [("server: [unclosed\n", "not valid YAML"), ("- a\n- b\n", "top level must be a mapping")]
)
def test_malformed_files_are_errors(tmp_path: Path, text: str, problem: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_config(file)


# -- per-model overrides, applied by the registry --------------------------------------------------

GPU = Placement(kind=PlacementKind.GPU, gpu_bytes=2 * GiB)
HYBRID = Placement(kind=PlacementKind.HYBRID, gpu_bytes=1 * GiB, flexible_bytes=1 * GiB)
CPU = Placement(kind=PlacementKind.CPU, host_bytes=3 * GiB)


def registry_with(models: dict[str, Any], **extra: Any) -> ModelRegistry:
    """The registry of a plugin declaring ``big`` (gpu, hybrid, cpu) and ``small``, under ``models``."""
    plugin = FakePlugin(
        [
            fake_spec(
                "big",
                Task.CHAT,
                placements=(GPU, HYBRID, CPU),
                aliases=("big-alias",),
                weights="org/big-hub-id",
                dtype="auto",
                context=4096,
            ),
            fake_spec("small", Task.EMBEDDING),
        ],
        name="decl",
    )
    config = make_config({"models": models, **extra})
    return build_registry(make_plugin_manager(config, extra=[plugin]), config)


def test_no_overrides_keep_the_declaration() -> None:
    big = registry_with({}).get("big")
    assert big.spec.weights == "org/big-hub-id"
    assert big.spec.placements == (GPU, HYBRID, CPU)
    assert big.spec.aliases == ("big-alias",)
    assert (big.keep_alive_s, big.pinned, big.plugin) == (None, False, "decl")


def test_weights_override_becomes_the_weights_field() -> None:
    big = registry_with({"big": {"weights": "/srv/models/big"}}).get("big")
    assert big.spec.weights == "/srv/models/big"


def test_options_are_merged_over_the_declared_ones() -> None:
    big = registry_with({"big": {"options": {"context": 8192, "dim": 16}}}).get("big")
    assert big.spec.options.context == 8192  # overridden
    assert big.spec.options.dim == 16  # set
    assert big.spec.options.script == {"dtype": "auto"}  # kept
    assert big.spec.weights == "org/big-hub-id"


def test_an_unknown_option_key_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"models\.big\.options\.max_batch: unknown key"):
        registry_with({"big": {"options": {"max_batch": 8}}})


class _Typed(Options, frozen=True):
    batch_tokens: int = 16
    dtype: Literal["auto", "float32"] = "auto"


def _typed_registry(models: dict[str, Any], base_dir: Path | str = ".") -> ModelRegistry:
    """A plugin that declares ``typed`` with :class:`_Typed` options and weights read from the config."""

    class Plugin:
        @hookimpl
        def register_models(self, config: HostConfig) -> list[ModelSpec]:
            spec = fake_spec("typed", Task.EMBEDDING, weights=config.model_weights("typed", "org/typed"))
            return [msgspec.structs.replace(spec, options=config.model_options("typed", _Typed))]

    config = config_from_dict({"plugins": {"paths": [], "entry_points": False}, "models": models}, base_dir=base_dir)
    return build_registry(make_plugin_manager(config, extra=[Plugin()]), config)


def test_typed_options_are_converted_once_with_their_declared_defaults() -> None:
    spec = _typed_registry({"typed": {"options": {"batch_tokens": 64}}}).get("typed").spec
    assert spec.options == _Typed(batch_tokens=64, dtype="auto") and spec.weights == "org/typed"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_token": 64}, "models.typed.options.batch_token: unknown key"),
        ({"batch_tokens": "many"}, "models.typed.options.batch_tokens: Expected `int`, got `str`"),
        ({"dtype": "int4"}, "models.typed.options.dtype: Invalid enum value 'int4'"),
        ({"weights": "x/y"}, "models.typed.options.weights: unknown key"),  # weights is a model key
    ],
)
def test_a_bad_typed_option_is_a_config_error_naming_its_dotted_key(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _typed_registry({"typed": {"options": options}})
    assert str(err.value).startswith(message)


def test_relative_weights_are_resolved_against_the_config_file_before_the_plugin_sees_them(tmp_path: Path) -> None:
    spec = _typed_registry({"typed": {"weights": "./models/t"}}, base_dir=tmp_path).get("typed").spec
    assert spec.weights == str(tmp_path / "models" / "t")  # what the declaration sized, and what loads


def test_model_config_names_a_plugin_first_class() -> None:
    config = config_from_dict({"models": {"Qwen3-Embedding-4B": {"plugin": "embed_qwen3", "weights": "a/b"}}})
    assert config.model("Qwen3-Embedding-4B").plugin == "embed_qwen3"


def test_placements_subset_keeps_the_declared_order() -> None:
    big = registry_with({"big": {"placements": ["cpu", "gpu"]}}).get("big")
    assert big.spec.placements == (GPU, CPU)  # declared preference order, not the config's


def test_placement_subset_naming_no_declared_placement_is_an_error() -> None:
    with pytest.raises(PluginError) as err:
        registry_with({"small": {"placements": ["gpu", "hybrid"]}})  # small declares cpu only
    assert str(err.value) == "models.small.placements: none of gpu, hybrid is declared (declared: cpu)"


def test_enabled_false_drops_the_model() -> None:
    registry = registry_with({"big": {"enabled": False}})
    assert {m.spec.id for m in registry} == {"small"}
    with pytest.raises(Exception, match="does not exist"):
        registry.get("big-alias")


def test_aliases_are_added_and_resolve() -> None:
    registry = registry_with(
        {"small": {"aliases": ["text-embedding-3-small", "emb"]}, "big": {"aliases": ["big-alias", "gpt-4o"]}}
    )
    assert registry.get("text-embedding-3-small").spec.id == "small"
    assert registry.get("EMB").spec.id == "small"  # case-insensitive fallback
    assert registry.get("big").spec.aliases == ("big-alias", "gpt-4o")  # no duplicate


def test_keep_alive_and_pinned() -> None:
    registry = registry_with({"big": {"keep_alive_s": 5, "pinned": True}}, scheduler={"keep_alive_s": 60})
    assert (registry.get("big").keep_alive_s, registry.get("big").pinned) == (5, True)
    assert registry.get("small").keep_alive_s == 60  # the scheduler-wide default


def test_overrides_of_an_undeclared_model_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="plughost.registry"):
        registry = registry_with({"Qwen3-Embeding-0.6B": {"weights": "x"}})
    assert len(registry) == 2
    assert "Qwen3-Embeding-0.6B" in caplog.text
