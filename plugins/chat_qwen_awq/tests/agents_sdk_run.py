"""Run the OpenAI Agents SDK against plughost's ``/v1/responses`` (its default model is a Responses one).

Started by ``test_chat_qwen_awq_responses.py`` with the interpreter of ``.venv-agents`` (the SDK's
pins conflict with the project's), against a server of the tiny random-weight model: the texts
mean nothing; the SDK must parse every answer, run the tool the model was forced to call, send its
result back, and parse a structured output. Prints one JSON line for the test to check.

Also started by ``test_chat_qwen_awq_reasoning_http.py`` against a thinking model: the SDK must parse
its reasoning items too and send them back with the tool's result.

Environment: ``PLUGHOST_URL`` (``.../v1``), ``PLUGHOST_KEY``, ``PLUGHOST_MODEL``; optionally
``PLUGHOST_EXTRA_BODY`` (JSON: extra request fields, such as a thinking budget) and
``PLUGHOST_MAX_TOKENS`` (of the forced turn, default 80: a thinking model needs room for its block).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated, Literal

from agents import (
    Agent,
    ModelSettings,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.items import ReasoningItem, ToolCallItem, ToolCallOutputItem
from openai import AsyncOpenAI
from pydantic import BaseModel, Field

MODEL = os.environ["PLUGHOST_MODEL"]
EXTRA_BODY = json.loads(os.environ.get("PLUGHOST_EXTRA_BODY", "null"))
MAX_TOKENS = int(os.environ.get("PLUGHOST_MAX_TOKENS", "80"))
calls: list[dict[str, object]] = []


class Forecast(BaseModel):
    city: Literal["Paris", "Oslo"]
    days: int = Field(ge=1, le=7)


@function_tool
def get_weather(
    city: Literal["Paris", "Oslo"], unit: Literal["celsius", "fahrenheit"], days: Annotated[int, Field(ge=1, le=7)]
) -> str:
    """The weather in a city (bounded arguments: a random model fills a free string to its budget).

    Args:
        city: the city.
        unit: the temperature unit.
        days: how many days ahead.
    """
    calls.append({"city": city, "unit": unit, "days": days})
    return json.dumps({"temperature": 21, "unit": unit})


async def main() -> dict[str, object]:
    set_tracing_disabled(True)  # no trace export to api.openai.com
    set_default_openai_api("responses")  # the SDK's default, said out loud
    set_default_openai_client(
        AsyncOpenAI(base_url=os.environ["PLUGHOST_URL"], api_key=os.environ["PLUGHOST_KEY"], max_retries=0)
    )
    structured = await Runner.run(
        Agent(
            name="forecast",
            model=MODEL,
            output_type=Forecast,
            model_settings=ModelSettings(temperature=0, extra_body=EXTRA_BODY),
        ),
        "Forecast for Paris.",
    )
    assert isinstance(structured.final_output, Forecast), structured.final_output

    # A forced call on the first turn (text.format is sent too: the agent has an output type), the
    # tool run by the SDK, its result sent back as a function_call_output, a structured answer.
    forced = ModelSettings(temperature=0, max_tokens=MAX_TOKENS, tool_choice="get_weather", extra_body=EXTRA_BODY)
    weather = Agent(name="weather", model=MODEL, tools=[get_weather], output_type=Forecast, model_settings=forced)
    streamed = Runner.run_streamed(weather, "What is the weather in Paris for the next 3 days?", max_turns=3)
    events = 0
    async for _ in streamed.stream_events():
        events += 1
    assert calls, "the forced tool was not run"
    [call] = [i for i in streamed.new_items if isinstance(i, ToolCallItem)]
    outputs = [i for i in streamed.new_items if isinstance(i, ToolCallOutputItem)]
    assert isinstance(streamed.final_output, Forecast), streamed.final_output
    return {
        "structured": structured.final_output.model_dump(),
        "tool_arguments": json.loads(call.raw_item.arguments),
        "tool_output_sent": bool(outputs),
        "streamed_events": events,
        "streamed_structured": streamed.final_output.model_dump(),
        "reasoning_items": sum(isinstance(i, ReasoningItem) for i in streamed.new_items),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
