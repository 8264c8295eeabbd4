"""A vLLM engine in its own process: started, supervised and spoken to by the server.

:class:`EngineProcess` runs :mod:`chat_qwen_awq.vllm_bridge` with the Python of a vLLM
environment, in a session of its own (so that stopping it stops vLLM's own child processes too),
and talks to it over a socket pair made here and inherited by the child: nothing is bound to any
address, and vLLM's internal sockets live in a private folder (``VLLM_RPC_BASE_PATH``). vLLM's
usage statistics are switched off; its log lines are forwarded to this server's log.

One reader thread receives the engine's messages and hands each generation's messages to its
:class:`Sink` (see :mod:`chat_qwen_awq.vllm_backend`); one writer thread sends, so that no caller
(the event loop included) ever blocks on the socket. When the process ends, for whatever reason,
every running generation fails with :class:`~host.sdk.EngineUnavailable` (503) at once, and the
backend starts a new process on the next request. Writes and life-cycle calls have deadlines: an
engine that stops reading or answering is killed rather than left to hang the server.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Protocol

from chat_qwen_awq.vllm_bridge import (
    Abort,
    Control,
    EngineConfig,
    Failed,
    Fatal,
    Frames,
    FromEngine,
    Generate,
    Ready,
    Reply,
    Shutdown,
    Tokens,
    frame,
)
from host.sdk import EngineUnavailable, PlughostError

log = logging.getLogger("plughost.chat_qwen_awq.vllm")

#: The bridge script, run by the vLLM environment's Python.
BRIDGE = Path(__file__).with_name("vllm_bridge.py")
#: Seconds a write to the engine may wait for room in the socket before the engine counts as hung.
SEND_TIMEOUT_S = 30.0
#: Log lines of the engine kept for the error message of a failed start.
LOG_TAIL = 40
#: What the requests of an engine that stopped are told (503 ``engine_unavailable``).
UNAVAILABLE = "The chat engine stopped; it is restarted on the next request. Please retry."


class Sink(Protocol):
    """Receives one generation's messages (on the reader thread)."""

    def deliver(self, message: Tokens | Failed) -> None:
        """New tokens, or the failure that ends the generation."""

    def fail(self, error: PlughostError) -> None:
        """The engine went away: the generation ends with ``error``."""

    def flush(self) -> None:
        """Hand what was delivered since the last flush to the consumer (once per read)."""


class EngineStartError(RuntimeError):
    """The engine process did not come up; the message has the reason and the end of its log."""


