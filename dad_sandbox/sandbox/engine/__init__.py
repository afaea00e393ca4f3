"""Container engines: the interface and its Docker implementation."""

from dad_sandbox.sandbox.engine._base import (
    ContainerSpec,
    ContainerState,
    Engine,
    ExecExit,
    ExecSpec,
    Mount,
    OutputCallback,
    StdinHandle,
)

__all__ = ["ContainerSpec", "ContainerState", "Engine", "ExecExit", "ExecSpec", "Mount", "OutputCallback", "StdinHandle"]
