"""Tools that do real work, on the real control plane, Ray head and LLM server: container calls as Jobs (the
test plays the kubelet: there is none), Ray-task tools, argument checks, concurrency."""
from __future__ import annotations

import json

import pytest

from harness.controlplane import REPO_ROOT

from .chaos import wait_until
from .conftest import allow_code_tools, agent, llm, secret, task, toolset

pytestmark = pytest.mark.integration

TARGET_SCHEMA = {"type": "object", "properties": {"target": {"type": "string"}}, "required": ["target"]}


@pytest.fixture(autouse=True)
def code_tools_allowed(kube):
    """These tests' namespaces are opted in to code tools by the cluster admin (test_tenancy.py: when not)."""
    allow_code_tools(kube)


def container_tool(name: str, timeout: int = 120) -> dict:
    return {"name": name, "description": "build a target", "arguments": TARGET_SCHEMA,
            "execution": {"container": {
                "image": "registry.example/builder:1.0", "command": ["/bin/build"],
                "env": [{"name": "MODE", "value": "release"},
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "builder", "key": "token"}}}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}, "timeoutSeconds": timeout}}}


def setup_agent(kube, stack, script: list[dict], tools: list[dict], **limits) -> str:
    model = f"{kube.namespace}-m"
    stack.llm.set_script(model, script)
    kube.apply([secret(), secret("builder", "token", "s3cret"), llm("m", stack.llm.base_url, model),
                toolset("tools", inline=tools), agent("a", "m", ["tools"])])
    kube.wait_ready("agent", "a")
    kube.apply([task("t", "a", "do it", **limits)])
    return "t-run"


def job_of(kube, run: str) -> str:
    obj = kube.wait_phase(run, "Delegating", timeout=90)
    (record,) = [r for r in obj["status"]["toolCallHistory"] if r["state"] == "Waiting"]
    assert record["waitingFor"] == "Job"
    return record["job"]


def play_kubelet(kube, job: str, exit_code: int, message: str) -> None:
    """What a kubelet would report once the tool's container ends: the job controller takes it from there."""
    pod = wait_until(lambda: json.loads(kube.run("get", "pods", "-l", f"job-name={job}", "-o", "json").stdout)["items"],
                     timeout=60, what=f"the pod of Job {job}")[0]
    terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error", "message": message}
    status = {"status": {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [
        {"name": "tool", "image": "registry.example/builder:1.0", "imageID": "", "ready": False, "restartCount": 0,
         "state": {"terminated": terminated}}]}}
    kube.run("patch", "pod", pod["metadata"]["name"], "--subresource=status", "--type=merge", "-p", json.dumps(status))


def test_a_container_call_runs_as_a_restricted_job_and_its_result_reaches_the_llm(kube, stack):
    run = setup_agent(kube, stack, [
        {"tool_calls": [{"name": "build", "arguments": {"tagret": "app"}}]},  # a typo: refused before any Job
        {"tool_calls": [{"name": "build", "arguments": {"target": "app"}}]},
        {"content": "built: {last_tool_result}"}], [container_tool("build")])
    job_name = job_of(kube, run)
    taskrun = kube.get("taskrun", run)
    first = taskrun["status"]["toolCallHistory"][0]
    assert first["state"] == "Failed" and "'target' is a required property" in first["error"]

    job = kube.get("job", job_name)
    owner, = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("TaskRun", run, taskrun["metadata"]["uid"])
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 120
    pod_spec = job["spec"]["template"]["spec"]
    container, = pod_spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod_spec["securityContext"]["runAsNonRoot"] is True and pod_spec["automountServiceAccountToken"] is False
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert json.loads(env["KUBECHAIN_ARGUMENTS"]) == {"target": "app"} and env["MODE"] == "release"
    assert env["TOKEN"] == {"secretKeyRef": {"name": "builder", "key": "token"}}  # the kubelet resolves it
    assert env["KUBECHAIN_IDEMPOTENCY_KEY"].startswith(taskrun["metadata"]["uid"])
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "64Mi"}

    play_kubelet(kube, job_name, 0, "artifact sha256:abc")
    final = kube.wait_phase(run, "Completed", timeout=90)
    assert final["status"]["output"] == "built: artifact sha256:abc"
    assert [t["reason"] for t in final["status"]["phaseHistory"]] == ["Scheduled", "Delegated", "JobsFinished",
                                                                      "FinalAnswer"]
    # Its result journaled, the Job (and its pod) is cleaned up.
    wait_until(lambda: kube.run("get", "job", job_name, check=False).returncode != 0, timeout=60, what="Job deleted")


