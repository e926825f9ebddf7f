"""The web console (`kubechain ui`) in headless Chromium, on the session's real stack: the list updating live,
a run's transcript, answering a paused run, an unauthorised approval refused, and LLM output shown as text.

The console runs as `kubechain ui` does (its own process, the session's admin kubeconfig as its credentials,
--allow-actions); the browser signs in with a user's token. Screenshots go to artifacts/ui/.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.controlplane import free_ports, http_get, log_tail, spawn, stop_process

from .chaos import wait_until
from .conftest import agent, llm, secret, task, toolset
from .test_human_input import helpdesk

pytestmark = pytest.mark.integration
REPO = Path(__file__).parents[2]
ARTIFACTS = REPO / "artifacts" / "ui"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_MS = 90_000  # generous: a shared 2-core machine
SLOW_RUN = 300  # seconds: a run may wait long for its first actor (Ray Client) on a busy machine
XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> all done'
ASK = {"name": "ask", "description": "ask the user", "execution": {"builtin": {"name": "ask_human"}}}
GUARDED = {"name": "calc", "description": "arithmetic, needs a human's OK", "requiresApproval": True,
           "execution": {"builtin": {"name": "calculator"}}}


@contextmanager
def console(stack, workdir: Path, *flags: str):
    """`kubechain ui` as its own process, with the session's admin kubeconfig as the console's own credentials."""
    (port,) = free_ports(1)
    log = workdir / "ui.log"
    proc = spawn([sys.executable, "-m", "kubechain.clients.cli", "ui", "--port", str(port), "--kubeconfig",
                  str(stack.kubeconfig), *flags], log, env=dict(os.environ), cwd=REPO)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, log_tail(log)
        try:
            return http_get(f"{url}/healthz")[0] == 200
        except OSError:
            return False
    try:
        wait_until(healthy, timeout=60, what="the console listing every kind")
        yield url
    finally:
        stop_process(proc, grace=10)


@pytest.fixture(scope="module")
def ui(stack, tmp_path_factory):
    with console(stack, tmp_path_factory.mktemp("ui"), "--allow-actions", "--ray-dashboard-url",
                 stack.ray.dashboard_url, "--tracing-url", "http://tracing.example/trace/{trace_id}",
                 "--stream-url", stack.stream_url) as url:
        yield url


@pytest.fixture(scope="module")
def readonly_ui(stack, tmp_path_factory):
    with console(stack, tmp_path_factory.mktemp("ui-readonly")) as url:  # the default: read-only
        yield url


@pytest.fixture(scope="module")
def browser():
    # No skip: CI installs Debian's chromium (`make chromium`); a missing browser is a failure.
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium"
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def sign_in(browser, ui: str, token: str):
    """A fresh browser profile that signs in through the console's form."""
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(ui)
    page.fill("#token", token)
    page.click("#sign-in")
    page.wait_for_selector("#who:has-text('signed in as')")
    return page


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_list_updates_live_while_a_run_completes(kube, stack, ui, browser):
    from playwright.sync_api import expect

    echo = {"name": "noop", "description": "does nothing", "execution": {"builtin": {"name": "echo"}}}
    helpdesk(kube, stack, [{"tool_calls": [{"name": "noop", "arguments": {"x": 1}}], "latency": 4},
                           {"content": "finished", "latency": 4}], [echo])
    page = sign_in(browser, ui, stack.controlplane.admin_token)
    page.goto(f"{ui}/#/ns/{kube.namespace}")
    agent_row = page.locator(f"#agents-rows tr[data-key='{kube.namespace}/helpdesk']")
    expect(agent_row.locator("td.ready")).to_have_text("ready")
    expect(agent_row.locator("td.llm")).to_have_text("helpdesk")
    expect(agent_row.locator("td.tools")).to_have_text("noop")
    page.evaluate("window.__samePage = true")  # gone if the page reloads or navigates

    kube.apply([task("slow", "helpdesk", "take your time")])
    row = page.locator(f"#taskruns-rows tr[data-key='{kube.namespace}/slow-run']")
    expect(row.locator("td.phase")).to_have_text("Running")
    expect(page.locator("#live")).to_have_text("live")
    shot(page, "list-running")
    # The first run of a session may wait long for its actor (Ray Client on a busy machine): wait for the run
    # itself, then give the page its own time to show it.
    kube.wait_phase("slow-run", "Completed", timeout=SLOW_RUN)
    expect(row.locator("td.phase")).to_have_text("Completed")
    expect(row.locator("td.step")).to_have_text("2")
    assert int(row.locator("td.tokens").inner_text()) > 0
    expect(page.locator(f"#tasks-rows tr[data-key='{kube.namespace}/slow'] td.phase")).to_have_text("Completed")
    assert page.evaluate("window.__samePage") is True, "the page was reloaded: updates must come over the stream"
    shot(page, "list-completed")


