"""plughost: a self-hosted, OpenAI-compatible inference host with pluggable model backends."""

import pluggy

__version__ = "0.1.0"

#: The marker plugins use for their hook implementations: ``@hookimpl def register_models(...)``.
hookimpl = pluggy.HookimplMarker("plughost")

__all__ = ["__version__", "hookimpl"]