def test_a_failing_container_and_a_container_past_its_timeout_are_tool_errors(kube, stack):
    run = setup_agent(kube, stack, [
        {"tool_calls": [{"name": "build", "arguments": {"target": "a"}}]},
        {"tool_calls": [{"name": "slow", "arguments": {"target": "b"}}]},
        {"content": "gave up: {last_tool_result}"}], [container_tool("build"), container_tool("slow", timeout=2)])
    play_kubelet(kube, job_of(kube, run), 3, "no such target: a")
    kube.wait_for("taskrun", run, lambda o: len(o["status"].get("toolCallHistory", [])) == 2, timeout=90,
                  what="the second call")
    job_of(kube, run)  # nobody plays the kubelet: the job controller stops it at its deadline
    final = kube.wait_phase(run, "Completed", timeout=120)
    first, second = final["status"]["toolCallHistory"]
    assert first["state"] == "Failed" and first["error"] == "the tool's container exited with code 3: no such target: a"
    assert second["state"] == "Failed" and "did not finish within 2 s" in second["error"]
    assert final["status"]["output"].startswith("gave up: Error: the tool's Job")


def ray_tool(name: str, **ray_options) -> dict:
    return {"name": name, "description": "runs on Ray",
            "arguments": {"type": "object", "properties": {"sleep": {"type": "number"}, "text": {"type": "string"}}},
            "execution": {"ray": {"function": "kubechain.demo.raytools:describe_task", **ray_options}}}


def test_ray_tools_run_as_ray_tasks_with_their_resources_concurrently(kube, stack):
    run = setup_agent(kube, stack, [
        {"tool_calls": [{"name": "embed", "arguments": {"sleep": 2, "text": "a"}},
                        {"name": "embed", "arguments": {"sleep": 2, "text": "b"}}]},
        {"tool_calls": [{"name": "broken", "arguments": {"message": "no GPU here"}}]},
        {"content": "done"}],
        [ray_tool("embed", numCpus=0.5, memory=50_000_000, runtimeEnv={"env_vars": {"KUBECHAIN_TOOL_GREETING": "hi"}}),
         {"name": "broken", "description": "fails", "execution": {"ray": {"function": "kubechain.demo.raytools:fail",
                                                                          "numCpus": 0.1}}}])
    final = kube.wait_phase(run, "Completed", timeout=180)
    a, b, broken = final["status"]["toolCallHistory"]
    results = [json.loads(r["result"]) for r in (a, b)]
    assert sorted(r["text"] for r in results) == ["A", "B"] and {r["greeting"] for r in results} == {"hi"}
    assert all(r["resources"].get("CPU") == 0.5 and r["resources"].get("memory") == 50_000_000 for r in results)
    # One turn's calls ran at the same time: each started before the other ended.
    assert results[0]["started"] < results[1]["ended"] and results[1]["started"] < results[0]["ended"]
    assert broken["state"] == "Failed" and broken["error"] == "ValueError: no GPU here"


def tool_jobs(kube, uid: str) -> list[dict]:
    return json.loads(kube.run("get", "jobs", "-l", f"kubechain.dev/taskrun-uid={uid}", "-o", "json").stdout)["items"]


def test_an_operator_restart_finds_the_same_job_and_a_cancel_stops_it(kube, stack):
    run = setup_agent(kube, stack, [
        {"tool_calls": [{"name": "build", "arguments": {"target": "one"}}]},
        {"tool_calls": [{"name": "build", "arguments": {"target": "two"}}]},
        {"content": "built: {last_tool_result}"}], [container_tool("build")])
    first = job_of(kube, run)
    uid = kube.get("taskrun", run)["metadata"]["uid"]
    job_uid = kube.get("job", first)["metadata"]["uid"]
    restarts = stack.operator.restarts
    stack.operator.kill()  # SIGKILL while the tool runs; the restarted operator attends the run again
    stack.operator.wait_restarted(restarts + 1)
    play_kubelet(kube, first, 0, "one done")
    kube.wait_for("taskrun", run, lambda o: len(o["status"].get("toolCallHistory", [])) == 2, timeout=90,
                  what="the second call")
    second = job_of(kube, run)
    done = kube.get("taskrun", run)["status"]["toolCallHistory"][0]
    assert done["result"] == "one done" and done["attempts"] == 1
    assert [j["metadata"]["name"] for j in tool_jobs(kube, uid)] in ([second], [first, second])
    assert all(j["metadata"]["uid"] == job_uid for j in tool_jobs(kube, uid) if j["metadata"]["name"] == first)

    kube.run("patch", "taskrun", run, "--type", "merge", "-p", '{"spec":{"cancel":true}}')
    kube.wait_phase(run, "Failed")
    wait_until(lambda: not tool_jobs(kube, uid), timeout=60, what="the running tool's Job deleted")


@pytest.mark.parametrize("sample", sorted(p.name for p in (REPO_ROOT / "samples").glob("*.yaml")))
def test_the_samples_are_admitted(kube, stack, sample):
    """Every sample passes the CRD schemas and the validating webhooks (a server-side dry run)."""
    result = kube.run("apply", "--dry-run=server", "-f", str(REPO_ROOT / "samples" / sample), check=False)
    assert result.returncode == 0, result.stderr
