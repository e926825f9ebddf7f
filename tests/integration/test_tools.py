"""Tools that do real work, on the real control plane, Ray head and LLM server: container calls as Jobs whose pods
run on a real node (harness/node.py: containerd + kubelet), Ray-task tools, argument checks, concurrency."""
from __future__ import annotations

import json

import pytest

from harness.controlplane import REPO_ROOT
from harness.node import BUSYBOX_IMAGE

from .chaos import wait_until
from .conftest import allow_code_tools, agent, llm, secret, task, toolset

pytestmark = pytest.mark.integration

TARGET_SCHEMA = {"type": "object", "properties": {"target": {"type": "string"}}, "required": ["target"]}
# What the tool's container sees of its own restrictions, one `key=value` line each, as its termination message
PROBE = r"""root=$(awk '$2 == "/" {split($4, options, ","); print options[1]}' /proc/self/mounts)
echo scratch > /tmp/scratch
[ -e /var/run/secrets/kubernetes.io/serviceaccount/token ] && token=mounted || token=none
{ echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "root=$root"; echo "tmp=$(cat /tmp/scratch)"; echo "token=$token"
  awk '/^(CapEff|NoNewPrivs|Seccomp):/ {sub(/:$/, "", $1); print $1 "=" $2}' /proc/self/status
  echo "mode=$MODE"; echo "secret=$TOKEN"; echo "args=$KUBECHAIN_ARGUMENTS"; } > /dev/termination-log"""

# With its account's token: the apiserver through the `kubernetes` Service (kube-proxy on the node), as that account
API_PROBE = PROBE + r"""
sa=/var/run/secrets/kubernetes.io/serviceaccount
api="https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/$(cat $sa/namespace)"
status() {
  wget -S -O /dev/null --header "Authorization: Bearer $(cat $sa/token)" "$api/$1" 2>&1 | grep -o "HTTP/1.1 [0-9]*" | tail -1
}
{ echo "self=$(status serviceaccounts/deployer)"; echo "secrets=$(status secrets)"; } >> /dev/termination-log"""
DEPLOYER = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer"}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "deployer"},
             "rules": [{"apiGroups": [""], "resources": ["serviceaccounts"], "resourceNames": ["deployer"],
                        "verbs": ["get"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "deployer"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
             "subjects": [{"kind": "ServiceAccount", "name": "deployer"}]}]


@pytest.fixture(autouse=True)
def code_tools_allowed(kube):
    """These tests' namespaces are opted in to code tools by the cluster admin (test_tenancy.py: when not)."""
    allow_code_tools(kube)


def container_tool(name: str, script: str, timeout: int = 120, **container) -> dict:
    """A tool whose container runs `script` in the node's busybox image."""
    return {"name": name, "description": "build a target", "arguments": TARGET_SCHEMA,
            "execution": {"container": {
                "image": BUSYBOX_IMAGE, "command": ["/bin/sh", "-c", script],
                "env": [{"name": "MODE", "value": "release"},
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "builder", "key": "token"}}}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}, "timeoutSeconds": timeout,
                **container}}}


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


def probed(result: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in result.splitlines() if "=" in line)


def test_a_container_call_runs_as_a_restricted_pod_and_its_result_reaches_the_llm(kube, stack, node):
    kube.apply(DEPLOYER)
    run = setup_agent(kube, stack, [
        {"tool_calls": [{"name": "build", "arguments": {"tagret": "app"}}]},  # a typo: refused before any Job
        {"tool_calls": [{"name": "build", "arguments": {"target": "app"}}]},
        {"tool_calls": [{"name": "deploy", "arguments": {"target": "app"}}]},
        {"content": "deployed: {last_tool_result}"}],
        [container_tool("build", PROBE), container_tool("deploy", API_PROBE, serviceAccountName="deployer")])
    job_name = job_of(kube, run)
    taskrun = kube.get("taskrun", run)
    first = taskrun["status"]["toolCallHistory"][0]
    assert first["state"] == "Failed" and "'target' is a required property" in first["error"]

    job = kube.get("job", job_name)
    owner, = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("TaskRun", run, taskrun["metadata"]["uid"])
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 120
    container, = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "64Mi"}

    final = kube.wait_phase(run, "Completed", timeout=120)
    _, build, deploy = final["status"]["toolCallHistory"]
    seen = probed(build["result"])
    # What the kubelet and runc really enforced, seen from inside the tool's container
    assert (seen["uid"], seen["gid"], seen["root"], seen["tmp"]) == ("65532", "65532", "ro", "scratch")
    assert (seen["CapEff"], seen["NoNewPrivs"], seen["Seccomp"]) == ("0000000000000000", "1", "2")
    assert seen["token"] == "none"  # the namespace's default account exists, its token is not mounted
    assert (seen["mode"], seen["secret"]) == ("release", "s3cret")  # the kubelet resolved the Secret's key
    assert json.loads(seen["args"]) == {"target": "app"}
    as_deployer = probed(deploy["result"])
    assert as_deployer["token"] == "mounted"  # asked for: the tool runs as its account, with its rights only
    assert (as_deployer["self"], as_deployer["secrets"]) == ("HTTP/1.1 200", "HTTP/1.1 403")
    assert final["status"]["output"].startswith("deployed: uid=65532")
    assert [t["reason"] for t in final["status"]["phaseHistory"]] == ["Scheduled", "Delegated", "JobsFinished",
                                                                      "Delegated", "JobsFinished", "FinalAnswer"]
    # Its result journaled, the Job (and its pod) is cleaned up.
    wait_until(lambda: kube.run("get", "job", job_name, check=False).returncode != 0, timeout=60, what="Job deleted")


