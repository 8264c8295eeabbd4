"""The server's downloads: background pulls, their progress, and the gate the scheduler asks.

The server never downloads inside a request. ``POST /v1/models/{id}/pull`` starts a pull in a
thread of its own (:meth:`Downloads.start`); ``GET /v1/models`` and ``/health`` read its progress.
Before the scheduler loads a model it awaits :meth:`Downloads.ensure`: weights on disk pass; weights
that are not raise :class:`~host.contract.errors.WeightsNotReady` (503, ``Retry-After``, naming
the model, the progress and the command to run) — or, with ``download.on_first_use: true``, start
the pull and wait for it. That wait happens inside ``acquire()``, so every route waits for a
download the way it waits for a load (a streamed chat request sends its keep-alive comments).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from host.contract.config import HostConfig
from host.contract.errors import ModelLoadFailed, WeightsNotReady
from host.contract.spec import ModelSpec
from host.demo import is_demo
from host.downloads.errors import PullError
from host.downloads.inventory import WeightsInfo, weights_info, with_progress
from host.downloads.pull import PullProgress, pull, size_text
from host.downloads.store import Installed, ModelStore
from host.metrics import NO_METRICS, Observer
from host.registry import RegisteredModel
from host.toolkit.weights import weights_on_disk

log = logging.getLogger("plughost.downloads")

#: How long shutdown waits for pulls to notice they are cancelled.
CLOSE_GRACE_S = 2.0


class Job:
    """One background pull: its latest progress, its outcome, and the listeners of its SSE stream."""

    def __init__(self, model: RegisteredModel, loop: asyncio.AbstractEventLoop) -> None:
        assert model.weights_ref is not None
        self.model = model
        self.ref = model.weights_ref
        self.progress = PullProgress(model=model.spec.id, repo=self.ref.repo, state="queued")
        self.done: asyncio.Future[Installed] = loop.create_future()
        self.cancel = threading.Event()
        self._loop = loop
        self._listeners: set[asyncio.Queue[PullProgress]] = set()

    @property
    def running(self) -> bool:
        """Not finished yet."""
        return not self.done.done()

    def publish(self, progress: PullProgress) -> None:
        """A new snapshot (event-loop thread)."""
        self.progress = progress
        for queue in self._listeners:
            queue.put_nowait(progress)

    def report(self, progress: PullProgress) -> None:
        """A new snapshot from the pulling thread."""
        self._loop.call_soon_threadsafe(self.publish, progress)

    def finish(self, result: Installed | BaseException) -> None:
        """The pull ended (event-loop thread)."""
        if self.done.done():
            return
        if isinstance(result, BaseException):
            self.done.set_exception(result)
            self.done.exception()  # retrieved: an unwatched failure is not an asyncio warning
        else:
            self.done.set_result(result)

    async def updates(self) -> AsyncIterator[PullProgress]:
        """Every snapshot from now until the pull ends (the last one is ``done`` or ``failed``)."""
        queue: asyncio.Queue[PullProgress] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            yield self.progress
            while self.running or not queue.empty():
                if queue.empty():
                    waiter = asyncio.ensure_future(queue.get())
                    either: list[asyncio.Future[Any]] = [waiter, self.done]
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    if not waiter.done():
                        waiter.cancel()
                        continue
                    progress = waiter.result()
                else:
                    progress = queue.get_nowait()
                yield progress
            # The thread's last report may come after ``done``; the outcome decides the last event.
            if self.progress.state not in ("done", "failed"):
                error = self.done.exception()
                state = "failed" if error is not None else "done"
                yield msgspec.structs.replace(self.progress, state=state, error=str(error) if error else None)
        finally:
            self._listeners.discard(queue)


class Downloads:
    """The app's downloads (one per app) and the scheduler's weights gate."""

    def __init__(self, config: HostConfig, observer: Observer = NO_METRICS) -> None:
        self.config = config
        self.store = ModelStore(config.models_dir())
        self.observer = observer
        self._jobs: dict[str, Job] = {}  # by repo: two models of one repository share a pull

    # -- what routes show ---------------------------------------------------------------------
    def job(self, model: RegisteredModel) -> Job | None:
        """The latest pull of ``model``'s repository (running or finished)."""
        return self._jobs.get(model.weights_ref.repo) if model.weights_ref is not None else None

    def info(self, model: RegisteredModel) -> WeightsInfo:
        """Where ``model``'s weights stand, with the progress of a pull that runs or failed."""
        info = weights_info(model, self.store)
        job = self.job(model)
        return with_progress(info, job.progress) if job is not None else info

    def active(self) -> list[Job]:
        """The pulls running now."""
        return [job for job in self._jobs.values() if job.running]

    # -- starting and waiting ------------------------------------------------------------------
    def start(self, model: RegisteredModel) -> Job:
        """Start pulling ``model``'s weights in the background (or return the pull already running)."""
        if model.weights_ref is None:
            raise ValueError(f"{model.spec.id}: its weights are not from a hub")
        job = self._jobs.get(model.weights_ref.repo)
        if job is not None and job.running:
            return job
        job = Job(model, asyncio.get_running_loop())
        self._jobs[job.ref.repo] = job
        thread = threading.Thread(target=self._run, args=(job,), name=f"plughost-pull-{model.spec.id}", daemon=True)
        thread.start()
        log.info("%s: pulling %s in the background", model.spec.id, job.ref.repo)
        return job

    def _run(self, job: Job) -> None:
        model_id = job.model.spec.id

        def count(source: str, n: int) -> None:
            self.observer.downloaded(model_id, source, n)

        result: Installed | BaseException
        try:
            result = pull(
                job.ref,
                self.config.download,
                self.store.root,
                model=model_id,
                report=job.report,
                on_bytes=count,
                cancel=job.cancel,
            )
            if is_demo(job.model.spec.weights or ""):
                log.warning("%s: the real weights are on disk now; restart plughost to serve them", model_id)
        except PullError as exc:
            log.error("%s: pull failed: %s", model_id, exc)
            result = exc
        except Exception as exc:  # a bug: fail the job rather than leave waiters hanging
            log.exception("%s: pull crashed", model_id)
            result = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed (the app stopped)
            job._loop.call_soon_threadsafe(job.finish, result)

    def spec_to_load(self, model: RegisteredModel) -> ModelSpec:
        """``model.spec`` with its weights pointing at the pulled folder when there is one (a model
        declared before its pull finished still names the hub id)."""
        ref = model.weights_ref
        if ref is None or is_demo(model.spec.weights or ""):
            return model.spec
        folder = self.store.complete(ref)
        if folder is None or model.spec.weights == str(folder):
            return model.spec
        return msgspec.structs.replace(model.spec, weights=str(folder))

    def on_disk(self, model: RegisteredModel) -> bool:
        """Whether ``model`` can load without a download (weights not from a hub always can: a
        broken local folder fails its load with its own message)."""
        if model.weights_ref is None:
            return True
        weights = self.spec_to_load(model).weights
        return weights is None or is_demo(weights) or weights_on_disk(weights)

    async def ensure(self, model: RegisteredModel) -> None:
        """Return once ``model``'s weights are on disk; see the module docstring."""
        if self.on_disk(model):
            return
        job = self.job(model)
        if self.config.download.on_first_use:
            if job is None or not job.running:
                job = self.start(model)
            try:
                await asyncio.shield(job.done)
            except PullError:
                raise ModelLoadFailed(
                    f"Downloading the weights of '{model.spec.id}' failed; the server log has the details."
                ) from None
            return
        raise self._not_ready(model, job)

    def _not_ready(self, model: RegisteredModel, job: Job | None) -> WeightsNotReady:
        mid = model.spec.id
        repo = model.weights_ref.repo if model.weights_ref else "?"
        how = f"Run `plughost pull {mid}` (or POST /v1/models/{mid}/pull)"
        if job is not None and job.running:
            p = job.progress
            eta = f", about {p.eta_s:.0f}s left" if p.eta_s is not None else ""
            return WeightsNotReady(
                f"The weights of '{mid}' ({repo}) are downloading: {p.percent:.1f}% ({size_text(p.done_bytes)} of "
                f"{size_text(p.total_bytes)}{eta}). The model is served once they are on disk; follow the progress "
                f"with POST /v1/models/{mid}/pull?stream=true.",
                code="model_downloading",
                retry_after=min(300.0, max(5.0, p.eta_s or 30.0)),
            )
        failed = " The last download failed (the server log has the details)." if job is not None else ""
        return WeightsNotReady(
            f"The weights of '{mid}' ({repo}) are not on this machine.{failed} {how}; the model is served once "
            f"they are on disk.",
            code="model_not_downloaded",
            retry_after=30.0,
        )

    async def close(self) -> None:
        """Cancel running pulls (what they downloaded is kept for a resume)."""
        running = self.active()
        for job in running:
            job.cancel.set()
        if running:
            await asyncio.wait([job.done for job in running], timeout=CLOSE_GRACE_S)
