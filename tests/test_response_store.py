"""The stored responses of ``/v1/responses``: bounded by count, size and age, visible per key."""

from __future__ import annotations

import msgspec
import pytest

from host.contract.config import ConfigError, config_from_dict
from host.contract.domain import ChatMessage
from host.protocol.responses import Response
from host.serving.response_store import ResponseStore, owner_of

CONVERSATION = (ChatMessage(role="user", content="hi"), ChatMessage(role="assistant", content="hello"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def response(rid: str) -> Response:
    return Response(id=rid, created_at=0, model="m", status="completed", output=[])


def store(clock: Clock | None = None, **bounds: float) -> ResponseStore:
    limits = {"max_items": 10, "max_bytes": 10**6, "max_age_s": 60.0, **bounds}
    return ResponseStore(int(limits["max_items"]), int(limits["max_bytes"]), limits["max_age_s"], clock or Clock())


def test_a_response_is_found_by_its_owner_only() -> None:
    s = store()
    assert s.put("alice", response("r1"), CONVERSATION)
    found = s.get("r1", "alice")
    assert found is not None and found.conversation == CONVERSATION and found.response.id == "r1"
    assert s.get("r1", "bob") is None and s.get("r1", "") is None
    assert not s.delete("r1", "bob")
    assert s.delete("r1", "alice") and s.get("r1", "alice") is None and len(s) == 0 and s.bytes == 0


def test_the_oldest_go_first_when_the_count_is_reached() -> None:
    s = store(max_items=2)
    for rid in ("r1", "r2", "r3"):
        s.put("a", response(rid), CONVERSATION)
    assert [rid for rid in ("r1", "r2", "r3") if s.get(rid, "a")] == ["r2", "r3"]


def test_the_oldest_go_first_when_the_size_is_reached_and_one_too_large_is_not_kept() -> None:
    one = len(msgspec.json.encode(response("r1"))) + len("hi") + len("hello")
    s = store(max_bytes=2 * one)
    for rid in ("r1", "r2", "r3"):
        assert s.put("a", response(rid), CONVERSATION)
    assert [rid for rid in ("r1", "r2", "r3") if s.get(rid, "a")] == ["r2", "r3"]
    assert s.bytes == 2 * one
    huge = (ChatMessage(role="user", content="x" * 3 * one),)
    assert not s.put("a", response("r4"), huge)
    assert s.get("r4", "a") is None and len(s) == 2  # nothing was dropped for it


def test_responses_expire_after_max_age() -> None:
    clock = Clock()
    s = store(clock, max_age_s=60)
    s.put("a", response("old"), CONVERSATION)
    clock.now += 30
    s.put("a", response("new"), CONVERSATION)
    clock.now += 31
    assert s.get("old", "a") is None and s.get("new", "a") is not None
    clock.now += 30
    assert len(s) == 0 and s.bytes == 0


def test_storing_an_id_again_replaces_it() -> None:
    s = store()
    s.put("a", response("r1"), CONVERSATION)
    s.put("a", response("r1"), CONVERSATION[:1])
    assert len(s) == 1
    found = s.get("r1", "a")
    assert found is not None and found.conversation == CONVERSATION[:1]


def test_max_stored_zero_keeps_nothing() -> None:
    s = store(max_items=0)
    assert not s.put("a", response("r1"), CONVERSATION) and len(s) == 0


@pytest.mark.parametrize(
    ("headers", "same_as"),
    [
        ({"authorization": "Bearer k1"}, {"x-api-key": "k1"}),
        ({"authorization": "bearer  k1 "}, {"authorization": "Bearer k1"}),
    ],
)
def test_the_owner_is_the_key_however_it_is_sent(headers: dict[str, str], same_as: dict[str, str]) -> None:
    assert owner_of(headers) == owner_of(same_as) != ""
    assert "k1" not in owner_of(headers)  # a digest: the store never holds the key itself
    assert owner_of({"authorization": "Bearer k2"}) != owner_of(headers)
    assert owner_of({}) == owner_of({"authorization": "Basic abc"}) == ""


def test_the_config_section_is_checked() -> None:
    config = config_from_dict({"responses": {"max_stored": 5, "max_stored_bytes": "1MiB", "max_age_s": 10}})
    assert (config.responses.max_stored, config.responses.max_stored_bytes) == (5, "1MiB")
    with pytest.raises(ConfigError, match=r"responses\.max_stored_bytes"):
        config_from_dict({"responses": {"max_stored_bytes": "lots"}})
    with pytest.raises(ConfigError, match=r"responses\.max_age_s"):
        config_from_dict({"responses": {"max_age_s": 0}})
    with pytest.raises(ConfigError, match=r"responses\.max_stord"):
        config_from_dict({"responses": {"max_stord": 1}})
