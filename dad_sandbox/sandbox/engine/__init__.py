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
    StdinHandle,
)

__all__ = [
    "ContainerSpec",
    "ContainerState",
    "Engine",
    "ExecExit",
    "ExecSpec",
    "Mount",
    "NODE_LOST",
    "OutputCallback",
    "StdinHandle",
]
