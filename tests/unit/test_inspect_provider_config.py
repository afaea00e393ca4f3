"""The inspect_ai provider's registration and configuration, without Docker."""

from __future__ import annotations

import pytest

pytest.importorskip("inspect_ai", reason="the inspect extra is not installed: pip install 'dad-sandbox[inspect]'")

from inspect_ai.util._sandbox.registry import registry_find_sandboxenv

from dad_sandbox.inspect_provider import DadSandboxConfig, DadSandboxEnvironment, _config


def test_inspect_finds_the_provider_by_name() -> None:
    """sandbox="dad-sandbox" resolves to our provider, and the package declares the entry point inspect loads."""
    from importlib.metadata import entry_points

    assert "dad_sandbox.inspect_provider" in {ep.value for ep in entry_points(group="inspect_ai")}
    assert registry_find_sandboxenv("dad-sandbox") is DadSandboxEnvironment


def test_config_forms() -> None:
    """None, a policy name and a config model all become a DadSandboxConfig; other types are refused."""
    assert _config(None) == DadSandboxConfig()
    assert _config("gvisor").policy == "gvisor"
    assert DadSandboxEnvironment.config_deserialize({"policy": "default", "timeout": "1h"}) == DadSandboxConfig(
        policy="default", timeout="1h")
    with pytest.raises(TypeError, match="policy name"):
        _config(42)  # type: ignore[arg-type]