def test_a_result_comes_from_the_log_without_a_termination_message(kube, stack, node):
    """Read through the apiserver from the kubelet (its client certificate), as the operator's `pods/log` right
    allows."""
    run = setup_agent(kube, stack, [
        {"tool_calls": [{"name": "count", "arguments": {"target": "the quick brown fox"}}]},
        {"content": "counted: {last_tool_result}"}],
        [container_tool("count", """echo starting; echo "$KUBECHAIN_ARGUMENTS" | awk '{print "words: " NF}'""")])
    final = kube.wait_phase(run, "Completed", timeout=120)
    assert final["status"]["output"] == "counted: starting\nwords: 5"


def test_a_failing_container_and_a_container_past_its_timeout_are_tool_errors(kube, stack, node):
    run = setup_agent(kube, stack, [
        {"tool_calls": [{"name": "build", "arguments": {"target": "a"}}]},
        {"tool_calls": [{"name": "slow", "arguments": {"target": "b"}}]},
        {"content": "gave up: {last_tool_result}"}],
        [container_tool("build", 'echo "no such target: a" > /dev/termination-log; exit 3'),
         container_tool("slow", "echo started; exec sleep 600", timeout=2)])
    final = kube.wait_phase(run, "Completed", timeout=180)
    first, second = final["status"]["toolCallHistory"]
    assert first["state"] == "Failed" and first["error"] == "the tool's container exited with code 3: no such target: a"
    # The job controller stops it at its activeDeadlineSeconds: the kubelet kills the sleeping container
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


def test_an_operator_restart_finds_the_same_job_and_a_cancel_stops_it(kube, stack, node):
    # "one" ends on its own (a few seconds: the operator is killed meanwhile), "two" runs until cancelled, and exits
    # 143 at the kubelet's SIGTERM (as PID 1, `sleep` alone would ignore it until the grace period's SIGKILL)
    script = ('case "$KUBECHAIN_ARGUMENTS" in *one*) sleep 3; echo "one done" > /dev/termination-log;; '
              '*) trap "exit 143" TERM; sleep 600 & wait;; esac')
    run = setup_agent(kube, stack, [
        {"tool_calls": [{"name": "build", "arguments": {"target": "one"}}]},
        {"tool_calls": [{"name": "build", "arguments": {"target": "two"}}]},
        {"content": "built: {last_tool_result}"}], [container_tool("build", script)])
    first = job_of(kube, run)
    uid = kube.get("taskrun", run)["metadata"]["uid"]
    job_uid = kube.get("job", first)["metadata"]["uid"]
    restarts = stack.operator.restarts
    stack.operator.kill()  # SIGKILL while the tool runs; the restarted operator attends the run again
    stack.operator.wait_restarted(restarts + 1)
    kube.wait_for("taskrun", run, lambda o: len(o["status"].get("toolCallHistory", [])) == 2, timeout=90,
                  what="the second call")
    second = job_of(kube, run)
    done = kube.get("taskrun", run)["status"]["toolCallHistory"][0]
    assert done["result"] == "one done" and done["attempts"] == 1
    assert [j["metadata"]["name"] for j in tool_jobs(kube, uid)] in ([second], [first, second])
    assert all(j["metadata"]["uid"] == job_uid for j in tool_jobs(kube, uid) if j["metadata"]["name"] == first)
    pod = wait_until(lambda: [p for p in json.loads(kube.run("get", "pods", "-l", f"job-name={second}", "-o",
                                                              "json").stdout)["items"]
                              if p["status"].get("phase") == "Running"], timeout=60, what="the second tool running")[0]

    kube.run("patch", "taskrun", run, "--type", "merge", "-p", '{"spec":{"cancel":true}}')
    kube.wait_phase(run, "Failed")
    wait_until(lambda: not tool_jobs(kube, uid), timeout=60, what="the running tool's Job deleted")
    # and its pod with it (the garbage collector deletes the Job's pods): the kubelet stopped the container. The pod
    # object itself goes only once the kubelet's container GC (once a minute in 1.20) has removed its sandbox.
    wait_until(lambda: stopped(kube, pod["metadata"]["name"]), timeout=90, what="the running tool's container stopped")


def stopped(kube, pod: str) -> bool:
    """The pod is gone, or its tool container ended by the SIGTERM (exit 143)."""
    found = kube.run("get", "pod", pod, "-o", "json", check=False)
    if found.returncode != 0:
        return True
    states = [c["state"] for c in json.loads(found.stdout)["status"].get("containerStatuses", [])]
    return any(s.get("terminated", {}).get("exitCode") == 143 for s in states)


@pytest.mark.parametrize("sample", sorted(p.name for p in (REPO_ROOT / "samples").glob("*.yaml")))
def test_the_samples_are_admitted(kube, stack, sample):
    """Every sample passes the CRD schemas and the validating webhooks (a server-side dry run)."""
    result = kube.run("apply", "--dry-run=server", "-f", str(REPO_ROOT / "samples" / sample), check=False)
    assert result.returncode == 0, result.stderr
