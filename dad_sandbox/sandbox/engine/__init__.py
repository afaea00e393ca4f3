"""Container engines: the interface and its Docker implementation."""

from dad_sandbox.sandbox.engine._base import (
    NODE_LOST,
    ContainerSpec,
    ContainerState,
    Engine,
    ExecExit,
    ExecSpec,
    Mount,
    OutputCallback,
)

__all__ = ["NODE_LOST", "ContainerSpec", "ContainerState", "Engine", "ExecExit", "ExecSpec", "Mount", "OutputCallback"]
