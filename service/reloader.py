"""Hot reload: load + validate a bundle off the request path, then swap it in atomically.

Triggers: ``POST /admin/reload`` / ``/admin/rollback`` (routers/admin.py), a
Redis pub/sub notice on ``<prefix>reload`` and polling of ``<registry>/CURRENT``
(``DLF_RELOAD_POLL_SECONDS``). All go through ``Reloader.reload``, serialised
by one lock:

1. open the ONNX session in a worker thread (``load_model`` checks the inputs
   against the schema and runs a warm-up inference that must be finite and in [0, 1]),
   niced below the inference workers: building a session costs a core for ~0.2 s, and
   that work should never outrank serving (the default thread pool runs at the loop's
   priority, above the niced workers);
2. refuse unless the schema signature equals the served one;
3. make the vocabulary available (embedded: read the files; Redis: the
   version's publish marker must exist, so versions never share ids);
4. swap (one reference assignment). Requests in flight keep the model they
   leased; the old version's vocabulary is released once its count drops to 0.

A refused bundle is logged and counted (``dlf_reloads_total{result="refused"}``)
and the old model keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import redis.asyncio as aioredis

from service.batcher import lower_thread_priority
from service.contract import (
    VERSION_PATTERN,
    ReloadNotice,
    list_versions,
    marker_key,
    previous_version,
    read_current,
    resolve_current,
    set_current,
)
from service.model_holder import LoadedModel, OrtOptions, load_model
from service.processes import group_dir, read_target, write_target
from service.shadow import ShadowScorer
from service.state import ServiceState

log = logging.getLogger(__name__)

# A reload's session is built this much nicer than the inference workers: it may take its time.
LOAD_EXTRA_NICENESS = 5

PUBSUB_RETRY_S = 1.0


class ReloadRefused(Exception):
    """The bundle was not swapped in; ``status_code`` is what the admin API answers."""

    def __init__(self, reason: str, status_code: int = 409) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


@dataclass
class ReloadResult:
    result: Literal["ok", "unchanged"]
    version: str
    previous_version: str | None
    source: str
    seconds: float
    pointer_written: bool = False
    notified: int | None = None  # replicas that received the rollback notice (None: no Redis)


class Reloader:
    """Owns the reload triggers of one app and the history of versions it served."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self._lock = asyncio.Lock()
        self._served: list[str] = []  # versions served before the current one, oldest first
        self._tasks: list[asyncio.Task[None]] = []
        self._pointer_seen: str | None = None
        self.last_result: dict[str, Any] | None = None
        self.subscribed = asyncio.Event()
        self._loader: ThreadPoolExecutor | None = None  # one niced thread for building sessions

    @property
    def registry(self) -> Path:
        return self.state.settings.registry

    # --- triggers ------------------------------------------------------------------

    async def start(self) -> None:
        s = self.state.settings
        self._pointer_seen = await asyncio.to_thread(read_current, self.registry)
        if s.reload_poll_seconds > 0:
            self._tasks.append(asyncio.create_task(self._poll(s.reload_poll_seconds), name="dlf-reload-poll"))
        directory = group_dir()
        if directory is not None:
            self._tasks.append(asyncio.create_task(self._follow_group(directory), name="dlf-reload-group"))
        if s.redis_url and s.reload_pubsub:
            self._tasks.append(asyncio.create_task(self._listen(s.redis_url), name="dlf-reload-pubsub"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._loader is not None:
            self._loader.shutdown(wait=False)
            self._loader = None
        if self.state.shadow is not None:
            self.state.shadow.close()

    async def _poll(self, every_s: float) -> None:
        """Reload when CURRENT moves (not when it differs from an explicitly chosen version)."""
        while True:
            await asyncio.sleep(every_s)
            await self._follow_pointer("poll")

    async def _follow_pointer(self, source: str) -> None:
        """Reload if CURRENT differs from the last value seen (refusals are counted, not raised)."""
        try:
            pointer = await asyncio.to_thread(read_current, self.registry)
        except OSError as exc:
            log.warning("cannot read %s/CURRENT: %s", self.registry, exc)
            return
        if pointer is None or pointer == self._pointer_seen:
            return
        self._pointer_seen = pointer
        with contextlib.suppress(ReloadRefused):
            await self.reload(pointer, source=source)

    async def _listen(self, url: str) -> None:
        """Follow reload notices on the pub/sub channel; reconnects after Redis errors."""
        channel = self.state.settings.reload_channel_name
        failed_before = False
        while True:
            client = aioredis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(channel)
                    self.subscribed.set()
                    log.info("listening for reload notices on %s", channel)
                    if failed_before:  # notices sent during the outage are lost: catch up on CURRENT
                        await self._follow_pointer("pubsub-reconnect")
                    failed_before = False
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self._on_notice(str(message.get("data", "")))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # warn once per outage, not once per retry
                level = logging.DEBUG if failed_before and not self.subscribed.is_set() else logging.WARNING
                log.log(
                    level,
                    "reload channel %s unavailable (%s: %s); retrying",
                    channel,
                    type(exc).__name__,
                    exc,
                )
                self.subscribed.clear()
                failed_before = True
                await asyncio.sleep(PUBSUB_RETRY_S)
            finally:
                await client.aclose()

    async def _on_notice(self, payload: str) -> None:
        try:
            notice = ReloadNotice.parse(payload)
        except ValueError as exc:
            log.warning("ignoring reload notice: %s", exc)
            return
        with contextlib.suppress(ReloadRefused):
            await self.reload(notice.version, source="pubsub")

    # --- reload / rollback -----------------------------------------------------------

    def _check_version(self, version: str) -> Path:
        if not VERSION_PATTERN.match(version):
            raise ReloadRefused(f"version {version!r} is not a bundle version name", 422)
        bundle_dir = self.registry / version
        if not (bundle_dir / "schema.json").exists():
            raise ReloadRefused(f"no bundle {version!r} in registry {self.registry}", 404)
        return bundle_dir

    def _refuse(self, reason: str, status_code: int = 409) -> ReloadRefused:
        self.state.metrics.reloads.labels(result="refused").inc()
        self.last_result = {"result": "refused", "reason": reason, "at": datetime.now(UTC).isoformat()}
        log.warning("reload refused: %s; still serving the old model", reason)
        return ReloadRefused(reason, status_code)

    async def _load_checked(self, version: str) -> LoadedModel:
        """Load, validate and prepare the vocab of ``version`` without touching what is served."""
        s = self.state.settings
        try:
            bundle_dir = self._check_version(version)
        except ReloadRefused as exc:
            raise self._refuse(exc.reason, exc.status_code) from None
        if self._loader is None:
            niceness = s.inference_niceness + LOAD_EXTRA_NICENESS
            self._loader = ThreadPoolExecutor(1, "dlf-load", lower_thread_priority, (niceness,))
        try:
            options = OrtOptions.from_settings(s)
            model = await asyncio.get_running_loop().run_in_executor(
                self._loader, lambda: load_model(bundle_dir, options=options)
            )
        except Exception as exc:
            raise self._refuse(f"bundle {version} failed to load: {type(exc).__name__}: {exc}") from exc
        if model.version != version:
            raise self._refuse(f"bundle directory {version} holds schema version {model.version}")
        if self.state.holder.ready:
            served = self.state.holder.current.schema.signature()
            if model.schema.signature() != served:
                raise self._refuse(
                    f"bundle {version} is schema-incompatible: fields {model.schema.signature()} "
                    f"!= served {served}"
                )
        await self._prepare_store(model)
        return model

    async def _prepare_store(self, model: LoadedModel) -> None:
        store = self.state.store
        assert store is not None
        try:
            await store.prepare(model.bundle_dir, model.schema)
        except Exception as exc:
            raise self._refuse(
                f"vocab of {model.version} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        client = getattr(store, "client", None)
        if store.backend == "redis" and client is not None:
            key = marker_key(self.state.settings.redis_prefix, model.version)
            try:
                published = bool(await client.exists(key))
            except Exception as exc:
                raise self._refuse(f"cannot check the vocab marker {key} in Redis: {exc}") from exc
            if not published:
                raise self._refuse(
                    f"vocab of {model.version} is not published in Redis (marker {key} missing); "
                    "run `python -m service.cli publish-vocab --version ...` first"
                )

    async def reload(self, version: str | None = None, *, source: str = "admin") -> ReloadResult:
        """Serve ``version`` (default: CURRENT). Raises ``ReloadRefused`` and keeps the old model otherwise."""
        start = time.perf_counter()
        async with self._lock:
            if version is None:
                version = await asyncio.to_thread(resolve_current, self.registry)
                if version is None:
                    raise self._refuse(f"no bundle in registry {self.registry}", 404)
            holder = self.state.holder
            old = holder.current.version if holder.ready else None
            if old == version:
                self.state.metrics.reloads.labels(result="unchanged").inc()
                self._tell_group(version, source)
                return ReloadResult("unchanged", version, old, source, time.perf_counter() - start)
            model = await self._load_checked(version)
            self.state.install(model)
            self.state.metrics.reloads.labels(result="ok").inc()
            self.state.load_error = None
            if old is not None:
                self._served = [v for v in self._served if v != old][-50:] + [old]
                task = asyncio.create_task(self._release(old), name=f"dlf-release-{old}")
                self._tasks.append(task)
                task.add_done_callback(lambda t: t in self._tasks and self._tasks.remove(t))
            result = ReloadResult("ok", version, old, source, time.perf_counter() - start)
            self.last_result = {**asdict(result), "at": datetime.now(UTC).isoformat()}
            log.info("reload (%s): now serving %s (was %s) after %.3fs", source, version, old, result.seconds)
            self._tell_group(version, source)
            return result

    @staticmethod
    def _tell_group(version: str, source: str) -> None:
        """serve --processes N: what /admin chose, the other processes of the group load too."""
        if source in ("admin", "rollback"):
            try:
                write_target(version)
            except OSError as exc:
                log.warning("could not tell the other processes to serve %s: %s", version, exc)

    async def _follow_group(self, directory: Path, every_s: float = 0.2) -> None:
        """Load the version another process of the group was told to serve (a stat per poll)."""
        first = read_target(directory)
        seen = first[0] if first else None
        while True:
            await asyncio.sleep(every_s)
            target = read_target(directory)
            if target is None or target[0] == seen:
                continue
            seen = target[0]
            try:
                await self.reload(target[1], source="group")
            except ReloadRefused as exc:
                log.warning("group reload to %s refused: %s", target[1], exc)

    async def _release(self, version: str) -> None:
        """Wait for the old version's in-flight requests, then drop its vocab unless it is in use again."""
        deadline = time.monotonic() + self.state.settings.reload_drain_timeout_s
        while self.state.holder.in_flight(version) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        shadow = self.state.shadow
        if version == self.state.holder.current.version or (shadow is not None and shadow.version == version):
            return
        forget = getattr(self.state.store, "forget", None)
        if forget is not None and self.state.holder.in_flight(version) == 0:
            forget(version)

    def previous(self) -> str | None:
        """The version served before the current one: this process's history, else the registry's."""
        current = self.state.holder.current.version if self.state.holder.ready else None
        existing = set(list_versions(self.registry))
        for version in reversed(self._served):
            if version != current and version in existing:
                return version
        return previous_version(self.registry, current)

    async def rollback(self, version: str | None = None) -> ReloadResult:
        """Serve ``version`` (default: the previous one) and point CURRENT at it so pollers agree."""
        target = version or await asyncio.to_thread(self.previous)
        if target is None:
            raise self._refuse("no previous version to roll back to", 409)
        result = await self.reload(target, source="rollback")
        try:
            await asyncio.to_thread(set_current, self.registry, target, "rollback")
            self._pointer_seen = target
            result.pointer_written = True
        except OSError as exc:
            log.warning("rolled back to %s but could not write CURRENT: %s", target, exc)
        result.notified = await self._notify(target, "rollback")
        return result

    async def _notify(self, version: str, reason: str) -> int | None:
        """Tell the other replicas (pub/sub) to follow; None when there is no Redis or it failed."""
        s = self.state.settings
        client = getattr(self.state.store, "client", None)
        if not (s.redis_url and s.reload_pubsub) or client is None:
            return None
        payload = ReloadNotice(
            version, previous=self._served[-1] if self._served else None, reason=reason
        ).to_json()
        try:
            return int(await client.publish(s.reload_channel_name, payload))
        except Exception as exc:
            log.warning("could not publish the %s notice for %s: %s", reason, version, exc)
            return None

    # --- shadow ------------------------------------------------------------------------

    async def start_shadow(self, version: str, sample_rate: float) -> ShadowScorer:
        """Load ``version`` like a reload would (same checks) and compare it on sampled live traffic."""
        if not 0.0 < sample_rate <= 1.0:
            raise ReloadRefused(f"sample_rate must be in (0, 1], got {sample_rate!r}", 422)
        async with self._lock:
            model = await self._load_checked(version)
            scorer = ShadowScorer(
                model, sample_rate, self.state.metrics, max_pending=self.state.settings.shadow_max_pending
            )
            old, self.state.shadow = self.state.shadow, scorer
            if old is not None:
                self._drop_shadow(old)
            log.info("shadow mode: %s on %.1f%% of requests", version, 100 * sample_rate)
            return scorer

    async def stop_shadow(self) -> dict[str, Any] | None:
        """Stop shadow scoring; returns its final summary (None when none was running)."""
        async with self._lock:
            old, self.state.shadow = self.state.shadow, None
            if old is None:
                return None
            summary = old.summary()
            self._drop_shadow(old)
            return summary

    def _drop_shadow(self, scorer: ShadowScorer) -> None:
        scorer.close()
        self.state.metrics.forget_shadow(scorer.version)
        forget = getattr(self.state.store, "forget", None)
        current = self.state.holder.current.version if self.state.holder.ready else None
        if forget is not None and scorer.version != current:
            forget(scorer.version)

    def info(self) -> dict[str, Any]:
        """The lifecycle block of /info."""
        s = self.state.settings
        return {
            "previous_version": self._served[-1] if self._served else None,
            "served_before": list(self._served[-10:]),
            "last_reload": self.last_result,
            "poll_seconds": s.reload_poll_seconds,
            "pubsub_channel": s.reload_channel_name if (s.redis_url and s.reload_pubsub) else None,
            "admin_enabled": s.admin_token is not None,
        }
