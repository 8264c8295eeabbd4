"""The thinking switch and the think block on the tiny Qwen3: which way each switch renders the prompt,
reasoning split from the answer as it streams, reasoning tokens counted, a thinking budget that
closes the block, and tools and ``response_format`` constrained only after ``</think>``.

A random-weight model does not choose to think; the block tests serve the tiny Qwen3 with a chat
template that opens the block in the generation prompt (as Qwen3's Thinking-2507 models' templates
do), so that everything it writes is thinking until the budget closes the block.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import torch

from chat_qwen_awq.testing import engine_ids, greedy_generate_kwargs, qwen3_backend
from chat_qwen_awq.thinking import BUDGET_CLOSE, ThinkBlock, ThinkPlan, ThinkTokens, resolve, soft_switch
from host.contract.domain import (
    ChatDelta,
    ChatMessage,
    ChatRequest,
    OutputFormat,
    SamplingParams,
    Tool,
    ToolCall,
    ToolChoice,
)

GREEDY = SamplingParams(max_tokens=40, temperature=0, repetition_penalty=1.0)
EMPTY_BLOCK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
WEATHER = Tool(
    name="get_weather",
    description="The weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]},
)


def chat(*contents: str, **fields: Any) -> ChatRequest:
    """A request of alternating user/assistant turns (the last one the user's)."""
    n = len(contents)
    messages = tuple(ChatMessage("user" if (n - i) % 2 else "assistant", c) for i, c in enumerate(contents))
    return ChatRequest(model="m", messages=messages, sampling=fields.pop("sampling", GREEDY), **fields)


# -- the switch, pure -------------------------------------------------------------------------------
def test_soft_switch_reads_the_last_one_of_the_last_user_message() -> None:
    def last(*contents: str) -> bool | None:
        return soft_switch([ChatMessage("user" if i % 2 == 0 else "assistant", c) for i, c in enumerate(contents)])

    assert last("hi /no_think") is False and last("/think hi") is True
    assert last("hi /think, no, /no_think") is False and last("/no_think then /think") is True
    assert last("你好/no_think") is False  # after Chinese text without a space, as users write it
    assert last("hi /no_think", "ok", "and now?") is None  # only the last user message counts
    assert last("hi") is None
    for text in ("/thinking", "/no_thinking", "a/think", "path/no_think", "/think/x", "http://x/think", "__/think"):
        assert last(text) is None, text


def test_the_switch_resolves_request_then_soft_switch_then_option_then_template() -> None:
    assert resolve(chat("hi /no_think", thinking=True), "off") is True
    assert resolve(chat("hi /no_think", thinking=None), "on") is False
    assert resolve(chat("hi /think"), "off") is True
    assert resolve(chat("hi"), "off") is False and resolve(chat("hi"), "on") is True
    assert resolve(chat("hi"), False) is False and resolve(chat("hi"), True) is True  # YAML's bare off/on
    assert resolve(chat("hi"), None) is None  # the template's own default


def _tokens() -> ThinkTokens:
    return ThinkTokens(open=1, close=2, after_close=(9, 9), budget_close=(7, 7, 2, 9, 9))


def test_a_think_block_is_followed_token_by_token() -> None:
    block = ThinkBlock(ThinkPlan(tokens=_tokens()), constrained=True)
    assert block.also_allowed == (1,) and not block.grammar_paused  # <think> or the grammar's first token
    assert not block.grammar_takes(1)
    block.accept(1)
    assert block.state == "open" and block.grammar_paused and block.also_allowed == ()
    for token in (5, 6):
        assert not block.grammar_takes(token)
        block.accept(token)
    block.accept(2)  # </think>: the template's blank line is forced, then the grammar applies
    assert block.state == "done" and block.reasoning_tokens == 4 and block.grammar_paused
    assert [block.next_forced(), block.next_forced(), block.next_forced()] == [9, 9, None]
    assert not block.grammar_paused and block.grammar_takes(5)


def test_no_think_block_leaves_everything_to_the_grammar() -> None:
    block = ThinkBlock(ThinkPlan(tokens=_tokens()), constrained=True)
    assert block.grammar_takes(5)
    block.accept(5)
    assert block.state == "done" and block.reasoning_tokens == 0 and not block.forced and block.also_allowed == ()


def test_a_spent_budget_forces_the_closing_words() -> None:
    block = ThinkBlock(ThinkPlan(tokens=_tokens(), opened=True, budget=3), constrained=False)
    for token in (5, 6):
        block.accept(token)
        assert not block.forced
    block.accept(5)  # the third thinking token spends the budget
    forced = []
    while (token := block.next_forced()) is not None:
        forced.append(token)
        block.accept(token, forced=True)
    assert forced == [7, 7, 2, 9, 9]  # the closing words, </think>, the blank line; nothing added after
    assert block.state == "done" and block.reasoning_tokens == 3 + 3


# -- the switch on the tiny Qwen3 -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen3() -> Iterator[Any]:
    backend = qwen3_backend()
    yield backend
    backend.unload()


def prompt_text(backend: Any, request: ChatRequest) -> str:
    return backend._tokenizer.decode(backend.prepare(request).prompt_ids)


def test_thinking_is_the_template_default(qwen3: Any) -> None:
    assert qwen3.thinks and qwen3.think_tokens is not None
    assert prompt_text(qwen3, chat("hi")).endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert qwen3.prepare(chat("hi")).think is not None


@pytest.mark.parametrize(
    "request_",
    [chat("hi", thinking=False), chat("hi /no_think"), chat("hi /think", thinking=False)],
    ids=["request", "soft-switch", "request-over-soft-switch"],
)
def test_each_switch_turns_thinking_off(qwen3: Any, request_: ChatRequest) -> None:
    """Off: the prompt ends with the empty think block Qwen's template writes; nothing is followed."""
    assert prompt_text(qwen3, request_).endswith(EMPTY_BLOCK)
    assert qwen3.prepare(request_).think is None


def test_the_model_default_is_an_option_that_requests_override() -> None:
    off = qwen3_backend(thinking="off")
    try:
        assert prompt_text(off, chat("hi")).endswith(EMPTY_BLOCK)
        assert not prompt_text(off, chat("hi /think")).endswith(EMPTY_BLOCK)
        assert not prompt_text(off, chat("hi", thinking=True)).endswith(EMPTY_BLOCK)
    finally:
        off.unload()


def test_qwen2_5_ignores_the_switch(backend: Any) -> None:
    assert not backend.thinks and backend.think_tokens is None  # its template writes no think block
    assert backend.prepare(chat("hi /no_think", thinking=False)).think is None
    assert "<think>" not in prompt_text(backend, chat("hi", thinking=False))


def test_replayed_reasoning_is_shown_only_after_the_last_user_query(qwen3: Any) -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Beijing"}')
    messages = (
        ChatMessage("user", "first"),
        ChatMessage("assistant", "answer one", reasoning="old thoughts"),
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "", tool_calls=(call,), reasoning="I need the tool."),
        ChatMessage("tool", "sunny", tool_call_id="call_1"),
    )
    text = prompt_text(qwen3, ChatRequest(model="m", messages=messages, tools=(WEATHER,)))
    assert "old thoughts" not in text and "<|im_start|>assistant\nanswer one<|im_end|>" in text
    assert "<|im_start|>assistant\n<think>\nI need the tool.\n</think>\n\n<tool_call>" in text