def child_environment(rpc_dir: str, cuda_device: int | None) -> dict[str, str]:
    """The engine's environment: this one without Python settings, vLLM kept local and quiet about usage.

    ``cuda_device`` (the grant's ``cuda:N``) becomes the only GPU the engine sees; ``None`` hides
    every GPU (the CPU engine).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    env.update(
        VLLM_HOST_IP="127.0.0.1",
        VLLM_LOOPBACK_IP="127.0.0.1",
        VLLM_RPC_BASE_PATH=rpc_dir,  # vLLM's own sockets and files: in a private folder, removed at the end
        TMPDIR=rpc_dir,
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    if cuda_device is None:
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [v.strip() for v in visible.split(",")] if visible else None
        env["CUDA_VISIBLE_DEVICES"] = ids[cuda_device] if ids is not None else str(cuda_device)
    return env


class EngineProcess:
    """One vLLM engine process (see the module docstring). Thread-safe; nothing here runs on an event loop.

    :param python: the vLLM environment's interpreter.
    :param config: what to start.
    :param cuda_device: the GPU index of the grant (``None``: CPU).
    :param name: names the threads and log lines.
    :param start_timeout_s: how long the engine may take to come up.
    """

    def __init__(
        self,
        python: str,
        config: EngineConfig,
        *,
        cuda_device: int | None,
        name: str = "vllm",
        start_timeout_s: float = 600.0,
    ) -> None:
        self.python = python
        self.config = config
        self.cuda_device = cuda_device
        self.name = name
        self.start_timeout_s = start_timeout_s
        self.version = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._rpc_dir: str | None = None
        self._lock = threading.Lock()  # sinks, calls, the dead flag
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # the writer thread's
        self._sinks: dict[int, Sink] = {}
        self._calls: dict[int, Future[Reply]] = {}
        self._ids = itertools.count(1)
        self._dead: str | None = None
        self._stopping = False
        self._killed = False
        self._kill_lock = threading.Lock()
        self._ready: Future[Ready] = Future()
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        self._threads: list[threading.Thread] = []

    # -- life cycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the process and wait until the engine is ready (:class:`EngineStartError` if not)."""
        self._rpc_dir = tempfile.mkdtemp(prefix="plughost-vllm-")
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = subprocess.Popen(
                # -I: the bridge's folder is not put on sys.path (it holds this plugin's modules)
                [self.python, "-I", str(BRIDGE), str(child.fileno())],
                pass_fds=(child.fileno(),),
                env=child_environment(self._rpc_dir, self.cuda_device),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends vLLM's children too
            )
        except OSError as exc:
            parent.close()
            self._cleanup_dir()
            raise EngineStartError(f"cannot run the vLLM environment's Python {self.python!r}: {exc}") from None
        finally:
            child.close()
        self._sock = parent
        self._spawn(self._read_log, "log")
        self._spawn(self._read, "reader")
        self._spawn(self._write, "writer")
        log.info("%s: starting vLLM (pid %d, %s)", self.name, self._proc.pid, self._where())
        started = time.monotonic()
        try:
            self._send(frame(self.config))
            ready = self._ready.result(timeout=self.start_timeout_s)
        except Exception as exc:
            reason = self._dead or (
                f"no answer within {self.start_timeout_s:.0f} s" if isinstance(exc, TimeoutError) else str(exc)
            )
            self._kill()
            tail = "\n".join(self._tail)
            raise EngineStartError(f"vLLM did not start: {reason}\n-- the end of its log --\n{tail}") from None
        self.version = ready.version
        log.info("%s: vLLM %s ready after %.1f s", self.name, ready.version, time.monotonic() - started)

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the engine down (its running generations fail) and end the process."""
        self._stopping = True
        with contextlib.suppress(PlughostError, OSError):
            self._send(frame(Shutdown()))
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s: vLLM did not stop within %.0f s; killing it", self.name, timeout)
        self._kill()
        self._die("the model was unloaded")

    def kill(self) -> None:
        """End the process group at once (what a crash looks like to the server)."""
        self._kill()

    @property
    def alive(self) -> bool:
        """Whether the engine can take work."""
        return self._dead is None and self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The bridge process (leader of the engine's process group)."""
        return self._proc.pid if self._proc is not None else None

    # -- generations ----------------------------------------------------------------------------------
    def new_id(self) -> int:
        """A fresh generation id."""
        return next(self._ids)

    def submit(self, message: Generate, sink: Sink) -> None:
        """Start a generation; its messages go to ``sink``. ``EngineUnavailable`` if the engine is gone."""
        with self._lock:
            if self._dead is not None:
                raise EngineUnavailable(UNAVAILABLE)
            self._sinks[message.id] = sink
        self._send(frame(message))  # if the write fails later, the engine dies and fails the sink

    def abort(self, generation: int) -> None:
        """Stop a generation (synchronous, cheap): the engine drops it before its next step."""
        with self._lock:
            known = self._sinks.pop(generation, None) is not None
            if not known or self._dead is not None:
                return
        with contextlib.suppress(PlughostError):
            self._send(frame(Abort(generation)))

    def fail_all(self, error: PlughostError) -> None:
        """End every running generation with ``error`` and abort it in the engine (shutdown deadline)."""
        with self._lock:
            sinks, self._sinks = self._sinks, {}
        for generation, sink in sinks.items():
            sink.fail(error)
            sink.flush()
            with contextlib.suppress(PlughostError):
                self._send(frame(Abort(generation)))

    def call(self, op: str, level: int = 1, timeout: float = 120.0) -> int:
        """A :class:`~chat_qwen_awq.vllm_bridge.Control` call (``sleep``, ``wake``, a count); its value.
        An engine that does not answer in time is killed and the call raises ``EngineUnavailable``."""
        future: Future[Reply] = Future()
        with self._lock:
            if self._dead is not None:
                raise EngineUnavailable(UNAVAILABLE)
            call = next(self._ids)
            self._calls[call] = future
        try:
            self._send(frame(Control(call, op, level)))
            reply = future.result(timeout)
        except TimeoutError:
            log.error("%s: vLLM did not answer %s within %.0f s; killing it", self.name, op, timeout)
            self._kill()
            raise EngineUnavailable(f"the chat engine did not answer {op!r} in time") from None
        finally:
            with self._lock:
                self._calls.pop(call, None)
        if not reply.ok:
            raise RuntimeError(f"vLLM {op} failed: {reply.message}")
        return reply.value

    # -- internals -----------------------------------------------------------------------------------
    def _where(self) -> str:
        return "CPU" if self.cuda_device is None else f"GPU {self.cuda_device}"

    def _spawn(self, target: object, what: str) -> None:
        thread = threading.Thread(target=target, name=f"{self.name}-{what}", daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _send(self, data: bytes) -> None:
        """Queue ``data`` for the writer thread (never blocks: the event loop calls this)."""
        if self._dead is not None or self._sock is None:
            raise EngineUnavailable(UNAVAILABLE)
        self._outbox.put(data)

    def _write(self) -> None:
        """The writer thread: frames in order; an engine that takes no input for SEND_TIMEOUT_S is killed."""
        sock = self._sock
        assert sock is not None
        while True:
            data = self._outbox.get()
            if data is None or self._dead is not None:
                return
            view = memoryview(data)
            deadline = time.monotonic() + SEND_TIMEOUT_S
            try:
                while view:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    _, writable, _ = select.select([], [sock], [], remaining)
                    if writable:
                        view = view[sock.send(view, socket.MSG_DONTWAIT) :]
            except (OSError, TimeoutError, ValueError) as exc:
                reason = "it stopped reading" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                if self._dead is None:
                    log.error("%s: cannot write to vLLM (%s); killing it", self.name, reason)
                self._die(f"cannot write to it: {reason}")
                return

    def _read(self) -> None:
        """The reader thread: messages to their sinks and calls until the socket closes."""
        from chat_qwen_awq.vllm_bridge import FromEngine as Message

        sock = self._sock
        assert sock is not None
        frames = Frames(Message)
        reason = "its process ended"
        try:
            while True:
                data = sock.recv(1 << 16)
                if not data:
                    break
                touched: dict[int, Sink] = {}
                for message in frames.feed(data):
                    stop = self._dispatch(message, touched)
                    if stop is not None:
                        reason = stop
                for sink in touched.values():
                    sink.flush()
        except (OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        self._die(reason)

    def _dispatch(self, message: FromEngine, touched: dict[int, Sink]) -> str | None:
        if isinstance(message, Tokens | Failed):
            with self._lock:
                sink = self._sinks.get(message.id)
                if sink is not None and (isinstance(message, Failed) or message.finish is not None):
                    del self._sinks[message.id]
            if sink is not None:
                sink.deliver(message)
                touched[message.id] = sink
        elif isinstance(message, Reply):
            with self._lock:
                future = self._calls.get(message.call)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, Ready):
            self._ready.set_result(message)
        elif isinstance(message, Fatal):
            log.error("%s: %s", self.name, message.message)
            if not self._ready.done():
                self._ready.set_exception(EngineStartError(message.message))
            return message.message
        return None

    def _die(self, reason: str) -> None:
        """The engine is gone: fail what runs and waits, end the process, free its folder."""
        with self._lock:
            first = self._dead is None
            if first:
                self._dead = reason
            sinks, self._sinks = self._sinks, {}
            calls, self._calls = self._calls, {}
        if first and not self._stopping:
            log.error("%s: the vLLM engine stopped (%s); %d generation(s) failed", self.name, reason, len(sinks))
        error = EngineUnavailable(UNAVAILABLE)
        for sink in sinks.values():
            sink.fail(error)
            sink.flush()
        for future in calls.values():
            if not future.done():
                future.set_exception(error)
        if not self._ready.done():
            self._ready.set_exception(EngineStartError(reason))
        self._outbox.put(None)  # ends the writer thread
        self._kill()

    def _kill(self) -> None:
        """SIGKILL the engine's process group (once), reap the bridge, close the socket, drop the folder."""
        with self._kill_lock:
            proc = self._proc
            if proc is not None and not self._killed:
                self._killed = True
                # Also when the bridge has already exited: vLLM's processes it left behind are in its group.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            sock = self._sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._rpc_dir is not None:
            shutil.rmtree(self._rpc_dir, ignore_errors=True)
            self._rpc_dir = None

    def _read_log(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._tail.append(line)
                log.info("[vllm] %s", line)
