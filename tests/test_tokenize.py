"""``POST /tokenize`` and ``/detokenize`` in vLLM's shapes, on the three plugins' tiny demo models
(each tokenises with its own model's tokenizer) and on a fake model without the capability."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from transformers import AutoTokenizer

import chat_qwen_awq
import embed_qwen3
import rerank_qwen3
from host.app import create_app
from host.testing.fakes import FakePlugin
from host.testing.http import assert_error
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread

CHAT, EMBED, RERANK = chat_qwen_awq.MODEL_ID, embed_qwen3.MODEL_ID, rerank_qwen3.MODEL_ID
TEXT = "Hello, 世界! <|im_end|>"
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    from chat_qwen_awq.testing import TINY as CHAT_TINY
    from embed_qwen3.testing import TINY as EMBED_TINY
    from rerank_qwen3.testing import TINY as RERANK_TINY

    models = {CHAT: {"weights": CHAT_TINY}, EMBED: {"weights": EMBED_TINY}, RERANK: {"weights": RERANK_TINY}}
    config = make_config({"models": models, "scheduler": {"max_resident_per_task": 1}})
    plugins = [chat_qwen_awq, embed_qwen3, rerank_qwen3, FakePlugin()]
    with serve_in_thread(create_app(config, plugins=plugins, budgets=CPU_ONLY)) as url:
        yield url


def post(base_url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base_url}{path}", json=body, timeout=120)


@pytest.mark.parametrize("plugin", [chat_qwen_awq, embed_qwen3, rerank_qwen3])
def test_a_prompt_is_tokenised_by_the_models_own_tokenizer(base_url: str, plugin: Any) -> None:
    from importlib import import_module

    demo = import_module(f"{plugin.__name__}.demo")
    tiny = demo.TINY_AWQ if plugin is chat_qwen_awq else demo.TINY
    tokenizer = AutoTokenizer.from_pretrained(str(tiny.folder()))
    model = plugin.MODEL_ID
    r = post(base_url, "/tokenize", {"model": model, "prompt": TEXT, "return_token_strs": True})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = tokenizer.encode(TEXT)  # add_special_tokens defaults to true for a prompt
    assert body["tokens"] == expected and body["count"] == len(expected)
    assert body["token_strs"] == tokenizer.convert_ids_to_tokens(expected)
    cards = httpx.get(f"{base_url}/v1/models/{model}", timeout=60).json()
    assert body["max_model_len"] == cards["max_model_len"] and body["max_model_len"] > 0
    plain = post(base_url, "/tokenize", {"model": model, "prompt": TEXT, "add_special_tokens": False}).json()
    assert plain["tokens"] == tokenizer.encode(TEXT, add_special_tokens=False) and plain["token_strs"] is None
    back = post(base_url, "/detokenize", {"model": model, "tokens": plain["tokens"]})
    assert back.status_code == 200 and back.json() == {"prompt": TEXT}


def test_chat_messages_are_the_prompt_a_chat_request_gets(base_url: str) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}]
    r = post(base_url, "/tokenize", {"model": CHAT, "messages": messages, "tools": [TOOL]})
    assert r.status_code == 200, r.text
    ids = r.json()["tokens"]
    # The same count the chat route reports as the prompt's usage.
    chat = post(
        base_url, "/v1/chat/completions", {"model": CHAT, "messages": messages, "tools": [TOOL], "max_tokens": 1}
    )
    assert chat.json()["usage"]["prompt_tokens"] == len(ids)
    text = post(base_url, "/detokenize", {"model": CHAT, "tokens": ids}).json()["prompt"]
    assert "<tools>" in text and text.endswith("<|im_start|>assistant\n")
    bare = post(base_url, "/tokenize", {"model": CHAT, "messages": messages, "add_generation_prompt": False}).json()
    text = post(base_url, "/detokenize", {"model": CHAT, "tokens": bare["tokens"]}).json()["prompt"]
    assert "<tools>" not in text and not text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/tokenize", {"model": "fake-chat", "prompt": "x"}, "model"),  # no tokenizer to expose
        ("/tokenize", {"model": CHAT}, "prompt"),
        ("/tokenize", {"model": CHAT, "prompt": "x", "messages": [{"role": "user", "content": "x"}]}, "prompt"),
        ("/tokenize", {"model": CHAT, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ("/tokenize", {"model": "nope", "prompt": "x"}, "model"),
        ("/tokenize", {"model": CHAT, "messages": []}, "messages"),
        ("/tokenize", {"model": CHAT, "prompt": "word " * 20_000}, "prompt"),  # over 4 contexts (2048 tokens)
        ("/detokenize", {"model": CHAT, "tokens": [10**9]}, "tokens"),
        ("/detokenize", {"model": CHAT, "tokens": [10**30]}, "tokens"),  # past int64: msgspec names the list
        ("/detokenize", {"model": CHAT, "tokens": [-1]}, "tokens[0]"),
        ("/detokenize", {"model": CHAT, "tokens": "12"}, "tokens"),
    ],
)
def test_mistakes_are_400s_naming_the_field(base_url: str, path: str, body: dict[str, Any], param: str) -> None:
    r = post(base_url, path, body)
    assert_error(r, 404 if body["model"] == "nope" else 400, param=param)
