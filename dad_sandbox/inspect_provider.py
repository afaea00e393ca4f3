"""An inspect_ai sandbox provider: ``sandbox="dad-sandbox"`` runs each sample in a dad-sandbox session.

Install with ``pip install 'dad-sandbox[inspect]'``; inspect finds it through the ``inspect_ai``
entry point, so a task only names it::

    Task(..., sandbox="dad-sandbox")                                  # policy "untrusted"
    Task(..., sandbox=("dad-sandbox", "gvisor"))                      # a policy name or TOML path
    Task(..., sandbox=SandboxEnvironmentSpec("dad-sandbox", DadSandboxConfig(policy="default", timeout="1h")))

Each sample gets one :class:`~dad_sandbox.sandbox.Session` (one container, one run dir with a
span per exec); the policy is the whole configuration, and what it forbids stays forbidden: a
request to exec as another user (e.g. ``root``) raises ``SandboxUserUnsupportedError``.
Errors map to the ones inspect documents: timeouts to ``TimeoutError``, files to
``FileNotFoundError``/``PermissionError``/``IsADirectoryError``, size limits to
``OutputLimitExceededError``, an ended session to ``SandboxUnavailableError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict

from dad_sandbox.errors import SessionError, SessionLimitError

try:
    from inspect_ai.util import (
        ExecResult,
        OutputLimitExceededError,
        SandboxEnvironment,
        SandboxEnvironmentConfigType,
        SandboxEnvironmentLimits,
        sandboxenv,
    )
    from inspect_ai.util._sandbox.environment import SandboxUnavailableError, SandboxUserUnsupportedError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the inspect_ai provider needs the extra: pip install 'dad-sandbox[inspect]'") from exc

from dad_sandbox.sandbox._session import Session, SessionLimits

PROVIDER_NAME = "dad-sandbox"
#: exit code of a command that exists but cannot be executed (``timeout`` reports it as 126)
_CANNOT_EXECUTE = 126


class DadSandboxConfig(BaseModel):
    """The provider's configuration: which policy, how long a sample's session may live, where runs go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: str = "untrusted"
    timeout: str | float | None = None
    project_root: str = "."
    run_root: str | None = None


def _config(config: SandboxEnvironmentConfigType | None) -> DadSandboxConfig:
    if config is None:
        return DadSandboxConfig()
    if isinstance(config, DadSandboxConfig):
        return config
    if isinstance(config, str):  # a policy name or a TOML path
        return DadSandboxConfig(policy=config)
    if isinstance(config, BaseModel):
        return DadSandboxConfig.model_validate(config.model_dump())
    raise TypeError(f"dad-sandbox takes a policy name, a policy TOML path or a DadSandboxConfig, not {type(config)}")


@sandboxenv(name=PROVIDER_NAME)
class DadSandboxEnvironment(SandboxEnvironment):
    """One inspect sample's sandbox: a dad-sandbox session under the configured policy."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def config_deserialize(cls, config: dict[str, Any]) -> BaseModel:
        return DadSandboxConfig(**config)

    @classmethod
    async def task_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None) -> None:
        _config(config)  # a bad config fails at task start, not at the first sample

    @classmethod
    async def sample_init(
        cls, task_name: str, config: SandboxEnvironmentConfigType | None, metadata: dict[str, str]
    ) -> dict[str, SandboxEnvironment]:
        cfg = _config(config)
        session = Session(
            policy=cfg.policy, timeout=cfg.timeout, project_root=Path(cfg.project_root),
            run_root=Path(cfg.run_root) if cfg.run_root else None,
            limits=SessionLimits(output=SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE,
                                 read_file=SandboxEnvironmentLimits.MAX_READ_FILE_SIZE),
            run_id_prefix="inspect",
        )
        await session.start()  # cleans up after itself when it fails
        return {"default": cls(session)}

    @classmethod
    async def sample_cleanup(
        cls,
        task_name: str,
        config: SandboxEnvironmentConfigType | None,
        environments: dict[str, SandboxEnvironment],
        interrupted: bool,
    ) -> None:
        for env in environments.values():
            if isinstance(env, DadSandboxEnvironment):
                await env.session.close(cancel=interrupted)

    @classmethod
    async def cli_cleanup(cls, id: str | None) -> None:
        """Nothing to do by id: orphaned session containers are finalized by ``dad-sandbox gc``."""

    # ------------------------------------------------------------------ operations

    async def exec(
        self,
        cmd: list[str],
        input: str | bytes | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        user: str | None = None,
        timeout: int | None = None,
        timeout_retry: bool = True,
        concurrency: bool = True,
    ) -> ExecResult[str]:
        try:
            result = await self.session.exec(cmd, input=input, env=env, cwd=cwd, user=user, timeout=timeout)
        except SessionLimitError:
            raise
        except SessionError as exc:
            if user is not None and "refused" in str(exc):
                raise SandboxUserUnsupportedError(str(exc)) from exc
            raise SandboxUnavailableError(str(exc)) from exc
        if result.timed_out:
            raise TimeoutError(f"the command passed its {timeout}s timeout and was killed with its children")
        if result.stdout_truncated or result.stderr_truncated:
            raise OutputLimitExceededError(SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE_STR,
                                           truncated_output=result.stdout)
        if result.exit_code == _CANNOT_EXECUTE and "Permission denied" in result.stderr:
            raise PermissionError(f"cannot execute {cmd[0]!r}: {result.stderr.strip()}")
        return ExecResult(success=result.exit_code == 0, returncode=result.exit_code,
                          stdout=result.stdout, stderr=result.stderr)

    async def write_file(self, file: str, contents: str | bytes) -> None:
        try:
            await self.session.write_file(file, contents)
        except SessionLimitError as exc:
            raise OutputLimitExceededError(f"{exc.limit} bytes", truncated_output=None) from exc
        except SessionError as exc:
            raise SandboxUnavailableError(str(exc)) from exc

    @overload
    async def read_file(self, file: str, text: Literal[True] = True) -> str: ...

    @overload
    async def read_file(self, file: str, text: Literal[False]) -> bytes: ...

    async def read_file(self, file: str, text: bool = True) -> str | bytes:
        try:
            return await self.session.read_file(file, text=text, max_size=SandboxEnvironmentLimits.MAX_READ_FILE_SIZE)
        except SessionLimitError as exc:
            raise OutputLimitExceededError(SandboxEnvironmentLimits.MAX_READ_FILE_SIZE_STR, truncated_output=None) from exc
        except SessionError as exc:
            raise SandboxUnavailableError(str(exc)) from exc


__all__ = ["DadSandboxConfig", "DadSandboxEnvironment", "PROVIDER_NAME"]
