"""The Qwen3-Reranker prompt and its tokenisation (no torch here).

The text follows the publisher's recipe (QwenLM/Qwen3-Embedding,
``examples/qwen3_reranker_transformers.py``) character for character: a fixed system turn, a
user turn ``<Instruct>: …\\n<Query>: …\\n<Document>: …`` and an assistant turn holding an empty
think block. As in that recipe the prefix and suffix are tokenised on their own and only the
user-turn body is cut when the pair is too long, so the template always stays intact.
"""

from __future__ import annotations

from typing import Any

import msgspec

from host.sdk import InvalidRequest, over_limit_prefix

SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
PREFIX = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def body(instruction: str, query: str, document: str) -> str:
    """The user-turn text of one pair (single newlines, one space after each colon)."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


def render(instruction: str, query: str, document: str) -> str:
    """The whole prompt of one pair, exactly as the model was trained on it."""
    return PREFIX + body(instruction, query, document) + SUFFIX


class EncodedPair(msgspec.Struct, frozen=True):
    """Token ids of one rendered pair (prefix + body + suffix) and whether its body was cut.

    ``shared``: how many leading ids the pair shares with every other pair of the same
    instruction and query (see :meth:`PairEncoder.shared_length`); 0 when not computed.
    """

    ids: list[int]
    truncated: bool
    shared: int = 0


class PairEncoder:
    """Turns (instruction, query, document) into the model's input ids, within ``max_length``.

    Not thread-safe (fast tokenizers are not): call it from one thread only.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.prefix_ids: list[int] = tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_ids: list[int] = tokenizer.encode(SUFFIX, add_special_tokens=False)
        self.max_length = max_length
        self._references: dict[tuple[str, str], list[int]] = {}
        self.room = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if self.room < 1:
            raise ValueError(f"max_length {max_length} leaves no room for the pair inside the template")

    def reference(self, instruction: str, query: str) -> list[int]:
        """Ids of the template prefix and the body with an EMPTY document (no suffix, never cut)."""
        key = (instruction, query)
        ids = self._references.get(key)
        if ids is None:
            enc = self.tokenizer(body(instruction, query, ""), add_special_tokens=False)
            ids = self.prefix_ids + list(enc["input_ids"])
            if len(self._references) >= 64:
                self._references.pop(next(iter(self._references)))
            self._references[key] = ids
        return ids

    def shared_length(self, instruction: str, query: str, ids: list[int]) -> int:
        """Leading ids of ``ids`` that do not depend on the document.

        The longest common prefix of ``ids`` and :meth:`reference` (the same prompt with an empty
        document), never counting the reference's last token (the space after ``<Document>:``,
        which BPE may merge with the document's first word), minus one token of safety margin.
        It depends on this pair alone, never on other documents: batch invariance is kept.
        """
        ref = self.reference(instruction, query)
        limit = min(len(ref) - 1, len(ids) - 1)
        n = 0
        while n < limit and ids[n] == ref[n]:
            n += 1
        return max(n - 1, 0)

    def encode_shared(self, instruction: str, query: str, document: str) -> EncodedPair:
        """:meth:`encode` with ``shared`` set (:meth:`shared_length`)."""
        pair = self.encode(instruction, query, document)
        return EncodedPair(pair.ids, pair.truncated, self.shared_length(instruction, query, pair.ids))

    def encode(self, instruction: str, query: str, document: str) -> EncodedPair:
        """Ids of the pair; a long document is cut from its end so the whole prompt fits.

        Raises :class:`InvalidRequest` (``param="query"``) when the instruction and query alone
        leave no room inside ``max_length``.
        """
        for param, value in (("documents", document), ("query", query), ("instruction", instruction)):
            _check_unicode(value, param)
        text = body(instruction, query, document)
        # No special tokens from the post-processor: the prompt must be exactly the template.
        encode = lambda t: self.tokenizer(t, add_special_tokens=False, return_offsets_mapping=True)  # noqa: E731
        # A very long document: only a prefix of the text is tokenised (it is cut to the room anyway).
        enc = over_limit_prefix(text, self.room, encode, lambda e: len(e["input_ids"])) or encode(text)
        ids: list[int] = enc["input_ids"]
        if len(ids) <= self.room:
            return EncodedPair(self.prefix_ids + ids + self.suffix_ids, False)
        # Tokens that start before the document belong to the template, instruction and query:
        # they must all survive the cut (the recipe's right-truncation of the body cuts the
        # document first, so the result is the recipe's whenever the query fits).
        doc_start = len(text) - len(document)
        head = sum(1 for start, _ in enc["offset_mapping"] if start < doc_start)
        if head >= self.room:
            used = head + len(self.prefix_ids) + len(self.suffix_ids)
            raise InvalidRequest(
                f"The query, with the instruction and the prompt template, takes {used} tokens and leaves no room "
                f"for the document within this model's limit of {self.max_length} tokens; shorten the query.",
                param="query",
            )
        return EncodedPair(self.prefix_ids + ids[: self.room] + self.suffix_ids, True)


def _check_unicode(text: str, param: str) -> None:
    """Reject strings the tokenizer cannot take (lone surrogates): a client error, not a crash."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            f"'{param}' holds text that is not valid Unicode ({exc.reason} at position {exc.start}).", param=param
        ) from None
