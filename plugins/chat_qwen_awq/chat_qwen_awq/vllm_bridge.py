"""The vLLM engine process: vLLM's ``AsyncLLM`` behind a socket that speaks token ids.

This file is run as a script by the Python of a separate vLLM environment (``python vllm_bridge.py
FD``): vLLM needs transformers 5.x, the server pins 4.56.2 for autoawq, so the two never share
an environment. It imports nothing of plughost; its top level imports only the standard library
and msgspec (a vLLM dependency), so that the server imports the same file for the messages below
(:mod:`chat_qwen_awq.vllm_engine`), and vLLM itself is imported by :func:`main` only.

The protocol: frames of a 4-byte big-endian length and a msgpack message, over the socket pair
the server created and passed as file descriptor ``FD`` (nothing is bound, no port is opened by
us). The server sends :class:`EngineConfig` first and waits for :class:`Ready` (or
:class:`Fatal`); then :class:`Generate` / :class:`Abort` / :class:`Control` / :class:`Shutdown`
in any order. Every generation streams :class:`Tokens` (new token ids of one engine step, their
logprobs, and the finish reason on the last) or ends with one :class:`Failed`.

The text side (prompt rendering, detokenisation, stop strings, tool calls, logprob texts) stays
in the server: vLLM sees prompt ids and returns token ids, so both engines share that code.

When the server goes away (end of file on the socket) the engine is shut down and the process
exits; when the engine dies, the process reports it and exits (the server restarts it on use).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import sys
from typing import Any

import msgspec

#: Frame header: payload length, 4 bytes, big-endian.
HEADER = struct.Struct(">I")
#: Largest frame either side accepts (a 32k-token prompt is ~100 KiB).
MAX_FRAME = 64 << 20


# -- server → engine ------------------------------------------------------------------------------
class EngineConfig(msgspec.Struct, tag=True, frozen=True, kw_only=True):
    """How to start the engine (the first message).

    ``kv_cache_bytes`` is the KV-cache size the model's declaration budgets (vLLM's
    ``kv_cache_memory_bytes``); ``gpu_bytes`` the whole declared GPU footprint, from which the
    startup free-memory check's fraction is derived (never a blanket ``gpu_memory_utilization``).
    """

    model: str
    device: str  # "cuda" (the one GPU the server made visible) or "cpu"
    dtype: str
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_bytes: int
    gpu_bytes: int = 0
    prefix_caching: bool = True
    sleep_mode: bool = False
    enforce_eager: bool = False
    seed: int = 0


class Params(msgspec.Struct, frozen=True, kw_only=True):
    """Sampling of one generation (greedy: ``temperature == 0``; ``top_k == 0``: off)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop_token_ids: list[int] = msgspec.field(default_factory=list)
    grammar: str | None = None  # a Lark grammar for llguidance (vLLM's "guidance" backend)
    logprobs: int | None = None  # alternatives per token (0..20); None: no logprobs


class Generate(msgspec.Struct, tag=True, frozen=True):
    """Start generation ``id`` from ``prompt_ids``."""

    id: int
    prompt_ids: list[int]
    params: Params


class Abort(msgspec.Struct, tag=True, frozen=True):
    """Stop generation ``id`` now (the engine drops it before its next step)."""

    id: int


class Control(msgspec.Struct, tag=True, frozen=True):
    """A call answered by :class:`Reply`: ``sleep`` (``level`` 1: weights to host RAM, KV cache dropped;
    2: both dropped), ``wake``, or a count: ``sleeping`` (0 or 1), ``running`` (generations in the
    engine), ``aborted`` (generations the server stopped so far)."""

    call: int
    op: str
    level: int = 1


class Shutdown(msgspec.Struct, tag=True, frozen=True):
    """Shut the engine down and exit."""


# -- engine → server ------------------------------------------------------------------------------
class Ready(msgspec.Struct, tag=True, frozen=True):
    """The engine is up."""

    version: str
    pid: int


class Fatal(msgspec.Struct, tag=True, frozen=True):
    """The engine could not start, or died; the process exits after this."""

    message: str


class TokenLogprobs(msgspec.Struct, array_like=True, frozen=True):
    """One generated token's log probability and the best alternatives ``(id, logprob)``, best first."""

    logprob: float
    top: list[tuple[int, float]]


class Tokens(msgspec.Struct, tag=True, frozen=True):
    """New tokens of generation ``id`` (``finish``: "stop" or "length" on its last message)."""

    id: int
    token_ids: list[int]
    logprobs: list[TokenLogprobs] | None = None
    finish: str | None = None


class Failed(msgspec.Struct, tag=True, frozen=True):
    """Generation ``id`` failed; ``invalid``: vLLM rejected the request itself (a client error);
    ``dead``: the engine died (the process exits next)."""

    id: int
    message: str
    invalid: bool = False
    dead: bool = False


