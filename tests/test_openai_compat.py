"""The official ``openai`` Python SDK against plughost on a real socket (fake backends).

This is what users run (seed-api.md, "OpenAI SDK兼容"): if the SDK cannot parse a response,
the host is not OpenAI-compatible, however correct its JSON looks to us.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator

import msgspec
import numpy as np
import openai
import pytest
from openai import OpenAI

from host.app import create_app
from host.contract.domain import ChatDelta, ChatRequest
from host.contract.errors import InvalidRequest
from host.contract.spec import Task
from host.testing.fakes import FakeBackend, FakePlugin, fake_spec
from host.testing.pytest_plugin import CPU_ONLY, make_config
from host.testing.server import serve_in_thread


def sdk(base_url: str) -> OpenAI:
    # No retries: an error must surface at once, not after the SDK's back-off.
    return OpenAI(base_url=f"{base_url}/v1", api_key="dummy", max_retries=0, timeout=30)


@pytest.fixture
def client(plughost_server: str) -> Iterator[OpenAI]:
    with sdk(plughost_server) as c:
        yield c


def test_chat_completion(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model="fake-chat", messages=[{"role": "user", "content": "你好 世界"}], temperature=0.7, max_tokens=1024
    )
    assert response.object == "chat.completion"
    assert response.model == "fake-chat"
    assert response.id.startswith("chatcmpl-")
    choice = response.choices[0]
    assert (choice.index, choice.message.role, choice.finish_reason) == (0, "assistant", "stop")
    assert choice.message.content == "echo: 你好 世界"
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_chat_completion_with_n(client: OpenAI) -> None:
    response = client.chat.completions.create(model="fake-chat", n=2, messages=[{"role": "user", "content": "x"}])
    assert [c.index for c in response.choices] == [0, 1]


def test_chat_stream_with_usage(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fake-chat",
        messages=[{"role": "user", "content": "stream these words"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream these words"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    final = chunks[-1]
    assert final.choices == []
    assert final.usage is not None
    assert final.usage.completion_tokens == 4
    assert final.usage.total_tokens == final.usage.prompt_tokens + 4
    assert all(c.usage is None for c in chunks[:-1])


def test_embeddings_default_base64_equals_float(client: OpenAI) -> None:
    texts = ["文本向量化测试", "second text"]
    default = client.embeddings.create(model="fake-embed", input=texts)  # the SDK asks for base64 itself
    floats = client.embeddings.create(model="fake-embed", input=texts, encoding_format="float")
    assert default.model == floats.model == "fake-embed"
    assert [d.index for d in default.data] == [0, 1]
    for a, b in zip(default.data, floats.data, strict=True):
        assert isinstance(a.embedding, list) and len(a.embedding) == 8
        np.testing.assert_array_equal(
            np.asarray(a.embedding, dtype=np.float32), np.asarray(b.embedding, dtype=np.float32)
        )
    assert default.usage.total_tokens == floats.usage.total_tokens


def test_embeddings_raw_base64_is_little_endian_float32(client: OpenAI) -> None:
    raw = client.embeddings.create(model="fake-embed", input="x", encoding_format="base64")
    floats = client.embeddings.create(model="fake-embed", input="x", encoding_format="float")
    encoded = raw.data[0].embedding
    assert isinstance(encoded, str)  # an explicit base64 request is returned undecoded
    np.testing.assert_array_equal(
        np.frombuffer(base64.b64decode(encoded), dtype="<f4"), np.asarray(floats.data[0].embedding, dtype=np.float32)
    )


def test_embeddings_of_token_ids(client: OpenAI) -> None:
    response = client.embeddings.create(model="fake-embed", input=[[1, 2, 3], [4, 5]])
    assert len(response.data) == 2


def test_models_list_and_retrieve(client: OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"fake-chat", "fake-embed", "fake-rerank"}
    assert models["fake-chat"].object == "model"
    assert models["fake-chat"].owned_by == "fakes"
    assert models["fake-embed"].model_extra["task"] == "embedding"  # plughost's extra fields survive parsing
    assert client.models.retrieve("fake-rerank").id == "fake-rerank"


def test_unknown_model_is_not_found_error(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404
    assert err.value.code == "model_not_found"
    assert err.value.param == "model"
    assert "The model 'gpt-5' does not exist" in err.value.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-5")


def test_bad_request_error_carries_our_message(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert err.value.param == "temperature"
    assert err.value.type == "invalid_request_error"
    assert "temperature" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="fake-chat", input="x")
    assert err.value.code == "model_task_mismatch"
    with pytest.raises(openai.BadRequestError) as err:
        # (n > 1 with stream is served since issue 13; a stray top_logprobs is still a 400 before any SSE.)
        client.chat.completions.create(
            model="fake-chat", stream=True, top_logprobs=2, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.param == "top_logprobs"


class StreamThenFail(FakeBackend):
    """Streams one word, then rejects the request as a real backend might mid-generation."""

    async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        yield ChatDelta(text="partial")
        raise InvalidRequest("The conversation grew past the context window.", param="messages")


def test_error_mid_stream_raises_in_the_sdk() -> None:
    failing = msgspec.structs.replace(fake_spec("fails-late", Task.CHAT), backend=f"{__name__}:StreamThenFail")
    app_plugin = FakePlugin([failing])
    with serve_in_thread(create_app(make_config(), plugins=[app_plugin], budgets=CPU_ONLY)) as url, sdk(url) as c:
        stream = c.chat.completions.create(model="fails-late", messages=[{"role": "user", "content": "x"}], stream=True)
        received: list[str] = []
        with pytest.raises(openai.APIError) as err:
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
        assert "".join(received) == "partial"
        assert err.value.message == "The conversation grew past the context window."
        assert err.value.param == "messages"
