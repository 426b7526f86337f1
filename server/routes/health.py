"""GET /health: always 200 while the process is up; says whether (and why not) the model is loaded."""

from __future__ import annotations

from fastapi import APIRouter

from server.dependencies import ModelsDep, SettingsDep, TrackingDep
from server.schemas import Health

router = APIRouter(tags=["health"])

DEV_MODE_NOTE = (
    "development mode (SAM3_RANDOM_WEIGHTS=true): random weights with spread scores, so /detect finds a few "
    "objects for any text and clicks and text prompts track something, but every mask and score is "
    "meaningless; load the real sam3.pt for real results"
)


@router.get("/health", response_model=Health)
def health(settings: SettingsDep, models: ModelsDep, tracking: TrackingDep) -> Health:
    return Health(
        model_loaded=models.loaded,
        processor_ready=models.processor is not None,
        device=models.device,
        video_predictor_loaded=tracking.predictor_loaded,
        error=models.error,
        precision=models.precision.mode if models.precision is not None else None,
        loading=models.loading,
        preset=settings.preset,
        model_version=settings.model_version,
        random_weights=settings.random_weights,
        backbone_runs=models.backbone_runs,
        image_cache=models.cache_stats(),
        active_sessions=len(tracking.sessions),
        video_predictor_error=tracking.predictor_error,
        note=DEV_MODE_NOTE if settings.random_weights else None,
    )
