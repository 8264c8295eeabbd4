"""What routes take from the app: the scheduler and the limits, kept on ``app.state``."""

from __future__ import annotations

from litestar.datastructures import State

from host.config import HostConfig
from host.registry import ModelRegistry
from host.scheduling.scheduler import Scheduler


def scheduler_of(state: State) -> Scheduler:
    """The app's scheduler."""
    return state.scheduler


def registry_of(state: State) -> ModelRegistry:
    """The app's model registry."""
    return state.registry


def config_of(state: State) -> HostConfig:
    """The app's configuration."""
    return state.config
