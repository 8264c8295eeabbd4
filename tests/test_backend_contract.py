"""Admission checks a backend class against its task's protocol (host.contract.backend.check_backend)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import msgspec
import pytest
from litestar.testing import TestClient

from host.app import create_app
from host.contract.backend import BackendContractError, check_backend
from host.contract.domain import ChatDelta, ChatRequest, EmbeddingRequest, EmbeddingResult
from host.contract.spec import Task
from host.testing.fakes import FakeBackend, FakeChatBackend, FakeEmbeddingBackend, FakePlugin, fake_spec
from host.testing.http import CHAT, EMBED, assert_error
from host.testing.pytest_plugin import CPU_ONLY, make_config


class SyncEmbed(FakeBackend):
    """``embed`` written without ``async``."""

    def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        return EmbeddingResult(vectors=[[1.0]], prompt_tokens=1)


class CoroutineGenerate(FakeBackend):
    """``generate`` as a coroutine that returns a list instead of streaming."""

    async def generate(self, request: ChatRequest) -> list[ChatDelta]:
        return [ChatDelta(finish_reason="stop")]


class NoUnload:
    """A chat backend that forgot ``unload``."""

    def __init__(self, spec: object) -> None:
        pass

    def load(self, grant: object) -> None:
        pass

    async def generate(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        yield ChatDelta(finish_reason="stop")


@pytest.mark.parametrize(
    ("cls", "task", "expected"),
    [
        (FakeEmbeddingBackend, Task.CHAT, "does not implement ChatBackend for task 'chat': missing generate()"),
        (FakeChatBackend, Task.RERANK, "missing rerank()"),
        (NoUnload, Task.CHAT, "missing unload()"),
        (SyncEmbed, Task.EMBEDDING, "EmbeddingBackend.embed() must be 'async def'"),
        (CoroutineGenerate, Task.CHAT, "ChatBackend.generate() must return an async iterator"),
    ],
)
def test_check_backend_names_the_plugin_and_what_is_missing(cls: type, task: Task, expected: str) -> None:
    with pytest.raises(BackendContractError) as info:
        check_backend(cls, task, "my-plugin")
    assert str(info.value).startswith(f"plugin 'my-plugin': backend {cls.__module__}.{cls.__qualname__}")
    assert expected in str(info.value)


@pytest.mark.parametrize(("cls", "task"), [(FakeChatBackend, Task.CHAT), (FakeEmbeddingBackend, Task.EMBEDDING)])
def test_check_backend_accepts_a_backend_of_its_task(cls: type, task: Task) -> None:
    check_backend(cls, task, "fakes")


def test_a_backend_of_the_wrong_task_fails_its_load_with_a_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    """Declared for chat, served by an embedding backend: the load fails (503), the host goes on.
    The clear error is in the log; clients only learn that the load failed (issue 12, finding 7)."""
    wrong = msgspec.structs.replace(fake_spec("mixed-up", Task.CHAT), backend="host.testing.fakes:FakeEmbeddingBackend")
    plugin = FakePlugin([wrong, fake_spec("fine", Task.EMBEDDING)], name="confused")
    with TestClient(create_app(make_config(), plugins=[plugin], budgets=CPU_ONLY)) as client:
        logging.getLogger("plughost").addHandler(caplog.handler)  # Litestar's start-up replaced root's
        try:
            r = client.post(CHAT, json={"model": "mixed-up", "messages": [{"role": "user", "content": "hi"}]})
        finally:
            logging.getLogger("plughost").removeHandler(caplog.handler)
        error = assert_error(r, 503, code="model_load_failed")
        assert "'mixed-up'" in error["message"] and "generate()" not in error["message"]
        assert "plugin 'confused'" in caplog.text and "missing generate()" in caplog.text
        assert plugin.calls.count("load") == 0  # refused before the backend was constructed
        status = client.get("/v1/models/mixed-up").json()["status"]
        assert status["state"] == "failed" and "log" in status["error"]
        assert client.post(EMBED, json={"model": "fine", "input": "x"}).status_code == 200
