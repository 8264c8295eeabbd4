"""Chat messages (tools and tool history included) → prompt ids, through the model's own chat template.

Qwen2.5's and Qwen3's templates render the tools into the system turn, an assistant turn's calls as
``<tool_call>`` blocks and ``tool`` results as ``<tool_response>`` inside a user turn; they read a
call's ``arguments`` as an object (serialised with ``tojson``), so the JSON text of the wire is
parsed back here. Qwen3's also reads an assistant turn's ``reasoning_content`` (shown again only
after the last user query) and the ``enable_thinking`` switch; other templates ignore both.
"""

from __future__ import annotations

import json
from typing import Any

from host.sdk import ChatMessage, ChatRequest, InvalidRequest, Tool

ROLES = ("system", "user", "assistant", "tool")


def template_message(index: int, m: ChatMessage) -> dict[str, Any]:
    """One message as the chat template reads it."""
    if m.role not in ROLES:
        raise InvalidRequest(
            f"role '{m.role}' is not supported; use one of {', '.join(ROLES)}.", param=f"messages[{index}].role"
        )
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.reasoning is not None and m.role == "assistant":
        out["reasoning_content"] = m.reasoning
    return out


def _arguments(text: str) -> Any:
    """A replayed call's arguments as the template reads them: the parsed JSON, else the text as it is."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def template_tool(tool: Tool) -> dict[str, Any]:
    """A tool as the template lists it: the whole ``{"type": "function", "function": {...}}`` object."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = tool.parameters or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def render_messages(tokenizer: Any, request: ChatRequest, thinking: bool | None = None) -> list[int]:
    """Prompt ids of ``request``'s conversation; tools are shown unless ``tool_choice`` is "none";
    ``thinking`` (unless ``None``) is the template's ``enable_thinking``."""
    from jinja2 import TemplateError

    messages = [template_message(i, m) for i, m in enumerate(request.messages)]
    tools = [template_tool(t) for t in request.tools] if request.tool_choice.mode != "none" else None
    switch = {} if thinking is None else {"enable_thinking": thinking}
    try:
        ids = tokenizer.apply_chat_template(
            messages, tools=tools or None, add_generation_prompt=True, tokenize=True, **switch
        )
    except TemplateError as exc:
        raise InvalidRequest(
            f"The messages cannot be rendered with the model's chat template: {exc}", param="messages"
        ) from None
    return [int(t) for t in ids]
