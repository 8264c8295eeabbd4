"""Constrained decoding with llguidance: grammars, per-sequence matchers and token masks.

Why llguidance (not xgrammar): it is one 3 MB wheel without dependencies (xgrammar pulls in a
TVM FFI runtime), it computes masks lazily from an Earley parser over a token trie, so a new
schema costs well under a millisecond to compile instead of a vocabulary-wide precompilation,
and it refuses JSON-schema keywords it cannot enforce (``lenient`` is off) instead of ignoring
them — which is what lets us answer 400 rather than a silently unconstrained answer. Its
executor fills the masks of many sequences in Rust threads without the GIL.

- :class:`Grammars` (one per loaded model) turns a request into a grammar, as Lark text
  (:class:`GrammarSource`, what vLLM's "guidance" backend takes too): ``response_format`` JSON
  (schema or any object), or Qwen's ``<tool_call>`` block for ``tool_choice`` "required" / a
  named function. JSON allows no free whitespace (fixed separators), so even a weak model
  ends inside a small budget. Compiled matchers are cached by grammar and deep-copied per sequence.
- Before a grammar is used it must pass the caps of :mod:`chat_qwen_awq.schema_limits` and a dry
  run of its first :data:`DRY_RUN_STEPS` steps (masks computed, a token consumed each step): a
  schema the library cannot run is a 400 naming the field before any token is generated. One that
  still fails later ends its sequence with :meth:`Constraint.failure` (a 400, never a 500).
- :class:`Constraint` is one sequence's matcher.
- :class:`MaskFiller` starts the bitmasks of a step's constrained rows on a worker thread before
  the forward pass, so they are ready (or nearly) when the logits are; :meth:`PendingMasks.apply`
  then masks all those rows at once (no Python loop over the vocabulary).
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from chat_qwen_awq.schema_limits import SchemaLimits, check_schema
from host.sdk import ChatRequest, InvalidRequest, Tool, close_objects

#: Qwen2.5's tool-call tags (single added tokens in its vocabulary).
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
#: JSON inside answers: compact, no free whitespace.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
#: JSON inside a tool-call block: the separators of the template's own ``tojson`` (what Qwen was trained on).
TOOL_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_CACHE_SIZE = 256
#: Steps of a new grammar run (on a copy) before it is used: the row explosions and endless forced
#: prefixes measured (500+ optional properties, a required recursive ``$ref``) fail at step 2.
DRY_RUN_STEPS = 8
#: The error code of a grammar the constraint library gives up on.
GRAMMAR_FAILED = "grammar_failed"


@dataclass(frozen=True)
class GrammarSource:
    """A constraint as llguidance Lark text (what both engines compile: ours here, vLLM through its
    "guidance" backend) and the request field it comes from (named by a 400)."""

    lark: str
    param: str


def json_lark(schema: dict[str, Any]) -> str:
    """The Lark grammar of JSON valid against ``schema``, in :data:`JSON_OPTIONS`' layout (a schema's own
    ``x-guidance`` settings win, as llguidance's defaults would let them)."""
    own = schema.get("x-guidance")
    options = {**JSON_OPTIONS, **own} if isinstance(own, dict) else JSON_OPTIONS
    return f"start: %json {json.dumps({**schema, 'x-guidance': options})}\n"


class Constraint:
    """The grammar state of one sequence (engine thread only, except while its mask is filled).

    ``param`` names the request field the grammar comes from (for errors).
    """

    def __init__(self, matcher: Any, param: str = "response_format") -> None:
        self.matcher = matcher
        self.param = param

    def consume(self, token: int) -> bool:
        """Advance past a sampled token; False if the grammar did not allow it."""
        return bool(self.matcher.consume_token(token))

    @property
    def stopped(self) -> bool:
        """The grammar is complete and allows no further token."""
        return bool(self.matcher.is_stopped())

    @property
    def error(self) -> str | None:
        """Why the matcher failed, if it did."""
        return str(self.matcher.get_error()) if self.matcher.is_error() else None

    def failure(self, tokens: int) -> InvalidRequest:
        """The client's error for a matcher that failed after ``tokens`` generated tokens."""
        return InvalidRequest(
            f"The output constraint from '{self.param}' could not go on after {tokens} generated tokens: "
            f"{_first_line(self.error or 'the grammar allowed no further token')}. Simplify the schema.",
            param=self.param,
            code=GRAMMAR_FAILED,
        )


