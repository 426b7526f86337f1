"""Typed FastAPI dependencies: the settings and services live on ``app.state``, set by the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.services.model_service import ModelService
from server.services.tracking_service import TrackingService
from server.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_models(request: Request) -> ModelService:
    return request.app.state.models


def get_tracking(request: Request) -> TrackingService:
    return request.app.state.tracking


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelsDep = Annotated[ModelService, Depends(get_models)]
TrackingDep = Annotated[TrackingService, Depends(get_tracking)]
