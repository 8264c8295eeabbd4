"""The demo stand-in of this plugin: a tiny random-weight ``Qwen3Model`` (no lm_head).

Named by the declaration as ``embed_qwen3.demo:TINY``. Its tokenizer appends ``<|endoftext|>`` to
every input, as Qwen3-Embedding's does. Importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from host.demo.shapes import TINY_QWEN3, TinyShape, config_essentials, random_qwen3, save_model
from host.sdk import DemoModel


def build(dest: Path, shape: TinyShape = TINY_QWEN3, seed: int = 0) -> None:
    """Write a random fp16 ``Qwen3Model`` folder to ``dest``."""
    from transformers import Qwen3Model

    dest = Path(dest)
    save_model(random_qwen3(dest, shape, seed, Qwen3Model, append_eos=True, architectures=["Qwen3Model"]), dest)


def _config(shape: TinyShape) -> dict[str, Any]:
    return config_essentials(shape, "qwen3")


#: The demo stand-in of Qwen3-Embedding-0.6B.
TINY = DemoModel("qwen3-embedding", build, _config, TINY_QWEN3)
