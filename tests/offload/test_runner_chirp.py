"""The pod runner's report into an HTCondor job ad (`condor_chirp set_job_attr MareaContainers "..."`).

`condor_chirp` is replaced by a script that records its arguments (no job, no starter here); what it
received is parsed by the real ClassAd library (PyPI `classad2`), as the schedd would parse it.
"""

from __future__ import annotations

import json
from pathlib import Path

import classad2
import pytest

from marea.offload.runner import PodRunner

MESSAGE = 'Error: docker.io/library/x:"latest" not found in C:\\images\\ (path "\\\\srv")'


def make_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chirp_exit: int = 0) -> tuple[PodRunner, Path]:
    record = tmp_path / "chirp-args"
    chirp = tmp_path / "condor_chirp"
    chirp.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" >>"{record}"\nexit {chirp_exit}\n')
    chirp.chmod(0o755)
    pod = tmp_path / "pod"
    pod.mkdir()
    plan = {"uid": "u-1", "podman": ["false"], "containers": [{"name": "main", "image": "busybox"}]}
    (pod / "plan.json").write_text(json.dumps(plan))
    monkeypatch.setenv("MAREA_RUNNER_CHIRP", str(chirp))
    return PodRunner(pod), record


def chirped(record: Path) -> list[list[str]]:
    parts = record.read_bytes().decode().split("\0")[:-1]
    return [parts[i : i + 3] for i in range(0, len(parts), 3)]


def test_every_state_change_reaches_the_job_ad_as_a_classad_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, record = make_runner(tmp_path, monkeypatch)
    main = runner.plan["containers"][0]
    runner.set_state(main, {"running": {"startedAt": "2026-11-27T10:00:00Z"}})
    failed = {"terminated": {"exitCode": 125, "reason": "CreateContainerError", "message": MESSAGE}}
    runner.set_state(main, failed)

    calls = chirped(record)
    assert [c[:2] for c in calls] == [["set_job_attr", "MareaContainers"]] * 2
    # quotes and backslashes in the message survive ClassAd quoting: the schedd stores exactly the JSON
    last = classad2.ExprTree(calls[-1][2]).eval()
    assert json.loads(last) == {"main": failed}
    assert json.loads(classad2.ExprTree(calls[0][2]).eval())["main"]["running"]["startedAt"] == "2026-11-27T10:00:00Z"
    # and the status file, which comes back with the job's output, says the same
    assert json.loads((runner.status_dir / "main.json").read_text())["state"] == failed


def test_a_failing_chirp_is_reported_and_does_not_stop_the_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runner, record = make_runner(tmp_path, monkeypatch, chirp_exit=1)
    main = runner.plan["containers"][0]
    runner.set_state(main, {"waiting": {"reason": "ContainerCreating"}})
    assert len(chirped(record)) == 1
    assert "condor_chirp failed" in capsys.readouterr().err
    assert (
        json.loads((runner.status_dir / "main.json").read_text())["state"]["waiting"]["reason"] == "ContainerCreating"
    )


def test_without_chirp_nothing_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner, record = make_runner(tmp_path, monkeypatch)
    monkeypatch.delenv("MAREA_RUNNER_CHIRP")
    runner = PodRunner(runner.dir)
    runner.set_state(runner.plan["containers"][0], {"waiting": {"reason": "ContainerCreating"}})
    assert not record.exists()
