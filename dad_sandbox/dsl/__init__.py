"""Components: agents hold flows, flows hold nodes."""

from dad_sandbox.dsl._elements import AgentDefinition, Component, FlowDefinition, FunctionNode, NodeContext

__all__ = ["AgentDefinition", "Component", "FlowDefinition", "FunctionNode", "NodeContext"]
