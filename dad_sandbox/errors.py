"""Every exception dad-sandbox raises on purpose, in one leaf module.

This module imports nothing from the package, so any layer may import it without loops.

The tree::

    DadSandboxError
    ├── RunError                     the run system (run/): layout, ids, metadata
    │   ├── RunSetupError            setup_run() could not create or find what it needs
    │   ├── StaticInputsError        static inputs missing, malformed or not matching a model
    │   ├── RerunTargetError         previous run or start path that does not exist
    │   ├── UnsafePathError          a path in a run dir is a link, FIFO or other trap
    │   ├── ElementIdError(ValueError) an element id that cannot name a folder, or is taken
    │   ├── ComponentReferenceError  a component that cannot be imported by reference
    │   └── NodeError                a node raised while running in-process
    ├── PolicyError(ValueError)      a policy file or value that is not valid
    ├── EngineError                  could not talk to the container engine or it refused
    │   ├── EngineUnavailable        no engine answers
    │   ├── ImageNotFound            the policy's image is not on the engine
    │   └── ContainerGone            the container disappeared under us
    ├── ExecutionStateError          an IsolatedExecution used outside its lifecycle
    ├── SessionError                 a session could not do what was asked (it ended, a refused user)
    │   └── SessionLimitError        a file or input over a session's size limit (names the limit)
    └── RunOutcomeError              raised only by RunResult.raise_for_status()
        ├── RunFailed
        ├── RunTimedOut(TimeoutError)
        ├── RunOOMKilled
        ├── RunCancelled
        ├── RunCrashed
        └── RunAbandoned

A component that failed inside its container is a *status* on the result (``failed``), never an
engine exception: "the sandbox could not run it" and "it ran and failed" stay apart.
"""

from __future__ import annotations


class DadSandboxError(Exception):
    """Base of every error dad-sandbox raises on purpose."""


class RunError(DadSandboxError):
    """The run system could not do what was asked (layout, ids, metadata)."""


class RunSetupError(RunError):
    """``setup_run()`` could not create or find the run directory or its files."""


class StaticInputsError(RunError):
    """Static inputs are missing, malformed, ambiguous or do not match the node's model."""


class RerunTargetError(RunError):
    """A re-run names a previous run or a start path that does not exist."""


class UnsafePathError(RunError):
    """A path inside a run directory is a symlink, FIFO, device or otherwise not what it must be.

    Run directories are written by untrusted code, so the host refuses such paths instead of
    following them.
    """


class ElementIdError(RunError, ValueError):
    """An element id outside ``^[A-Za-z0-9_]+$``, reserved for paths, or used twice in a container."""


class ComponentReferenceError(RunError):
    """A component cannot be imported by its ``module:attribute`` reference."""


class NodeError(RunError):
    """A node raised while a component ran in-process; carries the node's hierarchy path."""

    def __init__(self, message: str, *, hierarchy_path: str, traceback_text: str = "") -> None:
        super().__init__(message)
        self.hierarchy_path = hierarchy_path
        self.traceback_text = traceback_text


class PolicyError(DadSandboxError, ValueError):
    """A policy file or value is not valid; the message names the file, the key and what is allowed."""


class EngineError(DadSandboxError):
    """The container engine could not be reached or refused a request."""


class EngineUnavailable(EngineError):
    """No container engine answers."""


class ImageNotFound(EngineError):
    """The image a policy names is not present on the engine."""


class ContainerGone(EngineError):
    """The container was removed while we still needed it."""


class ExecutionStateError(DadSandboxError):
    """An ``IsolatedExecution`` was used outside its ``async with`` block or re-entered."""


class SessionError(DadSandboxError):
    """A session refused or could not do an operation: it has ended, or the policy forbids it.

    A command that ran and failed is not this: it is an ``ExecResult`` with a non-zero exit code.
    """


class SessionLimitError(SessionError):
    """A file read or written through a session, or an exec's input, is over the session's limit."""

    def __init__(self, message: str, *, limit: int, size: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.size = size


class RunOutcomeError(DadSandboxError):
    """A run ended in a non-completed status; raised only by ``RunResult.raise_for_status()``."""

    def __init__(self, message: str, *, run_id: str, status: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status
        self.reason = reason


class RunFailed(RunOutcomeError):
    """The component or command failed (non-zero exit, node exception)."""


class RunTimedOut(RunOutcomeError, TimeoutError):
    """The run passed its wall-clock deadline and was killed."""


class RunOOMKilled(RunOutcomeError):
    """The run went over its memory limit and the kernel killed it."""


class RunCancelled(RunOutcomeError):
    """The run was cancelled by the user or a signal."""


class RunCrashed(RunOutcomeError):
    """The container died for another reason (signal, engine error)."""


class RunAbandoned(RunOutcomeError):
    """The supervisor was lost and the run could not be recovered."""