class Reply(msgspec.Struct, tag=True, frozen=True):
    """The answer to :class:`Control` ``call``."""

    call: int
    ok: bool
    value: int = 0
    message: str = ""


ToEngine = EngineConfig | Generate | Abort | Control | Shutdown
FromEngine = Ready | Fatal | Tokens | Failed | Reply

_encoder = msgspec.msgpack.Encoder()


def frame(message: ToEngine | FromEngine) -> bytes:
    """``message`` as one frame."""
    payload = _encoder.encode(message)
    return HEADER.pack(len(payload)) + payload


class Frames:
    """Splits a byte stream into messages of type ``kind`` (feed bytes, get whole messages)."""

    def __init__(self, kind: Any) -> None:
        self._decoder = msgspec.msgpack.Decoder(kind)
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Messages completed by ``data``; raises ``ValueError`` on a corrupt stream."""
        self._buffer += data
        out, start = [], 0
        while len(self._buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer, start)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes (limit {MAX_FRAME})")
            end = start + HEADER.size + size
            if len(self._buffer) < end:
                break
            out.append(self._decoder.decode(memoryview(self._buffer)[start + HEADER.size : end]))
            start = end
        del self._buffer[:start]
        return out


# -- the engine side (vLLM's environment only) -----------------------------------------------------
def engine_args(config: EngineConfig) -> Any:
    """vLLM's ``AsyncEngineArgs`` for ``config``."""
    from vllm import AsyncEngineArgs

    kwargs: dict[str, Any] = {}
    if config.device == "cuda":
        # With kv_cache_memory_bytes set, vLLM reads gpu_memory_utilization only to check at
        # start that this much is free: the declared footprint, less what this process's CUDA
        # context and CUDA graphs take outside vLLM's own accounting.
        from vllm.platforms import current_platform

        total = current_platform.get_device_total_memory(0)
        kwargs["gpu_memory_utilization"] = max(0.01, min(0.98, (config.gpu_bytes - (1 << 30)) / total))
        kwargs["max_cudagraph_capture_size"] = config.max_num_seqs  # decode batches only: small graphs
    return AsyncEngineArgs(
        model=config.model,
        dtype=config.dtype,
        max_model_len=config.max_model_len,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        kv_cache_memory_bytes=config.kv_cache_bytes,
        enable_prefix_caching=config.prefix_caching,
        enable_sleep_mode=config.sleep_mode,
        enforce_eager=config.enforce_eager,
        seed=config.seed,
        structured_outputs_config={"backend": "guidance"},  # llguidance, as the server's own engine
        logprobs_mode="processed_logprobs",  # what the token was chosen from: after penalties and grammar masks
        disable_log_stats=True,
        **kwargs,
    )


def sampling_params(params: Params) -> Any:
    """vLLM's ``SamplingParams`` for ``params`` (deltas: each output carries only new tokens)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    structured = StructuredOutputsParams(grammar=params.grammar) if params.grammar is not None else None
    return SamplingParams(
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k if params.top_k > 0 else 0,
        repetition_penalty=params.repetition_penalty,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        seed=params.seed,
        stop_token_ids=params.stop_token_ids,
        structured_outputs=structured,
        logprobs=params.logprobs,
        detokenize=False,  # the server detokenises (its stop strings, its UTF-8 handling)
        skip_special_tokens=False,
        output_kind=RequestOutputKind.DELTA,
    )


def token_logprobs(positions: Any, token_ids: list[int]) -> list[TokenLogprobs]:
    """vLLM's per-position ``{token id: Logprob}`` as :class:`TokenLogprobs` (masked tokens left out)."""
    out = []
    for token, position in zip(token_ids, positions):
        ranked = sorted(
            ((tid, lp) for tid, lp in position.items() if lp.rank is not None and lp.rank > 0),
            key=lambda item: item[1].rank,
        )
        top = [(tid, float(lp.logprob)) for tid, lp in ranked if lp.logprob != float("-inf")]
        out.append(TokenLogprobs(float(position[token].logprob), top))
    return out


