"""``POST /v1/completions`` through the official ``openai`` SDK and raw HTTP (fake echo backend).

The fake echoes the prompt word by word (``"echo: <prompt>"``), so texts and counts are exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from litestar.testing import TestClient
from openai import OpenAI

from host.testing.fakes import FakePlugin


@pytest.fixture
def client(plughost_server: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{plughost_server}/v1", api_key="dummy", max_retries=0, timeout=30) as c:
        yield c


def test_a_string_prompt(client: OpenAI) -> None:
    r = client.completions.create(model="fake-chat", prompt="one two three", max_tokens=50)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    [choice] = r.choices
    assert (choice.index, choice.text, choice.finish_reason) == (0, "echo: one two three", "stop")
    assert choice.logprobs is None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 4, 7)


def test_a_list_of_prompts_times_n_gives_one_choice_set_per_prompt(client: OpenAI) -> None:
    r = client.completions.create(model="fake-chat", prompt=["a b", "c d e"], n=2, max_tokens=50)
    assert [(c.index, c.text) for c in r.choices] == [
        (0, "echo: a b"),
        (1, "echo: a b"),
        (2, "echo: c d e"),
        (3, "echo: c d e"),
    ]
    assert r.usage.prompt_tokens == 2 + 3  # each prompt counted once
    assert r.usage.completion_tokens == 3 + 3 + 4 + 4


def test_max_tokens_defaults_to_16_and_cuts_with_length(client: OpenAI) -> None:
    words = " ".join(f"w{i}" for i in range(30))
    r = client.completions.create(model="fake-chat", prompt=words)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 16
    r = client.completions.create(model="fake-chat", prompt=words, max_tokens=3)
    assert (r.choices[0].text, r.choices[0].finish_reason) == ("echo: w0 w1", "length")


def test_stop_and_echo(client: OpenAI) -> None:
    r = client.completions.create(model="fake-chat", prompt="alpha beta gamma", stop=[" gamma"], echo=True)
    assert r.choices[0].text == "alpha beta gamma" + "echo: alpha beta"
    assert r.choices[0].finish_reason == "stop"


def test_stream_with_echo_n_and_usage(client: OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model="fake-chat", prompt=["x y", "z"], n=2, echo=True, stream=True, stream_options={"include_usage": True}
        )
    )
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    for c in chunks[:-1]:
        [choice] = c.choices
        texts[choice.index] = texts.get(choice.index, "") + choice.text
        if choice.finish_reason:
            finish[choice.index] = choice.finish_reason
    assert texts == {0: "x yecho: x y", 1: "x yecho: x y", 2: "zecho: z", 3: "zecho: z"}
    assert finish == dict.fromkeys(range(4), "stop")
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 3
    assert chunks[-1].usage.completion_tokens == 3 + 3 + 2 + 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": ["ok", ""]}, "prompt[1]"),
        ({"prompt": [1, 2, 3]}, "prompt[0]"),  # token-id prompts are not accepted
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": "x", "echo": True, "logprobs": 1}, "echo"),
        ({"prompt": "x", "logprobs": 21}, "logprobs"),
        ({"prompt": "x", "best_of": 3}, "best_of"),
        ({"prompt": "x", "stop": [""]}, "stop[0]"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({}, "prompt"),
    ],
)
def test_bad_fields_are_400_naming_them(plughost_client: TestClient, body: dict[str, Any], param: str) -> None:
    r = plughost_client.post("/v1/completions", json={"model": "fake-chat", **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_unknown_model_and_wrong_task(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="fake-embed", prompt="x")
    assert caught.value.code == "model_task_mismatch"


def test_the_backend_gets_a_raw_prompt_and_no_messages(plughost_client: TestClient, fake_plugin: FakePlugin) -> None:
    r = plughost_client.post("/v1/completions", json={"model": "fake-chat", "prompt": "raw text", "seed": 4, "n": 2})
    assert r.status_code == 200, r.text
    requests = fake_plugin.calls.of("generate")
    assert [(q.prompt, q.messages, q.sampling.seed) for q in requests] == [("raw text", (), 4), ("raw text", (), 5)]
    assert json.loads(r.text)["choices"][1]["index"] == 1
