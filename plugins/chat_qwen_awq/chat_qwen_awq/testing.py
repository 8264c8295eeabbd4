"""Helpers of the chat_qwen_awq tests (importable like the plugin; not used by its production code).

Also importable by import string (``ModelSpec.backend``): :class:`RecordingBackend`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import torch

from chat_qwen_awq import DEMO_WEIGHTS, QWEN3
from chat_qwen_awq.backend import QwenAwqChatBackend
from host.sdk import (
    ChatDelta,
    ChatMessage,
    ChatRequest,
    Grant,
    HostConfig,
    ModelSpec,
    PlacementKind,
    SamplingParams,
    hookimpl,
)
from host.testing.pytest_plugin import make_config

PLUGIN_ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "Qwen2.5-7B-Instruct-AWQ"
TINY = DEMO_WEIGHTS
QWEN3_ID = QWEN3.id
#: The Qwen3 stand-ins: AWQ (the demo of Qwen3-8B-AWQ) and the unquantised model it is quantised from.
TINY_QWEN3 = "demo:chat_qwen_awq.demo:TINY_QWEN3_AWQ"
TINY_QWEN3_DENSE = "demo:chat_qwen_awq.demo:TINY_QWEN3_FP16"
#: Import string of :class:`RecordingBackend`.
RECORDING_BACKEND = "chat_qwen_awq.testing:RecordingBackend"
#: How Qwen3's chat template ends a prompt whose thinking is switched off (an empty think block).
EMPTY_THINK_BLOCK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
#: How :func:`thinking_folder`'s template ends a prompt whose thinking is on (the block opened).
OPEN_THINK_BLOCK = "<|im_start|>assistant\n<think>\n"


def tiny_config(**options: Any) -> HostConfig:
    """A host config serving the tiny AWQ model as Qwen2.5-7B-Instruct-AWQ."""
    return make_config({"models": {MODEL_ID: {"weights": TINY, "options": options}}})


def qwen3_config(weights: str = TINY_QWEN3, **options: Any) -> HostConfig:
    """A host config serving a tiny Qwen3 (``weights``: the AWQ stand-in unless given) as Qwen3-8B-AWQ."""
    return make_config({"models": {QWEN3_ID: {"weights": weights, "options": options}}})


def qwen3_backend(weights: str = TINY_QWEN3, grant: Grant | None = None, **options: Any) -> QwenAwqChatBackend:
    """A loaded backend of a tiny Qwen3 (on the CPU unless ``grant`` says otherwise)."""
    from chat_qwen_awq import model_spec

    backend = QwenAwqChatBackend(model_spec(qwen3_config(weights, **options), QWEN3_ID))
    backend.load(grant or cpu_grant())
    return backend


def thinking_folder(dest: Path) -> Path:
    """The tiny Qwen3 (AWQ) copied to ``dest``, its chat template's generation prompt changed to open
    the think block while thinking is on (as Qwen3's Thinking-2507 templates do) and to write Qwen3's
    empty block when it is off. A random-weight model never opens the block itself: served from here,
    it thinks until a thinking budget closes the block, and every switch still turns thinking off."""
    from chat_qwen_awq.demo import TINY_QWEN3_AWQ

    dest.mkdir(parents=True, exist_ok=True)
    for f in TINY_QWEN3_AWQ.folder().iterdir():
        shutil.copy(f, dest / f.name)
    config_file = dest / "tokenizer_config.json"
    config = json.loads(config_file.read_text("utf-8"))
    head, _, _ = config["chat_template"].rpartition("{%- if add_generation_prompt %}")
    config["chat_template"] = head + (
        "{%- if add_generation_prompt %}\n"
        "    {{- '<|im_start|>assistant\\n<think>\\n' }}\n"
        "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
        "        {{- '\\n</think>\\n\\n' }}\n"
        "    {%- endif %}\n"
        "{%- endif %}"
    )
    config_file.write_text(json.dumps(config), "utf-8")
    return dest


def cpu_grant() -> Grant:
    """The scheduler's grant for the CPU placement (the backend does not check the sizes)."""
    return Grant(placement=PlacementKind.CPU, device="cpu", gpu_bytes=0, host_bytes=0)


def vllm_python() -> str | None:
    """The vLLM environment the vLLM tests use: ``$PLUGHOST_VLLM_PYTHON``, else the repository's
    ``.venv-vllm`` (``scripts/vllm-env`` makes it); ``None`` when there is none."""
    configured = os.environ.get("PLUGHOST_VLLM_PYTHON")
    path = Path(configured) if configured else PLUGIN_ROOT.parents[1] / ".venv-vllm" / "bin" / "python"
    return str(path) if path.is_file() else None


async def vllm_ids(backend: Any, req: ChatRequest) -> tuple[list[int], ChatDelta]:
    """Run ``req`` on a loaded :class:`~chat_qwen_awq.vllm_backend.VllmChatBackend`'s engine; the generated
    token ids (as the engine returned them) and the last delta."""
    from chat_qwen_awq.vllm_backend import VllmStream
    from chat_qwen_awq.vllm_bridge import Generate

    prepared = await backend._prepare(req)  # on the prepare thread, as generate() does
    loop = asyncio.get_running_loop()
    stream = VllmStream(prepared.prompt, backend._tokenizer, frozenset(backend.eos_ids), backend._texts, loop)
    generation = backend.engine.new_id()
    backend.engine.submit(Generate(generation, prepared.prompt.prompt_ids, prepared.params), stream)
    try:
        async for delta in stream.deltas():
            if delta.finish_reason is not None:
                return stream.generated, delta
        raise AssertionError("the stream ended without a last delta")
    finally:
        backend.engine.abort(generation)


async def engine_ids(backend: Any, req: ChatRequest) -> tuple[list[int], ChatDelta]:
    """Run ``req`` straight on ``backend``'s engine; the generated token ids and the last delta."""
    from chat_qwen_awq.sequence import Sequence

    prepared = await backend._prepare(req)  # on the prepare thread, as generate() does
    seq = Sequence(prepared, backend.engine.tokenizer, asyncio.get_running_loop())
    backend.engine.submit(seq)
    while True:
        item = await seq.queue.get()
        assert not isinstance(item, BaseException), item
        if item.finish_reason is not None:
            return seq.generated, item


class RecordingPlugin:
    """A plugin registering the real declaration of ``model_id`` (the seed's model unless given),
    served by :class:`RecordingBackend` (its tests look at the engine behind a live server)."""

    name = "chat_qwen_awq_recording"

    def __init__(self, model_id: str = MODEL_ID) -> None:
        self.model_id = model_id

    @hookimpl
    def register_models(self, config: HostConfig) -> list[ModelSpec]:
        """The plugin's own spec with :data:`RECORDING_BACKEND` as its backend."""
        from chat_qwen_awq import model_spec

        return [msgspec.structs.replace(model_spec(config, self.model_id), backend=RECORDING_BACKEND)]


class RecordingBackend(QwenAwqChatBackend):
    """The real backend; every instance is kept so that tests can look at its engine, and every
    prompt it prepared (as text, special tokens included) is kept in :attr:`prompts`."""

    instances: ClassVar[list[RecordingBackend]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prompts: list[str] = []
        RecordingBackend.instances.append(self)

    def prepare(self, request: ChatRequest) -> Any:
        """The real preparation; its prompt is recorded."""
        prepared = super().prepare(request)
        self.prompts.append(self._tokenizer.decode(prepared.prompt_ids))
        return prepared


@contextlib.contextmanager
def paused_decode_steps(engine: Any, pause_s: float) -> Iterator[None]:
    """Sleep ``pause_s`` after every decode step of ``engine`` (a loaded :class:`Engine`) inside.

    The tiny model writes ~1,000 tokens a second: on a busy machine a long answer can end before a
    test's client has read its first lines. Tests of disconnects and cancellation slow it down so
    that the generation is still running when they act, however loaded the machine is.
    """
    decode = engine._decode

    def paused() -> None:
        decode()
        time.sleep(pause_s)

    engine._decode = paused  # the engine's thread looks the method up on every turn
    try:
        yield
    finally:
        del engine._decode


def greedy_generate_kwargs(backend: Any, ids: torch.Tensor) -> dict[str, Any]:
    """transformers ``generate`` arguments for the engine's greedy decoding of ``ids`` on ``backend``'s
    model: no sampling, no repetition penalty, the model's end tokens, every generation default off."""
    return {
        "attention_mask": torch.ones_like(ids),
        "do_sample": False,
        "repetition_penalty": 1.0,
        "eos_token_id": backend.eos_ids,
        "pad_token_id": backend.eos_ids[0],
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }


#: Logit gap under which two candidates count as tied in fp16 (logits here are O(1)).
NEAR_TIE = 0.05


def greedy_reference(backend: Any, request: ChatRequest) -> tuple[list[int], list[torch.Tensor]]:
    """transformers ``generate`` on ``backend``'s loaded model (the plugin's engine): the greedy tokens of
    ``request`` and the logits of each step."""
    ids = torch.tensor([backend.prepare(request).prompt_ids], device=backend.loaded.device)
    with torch.no_grad():
        out = backend.loaded.model.generate(
            ids,
            max_new_tokens=request.sampling.max_tokens,
            output_scores=True,
            return_dict_in_generate=True,
            **greedy_generate_kwargs(backend, ids),
        )
    return out.sequences[0, ids.shape[1] :].tolist(), [s[0].float().cpu() for s in out.scores]


def assert_same_greedy(ours: list[int], reference: list[int], scores: list[torch.Tensor]) -> None:
    """Token-identical, or parted only where the reference's top two logits were a near-tie."""
    for i, (a, b) in enumerate(zip(ours, reference)):
        if a != b:
            top = scores[i].topk(2).values
            gap = float(top[0] - top[1])
            assert gap < NEAR_TIE, f"token {i}: {a} != {b} with a clear logit gap of {gap:.4f}"
            return
    assert len(ours) == len(reference)


def assert_engine_equals_generate(backend: Any, tokens: int = 30, content: str = "hello") -> None:
    """Greedy tokens from the engine equal transformers ``generate`` on the same (loaded) model, and so
    does the text (the random stand-ins write no think block: a thinking model's reasoning stays empty)."""
    request = ChatRequest(
        model="m",
        messages=(ChatMessage("user", content),),
        sampling=SamplingParams(max_tokens=tokens, temperature=0, repetition_penalty=1.0),
    )
    x = torch.tensor([backend.prepare(request).prompt_ids])
    with torch.no_grad():
        out = backend.loaded.model.generate(x, max_new_tokens=tokens, **greedy_generate_kwargs(backend, x))
    reference = out[0, x.shape[1] :].tolist()
    expected = backend.engine.tokenizer.decode(reference, skip_special_tokens=True)

    async def run() -> tuple[list[int], list[ChatDelta]]:
        ids, _ = await engine_ids(backend, request)
        return ids, [d async for d in backend.generate(request)]

    ids, deltas = asyncio.run(run())
    assert ids == reference
    assert "".join(d.text for d in deltas) == expected and not any(d.reasoning for d in deltas)
