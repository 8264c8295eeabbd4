"""Thin HTTP routes: decode → domain request → ``scheduler.acquire()`` → backend → encode."""

from litestar.types import ControllerRouterHandler

from host.routes.chat import chat_completions
from host.routes.cohere import cohere_embed
from host.routes.completions import completions
from host.routes.embeddings import embeddings
from host.routes.messages import count_tokens, messages
from host.routes.metrics import metrics
from host.routes.models import OneModel, health, list_models
from host.routes.rerank import rerank, rerank_cohere
from host.routes.responses import create_response, delete_response, get_response
from host.routes.tokenize import detokenize, tokenize

ROUTES: list[ControllerRouterHandler] = [
    chat_completions,
    completions,
    messages,
    count_tokens,
    embeddings,
    cohere_embed,
    rerank,
    rerank_cohere,
    tokenize,
    detokenize,
    list_models,
    OneModel,
    health,
    metrics,
    create_response,
    get_response,
    delete_response,
]

__all__ = ["ROUTES"]