def test_a_runs_page_shows_the_transcript_children_and_links_and_llm_output_only_as_text(kube, stack, ui, browser):
    from playwright.sync_api import expect

    boss, researcher = f"{kube.namespace}-boss", f"{kube.namespace}-researcher"
    stack.llm.set_script(boss, [{"tool_calls": [{"name": "research", "arguments": {"message": "find <b>facts</b>"}}]},
                                {"content": XSS}])
    stack.llm.set_script(researcher, [{"content": "fact " * 200}])  # a long tool result: truncated, expandable
    kube.apply([secret(), llm("boss", stack.llm.base_url, boss), llm("researcher", stack.llm.base_url, researcher),
                toolset("boss-tools", inline=[{"name": "research", "description": "ask the researcher",
                                               "execution": {"delegate": {"agentRef": {"name": "researcher"}}}}]),
                agent("boss", "boss", ["boss-tools"]), agent("researcher", "researcher")])
    kube.wait_ready("agent", "boss")
    kube.apply([task("question", "boss", "Research <i>this</i>")])
    done = kube.wait_phase("question-run", "Completed", timeout=SLOW_RUN)

    page = sign_in(browser, ui, stack.controlplane.admin_token)
    page.goto(f"{ui}/#/taskruns/{kube.namespace}/question-run")
    expect(page.locator("#summary h1 .phase")).to_have_text("Completed")
    assistant = page.locator(".messages li[data-role=assistant]").last
    expect(assistant).to_contain_text(XSS)  # the markup is shown as the characters the LLM sent
    expect(page.locator(".messages li[data-role=user]")).to_contain_text("Research <i>this</i>")
    assert page.evaluate("window.__pwned") is None, "LLM output ran as script"
    assert page.locator("#run img, #run script, #run b, #run i").count() == 0

    call = page.locator(".tool-call").first
    expect(call.locator(".tool-name")).to_have_text("→ research")
    expect(call).to_contain_text('"message": "find <b>facts</b>"')
    result = page.locator(".messages li[data-role=tool]").first
    expect(result.locator("button.expand")).to_have_text(re.compile(r"show all (9|10)\d\d characters"))
    assert len(result.locator("pre").inner_text()) < 700
    result.locator("button.expand").click()
    expect(result.locator("pre")).to_have_text(re.compile(r"^(fact ){150,}"))
    expect(result.locator("button.expand")).to_have_count(0)

    child = page.locator("#children .tree a").first
    expect(child).to_have_text(done["status"]["toolCallHistory"][0]["childRun"])
    expect(page.locator("#phases")).to_contain_text("FinalAnswer")
    trace_id = done["status"]["traceparent"].split("-")[1]
    expect(page.locator("#trace-id")).to_have_text(trace_id)
    assert page.locator("#trace-link").get_attribute("href") == f"http://tracing.example/trace/{trace_id}"
    expect(page.locator("#summary")).to_contain_text(f"{done['status']['usage']['totalTokens']} (prompt")
    if done["status"].get("actor", {}).get("id"):
        ray = page.locator("#ray-link").get_attribute("href")
        assert ray == f"{stack.ray.dashboard_url}/#/actors/{done['status']['actor']['id']}"
    shot(page, "transcript")

    child.click()  # the child's own page, with its parent linked
    expect(page.locator("#summary")).to_contain_text("question-run")
    shot(page, "child-run")


