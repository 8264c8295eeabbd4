"""The reasoning parser: ``<think>…</think>`` split from the answer, whole and streamed in any chunks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from chat_qwen_awq.reasoning import ReasoningParser, with_reasoning
from chat_qwen_awq.tools import with_tool_calls
from host.contract.domain import ChatDelta

THOUGHT = "The user greets me.\nI should greet back, briefly."
ANSWER = "Hello! How can I help you today?"
#: What Qwen3 writes when it thinks: the block, a blank line, the answer.
OUTPUT = f"<think>\n{THOUGHT}\n</think>\n\n{ANSWER}"


def split(text: str, chunks: list[int] | None = None, *, open_block: bool = False) -> tuple[str, str]:
    """(reasoning, answer) of ``text`` fed in pieces of the given sizes (whole when ``None``)."""
    parser = ReasoningParser(open_block=open_block)
    pieces, at = [], 0
    for size in chunks or [len(text)]:
        pieces.append(text[at : at + size])
        at += size
    pieces.append(text[at:])
    reasoning, answer = "", ""
    for piece in pieces:
        out = parser.feed(piece)
        reasoning, answer = reasoning + out.reasoning, answer + out.text
    rest = parser.flush()
    return reasoning + rest.reasoning, answer + rest.text


def test_whole_output_splits_into_reasoning_and_answer() -> None:
    assert split(OUTPUT) == (THOUGHT, ANSWER)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_streamed_in_chunks_of_any_size(size: int) -> None:
    assert split(OUTPUT, [size] * (len(OUTPUT) // size)) == (THOUGHT, ANSWER)


@pytest.mark.parametrize("tag", ["<think>", "</think>"])
def test_a_tag_split_across_chunks_is_found(tag: str) -> None:
    at = OUTPUT.index(tag)
    for cut in range(1, len(tag)):
        assert split(OUTPUT, [at + cut]) == (THOUGHT, ANSWER), (tag, cut)


def test_no_reasoning_is_released_before_the_tag_decides() -> None:
    held = ReasoningParser().feed("  <thi")  # still a prefix of <think>
    assert (held.reasoning, held.text) == ("", "")
    parser = ReasoningParser()
    first = parser.feed("<think>\nabc</thi")
    assert (first.reasoning, first.text) == ("abc", "")  # "</thi" is held back
    second = parser.feed("nk>\n\nok")
    assert (second.reasoning, second.text) == ("", "ok")


def test_output_without_a_think_block_is_all_answer() -> None:
    assert split(ANSWER) == ("", ANSWER)
    assert split("<thx>" + ANSWER) == ("", "<thx>" + ANSWER)
    assert split("<thi") == ("", "<thi")  # a would-be tag that never completes is text
    assert split("") == ("", "")


def test_a_think_tag_later_in_the_answer_is_text() -> None:
    text = "Use <think> tags like <think>this</think>."
    assert split(text) == ("", text)
    # after the block, another one is text too
    assert split("<think>a</think>\n\nb <think>c</think>") == ("a", "b <think>c</think>")


def test_an_empty_think_block_gives_no_reasoning() -> None:
    assert split(f"<think>\n\n</think>\n\n{ANSWER}") == ("", ANSWER)


def test_an_unclosed_block_cut_by_max_tokens_is_all_reasoning() -> None:
    assert split("<think>\nStep one.\nStep two.\n") == ("Step one.\nStep two.", "")
    assert split("<think>\nStep one.</th", [9, 4]) == ("Step one.</th", "")


def test_a_block_opened_by_the_prompt() -> None:
    """Templates that write ``<think>`` into the generation prompt: the output starts inside the block."""
    assert split(f"{THOUGHT}\n</think>\n\n{ANSWER}", open_block=True) == (THOUGHT, ANSWER)
    assert split(ANSWER, open_block=True) == (ANSWER, "")  # never closed: all reasoning


def test_newlines_inside_the_reasoning_and_the_answer_are_kept() -> None:
    text = "<think>\n\na\n\nb\n\n</think>\n\nx\n\ny\n"
    assert split(text, [1] * len(text)) == ("a\n\nb", "x\n\ny\n")


async def _deltas(pieces: list[str], finish: str = "stop") -> AsyncIterator[ChatDelta]:
    for piece in pieces:
        yield ChatDelta(text=piece)
    yield ChatDelta(finish_reason=finish, prompt_tokens=3, completion_tokens=len(pieces), reasoning_tokens=2)


async def _collect(deltas: AsyncIterator[ChatDelta]) -> list[ChatDelta]:
    return [d async for d in deltas]


def test_with_reasoning_streams_deltas_and_keeps_the_counts() -> None:
    pieces = [OUTPUT[i : i + 4] for i in range(0, len(OUTPUT), 4)]
    out = asyncio.run(_collect(with_reasoning(_deltas(pieces))))
    assert len(out) == len(pieces) + 1
    assert "".join(d.reasoning for d in out) == THOUGHT and "".join(d.text for d in out) == ANSWER
    # reasoning streams before the answer starts
    first_text = next(i for i, d in enumerate(out) if d.text)
    assert all(not d.reasoning for d in out[first_text:]) and any(d.reasoning for d in out[:first_text])
    last = out[-1]
    expected = ("stop", 3, len(pieces), 2)
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens, last.reasoning_tokens) == expected


def test_tool_calls_after_thinking_are_parsed_and_calls_in_the_thinking_are_not() -> None:
    call = {"name": "get_weather", "arguments": {"city": "Beijing"}}
    thought = 'Maybe <tool_call>\n{"name": "not_this"}\n</tool_call> is wrong; I will call the tool.'
    output = f"<think>\n{thought}\n</think>\n\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
    pieces = [output[i : i + 3] for i in range(0, len(output), 3)]
    out = asyncio.run(_collect(with_tool_calls(with_reasoning(_deltas(pieces)))))
    calls = [c for d in out for c in d.tool_calls]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Beijing"})]
    assert "".join(d.reasoning for d in out) == thought
    assert "".join(d.text for d in out) == ""
    assert out[-1].finish_reason == "tool_calls"


def test_answer_text_and_a_call_after_thinking() -> None:
    output = '<think>\nok\n</think>\n\nLet me check.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
    out = asyncio.run(_collect(with_tool_calls(with_reasoning(_deltas([output])))))
    assert "".join(d.reasoning for d in out) == "ok"
    assert "".join(d.text for d in out) == "Let me check."
    assert [c.name for d in out for c in d.tool_calls] == ["f"]
