"""Thin HTTP routes: decode → domain request → ``scheduler.acquire()`` → backend → encode."""

from host.routes.chat import chat_completions
from host.routes.cohere import cohere_embed
from host.routes.completions import completions
from host.routes.embeddings import embeddings
from host.routes.messages import count_tokens, messages
from host.routes.metrics import metrics
from host.routes.models import get_model, health, list_models, manage_model
from host.routes.rerank import rerank, rerank_cohere
from host.routes.responses import create_response, delete_response, get_response
from host.routes.tokenize import detokenize, tokenize

ROUTES = [
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
    get_model,
    manage_model,
    health,
    metrics,
    create_response,
    get_response,
    delete_response,
]

__all__ = ["ROUTES"]
