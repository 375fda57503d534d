"""Job specs, their submission to a real Ray head, and the cluster / Kubernetes files that run them."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import yaml
from click.testing import CliRunner
from conftest import free_port

from mirbatch.cli import main
from mirbatch.jobs import KINDS, JobSpecError, load_job_spec, parse_overrides

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "jobs").glob("*.yaml"))


def test_shipped_specs_cover_every_kind_and_validate() -> None:
    kinds = {load_job_spec(p).kind for p in SPECS}
    assert kinds == set(KINDS)
    for path in SPECS:
        job = load_job_spec(path)
        assert job.entrypoint().startswith("mirbatch " + " ".join(KINDS[job.kind]))
    names = {p.stem for p in SPECS}
    assert {"tag-archive", "enroll-support", "train-cnn", "train-matcher", "fine-tune"} <= names
    argv = load_job_spec(REPO / "jobs" / "fine-tune.yaml").argv()
    assert argv[:1] == ["train"] and argv[argv.index("--init") + 1] == "cnn-default" and "--model" not in argv


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_unknown_keys_and_wrong_types_are_named(tmp_path: Path) -> None:
    with pytest.raises(JobSpecError, match="unknown key 'wokers'"):
        load_job_spec(_spec(tmp_path, "kind: tag\nsources: [a]\nout: o\nwokers: 2\n"))
    with pytest.raises(JobSpecError, match=r"key 'workers'.*not a valid integer"):
        load_job_spec(_spec(tmp_path, "kind: tag\nsources: [a]\nout: o\nworkers: many\n"))
    with pytest.raises(JobSpecError, match="key 'mode'"):
        load_job_spec(_spec(tmp_path, "kind: tag\nsources: [a]\nout: o\nmode: guess\n"))
    with pytest.raises(JobSpecError, match="key 'no-resume' is a flag"):
        load_job_spec(_spec(tmp_path, "kind: tag\nsources: [a]\nout: o\nno-resume: 1\n"))
    with pytest.raises(JobSpecError, match="needs: out"):
        load_job_spec(_spec(tmp_path, "kind: tag\nsources: [a]\n"))
    with pytest.raises(JobSpecError, match="unknown kind"):
        load_job_spec(_spec(tmp_path, "kind: dance\n"))
    with pytest.raises(JobSpecError, match=r"submit\.retries"):
        load_job_spec(_spec(tmp_path, "kind: tag\nsources: [a]\nout: o\nsubmit: {retries: 3}\n"))
    # Safe YAML only: a Python tag is not constructed.
    with pytest.raises(JobSpecError, match="not valid YAML"):
        load_job_spec(_spec(tmp_path, "kind: !!python/object/apply:os.system ['true']\n"))


def test_overrides_are_typed_and_validated(tmp_path: Path) -> None:
    path = _spec(tmp_path, "kind: tag\nsources: [a]\nout: o\n")
    job = load_job_spec(path, parse_overrides(["workers=3", "sources=[x, y]", "no_resume=true"]))
    assert job.options["workers"] == 3 and job.options["sources"] == ["x", "y"]
    assert job.argv() == ["tag", "x", "y", "--out", "o", "--workers", "3", "--no-resume"]
    with pytest.raises(JobSpecError, match="key=value"):
        parse_overrides(["workers"])


def test_submit_dry_run_prints_the_command() -> None:
    result = CliRunner().invoke(main, ["submit", str(REPO / "jobs" / "tag-archive.yaml"), "--dry-run",
                                       "--set", "workers=2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith("mirbatch tag s3://") and "--workers 2" in result.output


def _pinned_ray() -> str:
    """``major.minor`` of the Ray that pyproject admits (``>=2.60,<2.61``) and that is installed."""
    from importlib.metadata import version

    match = re.search(r"ray\[[^\]]*\]>=([0-9]+\.[0-9]+)", (REPO / "pyproject.toml").read_text())
    assert match and version("ray").startswith(match.group(1) + ".")
    return match.group(1)


def test_kuberay_manifests_reference_what_exists() -> None:
    cluster = yaml.safe_load((REPO / "deploy" / "raycluster.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["spec"]["rayVersion"].startswith(_pinned_ray())
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # model actors never land on the head
    (gpu_group,) = cluster["spec"]["workerGroupSpecs"]
    (worker,) = gpu_group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    image = head["template"]["spec"]["containers"][0]["image"]
    assert worker["image"] == image
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert f"rayproject/ray:{_pinned_ray()}" in dockerfile
    for copied in re.findall(r"^COPY (?:--chown=\S+ )?(.+) \S+$", dockerfile, flags=re.M):
        for item in copied.split():
            assert (REPO / item).exists(), f"Dockerfile copies {item}, which does not exist"
    jobs = sorted((REPO / "deploy").glob("rayjob-*.yaml"))
    assert jobs
    for path in jobs:
        job = yaml.safe_load(path.read_text())
        assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
        assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
        match = re.fullmatch(r"mirbatch run /app/(jobs/[\w.-]+\.yaml)", job["spec"]["entrypoint"])
        assert match, job["spec"]["entrypoint"]
        load_job_spec(REPO / match.group(1))  # the spec it runs exists and is valid
        assert job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["image"] == image


def test_cluster_launcher_configs() -> None:
    gpu = yaml.safe_load((REPO / "cluster" / "aws-gpu.yaml").read_text())
    types = gpu["available_node_types"]
    assert types[gpu["head_node_type"]]["resources"] == {"CPU": 0}
    workers = [t for name, t in types.items() if name != gpu["head_node_type"]]
    assert workers and workers[0]["max_workers"] > workers[0]["min_workers"]  # autoscaling
    assert "--gpus all" in gpu["docker"]["worker_run_options"]
    image = yaml.safe_load((REPO / "deploy" / "raycluster.yaml").read_text())["spec"]["headGroupSpec"]
    assert gpu["docker"]["image"] == image["template"]["spec"]["containers"][0]["image"]
    local = yaml.safe_load((REPO / "cluster" / "local.yaml").read_text())
    assert local["provider"]["type"] == "local" and local["max_workers"] == 0


@pytest.fixture
def ray_head() -> Iterator[str]:
    """A real Ray head on loopback (its own temp dir and ports, one logical GPU), stopped after."""
    temp_dir = tempfile.mkdtemp(prefix="mbhead", dir="/tmp")
    dashboard = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    command = [
        f"{bin_dir}/ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={free_port()}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}", "--num-cpus=2", "--num-gpus=1", f"--temp-dir={temp_dir}",
        "--min-worker-port=20000", "--max-worker-port=21999",  # apart from the session Ray's 10002-19999
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.time() + 120
        while True:
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:
                if time.time() > deadline or process.poll() is not None:
                    raise
                time.sleep(1)
        yield address
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_submit_a_tag_job_to_a_ray_head_and_wait(ray_head: str, fluidr3_clips: Path, tmp_path: Path) -> None:
    """The shipped tag spec, pointed at local clips, runs as a Ray job; --gpus-per-worker 1 places the
    model actor on the head's logical GPU (it computes on the CPU, as there is no CUDA here)."""
    out = tmp_path / "labels"
    args = [
        "submit", str(REPO / "jobs" / "tag-archive.yaml"), "--address", ray_head, "--wait",
        "--set", f"sources=[{fluidr3_clips / 'flute'}, {fluidr3_clips / 'tuba'}]", "--set", f"out={out}",
        "--set", "workers=1", "--set", "batch-size=32",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    submission_id = result.output.splitlines()[0].strip()
    assert submission_id.startswith("raysubmit_")
    rows = pads.dataset(out, format="parquet").to_table().to_pylist()
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    listed = CliRunner().invoke(main, ["jobs", "list", "--address", ray_head])
    assert submission_id in listed.output and "SUCCEEDED" in listed.output
    status = CliRunner().invoke(main, ["jobs", "status", submission_id, "--address", ray_head])
    assert "SUCCEEDED" in status.output
    logs = CliRunner().invoke(main, ["jobs", "logs", submission_id, "--address", ray_head])
    assert "4 ok, 0 errors" in logs.output
    # A job the cluster does not know is a one-line error, not a traceback.
    for command in ("status", "logs", "stop"):
        unknown = CliRunner().invoke(main, ["jobs", command, "raysubmit_nosuchjob", "--address", ray_head])
        assert unknown.exit_code == 1, unknown.output
        assert f"Error: job server {ray_head}: " in unknown.output and "nosuchjob" in unknown.output


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "list"],
        ["jobs", "status", "raysubmit_x"],
        ["jobs", "logs", "raysubmit_x"],
        ["jobs", "stop", "raysubmit_x"],
        ["submit", str(REPO / "jobs" / "tag-archive.yaml")],
    ],
)
def test_a_job_server_that_does_not_answer_is_a_one_line_error(args: list[str]) -> None:
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(main, [*args, "--address", address])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: job server {address}: Failed to connect"), result.output


def test_only_the_notice_that_token_auth_is_on_is_dropped() -> None:
    # Ray's own warnings, as a new local cluster logs them: the one that says the default is on is
    # dropped on every run; the one that says authentication is off still shows.
    from ray._private.authentication import authentication_token_setup as ray_auth

    from mirbatch.pipeline import default_token_notice_dropped

    class Collect(logging.Handler):  # on the logger itself: whether Ray's loggers propagate varies
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    collect = Collect()
    ray_auth.logger.addHandler(collect)
    try:
        with default_token_notice_dropped():
            ray_auth._warn_token_auth_enabled()
            ray_auth._warn_token_auth_disabled()
        ray_auth._warn_token_auth_enabled()  # outside it, Ray's notice is untouched
    finally:
        ray_auth.logger.removeHandler(collect)
    assert len(collect.messages) == 2
    assert collect.messages[0].startswith("Token authentication is disabled")
    assert collect.messages[1].startswith("Token authentication is enabled")
