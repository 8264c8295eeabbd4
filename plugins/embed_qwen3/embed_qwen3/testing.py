"""Helpers of the embed_qwen3 tests: the publisher's recipe, test texts, backend factories.

Importable like the plugin itself (pytest runs in importlib mode): not imported by the plugin's
production code; it needs torch, numpy and transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch

from embed_qwen3 import DEFAULT_TASK as DEFAULT_TASK  # re-exported to the tests
from embed_qwen3 import DEMO_WEIGHTS
from host.contract.config import config_from_dict
from host.sdk import Grant, ModelSpec, PlacementKind

#: The plugin's folder (its pyproject.toml and package).
PLUGIN_ROOT = Path(__file__).resolve().parents[1]
TINY = DEMO_WEIGHTS
MODEL = "Qwen3-Embedding-0.6B"
#: A serving CPU grant (room for fp32 weights).
CPU = Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=16 * 2**30)

#: Mixed texts: English, Chinese, punctuation, short and long.
TEXTS = [
    "What is the capital of China?",
    "Explain gravity",
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects and is "
    "responsible for the movement of planets around the sun.",
    "中国的首都是北京。",
    "a",
    "Machine learning is a field of study in artificial intelligence " * 6,
    "你好，我是通义千问，由阿里云开发的人工智能助手。有什么可以帮助你的吗？",
    "Code: def add(a, b): return a + b  # returns the sum",
]


def mixed_texts(count: int, seed: int = 0) -> list[str]:
    """``count`` texts of very different lengths (1 to ~150 tokens), deterministic in ``seed``."""
    import random

    rng = random.Random(seed)
    words = " ".join(TEXTS).split()
    return [" ".join(rng.choice(words) for _ in range(rng.choice([1, 2, 5, 12, 30, 60]))) for _ in range(count)]


def tiny_spec(**options: Any) -> ModelSpec:
    """The plugin's own declaration, pointed at the tiny model, with extra ``options``."""
    import embed_qwen3

    spec = embed_qwen3.declare(config_from_dict({"models": {MODEL: {"weights": TINY}}}))
    return msgspec.structs.replace(spec, options=msgspec.structs.replace(spec.options, **options))


def load_backend(**options: Any) -> Any:
    """A loaded backend on the CPU (fp32)."""
    from embed_qwen3.backend import Qwen3EmbeddingBackend

    backend = Qwen3EmbeddingBackend(tiny_spec(**options))
    backend.load(CPU)
    return backend


class Recipe:
    """The publisher's recipe (Qwen3-Embedding README, transformers usage), as plain as published."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
        self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()

    @staticmethod
    def get_detailed_instruct(task_description: str, query: str) -> str:
        return f"Instruct: {task_description}\nQuery:{query}"

    @staticmethod
    def last_token_pool(last_hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        left_padding = attention_mask[:, -1].sum() == attention_mask.shape[0]
        if left_padding:
            return last_hidden_states[:, -1]
        sequence_lengths = attention_mask.sum(dim=1) - 1
        batch_size = last_hidden_states.shape[0]
        return last_hidden_states[torch.arange(batch_size, device=last_hidden_states.device), sequence_lengths]

    def embed(self, input_texts: Sequence[str], max_length: int = 8192) -> np.ndarray:
        import torch.nn.functional as F

        batch_dict = self.tokenizer(
            list(input_texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        with torch.no_grad():
            outputs = self.model(**batch_dict)
        embeddings = self.last_token_pool(outputs.last_hidden_state, batch_dict["attention_mask"])
        return F.normalize(embeddings, p=2, dim=1).numpy()

    def token_count(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
