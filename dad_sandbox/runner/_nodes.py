"""Executing one node of each type. Each returns the node's JSON-able output or raises."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from dad_sandbox.dsl import CommandNode, FileNode, FunctionNode, Node, NodeContext


class CommandFailed(Exception):
    """A command node's process exited non-zero (or timed out); carries its output as the result."""

    def __init__(self, message: str, output: dict[str, Any]) -> None:
        super().__init__(message)
        self.output = output


def to_json(value: Any) -> Any:
    """A node's return value as JSON-able data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return to_jsonable_python(value)


async def run_function(node: FunctionNode, ctx: NodeContext) -> tuple[Any, Any]:
    """``(python_value, json_output)`` of a function node."""
    value = node.func(ctx)
    if inspect.isawaitable(value):
        value = await value
    if node.output_model is not None and not isinstance(value, node.output_model):
        value = node.output_model.model_validate(value)
    return value, to_json(value)


def _tail(path: Path, limit: int) -> tuple[str, bool]:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size > limit:
            fh.seek(size - limit)
        return fh.read().decode("utf-8", errors="replace"), size > limit


async def run_command(node: CommandNode, ctx: NodeContext) -> tuple[Any, Any]:
    """Run the node's argv with its folder as cwd; stdout/stderr to files there, tails in the output."""
    argv = node.argv(ctx) if callable(node.argv) else node.argv
    argv = [str(a) for a in argv]
    if not argv:
        raise ValueError(f"command node {ctx.hierarchy_path!r} has an empty argv")
    out_path, err_path = ctx.node_dir / "stdout.txt", ctx.node_dir / "stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:  # noqa: ASYNC230 - local files, opened once
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ctx.node_dir, stdout=out, stderr=err, stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, **node.env}, start_new_session=True,
        )
        timed_out = False
        try:
            code = await asyncio.wait_for(proc.wait(), timeout=node.timeout)
        except TimeoutError:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, not just the leader
            code = await proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
    stdout, out_cut = _tail(out_path, node.max_output)
    stderr, err_cut = _tail(err_path, node.max_output)
    output = {"argv": argv, "exit_code": code, "timed_out": timed_out, "stdout": stdout, "stderr": stderr,
              "stdout_truncated": out_cut, "stderr_truncated": err_cut}
    if timed_out:
        raise CommandFailed(f"command timed out after {node.timeout}s: {argv[0]}", output)
    if code != 0:
        last = stderr.strip().splitlines()[-1:] or [""]
        raise CommandFailed(f"command exited with code {code}: {last[0]}", output)
    return output, output


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(p in ("..", "") for p in path.parts):
        raise ValueError(f"file name {name!r} must be a relative path inside the node folder")
    return path


async def run_file(node: FileNode, ctx: NodeContext) -> tuple[Any, Any]:
    """Write the node's files into its folder; the output lists them."""
    files = node.files(ctx) if callable(node.files) else node.files
    written = []
    for name, content in files.items():
        rel = _safe_name(name)
        target = ctx.node_dir.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else bytes(content)
        target.write_bytes(data)
        written.append({"name": str(rel), "bytes": len(data)})
    output = {"files": written, "outcome": node.outcome}
    return output, output


async def run_node(node: Node, ctx: NodeContext) -> tuple[Any, Any]:
    """Dispatch on node type."""
    if isinstance(node, FunctionNode):
        return await run_function(node, ctx)
    if isinstance(node, CommandNode):
        return await run_command(node, ctx)
    if isinstance(node, FileNode):
        return await run_file(node, ctx)
    raise TypeError(f"unknown node type {type(node).__name__}")
