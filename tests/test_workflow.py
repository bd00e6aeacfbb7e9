"""The Asahi hardware workflow: safe triggers, the access check first, shards, reports, logs.

The workflow cannot run here; what can be checked is its structure (parsed with PyYAML) and the
shell of the steps that need no hardware (run with bash on stand-ins).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from ane_build.build.junit import Case, junit_suite, to_bytes

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "asahi-smoke.yml"
UDEV_RULE = 'SUBSYSTEM=="accel", DRIVERS=="ane", MODE="0660", GROUP="render"'
LABEL_GATE = "github.event_name != 'pull_request_target' || github.event.label.name == 'hw-smoke'"


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean true.
    found = workflow.get("on", workflow.get(True))
    assert isinstance(found, dict)
    return found


def hardware_jobs(workflow: dict[Any, Any]) -> dict[str, Any]:
    return {
        name: job
        for name, job in workflow["jobs"].items()
        if "self-hosted" in (job["runs-on"] if isinstance(job["runs-on"], list) else [])
    }


def step(job: dict[str, Any], *, uses: str = "", runs: str = "") -> dict[str, Any]:
    for found in job["steps"]:
        if uses and found.get("uses", "").startswith(uses):
            return dict(found)
        if runs and runs in found.get("run", ""):
            return dict(found)
    raise AssertionError(f"no step uses {uses!r} / runs {runs!r}")


def test_forks_cannot_run_code_on_the_self_hosted_runners(workflow: dict[Any, Any]) -> None:
    on = triggers(workflow)
    assert set(on) == {"push", "workflow_dispatch", "pull_request_target"}
    assert "pull_request" not in on and on["push"] == {"branches": ["main"]}
    assert on["pull_request_target"] == {"types": ["labeled"]}
    jobs = hardware_jobs(workflow)
    assert jobs, "no job runs on the self-hosted runners"
    for name, job in jobs.items():
        assert job["if"] == LABEL_GATE, name
    assert workflow["permissions"] == {"contents": "read"}
    assert "secrets." not in WORKFLOW.read_text()
    for job in workflow["jobs"].values():
        checkout = step(job, uses="actions/checkout@")
        # The commit the label was applied to, never a later push; no token left on disk.
        assert checkout["with"]["ref"] == "${{ github.event.pull_request.head.sha || github.sha }}"
        assert checkout["with"]["persist-credentials"] is False


def test_the_first_step_checks_device_access(workflow: dict[Any, Any]) -> None:
    for name, job in hardware_jobs(workflow).items():
        first = job["steps"][0]
        assert "/dev/accel" in first["name"] and "run" in first, name


def access_check(workflow: dict[Any, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    first = workflow["jobs"]["smoke"]["steps"][0]
    env = {**os.environ, **first["env"], "ACCEL_DIR": os.fspath(folder)}
    return subprocess.run(
        ["bash", "-e", "-c", first["run"]], capture_output=True, text=True, env=env, timeout=30
    )


def test_the_access_check_fails_with_the_udev_fix(workflow: dict[Any, Any], tmp_path: Path) -> None:
    proc = access_check(workflow, tmp_path)
    assert proc.returncode == 1
    assert f"'{UDEV_RULE}' > /etc/udev/rules.d/" in proc.stdout
    assert "::error::" in proc.stdout and "udevadm trigger" in proc.stdout
    node = tmp_path / "accel0"
    node.write_bytes(b"")
    node.chmod(stat.S_IRUSR | stat.S_IWUSR)
    proc = access_check(workflow, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ANE node {node} is readable and writable" in proc.stdout


def test_shards_run_across_runners_then_merge(workflow: dict[Any, Any]) -> None:
    smoke = workflow["jobs"]["smoke"]
    matrix = smoke["strategy"]["matrix"]
    (count,) = matrix["shards"]
    assert matrix["shard"] == list(range(1, count + 1)) and count > 1
    assert smoke["strategy"]["fail-fast"] is False
    run = step(smoke, runs="doit smoke")["run"]
    assert "--shard ${{ matrix.shard }}/${{ matrix.shards }}" in run and "--repeat" in run
    assert int(workflow["env"]["REPEAT"]) > 1
    assert workflow["env"]["ANE_SAMPLES_DIR"].startswith("/")
    upload = step(smoke, uses="actions/upload-artifact@")
    assert upload["if"] == "always()" and "build/smoke.xml" in upload["with"]["path"]
    assert upload["with"]["name"] == "smoke-junit-${{ matrix.shard }}"
    merge = workflow["jobs"]["merge"]
    assert merge["needs"] == "smoke" and "needs.smoke.result" in merge["if"]
    download = step(merge, uses="actions/download-artifact@")
    assert download["with"] == {"pattern": "smoke-junit-*", "path": "shards"}
    assert step(merge, uses="actions/upload-artifact@")["with"]["path"] == "build/smoke.xml"


def test_pip_is_cached_and_only_main_saves_the_cache(workflow: dict[Any, Any]) -> None:
    for name, job in workflow["jobs"].items():
        steps = job["steps"]
        install = steps.index(step(job, runs="pip install"))
        restore = steps.index(step(job, uses="actions/cache/restore@"))
        save = steps.index(step(job, uses="actions/cache/save@"))
        assert restore < install < save, name
        folder = steps[restore]["with"]["path"]
        assert steps[install]["env"]["PIP_CACHE_DIR"] == folder == steps[save]["with"]["path"]
        assert steps[restore]["with"]["key"] == steps[save]["with"]["key"], name
        # A labelled pull request runs in main's cache scope: it must not seed the cache.
        assert steps[save]["if"] == "github.event_name == 'push'", name
        assert not any(s.get("uses", "").startswith("actions/cache@") for s in steps), name
        assert not any(s.get("with", {}).get("cache") for s in steps), name


def test_the_kernel_log_is_kept_on_failure(workflow: dict[Any, Any]) -> None:
    smoke = workflow["jobs"]["smoke"]
    save = step(smoke, runs="dmesg")
    assert save["if"] == "failure()" and "tail -200 > dmesg.txt" in save["run"]
    uploads = [s for s in smoke["steps"] if s.get("uses", "").startswith("actions/upload")]
    assert any(s["if"] == "failure()" and s["with"]["path"] == "dmesg.txt" for s in uploads)


def test_the_merge_step_writes_the_report_and_the_summary(
    workflow: dict[Any, Any], tmp_path: Path
) -> None:
    # The step's own shell, on shard files as download-artifact lays them out.
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv / "python").chmod(0o755)
    latency = {"repeat": "50", "latency_min_ms": "1", "latency_median_ms": "2"}
    for k, case in enumerate(
        [
            Case("smoke.model", "a", "passed", properties={**latency, "latency_p99_ms": "3"}),
            Case("smoke.sample", "relu.ane", "failed", message="FAIL y: max abs 2"),
        ],
        start=1,
    ):
        folder = tmp_path / "shards" / f"smoke-junit-{k}"
        folder.mkdir(parents=True)
        suite = junit_suite([case], {"shard": f"{k}/2", "simulated": "false"})
        (folder / "smoke.xml").write_bytes(to_bytes(suite))
    summary = tmp_path / "summary.md"
    merge = step(workflow["jobs"]["merge"], runs="junit-merge")
    env = {**os.environ, "GITHUB_STEP_SUMMARY": os.fspath(summary)}
    proc = subprocess.run(
        ["bash", "-e", "-c", merge["run"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    merged = ET.parse(tmp_path / "build" / "smoke.xml").getroot()
    assert (merged.get("tests"), merged.get("failures")) == ("2", "1")
    text = summary.read_text()
    assert "1 passed, 1 failed" in text and "1.000 / 2.000 / 3.000 (50 runs)" in text
