"""Token-id inputs in OpenAI's encoding (``cl100k_base``), turned back into text.

The OpenAI embeddings API takes ``input`` as token arrays in *OpenAI's* encoding, and the most
used client that sends them does so by default: LangChain's ``OpenAIEmbeddings`` tokenises
every text with tiktoken's ``cl100k_base`` (its fallback for any model name it does not know)
and sends the ids. Read as the served model's own ids they are other tokens entirely, and the
vectors are silently wrong. Decoding them with ``cl100k_base`` (bundled offline by the
``bpe-openai`` package) and embedding the text gives the vectors of the text the client meant.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from host.contract.errors import InvalidRequest


@functools.cache
def _cl100k() -> Any:
    import bpe_openai  # type: ignore[import-untyped]  # no py.typed marker

    return bpe_openai.get_encoding("cl100k_base")


def decode_cl100k(inputs: Sequence[Sequence[int]]) -> list[str]:
    """The text of each ``cl100k_base`` id list; a 400 naming the input for ids outside the encoding."""
    encoding = _cl100k()
    top = int(encoding.n_vocab)
    texts: list[str] = []
    for i, ids in enumerate(inputs):
        bad = next((t for t in ids if not 0 <= t < top), None)
        if bad is not None:
            raise InvalidRequest(
                f"input[{i}] holds token id {bad}, which is not a cl100k_base token (0..{top - 1}). Token-id "
                f"inputs are read as OpenAI's cl100k_base ids; send text instead.",
                param="input",
            )
        texts.append(encoding.decode(list(ids)))
    return texts


def rejected(model_id: str) -> InvalidRequest:
    """The 400 for token-id inputs to a model configured with ``token_ids: reject``."""
    return InvalidRequest(
        f"'{model_id}' does not take token ids as input (their encoding is ambiguous); send the texts as strings. "
        f"LangChain's OpenAIEmbeddings: set check_embedding_ctx_length=False. Operators can accept OpenAI "
        f"cl100k_base ids with models.{model_id}.options.token_ids: cl100k.",
        param="input",
        code="token_ids_not_accepted",
    )
