"""The demo stand-in of this plugin: a tiny random-weight ``Qwen3Model`` (no lm_head).

Named by the declaration as ``embed_qwen3.demo:TINY``. Its tokenizer appends ``<|endoftext|>`` to
every input, as Qwen3-Embedding's does. Importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from host.demo import DemoModel
from host.demo.shapes import (
    TINY_QWEN3,
    TinyShape,
    check_vocab,
    config_essentials,
    instantiate,
    qwen3_config,
    save_model,
)
from host.demo.tokenizer import ENDOFTEXT, build_tokenizer, token_ids


def build(dest: Path, shape: TinyShape = TINY_QWEN3, seed: int = 0) -> None:
    """Write a random fp16 ``Qwen3Model`` folder to ``dest``."""
    from transformers import Qwen3Model

    dest = Path(dest)
    build_tokenizer(dest, append_eos=True, model_max_length=shape.max_position_embeddings)
    ids = token_ids(dest)
    check_vocab(shape, ids)
    config = qwen3_config(shape, bos_token_id=ids[ENDOFTEXT], eos_token_id=ids[ENDOFTEXT], architectures=["Qwen3Model"])
    save_model(instantiate(Qwen3Model, config, seed), dest)


def _config(shape: TinyShape) -> dict[str, Any]:
    return config_essentials(shape, "qwen3")


#: The demo stand-in of Qwen3-Embedding-0.6B.
TINY = DemoModel("qwen3-embedding", build, _config, TINY_QWEN3)
