"""Shapes of the demo models and the generic steps of building one (configs, random weights).

``TinyShape`` holds a Qwen2/Qwen3 decoder's sizes; the presets are the tiny stand-ins and the
real models' shapes (for benchmarks and sizing tests). Heavy imports (torch, transformers) happen
inside the functions.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import Qwen2Config, Qwen3Config

_INIT_STD = 0.02


@dataclass(frozen=True)
class TinyShape:
    """Architecture sizes of a Qwen2/Qwen3 decoder.

    ``head_dim`` is only honoured by Qwen3 (Qwen2 always uses ``hidden_size //
    num_attention_heads``); ``None`` means that default. ``vocab_size`` must be at least the
    tokenizer's size; embedding rows beyond the tokenizer are simply never used.
    """

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int | None = None
    vocab_size: int = 2048
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True

    @property
    def resolved_head_dim(self) -> int:
        """``head_dim`` if set, else ``hidden_size // num_attention_heads``."""
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads


#: Tiny Qwen2 (untied lm_head, like Qwen2.5-7B). All linear in-features are multiples of 32.
TINY_QWEN2 = TinyShape(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=2048,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)

#: Tiny Qwen3 (tied embeddings and head_dim * heads != hidden, like Qwen3-0.6B).
TINY_QWEN3 = TinyShape(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    vocab_size=2048,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)

#: Qwen3-Embedding-0.6B / Qwen3-Reranker-0.6B sizes.
QWEN3_0_6B_SHAPE = TinyShape(
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151669,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
)

#: Qwen3-0.6B (the chat model) sizes: Qwen3-Embedding-0.6B's, with the chat model's padded vocabulary
#: and context.
QWEN3_0_6B_CHAT_SHAPE = dataclasses.replace(QWEN3_0_6B_SHAPE, vocab_size=151936, max_position_embeddings=40960)

#: Qwen2.5-0.5B-Instruct sizes.
QWEN2_5_0_5B_SHAPE = TinyShape(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    head_dim=64,
    vocab_size=151936,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
)

#: Qwen2.5-7B-Instruct sizes (meant for configs / meta-device sizing; never materialise it).
QWEN2_5_7B_SHAPE = TinyShape(
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    head_dim=128,
    vocab_size=152064,
    max_position_embeddings=32768,
    tie_word_embeddings=False,
)


def config_essentials(shape: TinyShape, model_type: str) -> dict[str, Any]:
    """The ``config.json`` essentials of a model of ``shape`` without building it (no torch)."""
    return {
        **dataclasses.asdict(shape),
        "head_dim": shape.resolved_head_dim,
        "model_type": model_type,
        "torch_dtype": "float16",
    }


def _decoder_kwargs(shape: TinyShape, architecture: str) -> dict[str, Any]:
    """The config arguments Qwen2 and Qwen3 share: fp16, rope_theta 1e6, no sliding window."""
    return dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=shape.tie_word_embeddings,
        hidden_act="silu",
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        initializer_range=_INIT_STD,
        use_cache=True,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=shape.num_hidden_layers,
        attention_dropout=0.0,
        dtype="float16",
        architectures=[architecture],
    )


def qwen2_config(shape: TinyShape = TINY_QWEN2, **overrides: Any) -> Qwen2Config:
    """A ``transformers.Qwen2Config`` for ``shape`` (fp16, rope_theta 1e6, no sliding window).

    ``overrides`` are passed to the config (e.g. ``bos_token_id``/``eos_token_id``).
    """
    from transformers import Qwen2Config

    if shape.head_dim is not None and shape.head_dim * shape.num_attention_heads != shape.hidden_size:
        raise ValueError("Qwen2 requires head_dim * num_attention_heads == hidden_size")
    return Qwen2Config(**{**_decoder_kwargs(shape, "Qwen2ForCausalLM"), **overrides})


def qwen3_config(shape: TinyShape = TINY_QWEN3, **overrides: Any) -> Qwen3Config:
    """A ``transformers.Qwen3Config`` for ``shape`` (fp16, explicit head_dim, rope_theta 1e6)."""
    from transformers import Qwen3Config

    kwargs = _decoder_kwargs(shape, "Qwen3ForCausalLM")
    kwargs.update(head_dim=shape.resolved_head_dim, attention_bias=False)
    return Qwen3Config(**{**kwargs, **overrides})


def random_qwen3(dest: Path, shape: TinyShape, seed: int, model_cls: Any, *, append_eos: bool, **config: Any) -> Any:
    """Write the demo tokenizer to ``dest`` and return a random fp16 ``model_cls`` (a Qwen3 class) of
    ``shape`` whose bos/eos is ``<|endoftext|>``; ``config`` overrides the Qwen3 config."""
    from host.demo.tokenizer import ENDOFTEXT, build_tokenizer, token_ids

    build_tokenizer(dest, append_eos=append_eos, model_max_length=shape.max_position_embeddings)
    ids = token_ids(dest)
    check_vocab(shape, ids)
    return instantiate(
        model_cls, qwen3_config(shape, bos_token_id=ids[ENDOFTEXT], eos_token_id=ids[ENDOFTEXT], **config), seed
    )


def instantiate(model_cls: Any, config: Any, seed: int) -> Any:
    """Create ``model_cls(config)`` in fp16 with deterministic random weights.

    Every parameter is drawn from its own generator seeded by (seed, parameter name), so weights
    do not depend on construction order: linear/embedding weights ~ N(0, 0.02), biases ~
    N(0, 0.02), norm weights = 1. Skips transformers' own (slow, doubled) initialisation.
    """
    import torch
    from transformers.modeling_utils import no_init_weights

    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with no_init_weights():
            model = model_cls(config)
    finally:
        torch.set_default_dtype(old_dtype)
    # no_init_weights() also skips post_init's tie_weights(): tie explicitly (tied lm_head).
    model.tie_weights()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.fill_(1.0)
                continue
            gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            values = torch.randn(param.shape, generator=gen, dtype=torch.float32) * _INIT_STD
            param.copy_(values.to(param.dtype))
    model.eval()
    return model


def save_model(model: Any, dest: Path) -> None:
    """Save ``model`` as safetensors with its config."""
    model.save_pretrained(str(dest), safe_serialization=True)


def check_vocab(shape: TinyShape, ids: dict[str, int]) -> None:
    """Fail when ``shape`` has fewer embedding rows than the tokenizer has tokens."""
    if shape.vocab_size < ids["__size__"]:
        raise ValueError(f"shape.vocab_size={shape.vocab_size} < tokenizer size {ids['__size__']}")
