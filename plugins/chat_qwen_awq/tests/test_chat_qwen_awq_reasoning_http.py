"""Reasoning through the clients people use, on the real tiny Qwen3 behind a live server: the
``openai`` SDK (Chat Completions and Responses), LangChain, and the ``anthropic`` SDK.

A random-weight model never chooses to think: the model is served with a chat template whose
generation prompt opens the think block while thinking is on and writes Qwen3's empty block when it
is off (:func:`chat_qwen_awq.testing.thinking_folder`), so everything it writes is reasoning until a
thinking budget closes the block. Which way a switch went is read from the prompt the backend
rendered (:class:`~chat_qwen_awq.testing.RecordingBackend`).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field

from chat_qwen_awq.testing import (
    EMPTY_THINK_BLOCK,
    OPEN_THINK_BLOCK,
    QWEN3_ID,
    RecordingBackend,
    RecordingPlugin,
    qwen3_config,
    thinking_folder,
)
from chat_qwen_awq.thinking import BUDGET_CLOSE
from host.app import create_app
from host.testing.pytest_plugin import CPU_ONLY
from host.testing.server import serve_in_thread

ASK = [{"role": "user", "content": "Plan a short trip."}]
#: The last words of a think block a budget closed (the reasoning text ends with them).
CLOSING_WORDS = BUDGET_CLOSE.split("</think>")[0].strip("\n")
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}},
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    RecordingBackend.instances.clear()
    folder = thinking_folder(tmp_path_factory.mktemp("qwen3") / "thinks")
    app = create_app(qwen3_config(str(folder)), plugins=[RecordingPlugin(QWEN3_ID)], budgets=CPU_ONLY)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server}/v1", api_key="dummy", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def claude(server: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server, api_key="dummy", max_retries=0, timeout=60) as c:
        yield c


def last_prompt() -> str:
    """The prompt the served backend rendered last (special tokens included)."""
    [backend] = [b for b in RecordingBackend.instances if b.engine is not None]
    return backend.prompts[-1]


def budget_tokens(budget: int) -> int:
    """The reasoning tokens of a block its budget closed: the budget, the closing words, ``</think>``."""
    [backend] = [b for b in RecordingBackend.instances if b.engine is not None]
    closing = list(backend.think_tokens.budget_close)
    return budget + closing.index(backend.think_tokens.close) + 1


# -- Chat Completions through the openai SDK ------------------------------------------------------------


def test_reasoning_content_and_reasoning_read_back_plain_and_streamed(client: OpenAI) -> None:
    kwargs: dict[str, Any] = dict(
        model=QWEN3_ID, messages=ASK, temperature=0, max_tokens=60, extra_body={"thinking_budget": 4}
    )
    reply = client.chat.completions.create(**kwargs)
    assert last_prompt().endswith(OPEN_THINK_BLOCK)
    message = reply.choices[0].message
    reasoning = message.model_extra["reasoning_content"]
    assert reasoning.endswith(CLOSING_WORDS) and message.model_extra["reasoning"] == reasoning
    assert "<think>" not in reasoning and "</think>" not in (message.content or "")
    assert reply.usage.completion_tokens_details.reasoning_tokens == budget_tokens(4)

    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    for field in ("reasoning_content", "reasoning"):
        assert "".join((d.model_extra or {}).get(field) or "" for d in deltas) == reasoning
    assert "".join(d.content or "" for d in deltas) == (message.content or "")
    assert not any(d.content and (d.model_extra or {}).get("reasoning_content") for d in deltas)
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == budget_tokens(4)


def test_a_json_schema_answer_after_thinking_validates(client: OpenAI) -> None:
    class Trip(BaseModel):
        city: str = Field(max_length=12)
        days: int = Field(ge=1, le=7)

    reply = client.chat.completions.parse(
        model=QWEN3_ID,
        messages=ASK,
        temperature=0,
        max_tokens=150,
        response_format=Trip,
        extra_body={"thinking_budget": 5},
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "stop" and isinstance(message.parsed, Trip)
    assert message.model_extra["reasoning_content"].endswith(CLOSING_WORDS)  # thought freely, then the JSON


# -- each switch turns thinking off ------------------------------------------------------------------------


def _chat(client: OpenAI, **kwargs: Any) -> tuple[str | None, int]:
    """Reasoning and reasoning tokens of a short Chat Completions answer."""
    kwargs.setdefault("messages", ASK)
    kwargs.setdefault("max_tokens", 8)
    reply = client.chat.completions.create(model=QWEN3_ID, **kwargs)
    reasoning = reply.choices[0].message.model_extra.get("reasoning_content")
    return reasoning, reply.usage.completion_tokens_details.reasoning_tokens


def _responses(client: OpenAI, **kwargs: Any) -> tuple[str | None, int]:
    r = client.responses.create(model=QWEN3_ID, input="Plan a short trip.", max_output_tokens=8, **kwargs)
    texts = [p.text for item in r.output if item.type == "reasoning" for p in item.content or ()]
    return "".join(texts) or None, r.usage.output_tokens_details.reasoning_tokens


SWITCHES: dict[str, Callable[[OpenAI, anthropic.Anthropic], tuple[str | None, int]]] = {
    "chat_template_kwargs": lambda c, _: _chat(c, extra_body={"chat_template_kwargs": {"enable_thinking": False}}),
    "enable_thinking": lambda c, _: _chat(c, extra_body={"enable_thinking": False}),
    "reasoning_effort-none": lambda c, _: _chat(c, reasoning_effort="none"),
    "reasoning_effort-minimal": lambda c, _: _chat(c, reasoning_effort="minimal"),
    "soft-switch": lambda c, _: _chat(c, messages=[{"role": "user", "content": "Plan a short trip. /no_think"}]),
    "responses-reasoning.effort": lambda c, _: _responses(c, reasoning={"effort": "none"}),
    "messages-thinking-disabled": lambda _, a: _messages_off(a),
}


def _messages_off(claude: anthropic.Anthropic) -> tuple[str | None, int]:
    m = claude.messages.create(model=QWEN3_ID, max_tokens=8, messages=ASK, thinking={"type": "disabled"})  # type: ignore[arg-type]
    thinking = [b.thinking for b in m.content if b.type == "thinking"]
    return "".join(thinking) or None, 0


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_each_switch_turns_thinking_off(client: OpenAI, claude: anthropic.Anthropic, switch: str) -> None:
    """Off: the prompt ends with the empty think block Qwen's template writes; no reasoning comes back."""
    _chat(client)
    assert last_prompt().endswith(OPEN_THINK_BLOCK)  # on unless switched off
    reasoning, tokens = SWITCHES[switch](client, claude)
    assert last_prompt().endswith(EMPTY_THINK_BLOCK)
    assert (reasoning, tokens) == (None, 0)


