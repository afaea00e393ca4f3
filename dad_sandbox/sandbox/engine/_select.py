"""Which engine runs a process's runs when the caller passes none: one setting, read when asked.

``DAD_SANDBOX_ENGINE=docker`` (the default) is the Docker engine of ``DOCKER_HOST`` (or the local
socket); ``DAD_SANDBOX_ENGINE=swarm`` is the Swarm engine, with ``DOCKER_HOST`` pointing at a
manager. A caller that wants both in one process passes ``engine=`` explicitly
(``Supervisor(engine=SwarmEngine(base_url=...))``).
"""

from __future__ import annotations

import os

from dad_sandbox.errors import EngineUnavailable
from dad_sandbox.sandbox.engine._base import Engine

ENGINE_ENV = "DAD_SANDBOX_ENGINE"
ENGINES = ("docker", "swarm")


def default_engine() -> Engine:
    """The process's shared engine of the kind ``$DAD_SANDBOX_ENGINE`` names.

    Raises:
        EngineUnavailable: the variable names no engine dad-sandbox has.
    """
    kind = os.environ.get(ENGINE_ENV, "docker").strip().lower() or "docker"
    if kind == "docker":
        from dad_sandbox.sandbox.engine._docker import default_engine as docker_engine

        return docker_engine()
    if kind == "swarm":
        from dad_sandbox.sandbox.engine._swarm import default_swarm_engine

        return default_swarm_engine()
    raise EngineUnavailable(f"{ENGINE_ENV}={kind!r} names no engine; use one of: {', '.join(ENGINES)}")
