"""Components: agents hold flows and subagents; flows hold nodes, subflows, loops and branches."""

from dad_sandbox.dsl._elements import (
    AgentDefinition,
    CommandNode,
    Component,
    Conditional,
    FileNode,
    FlowDefinition,
    FlowElement,
    ForEach,
    FunctionNode,
    Node,
    NodeContext,
    Subflow,
    static_paths,
)

__all__ = [
    "AgentDefinition",
    "CommandNode",
    "Component",
    "Conditional",
    "FileNode",
    "FlowDefinition",
    "FlowElement",
    "ForEach",
    "FunctionNode",
    "Node",
    "NodeContext",
    "Subflow",
    "static_paths",
]
