"""The plugin contract: the hooks a plughost plugin may implement.

The vocabulary is deliberately tiny. Implementations are cheap: they return data and never
import torch or load weights. Pluggy lets an implementation take fewer arguments than the
spec names, so hooks can grow arguments without breaking plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from host.contract.config import HostConfig
    from host.contract.spec import ModelSpec

hookspec = pluggy.HookspecMarker("plughost")


@hookspec
def register_models(config: HostConfig) -> list[ModelSpec]:  # type: ignore[empty-body]  # a hook specification
    """Declare the models this plugin can serve.

    Called once when the app is built. Read a model's settings from ``config`` resolved:
    ``config.model_weights(id, default)`` (relative folders against the config file; the value
    both sizing and loading must use) and ``config.model_options(id, MyOptions)`` (typed; a typo
    is a config error). Compute footprints from the model's ``config.json`` if it is at hand
    (``host.sdk.peek_config``), never by loading weights.

    :param config: the host configuration (``plugins.yaml``).
    :return: the plugin's model declarations (an empty list is fine).
    """
