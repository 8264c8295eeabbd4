"""Helpers of the rerank_qwen3 tests: the publisher's recipe, test documents, backend factories.

Importable like the plugin itself (pytest runs in importlib mode): not imported by the plugin's
production code; it needs torch, numpy and transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import torch

from host.contract.config import config_from_dict
from host.sdk import Grant, ModelSpec, PlacementKind
from rerank_qwen3 import DEMO_WEIGHTS
from rerank_qwen3.prompt import DEFAULT_INSTRUCTION

#: The plugin's folder (its pyproject.toml and package).
PLUGIN_ROOT = Path(__file__).resolve().parents[1]
TINY = DEMO_WEIGHTS
CPU = Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=0)


def tiny_spec(**options: Any) -> ModelSpec:
    """The plugin's own declaration, pointed at the tiny model, with extra ``options``."""
    import rerank_qwen3

    spec = rerank_qwen3.declare(config_from_dict({"models": {rerank_qwen3.MODEL_ID: {"weights": TINY}}}))
    return msgspec.structs.replace(spec, options=msgspec.structs.replace(spec.options, **options))


def load_backend(**options: Any) -> Any:
    """A loaded backend on the CPU."""
    from rerank_qwen3.backend import Qwen3RerankerBackend

    backend = Qwen3RerankerBackend(tiny_spec(**options))
    backend.load(CPU)
    return backend


class Recipe:
    """The publisher's recipe (qwen3_reranker_transformers.py), as plain as published: full logits.

    On the CPU in fp32; with ``device="cuda"`` in the fp16 the publisher recommends for GPUs (sdpa:
    flash-attn is not installed). The tests compare scores with it; ``bench_rerank.py`` times it.
    """

    def __init__(self, path: Path, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
        dtype = torch.float16 if device == "cuda" else torch.float32
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        self.model = model.to(device).eval()
        self.device = device
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        prefix = (
            "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
            'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
        )
        suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        self.prefix_tokens = self.tokenizer.encode(prefix, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(suffix, add_special_tokens=False)

    @staticmethod
    def format_instruction(instruction: str | None, query: str, doc: str) -> str:
        if instruction is None:
            instruction = DEFAULT_INSTRUCTION
        return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"

    def process_inputs(self, pairs: list[str], max_length: int) -> dict[str, Any]:
        import warnings

        inputs = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        with warnings.catch_warnings():  # the published call passes max_length with padding=True
            warnings.filterwarnings("ignore", message="`max_length` is ignored")
            return self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length).to(self.device)

    def scores(
        self, query: str, docs: Sequence[str], instruction: str | None = None, max_length: int = 8192
    ) -> list[float]:
        """P(yes) per document, all pairs in one padded batch as the recipe does."""
        pairs = [self.format_instruction(instruction, query, d) for d in docs]
        inputs = self.process_inputs(pairs, max_length)
        with torch.no_grad():
            batch_scores = self.model(**inputs).logits[:, -1, :]
            true_vector = batch_scores[:, self.token_true_id]
            false_vector = batch_scores[:, self.token_false_id]
            batch_scores = torch.stack([false_vector, true_vector], dim=1)
            batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
            return batch_scores[:, 1].exp().tolist()


QUERY = "What is the capital of China?"
DOCS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects "
    "and is responsible for the movement of planets around the sun.",
    "中国的首都是北京。北京是中国的政治、文化和国际交往中心。",
    "The cat sat on the mat.",
    "",
    "Shanghai is the largest city in China by population, and Beijing is the political and cultural center "
    "of the country. " * 3,
    "今天天气晴朗，微风轻拂。",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14159 42.",
]


_SENTENCES = [
    "Machine learning is a field of study in artificial intelligence.",
    "The weather today is sunny with a light breeze.",
    "Python is a programming language that lets you work quickly.",
    "长城是中国古代修建的军事防御工程，横跨中国北方的历史边界。",
    "Water boils at one hundred degrees Celsius at sea level.",
    "A reranker reads a query and a document together and outputs a relevance score.",
    "机器学习是人工智能的一个分支，研究如何让计算机从数据中学习规律并做出预测。",
    "The train leaves the station at half past nine and arrives in the capital two hours later.",
]


def mixed_documents(n: int, seed: int = 0) -> list[str]:
    """``n`` documents of very different lengths (empty to a few hundred tokens), English and Chinese."""
    import random

    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        text = " ".join(rng.choice(_SENTENCES) for _ in range(rng.choice([0, 1, 1, 2, 4, 8, 16])))
        docs.append(text[: rng.randint(0, len(text))] if rng.random() < 0.3 else text)
    return docs
