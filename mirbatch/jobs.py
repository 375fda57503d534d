"""Job specs (YAML) and their submission to a Ray cluster.

A spec names the command it runs (``kind: tag | enroll | train``) and then that command's options
by their CLI names (``sources``, ``out``, ``mode``, ``gpus-per-worker``, ...; ``gpus_per_worker`` is
accepted too). An optional ``submit`` block holds what the cluster needs to start it (entrypoint
resources, a runtime environment). Specs are read with ``yaml.safe_load`` and checked against the
command's own click parameters, so an unknown key or a value of the wrong type is an error that
names it, before anything is sent.

The job runs ``mirbatch <command> ...`` on the cluster's head node (the entrypoint), which connects
to the cluster and fans the work out to its workers, exactly as the same command does locally.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

__all__ = [
    "KINDS",
    "JobSpec",
    "JobSpecError",
    "SubmitOptions",
    "job_client",
    "load_job_spec",
    "parse_overrides",
    "submit_job",
    "validate",
    "wait_for_job",
]

# kind -> the CLI command it runs
KINDS: dict[str, tuple[str, ...]] = {"tag": ("tag",), "enroll": ("support", "add"), "train": ("train",)}
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class JobSpecError(ValueError):
    """A job spec is malformed: the message names the key and what is wrong."""


@dataclass(frozen=True)
class SubmitOptions:
    """How the cluster starts the job.

    Attributes
    ----------
    entrypoint_num_cpus, entrypoint_num_gpus : float
        Resources reserved for the driver process (it runs the listing and writes the output).
    runtime_env : dict
        Ray runtime environment (``env_vars``, ``pip``, ``working_dir``, ...). Credentials do not
        belong here: workers take them from the cluster's AWS chain.
    """

    entrypoint_num_cpus: float = 1.0
    entrypoint_num_gpus: float = 0.0
    runtime_env: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SubmitOptions:
        known = {"entrypoint_num_cpus", "entrypoint_num_gpus", "runtime_env"}
        for key in d:
            if key.replace("-", "_") not in known:
                raise JobSpecError(f"unknown key 'submit.{key}'; valid: {', '.join(sorted(known))}")
        values = {k.replace("-", "_"): v for k, v in d.items()}
        for key in ("entrypoint_num_cpus", "entrypoint_num_gpus"):
            if key in values and (not isinstance(values[key], int | float) or isinstance(values[key], bool)):
                raise JobSpecError(f"'submit.{key}' must be a number, not {values[key]!r}")
        if not isinstance(values.get("runtime_env", {}), dict):
            raise JobSpecError("'submit.runtime_env' must be a mapping")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "entrypoint_num_cpus": self.entrypoint_num_cpus,
            "entrypoint_num_gpus": self.entrypoint_num_gpus,
            "runtime_env": self.runtime_env,
        }


@dataclass(frozen=True)
class JobSpec:
    """A validated job: the command, its options (converted by click's own types) and how to submit it."""

    kind: str
    options: dict[str, Any]
    submit: SubmitOptions = field(default_factory=SubmitOptions)
    name: str = "job"

    def command(self) -> click.Command:
        return _command(self.kind)

    def argv(self) -> list[str]:
        """The CLI arguments that run this job (``mirbatch`` excluded)."""
        command = self.command()
        args: list[str] = list(KINDS[self.kind])
        options: list[str] = []
        for param in command.params:
            if param.name not in self.options:
                continue
            value = self.options[param.name]
            values = list(value) if isinstance(value, list | tuple) else [value]
            if isinstance(param, click.Argument):
                args.extend(str(v) for v in values)
            elif isinstance(param, click.Option):
                flag = max(param.opts, key=len)
                if param.is_flag:
                    if value:
                        options.append(flag)
                else:
                    for v in values:
                        options.extend([flag, str(v)])
        return args + options

    def entrypoint(self) -> str:
        """The shell command the cluster runs."""
        return shlex.join(["mirbatch", *self.argv()])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.options, "submit": self.submit.to_dict()}