# -- the think block on a model whose prompt opens it -------------------------------------------------------
@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The tiny Qwen3 with a template whose generation prompt opens the think block."""
    from chat_qwen_awq.demo import TINY_QWEN3_AWQ

    folder = tmp_path_factory.mktemp("qwen3-opened")
    for f in TINY_QWEN3_AWQ.folder().iterdir():
        shutil.copy(f, folder / f.name)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text("utf-8"))
    head, _, _ = config["chat_template"].rpartition("{%- if add_generation_prompt %}")
    config["chat_template"] = (
        head + "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n<think>\\n' }}\n{%- endif %}"
    )
    config_file.write_text(json.dumps(config), "utf-8")
    backend = qwen3_backend(str(folder), cpu_head_dtype="float32")
    yield backend
    backend.unload()


async def _complete(backend: Any, request: ChatRequest) -> list[ChatDelta]:
    return [d async for d in backend.generate(request)]


def _joined(deltas: list[ChatDelta]) -> tuple[str, str]:
    return "".join(d.reasoning for d in deltas), "".join(d.text for d in deltas)


def test_an_unclosed_block_cut_by_max_tokens_is_all_reasoning(opened: Any) -> None:
    request = chat("hello")
    assert prompt_text(opened, request).endswith("<|im_start|>assistant\n<think>\n")
    ours, last = asyncio.run(engine_ids(opened, request))
    x = torch.tensor([opened.prepare(request).prompt_ids])
    with torch.no_grad():
        out = opened.loaded.model.generate(x, max_new_tokens=40, **greedy_generate_kwargs(opened, x))
    assert ours == out[0, x.shape[1] :].tolist()  # thinking is ordinary generation: the same tokens
    deltas = asyncio.run(_complete(opened, request))
    reasoning, text = _joined(deltas)
    assert text == "" and reasoning.strip() and opened.think_tokens.close not in ours
    assert reasoning == opened.engine.tokenizer.decode(ours, skip_special_tokens=True).strip("\n")
    assert sum(bool(d.reasoning) for d in deltas) > 5  # streamed, not held to the end
    final = deltas[-1]
    assert (final.finish_reason, final.completion_tokens, final.reasoning_tokens) == ("length", 40, 40)
    assert last.reasoning_tokens == 40


def test_a_thinking_budget_closes_the_block_and_the_model_answers(opened: Any) -> None:
    tokenizer = opened.engine.tokenizer
    closing = list(opened.think_tokens.budget_close)
    request = chat("hello", thinking_budget=6, sampling=SamplingParams(max_tokens=80, temperature=0))
    free, _ = asyncio.run(engine_ids(opened, chat("hello", sampling=request.sampling)))
    ours, last = asyncio.run(engine_ids(opened, request))
    assert ours[:6] == free[:6] and ours[6 : 6 + len(closing)] == closing  # forced, then sampled again
    reasoning, text = _joined(asyncio.run(_complete(opened, request)))
    assert reasoning.endswith(BUDGET_CLOSE.split("</think>")[0].strip("\n"))
    assert text == tokenizer.decode(ours[6 + len(closing) :], skip_special_tokens=True).lstrip("\n")
    assert last.reasoning_tokens == 6 + closing.index(opened.think_tokens.close) + 1
    assert last.completion_tokens == len(ours) and last.finish_reason in ("stop", "length")


def test_the_budget_defaults_to_the_option(opened: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import msgspec

    assert opened.prepare(chat("hello")).think.budget is None
    monkeypatch.setattr(opened, "options", msgspec.structs.replace(opened.options, thinking_budget=7))
    assert opened.prepare(chat("hello")).think.budget == 7
    assert opened.prepare(chat("hello", thinking_budget=5)).think.budget == 5


def test_hostile_thinking_inputs_are_400_before_any_work(opened: Any) -> None:
    from host.contract.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as caught:
        opened.prepare(chat("hello", thinking_budget=-1))
    assert caught.value.param == "thinking_budget"
    # replayed reasoning counts against the context where the template shows it (after the last user turn)
    call = ToolCall(id="call_1", name="get_weather", arguments="{}")
    huge = ChatMessage("assistant", "", tool_calls=(call,), reasoning="think " * 5000)
    loop = (ChatMessage("user", "a"), huge, ChatMessage("tool", "sunny", tool_call_id="call_1"))
    with pytest.raises(InvalidRequest) as caught:
        opened.prepare(ChatRequest(model="m", messages=loop, tools=(WEATHER,)))
    assert caught.value.param == "messages" and caught.value.code == "context_length_exceeded"
    earlier = (
        ChatMessage("user", "a"),
        ChatMessage("assistant", "ok", reasoning="think " * 5000),
        ChatMessage("user", "b"),
    )
    assert len(opened.prepare(ChatRequest(model="m", messages=earlier)).prompt_ids) < 100  # dropped: not counted
    assert opened.prepare(chat("hello", thinking_budget=0)).think.budget == 0  # closes at once: allowed


def test_max_tokens_counts_thinking_and_may_cut_the_closing_words(opened: Any) -> None:
    deltas = asyncio.run(
        _complete(opened, chat("hello", thinking_budget=4, sampling=SamplingParams(max_tokens=10, temperature=0)))
    )
    _reasoning, text = _joined(deltas)
    assert text == "" and deltas[-1].finish_reason == "length"
    assert deltas[-1].completion_tokens == deltas[-1].reasoning_tokens == 10


def test_json_schema_applies_after_the_think_block(opened: Any) -> None:
    request = chat(
        "Plan a trip.",
        thinking_budget=5,
        output=OutputFormat(kind="json_schema", schema=SCHEMA),
        sampling=SamplingParams(max_tokens=120, temperature=0),
    )
    deltas = asyncio.run(_complete(opened, request))
    reasoning, text = _joined(deltas)
    jsonschema.validate(json.loads(text), SCHEMA)
    assert reasoning and "{" not in reasoning[:5]  # the thinking was free, not JSON
    assert deltas[-1].finish_reason == "stop" and deltas[-1].reasoning_tokens > 5


def test_a_forced_tool_call_comes_after_the_think_block(opened: Any) -> None:
    request = chat(
        "Weather in Beijing?",
        thinking_budget=5,
        tools=(WEATHER,),
        tool_choice=ToolChoice(mode="required"),
        sampling=SamplingParams(max_tokens=120, temperature=0),
    )
    deltas = asyncio.run(_complete(opened, request))
    reasoning, text = _joined(deltas)
    calls = [c for d in deltas for c in d.tool_calls]
    assert [c.name for c in calls] == ["get_weather"] and "city" in json.loads(calls[0].arguments)
    assert reasoning and text == "" and deltas[-1].finish_reason == "tool_calls"


def test_logprobs_cover_thinking_and_forced_tokens(opened: Any) -> None:
    request = chat("hello", thinking_budget=3, top_logprobs=2, sampling=SamplingParams(max_tokens=40, temperature=0))
    deltas = asyncio.run(_complete(opened, request))
    logprobs = [lp for d in deltas for lp in d.logprobs or []]
    assert len(logprobs) == deltas[-1].completion_tokens
    assert all(lp.logprob <= 0 and len(lp.top) == 2 for lp in logprobs)


def test_raw_completions_pass_the_text_through_unparsed(opened: Any) -> None:
    """``/v1/completions``: no template, no switch, no reasoning split, even inside an open block."""
    prompt = opened._tokenizer.decode(opened.prepare(chat("hello")).prompt_ids)
    request = ChatRequest(model="m", messages=(), prompt=prompt, sampling=GREEDY)
    assert opened.prepare(request).think is None
    deltas = asyncio.run(_complete(opened, request))
    reasoning, text = _joined(deltas)
    chat_reasoning, _ = _joined(asyncio.run(_complete(opened, chat("hello"))))
    assert reasoning == "" and text.strip("\n") == chat_reasoning
    assert deltas[-1].reasoning_tokens == 0


def test_the_grammar_mask_lets_a_think_block_open_first(qwen3: Any) -> None:
    """With thinking on, the first token may be ``<think>`` as well as what the grammar allows."""
    from chat_qwen_awq.sequence import Sequence

    request = chat("Plan a trip.", output=OutputFormat(kind="json_object"))
    prepared = qwen3.prepare(request)
    seq = Sequence(prepared, qwen3.engine.tokenizer, asyncio.new_event_loop())
    assert seq.also_allowed == (qwen3.think_tokens.open,)
    pending = qwen3.engine.masks.start([seq])
    logits = torch.zeros(1, qwen3.grammars.vocab_size)
    pending.apply(logits)
    allowed = set(torch.isfinite(logits[0]).nonzero().flatten().tolist())
    brace = qwen3.engine.tokenizer.convert_tokens_to_ids("{")
    assert qwen3.think_tokens.open in allowed and brace in allowed and len(allowed) < 100
    off = Sequence(
        qwen3.prepare(chat("Plan a trip.", output=request.output, thinking=False)), seq.text._tokenizer, seq.loop
    )
    pending = qwen3.engine.masks.start([off])
    logits = torch.zeros(1, qwen3.grammars.vocab_size)
    pending.apply(logits)
    assert not torch.isfinite(logits[0, qwen3.think_tokens.open])  # off: exactly the grammar, as before
    seq.loop.close()
