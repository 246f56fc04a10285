"""The model pipeline: a model request through the plugins in the Go host's order."""

from .catalog import Catalog
from .models import ModelChunk, ModelEntry, ModelRequest, ModelResponse
from .run import Pipeline
from .source import Participant, PluginSource, PluginStream, StreamChunk

__all__ = [
    "Catalog",
    "ModelChunk",
    "ModelEntry",
    "ModelRequest",
    "ModelResponse",
    "Participant",
    "Pipeline",
    "PluginSource",
    "PluginStream",
    "StreamChunk",
]