def test_answering_a_paused_run_in_the_browser_resumes_it(kube, stack, ui, browser):
    from playwright.sync_api import expect

    helpdesk(kube, stack, [{"tool_calls": [{"name": "ask", "arguments": {"question": "Which colour?"}}]},
                           {"content": "You chose {last_tool_result}."}], [ASK])
    kube.apply([task("pick", "helpdesk", "Pick a colour for me")])
    kube.wait_phase("pick-run", "PausedForUserInput", timeout=SLOW_RUN)
    page = sign_in(browser, ui, stack.controlplane.admin_token)
    page.goto(f"{ui}/#/taskruns/{kube.namespace}/pick-run")
    waiting = page.locator(".waiting[data-waiting-for=Answer]")
    expect(waiting.locator(".question")).to_have_text("Which colour?")
    expect(page.locator("#summary h1 .phase")).to_have_text("PausedForUserInput")
    waiting.locator("textarea").fill("teal")
    shot(page, "paused")
    waiting.locator("button.answer").click()
    kube.wait_phase("pick-run", "Completed", timeout=SLOW_RUN)
    expect(page.locator("#summary h1 .phase")).to_have_text("Completed")  # pushed by the watch, no reload
    expect(page.locator("#output")).to_contain_text("You chose teal.")
    expect(page.locator("#action-error")).to_have_text("")
    shot(page, "answered")
    record = kube.get("taskrun", "pick-run")["status"]["toolCallHistory"][0]
    assert record["response"] == {"answer": "teal", "by": "admin"}  # the console writes who answered


def viewer_token(kube) -> str:
    """A ServiceAccount that may read the kubechain kinds in this namespace, and nothing more."""
    ns = kube.namespace
    kube.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "viewer"}},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "viewer"},
                 "rules": [{"apiGroups": ["kubechain.dev"], "resources": ["agents", "tasks", "taskruns"],
                            "verbs": ["get", "list", "watch"]}]},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "viewer"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "viewer"},
                 "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}]}])
    # Kubernetes 1.20: the token controller writes a legacy token Secret for the account.
    secret_name = lambda: kube.run("get", "sa", "viewer", "-o", "jsonpath={.secrets[0].name}").stdout  # noqa: E731
    wait_until(lambda: secret_name() != "", timeout=60, what="the viewer's token Secret")
    return base64.b64decode(kube.run("get", "secret", secret_name(), "-o", "jsonpath={.data.token}").stdout).decode()


