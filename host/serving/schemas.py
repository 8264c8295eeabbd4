"""Closed objects in the JSON schemas that constrain a chat answer (``response_format`` json_schema,
tool ``parameters``).

JSON Schema leaves an object open: keys beyond ``properties`` are allowed unless
``additionalProperties`` says otherwise. OpenAI's strict mode, and xgrammar's default (vLLM's, SGLang's),
allow the declared keys only, and that is what clients mean: a client that sends a Pydantic model's
schema (instructor's JSON_SCHEMA mode, Haystack) reads exactly those fields, and a weak model left
free to invent keys may never close the object. So before a backend sees a request, every object
that lists ``properties`` and says nothing about others gets ``additionalProperties: false``:

- in a ``response_format`` json_schema: always when it is marked ``strict``, and otherwise too unless
  ``server.json_schema_objects`` is ``open`` (JSON Schema's own meaning);
- in the ``parameters`` of a tool marked ``strict``. Other tools are left as sent: their schemas are
  shown to the model in the prompt, and a backend that constrains a forced call closes its arguments
  itself (the chat plugin's grammar does).

A schema that says ``additionalProperties`` keeps what it says.
"""

from __future__ import annotations

import msgspec

from host.contract.domain import ChatRequest
from host.toolkit.json_schemas import close_objects


def with_closed_schemas(request: ChatRequest, open_objects: bool = False) -> ChatRequest:
    """``request`` with the objects of its constraining schemas closed (see the module docstring);
    ``open_objects`` leaves a response format's schema open unless it is strict."""
    output, tools = request.output, request.tools
    if output.schema is not None and (output.strict or not open_objects):
        output = msgspec.structs.replace(output, schema=close_objects(output.schema))
    if any(t.strict and t.parameters is not None for t in tools):
        tools = tuple(
            msgspec.structs.replace(t, parameters=close_objects(t.parameters))
            if t.strict and t.parameters is not None
            else t
            for t in tools
        )
    if output is request.output and tools is request.tools:
        return request
    return msgspec.structs.replace(request, output=output, tools=tools)