def _command(kind: str) -> click.Command:
    from mirbatch.cli import main

    command: click.Command = main
    for name in KINDS[kind]:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` items -> a dict; values are YAML (``workers=4`` is an int, ``sources=[a, b]`` a list)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise JobSpecError(f"--set takes key=value, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return overrides


def _key(param: click.Parameter) -> str:
    """A spec key: the option's long name without dashes (``gpus-per-worker``), or the argument's name."""
    if isinstance(param, click.Option):
        return max(param.opts, key=len).lstrip("-")
    return str(param.name).replace("_", "-")


def _convert(param: click.Parameter, key: str, value: Any, ctx: click.Context) -> Any:
    many = param.multiple or (isinstance(param, click.Argument) and param.nargs == -1)
    if isinstance(param, click.Option) and param.is_flag:
        if not isinstance(value, bool):
            raise JobSpecError(f"key '{key}' is a flag: give true or false, not {value!r}")
        return value
    if many:
        items = value if isinstance(value, list) else [value]
        if not items and param.required:
            raise JobSpecError(f"key '{key}' needs at least one value")
    elif isinstance(value, list | dict):
        raise JobSpecError(f"key '{key}' takes one value, not {type(value).__name__} {value!r}")
    else:
        items = [value]
    converted = []
    for item in items:
        if isinstance(item, dict | list) or item is None:
            raise JobSpecError(f"key '{key}': {item!r} is not a plain value")
        if isinstance(param.type, click.Path):  # paths are checked where the job runs, not here
            if not isinstance(item, str):
                raise JobSpecError(f"key '{key}': a path is a string, not {item!r}")
            converted.append(item)
            continue
        try:
            converted.append(param.type.convert(item, param, ctx))
        except click.BadParameter as exc:
            raise JobSpecError(f"key '{key}': {exc.message}") from None
    return converted if many else converted[0]


def validate(kind: str, options: dict[str, Any], name: str = "job", submit: dict[str, Any] | None = None) -> JobSpec:
    """Check ``options`` against the command of ``kind``; return the spec with converted values."""
    if kind not in KINDS:
        raise JobSpecError(f"unknown kind {kind!r}; use one of: {', '.join(KINDS)}")
    command = _command(kind)
    params = {_key(p): p for p in command.params if p.name and p.name != "help"}
    ctx = click.Context(command)
    converted: dict[str, Any] = {}
    for key, value in options.items():
        spelled = str(key).replace("_", "-")
        if spelled not in params:
            raise JobSpecError(f"unknown key {key!r} for kind {kind}; valid keys: {', '.join(sorted(params))}")
        param = params[spelled]
        assert param.name is not None
        converted[param.name] = _convert(param, str(key), value, ctx)
    missing = [k for k, param in params.items() if param.required and param.name not in converted]
    if missing:
        raise JobSpecError(f"kind {kind} needs: {', '.join(missing)}")
    return JobSpec(kind, converted, SubmitOptions.from_dict(submit or {}), name)


def load_job_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> JobSpec:
    """Read a YAML job spec (safe loader), apply ``--set`` overrides, validate."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise JobSpecError(f"job spec {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise JobSpecError(f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise JobSpecError("must be a YAML mapping with 'kind' and the command's options")
    data = {**data, **(overrides or {})}
    kind = data.pop("kind", None)
    if kind is None:
        raise JobSpecError(f"has no 'kind' (one of: {', '.join(KINDS)})")
    submit = data.pop("submit", None) or {}
    if not isinstance(submit, dict):
        raise JobSpecError("'submit' must be a mapping")
    return validate(str(kind), data, path.stem, submit)


def job_client(address: str) -> Any:
    """The cluster's ``JobSubmissionClient`` (``http://HEAD:8265``)."""
    from ray.job_submission import JobSubmissionClient

    # Token auth: with RAY_AUTH_MODE=token the client sends the cluster's token (RAY_AUTH_TOKEN,
    # RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token).
    return JobSubmissionClient(address)


def submit_job(spec: JobSpec, address: str, submission_id: str | None = None, retry_s: float = 60.0) -> str:
    """Submit ``spec`` to the cluster's job server at ``address`` (``http://HEAD:8265``); return the id.

    A cluster whose job agent is still starting is retried for up to ``retry_s`` seconds.
    """
    client = job_client(address)
    runtime_env = dict(spec.submit.runtime_env)
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return str(
                client.submit_job(
                    entrypoint=spec.entrypoint(),
                    submission_id=submission_id,
                    runtime_env=runtime_env or None,
                    entrypoint_num_cpus=spec.submit.entrypoint_num_cpus,
                    entrypoint_num_gpus=spec.submit.entrypoint_num_gpus or None,
                    metadata={"mirbatch_kind": spec.kind, "mirbatch_spec": spec.name},
                )
            )
        except RuntimeError as exc:
            # A head that has just started answers "No available agent ... try again later".
            if "try again later" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def wait_for_job(
    address: str, submission_id: str, echo: Callable[[str], None], poll_s: float = 1.0, timeout_s: float | None = None
) -> str:
    """Follow a job's logs until it ends; return its final status."""
    client = job_client(address)
    printed = 0
    started = time.monotonic()
    while True:
        status = str(client.get_job_status(submission_id).value)
        logs = client.get_job_logs(submission_id)
        if len(logs) > printed:
            echo(logs[printed:].rstrip("\n"))
            printed = len(logs)
        if status in _TERMINAL:
            return status
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise TimeoutError(f"job {submission_id} still {status} after {timeout_s:.0f}s")
        time.sleep(poll_s)
