"""Translating Docker SDK exceptions into dad-sandbox's, at one boundary.

Why one table: SDK and ``requests`` types never leak to users, the cause stays in the traceback
(``raise … from exc``), and a test checks that every class in ``docker.errors`` is listed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker.errors
import requests.exceptions

from dad_sandbox.errors import (
    ContainerGone,
    DadSandboxError,
    EngineError,
    EngineUnavailable,
    ImageNotFound,
)

_ENGINE_HINT = "is the Docker engine running? ('docker info'; 'make engine' provisions one on a root Debian host)"

#: docker.errors class -> our class, most specific first. ``None`` means "cannot happen in our calls;
#: mapped to the generic EngineError".
DOCKER_ERROR_MAP: dict[type[BaseException], type[DadSandboxError]] = {
    docker.errors.ImageNotFound: ImageNotFound,
    docker.errors.NotFound: ContainerGone,
    docker.errors.APIError: EngineError,
    docker.errors.ContainerError: EngineError,
    docker.errors.BuildError: EngineError,
    docker.errors.ImageLoadError: EngineError,
    docker.errors.StreamParseError: EngineError,
    docker.errors.InvalidVersion: EngineError,
    docker.errors.InvalidRepository: EngineError,
    docker.errors.InvalidConfigFile: EngineError,
    docker.errors.InvalidArgument: EngineError,
    docker.errors.DeprecatedMethod: EngineError,
    docker.errors.TLSParameterError: EngineUnavailable,
    docker.errors.NullResource: EngineError,
    docker.errors.MissingContextParameter: EngineUnavailable,
    docker.errors.ContextAlreadyExists: EngineUnavailable,
    docker.errors.ContextException: EngineUnavailable,
    docker.errors.ContextNotFound: EngineUnavailable,
    docker.errors.DockerException: EngineUnavailable,
}


def translate(exc: BaseException, what: str) -> DadSandboxError | None:
    """Our exception for an SDK/transport exception, or ``None`` if it is not an engine error."""
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return EngineUnavailable(f"{what}: the Docker engine did not answer ({exc}); {_ENGINE_HINT}")
    if isinstance(exc, docker.errors.APIError) and exc.status_code == 409 and "is not running" in str(exc):
        # e.g. an exec into a stopped container: for the caller it is as gone as a removed one
        # (the conformance suite holds FakeEngine and Docker to this).
        return ContainerGone(f"{what}: the container is not running")
    for docker_cls, ours in DOCKER_ERROR_MAP.items():
        if isinstance(exc, docker_cls):
            detail = getattr(exc, "explanation", None) or str(exc)
            if ours is EngineUnavailable:
                return ours(f"{what}: {detail}; {_ENGINE_HINT}")
            if ours is ImageNotFound:
                return ours(f"{what}: {detail}; build it with 'make image' or 'dad-sandbox image build'")
            return ours(f"{what}: {detail}")
    return None


@contextlib.contextmanager
def map_docker_errors(what: str) -> Iterator[None]:
    """Re-raise Docker SDK and transport errors as :class:`EngineError` subclasses, ``from`` the cause."""
    try:
        yield
    except DadSandboxError:
        raise
    except Exception as exc:
        mapped = translate(exc, what)
        if mapped is None:
            raise
        raise mapped from exc


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying on an idempotent call: connection trouble, timeouts, 5xx."""
    cause = exc.__cause__ if isinstance(exc, DadSandboxError) else exc
    if isinstance(cause, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(cause, docker.errors.APIError) and not isinstance(cause, docker.errors.NotFound):
        code = cause.status_code
        return code is not None and code >= 500 and "is not running" not in str(cause)
    return False