def test_a_user_who_may_not_patch_the_run_cannot_approve_it(kube, stack, ui, browser):
    from playwright.sync_api import expect

    helpdesk(kube, stack, [{"tool_calls": [{"name": "calc", "arguments": {"expression": "6*7"}}]},
                           {"content": "Result: {last_tool_result}"}], [GUARDED])
    kube.apply([task("sum", "helpdesk", "What is 6*7?")])
    kube.wait_phase("sum-run", "PausedForUserInput", timeout=SLOW_RUN)
    page = sign_in(browser, ui, viewer_token(kube))
    expect(page.locator("#who")).to_have_text(f"signed in as system:serviceaccount:{kube.namespace}:viewer")

    # The viewer lists only what its Role lets it list: this namespace.
    page.goto(f"{ui}/#/")
    expect(page.locator(f"#taskruns-rows tr[data-key='{kube.namespace}/sum-run'] td.phase")).to_contain_text(
        "PausedForUserInput")
    keys = page.locator("#taskruns-rows tr[data-key]").evaluate_all("rows => rows.map(r => r.dataset.key)")
    assert keys and all(k.startswith(f"{kube.namespace}/") for k in keys), keys

    page.goto(f"{ui}/#/taskruns/{kube.namespace}/sum-run")
    waiting = page.locator(".waiting[data-waiting-for=Approval]")
    expect(waiting.locator(".question")).to_contain_text("calc(")
    waiting.locator("input.reason").fill("looks fine")
    waiting.locator("button.approve").click()
    expect(page.locator("#action-error")).to_contain_text("forbidden")
    expect(page.locator("#action-error")).to_contain_text("cannot patch resource \"taskruns\"")
    shot(page, "approve-refused")
    run = kube.get("taskrun", "sum-run")
    assert run["status"]["phase"] == "PausedForUserInput" and not run["spec"].get("responses")

    # The admin's approval of the same call, through the same page, goes through.
    admin = sign_in(browser, ui, stack.controlplane.admin_token)
    admin.goto(f"{ui}/#/taskruns/{kube.namespace}/sum-run")
    admin.locator(".waiting[data-waiting-for=Approval] button.approve").click()
    kube.wait_phase("sum-run", "Completed", timeout=SLOW_RUN)
    expect(admin.locator("#output")).to_contain_text("Result: 42")
    # And the viewer's page followed it there, live.
    expect(page.locator("#summary h1 .phase")).to_have_text("Completed")


def test_a_read_only_console_shows_the_question_but_no_actions_and_follows_a_cancel(kube, stack, ui, readonly_ui,
                                                                                     browser):
    from playwright.sync_api import expect

    helpdesk(kube, stack, [{"tool_calls": [{"name": "ask", "arguments": {"question": "Proceed?"}}]},
                           {"content": "never reached"}], [ASK])
    kube.apply([task("hold", "helpdesk", "wait for me")])
    kube.wait_phase("hold-run", "PausedForUserInput", timeout=SLOW_RUN)
    viewer = sign_in(browser, readonly_ui, stack.controlplane.admin_token)  # even an admin: the console is read-only
    expect(viewer.locator("#mode")).to_have_text("read-only")
    viewer.goto(f"{readonly_ui}/#/taskruns/{kube.namespace}/hold-run")
    expect(viewer.locator(".waiting .question")).to_have_text("Proceed?")
    expect(viewer.locator("#actions button")).to_have_count(0)
    shot(viewer, "read-only")

    admin = sign_in(browser, ui, stack.controlplane.admin_token)
    admin.goto(f"{ui}/#/taskruns/{kube.namespace}/hold-run")
    cancel = admin.locator("button.cancel")
    cancel.click()
    expect(cancel).to_have_text("Really cancel? Click again")  # one stray click cancels nothing
    assert not kube.get("taskrun", "hold-run")["spec"].get("cancel")
    cancel.click()
    expect(admin.locator("#summary h1 .phase")).to_have_text("Failed")
    expect(viewer.locator("#summary h1 .phase")).to_have_text("Failed")  # the read-only page follows, live
    expect(viewer.locator("#phases")).to_contain_text("Cancelled")
    expect(viewer.locator(".waiting")).to_have_count(0)  # nobody waits for an answer any more
    shot(viewer, "read-only-cancelled")


def test_a_long_runs_page_shows_its_sealed_messages_too(kube, stack, ui, browser):
    from playwright.sync_api import expect

    echo = {"name": "echo", "description": "echo", "execution": {"builtin": {"name": "echo"}}}
    blobs = [{"tool_calls": [{"name": "echo", "arguments": {"i": i, "blob": f"blob{i} " + "y" * 8000}}]}
             for i in range(4)]
    helpdesk(kube, stack, blobs + [{"content": "all echoed"}], [echo], "parrot")
    kube.apply([task("long", "parrot", "Echo four blobs.")])
    done = kube.wait_phase("long-run", "Completed", timeout=SLOW_RUN)
    sealed = done["status"]["sealedContext"]
    assert sealed["chunks"] > 0, "the run was meant to seal part of its context"

    page = sign_in(browser, ui, stack.controlplane.admin_token)
    page.goto(f"{ui}/#/taskruns/{kube.namespace}/long-run")
    total = sealed["messages"] + len(done["status"]["contextWindow"])
    assert total == 11  # system, user, 4 × (assistant call + tool result), the answer
    expect(page.locator("#transcript h2")).to_have_text(f"Transcript ({total} messages)")
    expect(page.locator(".messages li[data-role=user]")).to_contain_text("Echo four blobs.")  # from a sealed chunk
    expect(page.locator("#summary")).to_contain_text(f"{sealed['messages']} earlier messages in")
    shot(page, "sealed")


