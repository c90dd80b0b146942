"""Per-app runtime state (one instance per FastAPI app) and its FastAPI dependency."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import HTTPException, Request

from service.batcher import ACCELERATOR_BATCH_ROWS, CPU_BATCH_ROWS, MicroBatcher
from service.feature_store import FeatureStore
from service.metrics import ServiceMetrics
from service.model_holder import CPU, LoadedModel, ModelHolder
from service.request_log import RequestLogger
from service.settings import Settings

if TYPE_CHECKING:
    from service.impressions import ImpressionLogger
    from service.reloader import Reloader
    from service.shadow import ShadowScorer


@dataclass
class ServiceState:
    """Everything the routers use; built by ``create_app`` and filled in by the lifespan."""

    settings: Settings
    metrics: ServiceMetrics
    holder: ModelHolder = field(default_factory=ModelHolder)
    store: FeatureStore | None = None
    batcher: MicroBatcher | None = None
    request_log: RequestLogger | None = None
    load_error: str | None = None
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    reloader: Reloader | None = None
    shadow: ShadowScorer | None = None
    impressions: ImpressionLogger | None = None  # closed loop: None without Redis
    draining: bool = False  # SIGTERM received: /readyz says 503 (service/shutdown.py)

    def install(self, model: LoadedModel) -> None:
        """Serve ``model`` from now on, with the batch size its provider wants unless one is set."""
        self.holder.swap(model)
        if self.batcher is not None:  # unset: by the main session's provider (see CPU_BATCH_ROWS)
            by_provider = CPU_BATCH_ROWS if model.provider == CPU else ACCELERATOR_BATCH_ROWS
            self.batcher.max_batch_rows = self.settings.max_batch_rows or by_provider
        self.metrics.set_model(model.version, model.provider)

    def serving(self) -> tuple[LoadedModel, FeatureStore, MicroBatcher]:
        """The current model and the parts needed to answer, or 503 while loading."""
        if not self.holder.ready or self.store is None or self.batcher is None:
            raise HTTPException(status_code=503, detail=self.load_error or "model is still loading")
        return self.holder.current, self.store, self.batcher


async def get_state(request: Request) -> ServiceState:
    """``async`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a hop per request."""
    return request.app.state.dlf
