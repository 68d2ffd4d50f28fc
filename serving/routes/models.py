"""``GET /v1/models``: the base model, and each loaded adapter version as a child model."""

from __future__ import annotations

import time

from fastapi import APIRouter

from serving.api_models import ModelCard, ModelList
from serving.deps import CallerDep, ServicesDep

router = APIRouter()
_STARTED = int(time.time())


@router.get("/v1/models")
async def list_models(services: ServicesDep, caller: CallerDep) -> ModelList:
    name = services.settings.model_name
    cards = [ModelCard(id=name, created=_STARTED, root=services.settings.model_dir)]
    # Adapter versions are listed for visibility; requests address them through the admin-only
    # adapter_version pin, so a client's model id stays the base name.
    cards += [
        ModelCard(id=f"{name}:{version}", created=_STARTED, root=name, parent=name)
        for version in services.engine.loaded_adapters()
    ]
    return ModelList(data=cards)
