"""Thin HTTP routes: decode → domain request → ``scheduler.acquire()`` → backend → encode."""

from litestar.types import ControllerRouterHandler

from host.routes.chat import chat_completions
from host.routes.completions import completions
from host.routes.embeddings import embeddings
from host.routes.metrics import metrics
from host.routes.models import OneModel, health, list_models
from host.routes.rerank import rerank
from host.routes.responses import create_response, delete_response, get_response

ROUTES: list[ControllerRouterHandler] = [
    chat_completions,
    completions,
    embeddings,
    rerank,
    list_models,
    OneModel,
    health,
    metrics,
    create_response,
    get_response,
    delete_response,
]

__all__ = ["ROUTES"]