# -- LangChain ---------------------------------------------------------------------------------------------


def test_langchain_reads_the_reasoning_and_switches_it_off(server: str, client: OpenAI) -> None:
    """``ChatOpenAI`` keeps to OpenAI's own fields (it drops ``reasoning_content``, as its docs say):
    ``ChatDeepSeek`` (langchain-deepseek, the same client) puts it in ``additional_kwargs``, plain
    and streamed; a switch reaches the server from either through ``extra_body``."""
    from langchain_deepseek import ChatDeepSeek
    from langchain_openai import ChatOpenAI

    budget = {"thinking_budget": 4}
    expected = _chat(client, max_tokens=40, temperature=0, extra_body=budget)[0]
    llm = ChatDeepSeek(
        model=QWEN3_ID, api_base=f"{server}/v1", api_key="dummy", temperature=0, max_tokens=40, extra_body=budget
    )
    reply = llm.invoke("Plan a short trip.")
    assert reply.additional_kwargs["reasoning_content"] == expected and expected
    streamed = "".join(c.additional_kwargs.get("reasoning_content", "") for c in llm.stream("Plan a short trip."))
    assert streamed == expected

    off = ChatOpenAI(
        model=QWEN3_ID,
        base_url=f"{server}/v1",
        api_key="dummy",
        max_tokens=8,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    off.invoke("Plan a short trip.")
    assert last_prompt().endswith(EMPTY_THINK_BLOCK)
    ChatOpenAI(model=QWEN3_ID, base_url=f"{server}/v1", api_key="dummy", max_tokens=8, reasoning_effort="none").invoke(
        "Plan a short trip."
    )
    assert last_prompt().endswith(EMPTY_THINK_BLOCK)


# -- Responses through the openai SDK ------------------------------------------------------------------------


def test_responses_reasoning_items_plain_streamed_and_replayed(client: OpenAI) -> None:
    kwargs: dict[str, Any] = dict(
        model=QWEN3_ID,
        input="Weather in Paris?",
        temperature=0,
        max_output_tokens=120,
        tools=[{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": True}],
        tool_choice="required",
        extra_body={"thinking_budget": 4},
    )
    first = client.responses.create(**kwargs)
    reasoning, call = first.output
    assert reasoning.type == "reasoning" and reasoning.status == "completed" and reasoning.summary == []
    text = reasoning.content[0].text
    assert text.endswith(CLOSING_WORDS) and call.type == "function_call" and call.name == "get_weather"
    assert first.usage.output_tokens_details.reasoning_tokens == budget_tokens(4)

    with client.responses.stream(**kwargs) as stream:
        deltas = [e.delta for e in stream if e.type == "response.reasoning_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == text and final.output[0].content[0].text == text
    assert final.output[1].arguments == call.arguments

    # The Agents SDK's loop: the output items go back as input with the call's result.
    replay = [item.model_dump(exclude_none=True) for item in first.output]
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    client.responses.create(**{**kwargs, "input": [{"role": "user", "content": "Weather in Paris?"}, *replay, result]})
    assert f"<|im_start|>assistant\n<think>\n{text}\n</think>\n\n<tool_call>" in last_prompt()


def test_the_agents_sdk_parses_reasoning_items_and_sends_them_back(server: str) -> None:
    """The OpenAI Agents SDK (its own venv) runs its agents on the thinking model: every turn's
    reasoning item parsed, streamed, and replayed with the forced call when the tool's result goes
    back (the prompt of the last turn shows it, as Qwen3's template shows reasoning in a tool loop)."""
    python = Path(__file__).resolve().parents[3] / ".venv-agents" / "bin" / "python"
    if not python.exists():
        pytest.skip(".venv-agents is missing: scripts/bootstrap makes it (the OpenAI Agents SDK)")
    env = {
        **os.environ,
        "PLUGHOST_URL": f"{server}/v1",
        "PLUGHOST_KEY": "dummy",
        "PLUGHOST_MODEL": QWEN3_ID,
        "PLUGHOST_EXTRA_BODY": json.dumps({"thinking_budget": 4}),
        "PLUGHOST_MAX_TOKENS": "200",
    }
    script = Path(__file__).with_name("agents_sdk_run.py")
    done = subprocess.run([str(python), str(script)], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["tool_output_sent"] and report["reasoning_items"] == 2  # the call's turn, the answer's
    assert report["streamed_structured"]["city"] in ("Paris", "Oslo")
    replayed = last_prompt().rsplit("<|im_start|>user\n<tool_response>", 1)[0]
    assert replayed.endswith("</tool_call><|im_end|>\n") and f"\n{CLOSING_WORDS}\n</think>\n\n<tool_call>" in replayed


# -- Messages through the anthropic SDK -------------------------------------------------------------------------


def test_messages_thinking_blocks_plain_streamed_and_replayed(claude: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = dict(
        model=QWEN3_ID,
        max_tokens=120,
        extra_body={"temperature": 0},  # the SDK has no temperature argument any more
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        thinking={"type": "enabled", "budget_tokens": 4},
        tools=[{"name": "get_weather", "input_schema": WEATHER}],
        tool_choice={"type": "any"},
    )
    first = claude.messages.create(**kwargs)
    thinking, call = first.content
    assert thinking.type == "thinking" and thinking.thinking.endswith(CLOSING_WORDS) and thinking.signature
    assert call.type == "tool_use" and first.stop_reason == "tool_use"

    with claude.messages.stream(**kwargs) as stream:
        pieces = [e.thinking for e in stream if e.type == "thinking"]
        final = stream.get_final_message()
    assert "".join(pieces) == thinking.thinking
    assert final.content[0].model_dump() == thinking.model_dump()
    assert final.content[1].input == call.input  # type: ignore[union-attr]

    # Claude Code's loop: the assistant turn goes back as it came, the tool's result after it.
    turns = [
        *kwargs["messages"],
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},  # type: ignore[union-attr]
    ]
    claude.messages.create(**{**kwargs, "messages": turns, "tool_choice": {"type": "auto"}})
    assert f"<|im_start|>assistant\n<think>\n{thinking.thinking}\n</think>\n\n<tool_call>" in last_prompt()


def test_the_thinking_budget_is_a_400_naming_each_dialects_field(client: OpenAI, claude: anthropic.Anthropic) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        _chat(client, extra_body={"thinking_budget": -1})
    assert caught.value.body["param"] == "thinking_budget"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model=QWEN3_ID, max_tokens=8, messages=ASK, thinking={"type": "enabled", "budget_tokens": -1}
        )
    assert "thinking.budget_tokens" in str(refused.value)
