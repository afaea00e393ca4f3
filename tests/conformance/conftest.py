"""One suite, two engines: every test here runs against FakeEngine and the real Docker engine.

Why (as inspect_ai's sandbox self-check): unit tests of the supervisor trust FakeEngine to behave
like Docker; this suite is what makes that trust earned. A test written once describes the
interface's contract; a drift of the fake fails it on the ``fake`` side.

Programs are written as engine-neutral steps (:class:`Prog`) and translated per engine: the fake
simulates them, Docker runs them as ``sh -c`` in the runner image. Docker containers carry a
per-session label and are removed by the test that made them (the engine is shared).
"""

from __future__ import annotations

import asyncio
import shlex
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dad_sandbox.sandbox.engine import ContainerSpec, Engine
from tests._support import IN_CI

LABEL = "dad.conformance"
SESSION = uuid.uuid4().hex[:12]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents and "docker" in item.name:
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class Prog:
    """Translate engine-neutral steps into a command for one engine."""

    kind: str  # "fake" | "docker"

    def argv(self, *steps: tuple[str, ...]) -> tuple[str, ...]:
        if self.kind == "fake":
            out: list[str] = []
            for step in steps:
                out += [*([";"] if out else []), *step]
            return tuple(out)
        return ("sh", "-c", "; ".join(self._sh(step) for step in steps))

    @staticmethod
    def _sh(step: tuple[str, ...]) -> str:
        op, args = step[0], step[1:]
        return {
            "print": lambda: f"echo {shlex.quote(' '.join(args))}",
            "eprint": lambda: f"echo {shlex.quote(' '.join(args))} >&2",
            "exit": lambda: f"exit {args[0] if args else 0}",
            "sleep": lambda: f"sleep {args[0]}",
            "cat": lambda: "cat",
            "signal": lambda: f"kill -{args[0].removeprefix('SIG')} $$",
            "oom": lambda: "python3 -c 'x = bytearray(1 << 30)'",
        }[op]()


@dataclass
class Case:
    """One engine under test, with what a test needs to drive it."""

    kind: str
    image: str
    make: Callable[[], Engine]

    @property
    def prog(self) -> Prog:
        return Prog(self.kind)

    def spec(self, *steps: tuple[str, ...], **kw: Any) -> ContainerSpec:
        labels = {LABEL: SESSION, **kw.pop("labels", {})}
        return ContainerSpec(image=self.image, command=self.prog.argv(*steps), labels=labels,
                             user="65534:65534", cap_drop=("ALL",), **kw)

    def run(self, body: Callable[[Engine], Awaitable[None]]) -> None:
        """Run ``body`` on a fresh engine in a fresh loop; remove every container it left."""
        async def go() -> None:
            engine = self.make()
            try:
                await body(engine)
            finally:
                for c in await engine.list_by_label(LABEL, SESSION):
                    await engine.remove(c.id)
                await engine.close()

        asyncio.run(go())


@pytest.fixture(params=["fake", "docker"])
def case(request: pytest.FixtureRequest) -> Case:
    if request.param == "fake":
        from dad_sandbox.testing import FakeEngine

        return Case("fake", "dad-sandbox-runner:test", lambda: FakeEngine(images={"dad-sandbox-runner:test"}))
    from dad_sandbox.sandbox._policy import runner_tag
    from dad_sandbox.sandbox.engine._docker import DockerEngine

    image = f"dad-sandbox-runner:{runner_tag()}"
    try:
        import docker

        api = docker.APIClient(version="auto", timeout=10)
        api.inspect_image(image)
        api.close()
    except Exception as exc:
        msg = f"no Docker engine or no image {image} ({exc}); run 'make image'"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return Case("docker", image, DockerEngine)
