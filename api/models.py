"""Models: every model a job can use, whether the live workers can run it, its source and licence.

Workers publish what they have (`workers.capabilities`); the API reads those records, so a job whose
model no live worker can run is refused when it is submitted, not failed item by item later.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint

from api.context import svc
from api.errors import ModelUnavailable
from api.schemas import AUTH_ERRORS, ModelList
from storage.coordination import WorkerInfo
from workers.models.catalog import MODELS, ModelCard

bp = APIBlueprint("models", __name__, url_prefix="/v1", abp_responses=AUTH_ERRORS)


def runnable(model: ModelCard, workers: list[WorkerInfo]) -> bool | None:
    """True when a live worker of the model's queue has its weights and libraries, False when live workers
    of that queue exist but none has them, None when no worker of that queue is live (nothing to ask)."""
    serving = [w for w in workers if model.queue in w.queues]
    if not serving:
        return None
    return any(
        all(w.weights.get(name, False) for name in model.weights)
        and all(w.modules.get(m, False) for m in model.modules)
        for w in serving
    )


def _live() -> list[WorkerInfo]:
    return svc().records.live_workers()


def check_runnable(kind: str, params: Any) -> None:
    """Refuse (422) a job that uses a model the live workers cannot run, saying how to make it available.

    With no live worker for the model's queue the job is accepted: it waits for workers to start.
    """
    workers: list[WorkerInfo] | None = None
    for model in MODELS:
        if not model.used_by(kind, params):
            continue
        workers = _live() if workers is None else workers
        if runnable(model, workers) is False:
            raise ModelUnavailable(
                f"params.{model.param}: {model.value!r} needs {', '.join(model.weights or model.modules)}, "
                f"which no live {model.queue} worker has. To enable it: {model.how_to_provide}. "
                "GET /v1/models lists what the workers have",
                details=[{"field": f"params.{model.param}", "model": model.id}],
            )


@bp.get(
    "/models",
    summary="Every model: what selects it, whether the live workers have its weights, source, licence",
    responses={200: ModelList},
)
def list_models() -> Response:
    workers = _live()
    models = []
    for model in MODELS:
        models.append(
            {
                "id": model.id,
                "selected_by": model.selected_by,
                "description": model.description,
                "weights": list(model.weights),
                "libraries": list(model.modules),
                "weights_present": runnable(model, workers),
                "live_workers": sum(1 for w in workers if model.queue in w.queues),
                "out_of_the_box": model.out_of_the_box,
                "source": model.source,
                "licence": model.licence,
                "how_to_provide": model.how_to_provide,
            }
        )
    return jsonify(
        {
            "models": models,
            "workers": [
                {"name": w.name, "queues": w.queues, "device": w.device, "seen_at": w.seen_at} for w in workers
            ],
        }
    )