def test_a_laptop_console_acts_as_the_kubeconfig_user_without_a_token(kube, stack, tmp_path):
    kube.apply([task("solo", "nobody", "hello")])  # no such agent: the run just waits, which is enough to read
    kube.wait_for("taskrun", "solo-run", lambda o: bool(o.get("status")))
    with console(stack, tmp_path, "--as-kubeconfig-user") as url:
        # No 2 s default here: a run's page is several apiserver reads, slow on a busy machine.
        status, body = http_get(f"{url}/api/config", timeout=60)
        assert (status, json.loads(body)["user"]) == (200, "(kubeconfig user)")
        status, body = http_get(f"{url}/api/namespaces/{kube.namespace}/taskruns/solo-run", timeout=60)
        assert status == 200 and json.loads(body)["name"] == "solo-run"
        request = urllib.request.Request(f"{url}/api/namespaces/{kube.namespace}/taskruns/solo-run/cancel",
                                         method="POST", headers={"X-Kubechain-UI": "1"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403  # still read-only: --allow-actions was not given


def test_a_runs_page_shows_the_open_steps_answer_as_it_streams(kube, stack, ui, browser):
    from playwright.sync_api import expect

    model = f"{kube.namespace}-streamer"
    answer = " ".join(f"w{i:03d}" for i in range(1, 401))
    # the stream pauses after 20 chunks (the role, then w001..w019) until the page has shown it forming, however late the page connects
    stack.llm.set_script(model, [{"content": answer, "stream_chunk": 5, "stream_delay": 0.02,
                                  "stream_hold": {"after": 20, "gate": model}}])
    kube.apply([secret(), llm("streamer", stack.llm.base_url, model), agent("streamer", "streamer")])
    kube.wait_ready("agent", "streamer")
    page = sign_in(browser, ui, stack.controlplane.admin_token)
    kube.apply([task("live", "streamer", "stream to me")])
    # Left for the next stop: a run page opened before its TaskRun exists gets the stream's `end` (404) and never
    # follows the live step. The page opens once the operator has made the run.
    kube.wait_for("taskrun", "live-run", lambda o: True, what="created")
    page.goto(f"{ui}/#/taskruns/{kube.namespace}/live-run")
    forming = page.locator("#live-text")
    expect(forming).to_contain_text("w010")  # the answer, as it forms, before any checkpoint has it
    assert "w400" not in forming.inner_text() and page.locator(".messages li[data-role=assistant]").count() == 0
    shot(page, "live-step")
    stack.llm.open_gate(model)
    expect(page.locator("#summary h1 .phase")).to_have_text("Completed")
    expect(page.locator("#live-text")).to_have_count(0)  # the checkpointed transcript took its place
    message = page.locator(".messages li[data-role=assistant]").last
    message.locator("button.expand").click()  # a long answer is folded
    expect(message).to_contain_text(answer)

    viewer = sign_in(browser, ui, stack.controlplane.restricted_token)  # may not `get` the run
    url = f"/api/namespaces/{kube.namespace}/taskruns/live-run/stream"
    answered = viewer.evaluate(f"fetch('{url}').then(async r => [r.status, await r.text()])")
    assert answered[0] == 403 and "w001" not in answered[1]