class Bridge:
    """Serves the messages of one server connection with one ``AsyncLLM``."""

    def __init__(self, engine: Any, writer: asyncio.StreamWriter) -> None:
        self.engine = engine
        self.writer = writer
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.calls: set[asyncio.Task[None]] = set()
        self.aborted = 0
        self.died = asyncio.Event()
        self.death = ""

    def send(self, message: FromEngine) -> None:
        self.writer.write(frame(message))

    def handle(self, message: ToEngine) -> bool:
        """Act on one message; False when it asks to shut down."""
        if isinstance(message, Generate):
            task = asyncio.get_running_loop().create_task(self._run(message))
            self.tasks[message.id] = task
            task.add_done_callback(lambda _: self.tasks.pop(message.id, None))
        elif isinstance(message, Abort):
            running = self.tasks.get(message.id)
            if running is not None and not running.done():
                self.aborted += 1
                running.cancel()  # AsyncLLM.generate aborts the request in the engine when cancelled
        elif isinstance(message, Control):
            call = asyncio.get_running_loop().create_task(self._control(message))
            self.calls.add(call)  # referenced until done
            call.add_done_callback(self.calls.discard)
        elif isinstance(message, Shutdown):
            return False
        return True

    def die(self, message: str) -> None:
        if not self.died.is_set():
            self.death = message
            self.died.set()

    async def watch(self, period_s: float = 0.5) -> None:
        """Notice an engine that died while idle (its next request would only fail)."""
        while not self.died.is_set():
            if self.engine.errored:
                self.die(f"the vLLM engine died: {self.engine.dead_error}")
            await asyncio.sleep(period_s)

    async def _run(self, message: Generate) -> None:
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            params = sampling_params(message.params)
            prompt = {"prompt_token_ids": message.prompt_ids}
            async for out in self.engine.generate(prompt, params, request_id=str(message.id)):
                c = out.outputs[0]
                ids = list(c.token_ids)
                lps = token_logprobs(c.logprobs, ids) if message.params.logprobs is not None else None
                finish = None
                if out.finished:
                    finish = c.finish_reason or "stop"
                    if finish not in ("stop", "length"):
                        self.send(Failed(message.id, f"the engine ended the generation: {finish}"))
                        return
                self.send(Tokens(message.id, ids, lps, finish))
                await self.writer.drain()
        except asyncio.CancelledError:
            pass  # aborted by the server; AsyncLLM.generate aborted the request in the engine
        except EngineDeadError as exc:
            self.send(Failed(message.id, f"the vLLM engine died: {exc}", dead=True))
            self.die(f"the vLLM engine died: {exc}")
        except (ValueError, TypeError) as exc:  # vLLM's validation errors (VLLMValidationError is a ValueError)
            self.send(Failed(message.id, str(exc), invalid=True))
        except Exception as exc:
            self.send(Failed(message.id, f"{type(exc).__name__}: {exc}"))

    async def _control(self, message: Control) -> None:
        try:
            value = 0
            if message.op == "sleep":
                await self.engine.sleep(message.level)
            elif message.op == "wake":
                await self.engine.wake_up()
            elif message.op == "sleeping":
                value = int(await self.engine.is_sleeping())
            elif message.op == "running":
                value = len(self.tasks)
            elif message.op == "aborted":
                value = self.aborted
            else:
                raise ValueError(f"unknown control {message.op!r}")
            self.send(Reply(message.call, True, value))
        except Exception as exc:
            self.send(Reply(message.call, False, message=f"{type(exc).__name__}: {exc}"))


async def serve(sock: socket.socket) -> int:
    """Start the engine the first message asks for, then serve until the server leaves or it dies."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    frames = Frames(ToEngine)
    pending: list[Any] = []
    while not pending:
        data = await reader.read(1 << 16)
        if not data:
            return 0
        pending = frames.feed(data)
    config = pending.pop(0)
    if not isinstance(config, EngineConfig):
        writer.write(frame(Fatal(f"expected EngineConfig first, got {type(config).__name__}")))
        await writer.drain()
        return 2
    try:
        import vllm
        from vllm.v1.engine.async_llm import AsyncLLM

        engine = AsyncLLM.from_engine_args(engine_args(config))
    except BaseException as exc:
        writer.write(frame(Fatal(f"the vLLM engine did not start: {type(exc).__name__}: {exc}")))
        await writer.drain()
        return 1
    bridge = Bridge(engine, writer)
    bridge.send(Ready(vllm.__version__, os.getpid()))
    watch = asyncio.get_running_loop().create_task(bridge.watch())
    died = asyncio.get_running_loop().create_task(bridge.died.wait())
    try:
        while True:
            for message in pending:
                if not bridge.handle(message):
                    return 0
            await writer.drain()
            read = asyncio.get_running_loop().create_task(reader.read(1 << 16))
            await asyncio.wait([read, died], return_when=asyncio.FIRST_COMPLETED)
            if bridge.died.is_set():
                read.cancel()
                writer.write(frame(Fatal(bridge.death)))
                await writer.drain()
                return 1
            data = read.result()
            if not data:
                return 0  # the server went away
            pending = frames.feed(data)
    finally:
        watch.cancel()
        died.cancel()
        for task in list(bridge.tasks.values()):
            task.cancel()
        with contextlib.suppress(Exception):
            engine.shutdown()


def main(argv: list[str]) -> int:
    """``vllm_bridge.py FD``: serve the server on the inherited socket ``FD``."""
    sock = socket.socket(fileno=int(argv[1]))
    return asyncio.run(serve(sock))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
