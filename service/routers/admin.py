"""Admin endpoints: reload, rollback and shadow mode, behind a bearer token (``DLF_ADMIN_TOKEN``).

No token configured -> every admin path answers 404 (the admin API does not
exist on this replica); missing ``Authorization: Bearer`` -> 401; wrong token -> 403.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from service.contract import VERSION_PATTERN
from service.reloader import Reloader, ReloadRefused, ReloadResult
from service.state import ServiceState, get_state

bearer = HTTPBearer(auto_error=False, description="DLF_ADMIN_TOKEN")


def require_admin(
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    state: ServiceState = Depends(get_state),
) -> Reloader:
    """Check the bearer token; returns the app's reloader."""
    token = state.settings.admin_token
    if token is None:
        raise HTTPException(status_code=404, detail="admin API disabled: DLF_ADMIN_TOKEN is not set")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status_code=401,
            detail="admin token required: send Authorization: Bearer <DLF_ADMIN_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(credentials.credentials.encode(), token.get_secret_value().encode()):
        raise HTTPException(status_code=403, detail="admin token is wrong")
    if state.reloader is None:
        raise HTTPException(status_code=503, detail="service is still starting")
    return state.reloader


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class VersionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(
        None,
        description="Bundle version; omitted = CURRENT (reload) / previous (rollback).",
        json_schema_extra={"pattern": VERSION_PATTERN.pattern},  # others: 422 from the reloader
    )


class ShadowBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(
        description="Candidate bundle version to score in shadow.",
        json_schema_extra={"pattern": VERSION_PATTERN.pattern},
    )
    sample_rate: float = Field(0.1, gt=0, le=1, description="Share of /predict requests compared.")


class ReloadResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    result: str = Field(description="ok (swapped) or unchanged (already serving it)")
    model_version: str
    previous_version: str | None
    source: str
    seconds: float
    pointer_written: bool = Field(description="CURRENT was moved (rollback only)")
    notified: int | None = Field(
        None, description="replicas that received the rollback notice on the reload channel (None: no Redis)"
    )


def _answer(result: ReloadResult) -> ReloadResponse:
    return ReloadResponse(
        result=result.result,
        model_version=result.version,
        previous_version=result.previous_version,
        source=result.source,
        seconds=result.seconds,
        pointer_written=result.pointer_written,
        notified=result.notified,
    )


def _refused(exc: ReloadRefused) -> HTTPException:
    return HTTPException(status_code=exc.status_code, detail=f"refused: {exc.reason}")


@router.post("/reload", response_model=ReloadResponse)
async def reload(
    body: VersionBody | None = None, reloader: Reloader = Depends(require_admin)
) -> ReloadResponse:
    """Load + validate CURRENT (or ``version``) off the request path and swap it in; 409 when refused."""
    try:
        return _answer(await reloader.reload(body.version if body else None, source="admin"))
    except ReloadRefused as exc:
        raise _refused(exc) from None


@router.post("/rollback", response_model=ReloadResponse)
async def rollback(
    body: VersionBody | None = None, reloader: Reloader = Depends(require_admin)
) -> ReloadResponse:
    """Serve ``version`` (default: the previously served one) and move CURRENT to it."""
    try:
        return _answer(await reloader.rollback(body.version if body else None))
    except ReloadRefused as exc:
        raise _refused(exc) from None


@router.post("/shadow")
async def start_shadow(body: ShadowBody, reloader: Reloader = Depends(require_admin)) -> dict[str, Any]:
    """Score ``sample_rate`` of live requests with ``version`` too, off the response path (see /info)."""
    try:
        scorer = await reloader.start_shadow(body.version, body.sample_rate)
    except ReloadRefused as exc:
        raise _refused(exc) from None
    return scorer.summary()


@router.delete("/shadow")
async def stop_shadow(reloader: Reloader = Depends(require_admin)) -> dict[str, Any]:
    """Stop shadow scoring; answers the final comparison summary (404 when none was running)."""
    summary = await reloader.stop_shadow()
    if summary is None:
        raise HTTPException(status_code=404, detail="no shadow model is running")
    return summary
