"""The demo stand-in of this plugin: a tiny random-weight ``Qwen3ForCausalLM`` reranker.

Named by the declaration as ``rerank_qwen3.demo:TINY``. Its "yes"/"no" head rows are aimed so
that scores spread clearly; the probe prompts are rendered by :mod:`rerank_qwen3.prompt`, the
backend's own template. Importing this module is cheap.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from host.demo.shapes import TINY_QWEN3, TinyShape, config_essentials, random_qwen3, save_model
from host.demo.tokenizer import corpus_lines
from host.sdk import DemoModel
from rerank_qwen3.prompt import DEFAULT_INSTRUCTION, render

_SPREAD_MAX_PARAMS = 50_000_000

_RERANK_PROBES = (
    ("What is the capital of China?", "The capital of China is Beijing."),
    ("What is the capital of China?", "Gravity is a force that attracts two bodies towards each other."),
    ("Explain gravity", "Gravity is a force that attracts two bodies towards each other."),
    ("Explain gravity", "The capital of China is Beijing."),
    ("中国的首都是哪里？", "中国的首都是北京。"),
    ("中国的首都是哪里？", "今天天气晴朗，微风轻拂。"),
    ("What is machine learning?", "机器学习是人工智能的一个分支。"),
    ("hello", "The cat sat on the mat."),
)


def _spread_yes_no(model: Any, tok_dir: Path, seed: int, num_probes: int = 64) -> None:
    """Re-aim the lm_head rows of "yes"/"no" so reranker scores vary clearly across inputs.

    With N(0, 0.02) weights the final hidden state is dominated by the (always identical) last
    template token, so sigmoid(logit_yes - logit_no) would be ~0.5 for every input. Keeping the two
    rows' mean, their difference is set to a random direction (deterministic in ``seed``) made
    orthogonal to the mean final hidden state of ``num_probes`` reranker prompts built from corpus
    lines, and scaled so that the logit difference has std ~2 over those probes. Scores of unseen
    inputs then spread over roughly 0.05..0.95 around 0.5.
    """
    import random

    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    yes_id = tok.convert_tokens_to_ids("yes")
    no_id = tok.convert_tokens_to_ids("no")
    rng = random.Random(seed)
    lines = corpus_lines()
    pairs = list(_RERANK_PROBES)
    pairs += [(rng.choice(lines)[:60], rng.choice(lines)) for _ in range(num_probes)]
    texts = [render(DEFAULT_INSTRUCTION, q, d) for q, d in pairs]
    with torch.no_grad():
        hidden = []
        for i in range(0, len(texts), 32):
            enc = tok(texts[i : i + 32], return_tensors="pt", padding=True)
            out = model.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            hidden.append(out.last_hidden_state[:, -1].float())
        h = torch.cat(hidden)  # [probes, hidden]
        mean_h = h.mean(dim=0)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(b"yes-no"))
        diff = torch.randn(h.shape[1], generator=gen)
        diff = diff - (mean_h @ diff) / (mean_h @ mean_h) * mean_h
        diff = diff * (2.0 / ((h - mean_h) @ diff).std().clamp(min=1e-6))
        weight = model.get_output_embeddings().weight
        centre = (weight[yes_id].float() + weight[no_id].float()) / 2
        weight[yes_id] = (centre + diff / 2).to(weight.dtype)
        weight[no_id] = (centre - diff / 2).to(weight.dtype)


def build(dest: Path, shape: TinyShape = TINY_QWEN3, seed: int = 0) -> None:
    """Write a random fp16 ``Qwen3ForCausalLM`` reranker folder to ``dest``.

    Plain tokenizer (no eos appended). For small models (<= 50M parameters) the "yes"/"no"
    lm_head rows are adjusted (see ``_spread_yes_no``) so that P(yes) varies clearly between
    inputs; with tied embeddings this also changes the input embeddings of "yes"/"no". Real-shaped
    (benchmark) models skip that step: running probes through them on CPU would be slow.
    """
    from transformers import Qwen3ForCausalLM

    dest = Path(dest)
    model = random_qwen3(dest, shape, seed, Qwen3ForCausalLM, append_eos=False)
    if sum(p.numel() for p in model.parameters()) <= _SPREAD_MAX_PARAMS:
        _spread_yes_no(model, dest, seed)
    save_model(model, dest)


def _config(shape: TinyShape) -> dict[str, Any]:
    return config_essentials(shape, "qwen3")


#: The demo stand-in of Qwen3-Reranker-0.6B.
TINY = DemoModel("qwen3-reranker", build, _config, TINY_QWEN3)
