"""The shipped examples work as their comments say."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server import wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_config(name: str) -> str:
    """Config text that runs the example file but keeps the test's own bind address."""
    return config_from(EXAMPLES / name)


def config_from(path: Path) -> str:
    """Config text that runs the config file ``path`` but keeps the test's own bind address."""
    return f"_bind = bind\nexec(compile(open({str(path)!r}).read(), {str(path)!r}, 'exec'))\nbind = _bind\n"


def test_readme_example_serves_task_ids_and_restarts_with_the_same_id(gunicorn):
    """examples/tornadofork.py with examples/app.py: 4 tasks; /crash is replaced with the same
    id; /finish on every task ends the server with status 0."""
    server = gunicorn(
        install=False,
        config=example_config("tornadofork.py"),
        app="app:wsgi",
        args=["--chdir", str(EXAMPLES)],
    )
    pids = server.wait_workers([0, 1, 2, 3])
    status, body = server.get("/")
    task, pid = body.split()[1], body.split()[3]
    assert status == 200 and pids[int(task)] == int(pid)
    os.kill(pids[2], signal.SIGKILL)
    wait_for(lambda: server.worker_pids().get(2) not in (None, pids[2]), 20, "task 2 replaced")
    finished: set[str] = set()
    wait_for(
        lambda: finished.add(server.get("/finish")[1].split()[1]) or len(finished) == 4,
        30,
        "every task to finish",
    )
    assert server.wait_exit() == 0
    assert "All 4 tasks finished" in server.log()


def test_statefulset_config_offsets_ids_by_pod_ordinal(gunicorn):
    """examples/statefulset.conf.py: pod web-2 with 2 workers holds ids 4 and 5; the pod-index
    label wins over the pod name."""
    server = gunicorn(
        install=False,
        config=example_config("statefulset.conf.py"),
        env={"POD_NAME": "web-2", "WORKERS_PER_POD": "2"},
    )
    server.wait_workers([4, 5])
    other = gunicorn(
        install=False,
        config=example_config("statefulset.conf.py"),
        env={"POD_NAME": "web-2", "POD_INDEX": "3", "WORKERS_PER_POD": "2"},
    )
    other.wait_workers([6, 7])


# -- the Kubernetes manifests ----------------------------------------------------------------

MANIFESTS = ["kubernetes.yaml", "kubernetes-job.yaml"]
# The oldest Kubernetes whose Job has every field the examples use (backoffLimitPerIndex and
# the FailIndex action are GA in 1.33), and the newest that kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.33.0", kubernetes_validate.latest_version()]


def documents(name: str) -> list[dict[str, Any]]:
    with open(EXAMPLES / name) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_kubernetes_manifests_match_the_schemas(name: str, version: str) -> None:
    """Every resource of both manifests is valid against Kubernetes' schemas, strictly (no
    unknown field), with the schemas that kubernetes-validate ships (no cluster, no network)."""
    for doc in documents(name):
        kubernetes_validate.validate(doc, version, strict=True)


def _job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(doc for doc in docs if doc["kind"] == "Job")


@pytest.mark.parametrize(
    "typo",
    [
        lambda job: job["spec"].__setitem__("podFailurePolicyy", job["spec"].pop("podFailurePolicy")),
        lambda job: job["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"].__setitem__("values", ["6"]),
        lambda job: job["spec"]["template"]["spec"]["containers"][0].__setitem__("commands", ["gunicorn"]),
    ],
    ids=["misspelt-field", "exit-code-as-string", "unknown-container-field"],
)
def test_a_typo_in_a_manifest_fails_validation(typo: Any) -> None:
    """The check catches the kind of mistake it is there for."""
    job = copy.deepcopy(_job(documents("kubernetes-job.yaml")))
    typo(job)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSIONS[0], strict=True)


def test_job_maps_the_servers_statuses() -> None:
    """The Job's podFailurePolicy fails the index on 6 (tasks failed), counts 5 (gave up),
    fails the Job on 1, 3 and 4, and restarts nothing in place (restartPolicy Never)."""
    from gunicorn_tornadofork import GIVE_UP_STATUS, TASKS_FAILED_STATUS

    job = _job(documents("kubernetes-job.yaml"))
    actions = {
        code: rule["action"]
        for rule in job["spec"]["podFailurePolicy"]["rules"]
        for code in rule.get("onExitCodes", {}).get("values", [])
    }
    assert actions == {
        1: "FailJob",
        3: "FailJob",
        4: "FailJob",
        TASKS_FAILED_STATUS: "FailIndex",
        GIVE_UP_STATUS: "Count",
    }
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_job_config_offsets_ids_by_completion_index(gunicorn, tmp_path: Path) -> None:
    """The Job's gunicorn config: index 2 with 2 workers holds ids 4 and 5 and accepts its
    exit policy; a task that exits 42 fails alone, and the pod exits 6 once the other is done."""
    config_map = next(doc for doc in documents("kubernetes-job.yaml") if doc["kind"] == "ConfigMap")
    path = tmp_path / "job.conf.py"
    path.write_text(config_map["data"]["gunicorn.conf.py"])
    server = gunicorn(
        install=False,
        config=config_from(path),
        env={"JOB_COMPLETION_INDEX": "2", "WORKERS_PER_POD": "2"},
    )
    pids = server.wait_workers([4, 5])
    assert "task_id_offset=4" in server.log()
    with contextlib.suppress(OSError):
        server.get("/exit/42")  # the worker that takes it exits 42 before it answers
    server.wait_log("exited with status 42: failed (exit_policy rule 2), not replaced")
    left = wait_for(lambda: len(server.worker_pids()) == 1 and server.worker_pids(), 20, "one task left")
    assert set(left.items()) < set(pids.items())
    assert server.get("/finish")[0] == 200
    assert server.wait_exit() == 6
