"""The model registry: every declared model, with config overrides applied, built once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import msgspec
import pluggy

from host.contract.config import ConfigError, HostConfig, WeightsRef
from host.contract.errors import ModelNotFound, WrongTask
from host.contract.spec import ModelSpec, Task
from host.demo import demo_weights
from host.plugins import PluginError
from host.toolkit.weights import weights_on_disk, weights_problem

log = logging.getLogger("plughost.registry")


class RegisteredModel(msgspec.Struct, frozen=True):
    """A declared model with its effective settings.

    ``weights_ref`` is what ``plughost pull`` fetches for it (``None`` when its weights are a local
    folder or a demo model); a model the demo stand-in serves keeps the reference of its real weights.
    """

    spec: ModelSpec
    plugin: str
    keep_alive_s: float | None = None
    pinned: bool = False
    weights_ref: WeightsRef | None = None


class ModelRegistry:
    """Resolves client-facing names (ids and aliases) to registered models."""

    def __init__(self, models: list[RegisteredModel]) -> None:
        self._models = {m.spec.id: m for m in models}
        self._names: dict[str, str] = {}
        for m in models:
            for name in m.spec.names:
                other = self._names.get(name)
                if other is not None and other != m.spec.id:
                    raise PluginError(f"model name {name!r} is declared twice ({other!r} and {m.spec.id!r})")
                self._names[name] = m.spec.id
        self._folded = {name.lower(): mid for name, mid in self._names.items()}

    def __iter__(self) -> Iterator[RegisteredModel]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def get(self, name: str) -> RegisteredModel:
        """The model called ``name`` (exact, else case-insensitive); :class:`ModelNotFound` otherwise."""
        mid = self._names.get(name) or self._folded.get(name.lower())
        if mid is None:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(f"The model '{name}' does not exist. Available models: {known}.", param="model")
        return self._models[mid]

    def resolve(self, name: str, task: Task) -> RegisteredModel:
        """Like :meth:`get`, and check the model serves ``task``."""
        model = self.get(name)
        if model.spec.task != task:
            raise WrongTask(
                f"The model '{model.spec.id}' serves {model.spec.task}, not {task}.",
                param="model",
            )
        return model


def build_registry(pm: pluggy.PluginManager, config: HostConfig) -> ModelRegistry:
    """Call ``register_models`` on every plugin and apply ``models.<id>`` overrides."""
    models: list[RegisteredModel] = []
    seen: dict[str, str] = {}
    for impl in pm.hook.register_models.get_hookimpls():
        name = pm.get_name(impl.plugin) or repr(impl.plugin)
        for spec in _declared(impl, name, config, pm):
            if spec.id in seen:
                raise PluginError(f"model {spec.id!r} is declared by both {seen[spec.id]!r} and {name!r}")
            seen[spec.id] = name
            overridden = _apply_overrides(spec, config)
            ref = config.weights_ref(spec.id, overridden.weights) if overridden is not None else None
            if overridden is not None and _serve_demo(overridden, config):
                overridden = _as_demo(overridden, _demo_declaration(impl, name, config, spec, pm))
            if overridden is not None:
                models.append(
                    RegisteredModel(
                        spec=overridden,
                        plugin=name,
                        keep_alive_s=_keep_alive(spec.id, config),
                        pinned=config.model(spec.id).pinned,
                        weights_ref=ref,
                    )
                )
    for mid in config.models:
        if mid not in seen:
            log.warning("plugins.yaml configures model %r, which no plugin declares", mid)
    return ModelRegistry(models)


DEMO_NOTE = "DEMO: random-weight tiny stand-in, outputs are meaningless"


def _serve_demo(spec: ModelSpec, config: HostConfig) -> bool:
    """Demo profile: ``demo: true`` for every model that has a stand-in; unset (auto) for those
    whose real weights are simply not on this machine (a hub id not in the cache).

    Configured weights that are broken (a local folder that is missing or has no valid
    ``config.json``, a cached hub id with a broken ``config.json``) are never replaced by the
    random stand-in: the model stays declared and its load fails with an error naming it.
    """
    if spec.demo is None:
        return False
    if config.demo is not None:
        return config.demo
    if spec.weights is None:
        return True
    problem = weights_problem(spec.weights)
    if problem is not None:
        log.error("%s: models.%s.weights is broken (%s); the model will fail to load", spec.id, spec.id, problem)
        return False
    return not weights_on_disk(spec.weights)


def _declared(impl: Any, name: str, config: HostConfig, pm: pluggy.PluginManager) -> list[ModelSpec]:
    """Call one plugin's ``register_models`` (through pluggy, so hook tracing sees it) and check
    what it returns."""
    others = [p for p in pm.get_plugins() if p is not impl.plugin]
    try:
        results = pm.subset_hook_caller("register_models", remove_plugins=others)(config=config)
    except ConfigError:
        raise  # names the config key to fix: clearer unwrapped
    except Exception as exc:
        raise PluginError(f"plugin {name!r}: register_models failed: {exc!r}") from exc
    specs = [spec for result in results for spec in (result or [])]
    for spec in specs:
        if not isinstance(spec, ModelSpec):
            raise PluginError(f"plugin {name!r}: register_models must return ModelSpec objects, got {spec!r}")
    return specs


def _demo_declaration(impl: Any, name: str, config: HostConfig, spec: ModelSpec, pm: pluggy.PluginManager) -> ModelSpec:
    """The plugin's declaration of ``spec.id`` when its weights are the demo stand-in, so that
    footprints are the stand-in's, not the real model's."""
    models = dict(config.models)
    own = config.model(spec.id)
    models[spec.id] = msgspec.structs.replace(own, weights=demo_weights(spec.demo or ""))
    demo_config = msgspec.structs.replace(config, models=models)
    for again in _declared(impl, name, demo_config, pm):
        if again.id == spec.id:
            return _apply_overrides(again, demo_config) or again
    raise PluginError(f"plugin {name!r}: {spec.id!r} disappears when declared with its demo weights")


def _as_demo(real: ModelSpec, demo: ModelSpec) -> ModelSpec:
    weights = real.weights
    log.warning(
        "%s: serving the DEMO stand-in %s (real weights %r are not on this machine; outputs are "
        "meaningless). Run `plughost pull %s` to fetch them, or set models.%s.weights to a local folder.",
        real.id,
        real.demo,
        weights,
        real.id,
        real.id,
    )
    description = f"{DEMO_NOTE} (the real weights are not on this machine)"  # no path: clients see this
    return msgspec.structs.replace(demo, weights=demo_weights(real.demo or ""), description=description)


def _keep_alive(model_id: str, config: HostConfig) -> float | None:
    own = config.model(model_id).keep_alive_s
    return own if own is not None else config.scheduler.keep_alive_s


def _apply_overrides(spec: ModelSpec, config: HostConfig) -> ModelSpec | None:
    mc = config.models.get(spec.id)
    if mc is None:
        return spec
    if not mc.enabled:
        return None
    # The plugin built its options with config.model_options; converting again only checks a
    # plugin that did not (an unknown key is an error, never silently ignored).
    config.model_options(spec.id, type(spec.options))
    weights = config.model_weights(spec.id, spec.weights or "") or None
    placements = spec.placements
    if mc.placements is not None:
        placements = tuple(p for p in spec.placements if p.kind in mc.placements)
        if not placements:
            declared = ", ".join(p.kind for p in spec.placements)
            raise PluginError(
                f"models.{spec.id}.placements: none of {', '.join(mc.placements)} is declared (declared: {declared})"
            )
    aliases = spec.aliases + tuple(a for a in mc.aliases if a not in spec.aliases)
    return msgspec.structs.replace(spec, weights=weights, placements=placements, aliases=aliases)