def _first_line(text: str) -> str:
    """The reason of an llguidance error, without the parser state and grammar it appends."""
    return text.strip().split("\n", 1)[0].rstrip(".")


class _Row(Protocol):
    constraint: Constraint | None
    finished: bool
    cancelled: bool

    @property
    def grammar_paused(self) -> bool: ...  # the constraint leaves the next token alone (thinking)

    @property
    def also_allowed(self) -> tuple[int, ...]: ...  # tokens allowed next besides the grammar's


class Grammars:
    """Builds and caches the grammars of one loaded model (see the module docstring).

    :param tokenizer: the model's fast Hugging Face tokenizer.
    :param vocab_size: width of the logits (the model's vocabulary, padding included).
    :param eos_ids: tokens that end a generation (allowed once the grammar is complete).
    :param limits: caps on the schemas requests may send (:mod:`chat_qwen_awq.schema_limits`).
    """

    def __init__(
        self, tokenizer: Any, vocab_size: int, eos_ids: Sequence[int], limits: SchemaLimits | None = None
    ) -> None:
        import llguidance.hf

        self.vocab_size = vocab_size
        self.limits = limits or SchemaLimits()
        self.eos_ids = frozenset(eos_ids)
        self.lltokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(eos_ids))
        self._tags = [tokenizer.convert_tokens_to_ids(t) for t in (TOOL_OPEN, TOOL_CLOSE)]
        self._single_tags = all(isinstance(t, int) and t != tokenizer.unk_token_id for t in self._tags)
        self._cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def source(self, request: ChatRequest) -> GrammarSource | None:
        """The Lark grammar of the constraint ``request`` asks for (not yet checked), or ``None``."""
        choice = request.tool_choice
        if choice.mode in ("required", "function"):
            tools = [t for t in request.tools if choice.mode == "required" or t.name == choice.name]
            for i, tool in enumerate(request.tools):
                if tool in tools and tool.parameters is not None:
                    check_schema(tool.parameters, self.limits, f"tools[{i}].function.parameters")
            return GrammarSource(self._tool_grammar(tools, choice.parallel), "tools")
        if request.output.kind == "json_object":
            return GrammarSource(json_lark({"type": "object"}), "response_format")
        if request.output.kind == "json_schema":
            assert request.output.schema is not None
            param = "response_format.json_schema.schema"
            check_schema(request.output.schema, self.limits, param)
            return GrammarSource(json_lark(request.output.schema), param)
        return None

    def checked(self, request: ChatRequest) -> GrammarSource | None:
        """:meth:`source`, compiled once (cached) so that a grammar that cannot be enforced is a 400 here."""
        source = self.source(request)
        if source is not None:
            self._compiled(source)
        return source

    def constraint(self, request: ChatRequest) -> Constraint | None:
        """The constraint ``request`` asks for, or ``None``; a schema it cannot enforce is a 400."""
        source = self.source(request)
        return Constraint(self._compiled(source).deep_copy(), source.param) if source is not None else None

    def _tool_grammar(self, tools: list[Tool], parallel: bool) -> str:
        variants = [
            {
                "type": "object",
                "properties": {
                    "name": {"const": t.name},
                    "arguments": close_objects(t.parameters or {"type": "object", "properties": {}}),
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in tools
        ]
        body = variants[0] if len(variants) == 1 else {"anyOf": variants}
        check_schema(body, self.limits, "tools")
        schema = {**body, "x-guidance": TOOL_JSON_OPTIONS}
        if self._single_tags:
            open_, close = (f"<[{t}]>" for t in self._tags)
        else:
            open_, close = json.dumps(TOOL_OPEN), json.dumps(TOOL_CLOSE)
        calls = 'call ("\\n" call)*' if parallel else "call"
        return f'start: {calls}\ncall: {open_} "\\n" body "\\n" {close}\nbody: %json {json.dumps(schema)}\n'

    def _compiled(self, source: GrammarSource) -> Any:
        """The pristine matcher of ``source`` (validated, compiled, cached)."""
        import llguidance

        with self._lock:
            pristine = self._cache.get(source.lark)
            if pristine is not None:
                self._cache.move_to_end(source.lark)
        if pristine is None:
            grammar = llguidance.LLMatcher.grammar_from_lark(source.lark)
            failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.lltokenizer)
            if failed:
                raise InvalidRequest(f"This schema cannot be enforced: {'; '.join(messages)}", param=source.param)
            pristine = llguidance.LLMatcher(self.lltokenizer, grammar, log_level=0)
            if pristine.is_error():
                raise InvalidRequest(f"This schema cannot be enforced: {pristine.get_error()}", param=source.param)
            self._dry_run(pristine.deep_copy(), source.param)
            with self._lock:
                self._cache[source.lark] = pristine
                while len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
        return pristine

    def _dry_run(self, matcher: Any, param: str) -> None:
        """Run ``matcher`` (a copy) up to :data:`DRY_RUN_STEPS` steps, each time consuming the first token
        its mask allows (other than an end of text); a 400 naming ``param`` if the library gives up."""
        tokens = 0
        while tokens < DRY_RUN_STEPS and not matcher.is_stopped():  # stopped: complete, or failed
            bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
            if matcher.is_error():
                break
            allowed = (int(t) for t in np.flatnonzero(bits[: self.vocab_size]) if int(t) not in self.eos_ids)
            token = next(allowed, None)
            if token is None:
                if tokens == 0 and not matcher.is_accepting():
                    raise InvalidRequest("This schema allows no output at all.", param=param, code=GRAMMAR_FAILED)
                break
            matcher.consume_token(token)
            tokens += 1
        if matcher.is_error():
            raise InvalidRequest(
                f"This schema cannot be enforced: the constraint library gives up on it within its first "
                f"{tokens + 1} tokens ({_first_line(matcher.get_error())}). Simplify the schema.",
                param=param,
                code=GRAMMAR_FAILED,
            )

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes of one token (for logprobs)."""
        return bytes(self.lltokenizer.decode_bytes([token]))


class PendingMasks:
    """Bitmasks being filled for some rows of a step; :meth:`apply` waits and masks the logits."""

    def __init__(
        self, future: Future[None], rows: list[int], bitmask: torch.Tensor, also: list[tuple[int, ...]] | None = None
    ) -> None:
        self._future = future
        self._rows = rows
        self._bitmask = bitmask
        self._also = also or []

    def apply(self, logits: torch.Tensor) -> None:
        """Set every disallowed token of the constrained rows of ``logits`` ([B, V] fp32, CPU) to -inf."""
        self._future.result()
        width = logits.shape[1]
        bits = np.unpackbits(self._bitmask.numpy().view(np.uint8), axis=1, bitorder="little")[:, :width]
        allowed = torch.from_numpy(bits).to(torch.bool)
        for j, tokens in enumerate(self._also):
            allowed[j, [t for t in tokens if t < width]] = True
        index = torch.tensor(self._rows, dtype=torch.long)
        logits[index] = logits[index].masked_fill(~allowed, float("-inf"))


class MaskFiller:
    """Fills next-token bitmasks off the engine's critical path (see the module docstring)."""

    def __init__(self, vocab_size: int) -> None:
        import llguidance

        self._words = (vocab_size + 31) // 32
        self._executor = llguidance.LLExecutor()
        self._pool: ThreadPoolExecutor | None = None

    def start(self, rows: Sequence[_Row]) -> PendingMasks | None:
        """Begin filling the masks of the constrained, still running rows whose grammar applies to the
        next token; ``None`` if there are none."""
        picked = [
            (i, s.constraint)
            for i, s in enumerate(rows)
            if s.constraint is not None and not s.finished and not s.grammar_paused
        ]
        if not picked:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="grammar-masks")
        bitmask = torch.zeros(len(picked), self._words, dtype=torch.int32)
        matchers = [(c.matcher, j) for j, (_, c) in enumerate(picked) if c is not None]
        future = self._pool.submit(self._fill, matchers, bitmask)
        also = [rows[i].also_allowed for i, _ in picked]
        return PendingMasks(future, [i for i, _ in picked], bitmask, also if any(also) else None)

    def _fill(self, matchers: list[tuple[Any, int]], bitmask: torch.Tensor) -> None:
        # What llguidance.torch.fill_next_token_bitmask_par does, without importing that module
        # (it sets up torch.compile at import).
        rows, words = bitmask.shape
        self._executor.unsafe_compute_mask_ptr(matchers, bitmask.data_ptr(), words * 4, rows)

    def close(self) -> None:
        """Stop the worker thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
