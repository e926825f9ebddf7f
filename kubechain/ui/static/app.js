// kubechain console: plain DOM, no framework, no build step.
// Everything the server sends is untrusted text (LLM output above all). It enters the page only as text:
// through el() below (createTextNode) or textContent - never innerHTML - and links only as http(s) or #/ URLs.
"use strict";

const CSRF = {"X-Kubechain-UI": "1"};
const TRUNCATE = 600;       // characters of a message or tool result shown before "show all"
const TERMINAL = ["Completed", "Failed"];
let config = null;          // /api/config: user, readOnly, links
let stream = null;          // the page's EventSource
let liveStep = null;        // a run page's second EventSource: its open step's answer as it forms
let ageTimer = null;

// --- DOM helpers ----------------------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "href") node.setAttribute("href", safeHref(value));
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function safeHref(url) {
  if (url.startsWith("#/")) return url;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : "#";
  } catch (e) {
    return "#";
  }
}

const enc = encodeURIComponent;
const runHref = (namespace, name) => `#/taskruns/${enc(namespace)}/${enc(name)}`;
const key = (item) => `${item.namespace}/${item.name}`;

function setMain(...nodes) {
  document.getElementById("main").replaceChildren(...nodes);
}

function age(timestamp) {
  if (!timestamp) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(timestamp)) / 1000);
  if (seconds < 120) return `${Math.floor(seconds)}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

function refreshAges() {
  for (const cell of document.querySelectorAll("[data-created]")) cell.textContent = age(cell.dataset.created);
}

function phaseBadge(phase) {
  return el("span", {class: `phase phase-${(phase || "Pending").replace(/[^A-Za-z]/g, "")}`}, phase || "Pending");
}

function longText(text, cls = "text") {
  const pre = el("pre", {class: cls});
  if (text.length <= TRUNCATE) {
    pre.textContent = text;
    return pre;
  }
  pre.textContent = text.slice(0, TRUNCATE) + " …";
  const more = el("button", {type: "button", class: "expand"}, `show all ${text.length} characters`);
  more.addEventListener("click", () => { pre.textContent = text; more.remove(); });
  return el("div", {}, pre, more);
}

function pretty(json) {
  try { return JSON.stringify(JSON.parse(json), null, 1); } catch (e) { return json; }
}

// --- the API --------------------------------------------------------------------------------------------

async function api(path, options = {}) {
  const response = await fetch(path, {credentials: "same-origin", ...options,
                                      headers: {...CSRF, "Content-Type": "application/json"}});
  let body = {};
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (response.status === 401 && path !== "/api/login") {
    showLogin();
    throw new Error(body.error || "sign in first");
  }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

const post = (path, body) => api(path, {method: "POST", body: JSON.stringify(body || {})});

function closeStream() {
  if (stream) stream.close();
  stream = null;
  if (liveStep) liveStep.close();
  liveStep = null;
  if (ageTimer) clearInterval(ageTimer);
  ageTimer = null;
}

// One EventSource per page: a snapshot of each kind, then every change, pushed by the server's watches.
function openStream(kinds, namespace, onSnapshot, onChange) {
  const params = new URLSearchParams({kinds: kinds.join(",")});
  if (namespace) params.set("namespace", namespace);
  const live = document.getElementById("live");
  stream = new EventSource(`/api/watch?${params}`);
  stream.addEventListener("snapshot", (e) => { const d = JSON.parse(e.data); onSnapshot(d.kind, d.items); });
  stream.addEventListener("change", (e) => { const d = JSON.parse(e.data); onChange(d.kind, d.type, d.item); });
  stream.addEventListener("open", () => { live.textContent = "live"; live.className = "live"; });
  stream.addEventListener("error", () => {
    live.textContent = "reconnecting…";
    live.className = "stale";
    if (stream && stream.readyState === EventSource.CLOSED) api("/api/config").catch(() => {});  // signed out?
  });
}

// --- pages ----------------------------------------------------------------------------------------------

async function route() {
  closeStream();
  if (!config) {
    try {
      config = await api("/api/config");
    } catch (e) {  // 401 already shows the sign-in form; anything else is worth saying
      if (!document.getElementById("login")) setMain(el("p", {class: "error", role: "alert"}, e.message));
      return;
    }
    showIdentity();
  }
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "taskruns" && parts.length === 3) return showRun(parts[1], parts[2]);
  if (parts[0] === "ns" && parts[1]) return showLists(parts[1]);
  return showLists(config.namespace || "");
}

function showIdentity() {
  document.getElementById("who").textContent = config ? `signed in as ${config.user}` : "";
  const mode = document.getElementById("mode");
  mode.textContent = !config ? "" : config.readOnly ? "read-only" : "actions enabled";
  mode.className = config && config.readOnly ? "read-only" : "actions";
  document.getElementById("logout").hidden = !config;
}

function showLogin(message) {
  closeStream();
  config = null;
  showIdentity();
  const token = el("input", {type: "password", id: "token", autocomplete: "off", required: true});
  const problem = el("p", {class: "error", id: "login-error", role: "alert"}, message || "");
  const form = el("form", {id: "login"},
    el("h1", {}, "Sign in"),
    el("p", {}, "Paste a Kubernetes bearer token (for example `kubectl create token NAME`, or a ServiceAccount's " +
                "token). The console acts with it: you see and do exactly what your RBAC allows."),
    el("label", {}, "Token ", token), el("button", {type: "submit", id: "sign-in"}, "Sign in"), problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await post("/api/login", {token: token.value});
      token.value = "";
      route();
    } catch (e) {
      problem.textContent = e.message;
    }
  });
  setMain(form);
}

const LISTS = {
  agents: {title: "Agents", columns: [
    ["Name", "name", (i) => i.name], ["Namespace", "namespace", (i) => i.namespace],
    ["Ready", "ready", (i) => (i.ready ? "ready" : "not ready")], ["LLM", "llm", (i) => i.llm],
    ["Tools", "tools", (i) => i.tools.join(", ")], ["Message", "message", (i) => i.message]]},
  tasks: {title: "Tasks", columns: [
    ["Name", "name", (i) => i.name], ["Namespace", "namespace", (i) => i.namespace],
    ["Agent", "agent", (i) => i.agent], ["Phase", "phase", (i) => (i.phase ? phaseBadge(i.phase) : "")],
    ["Run", "run", (i) => (i.run ? el("a", {href: runHref(i.namespace, i.run)}, i.run) : "")]]},
  taskruns: {title: "TaskRuns", columns: [
    ["Name", "name", (i) => el("a", {href: runHref(i.namespace, i.name)}, i.name)],
    ["Namespace", "namespace", (i) => i.namespace], ["Agent", "agent", (i) => i.agent],
    ["Phase", "phase", (i) => [phaseBadge(i.phase), i.waiting ? el("span", {class: "waits"}, " waits for you") : ""]],
    ["Parent", "parent", (i) => (i.parent ? el("a", {href: runHref(i.namespace, i.parent)}, i.parent) : "")],
    ["Step", "step", (i) => i.step], ["Tokens", "tokens", (i) => i.tokens]]},
};

function showLists(namespace) {
  const filter = el("input", {id: "namespace", value: namespace, placeholder: "all namespaces you may list"});
  filter.addEventListener("change", () => { location.hash = filter.value ? `#/ns/${enc(filter.value)}` : "#/"; });
  const rows = {}, bodies = {};
  const sections = Object.entries(LISTS).map(([kind, list]) => {
    rows[kind] = new Map();
    bodies[kind] = el("tbody", {id: `${kind}-rows`});
    return el("section", {id: kind}, el("h2", {}, list.title),
      el("table", {}, el("thead", {}, el("tr", {}, list.columns.map(([title]) => el("th", {}, title)), el("th", {}, "Age"))),
        bodies[kind]));
  });
  setMain(el("p", {class: "filter"}, el("label", {}, "Namespace ", filter)), ...sections);
  const render = (kind) => {
    const sorted = [...rows[kind].values()].sort((a, b) => key(a).localeCompare(key(b)));
    bodies[kind].replaceChildren(...sorted.map((item) => el("tr", {data: {key: key(item)}},
      LISTS[kind].columns.map(([, cls, cell]) => el("td", {class: cls}, cell(item))),
      el("td", {class: "age", data: {created: item.created}}, age(item.created)))));
    if (!sorted.length) bodies[kind].append(el("tr", {}, el("td", {class: "muted", colspan: 9}, "none")));
  };
  openStream(Object.keys(LISTS), namespace,
    (kind, items) => { rows[kind] = new Map(items.map((i) => [key(i), i])); render(kind); },
    (kind, type, item) => {
      if (type === "DELETED") rows[kind].delete(key(item)); else rows[kind].set(key(item), item);
      render(kind);
    });
  ageTimer = setInterval(refreshAges, 10000);  // local clock only: no request
}

// The open step's answer as it streams (kubechain/core/livestream.py: the same text `kubechain follow` prints):
// content, then the tool calls forming, the last one left open. The checkpointed transcript replaces it.
function previewText(deltas) {
  let content = "";
  const calls = new Map();
  for (const d of deltas) {
    if ("c" in d) content += d.c;
    else if ("t" in d) {
      const call = calls.get(d.t) || {id: "", name: "", args: ""};
      call.id = d.id || call.id; call.name = d.n || call.name; call.args += d.a || "";
      calls.set(d.t, call);
    }
  }
  const ordered = [...calls.keys()].sort((a, b) => a - b).map((k) => calls.get(k));
  return content + ordered.map((c, i) =>
    i < ordered.length - 1 ? `→ ${c.name}(${c.args}) [${c.id}]` : `→ ${c.name}(${c.args}`).join("");
}

function followLive(namespace, name, section, checkpointedStep) {
  let key = null, deltas = [], cursor = {step: 0, source: "", attempt: 0, offset: 0};
  function render() {
    const step = checkpointedStep();
    if (key === null || key[0] <= step) { section.replaceChildren(); return; }  // checkpointed: the transcript has it
    section.replaceChildren(el("h2", {}, `Step ${key[0]}, live`),
      el("div", {class: "message role-assistant streaming"}, el("div", {class: "role"}, "assistant (streaming)"),
         el("div", {class: "text", id: "live-text"}, previewText(deltas))));
  }
  function open() {
    const params = new URLSearchParams({step: cursor.step, source: cursor.source, attempt: cursor.attempt,
                                        offset: cursor.offset});
    liveStep = new EventSource(`/api/namespaces/${enc(namespace)}/taskruns/${enc(name)}/stream?${params}`);
    liveStep.addEventListener("delta", (e) => {
      const b = JSON.parse(e.data);
      const k = [b.step, b.source, b.attempt];
      if (key === null || k.join("/") !== key.join("/") || b.offset === 0) { key = k; deltas = []; }
      deltas.push(...b.deltas.filter((d) => !("u" in d)));
      cursor = {step: b.step, source: b.source, attempt: b.attempt, offset: b.offset + b.deltas.length};
      render();
    });
    liveStep.addEventListener("end", () => { liveStep.close(); render(); });
  }
  open();  // EventSource reconnects by itself; the server resumes from the cursor it was opened with
  return render;
}

function showRun(namespace, name) {
  const parts = {head: el("section", {id: "summary"}), actions: el("section", {id: "actions"}),
                 children: el("section", {id: "children"}), transcript: el("section", {id: "transcript"}),
                 live: el("section", {id: "live-step"}),
                 calls: el("section", {id: "calls"}), phases: el("section", {id: "phases"})};
  setMain(el("p", {}, el("a", {href: namespace ? `#/ns/${enc(namespace)}` : "#/"}, "← all runs")),
          el("article", {id: "run", data: {name}}, Object.values(parts)));
  let loading = false, again = false, actionsShown = null, step = 0;
  const renderLive = followLive(namespace, name, parts.live, () => step);
  async function refresh() {  // coalesced: one request in flight, one more if something changed meanwhile
    if (loading) { again = true; return; }
    loading = true;
    try {
      const run = await api(`/api/namespaces/${enc(namespace)}/taskruns/${enc(name)}`);
      parts.head.replaceChildren(...summaryView(run));
      const shown = JSON.stringify([run.phase, run.waiting.map((c) => c.id)]);
      if (shown !== actionsShown) {  // keep what the user is typing unless the questions changed
        actionsShown = shown;
        parts.actions.replaceChildren(...actionsView(run));
      }
      parts.children.replaceChildren(...childrenView(run));
      parts.transcript.replaceChildren(...transcriptView(run));
      step = run.step;
      renderLive();
      parts.calls.replaceChildren(...callsView(run));
      parts.phases.replaceChildren(...phasesView(run));
    } catch (e) {
      parts.head.replaceChildren(el("p", {class: "error", role: "alert"}, e.message));
    } finally {
      loading = false;
      if (again) { again = false; refresh(); }
    }
  }
  openStream(["taskruns"], namespace, () => refresh(),
    (kind, type, item) => { if (item.name === name || item.name.startsWith(`${name}-`)) refresh(); });
}

function summaryView(run) {
  const facts = [
    ["Namespace", run.namespace], ["Agent", run.agent], ["Task", run.task],
    ["Parent", run.parent ? el("a", {href: runHref(run.namespace, run.parent)}, run.parent) : null],
    ["Step", String(run.step)],
    ["Tokens", `${run.usage.totalTokens} (prompt ${run.usage.promptTokens}, completion ${run.usage.completionTokens})`],
    ["Created", run.created], ["Message", run.message],
    ["Trace", run.traceId ? [el("code", {id: "trace-id"}, run.traceId), " ",
                             run.links.trace ? el("a", {href: run.links.trace, id: "trace-link", rel: "noopener"}, "open trace") : ""] : null],
    ["Actor", run.actor ? [el("code", {}, run.actor.name), ` (restarts: ${run.actor.restarts}) `,
                           run.links.ray ? el("a", {href: run.links.ray, id: "ray-link", rel: "noopener"}, "Ray dashboard") : ""] : null],
    ["Sealed", !run.sealed.chunks ? null : run.sealed.droppedAt
      ? `${run.sealed.messages} earlier messages in ${run.sealed.chunks} chunks, dropped at ${run.sealed.droppedAt} (retention)`
      : `${run.sealed.messages} earlier messages in ${run.sealed.chunks} chunks (shown below)`],
  ].filter(([, value]) => value !== null && value !== undefined && value !== "");
  return [
    el("h1", {}, run.name, " ", phaseBadge(run.phase)),
    el("dl", {}, facts.map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)])),
    run.output !== null ? el("div", {id: "output"}, el("h2", {}, "Output"), longText(run.output)) : "",
    run.error ? el("div", {id: "error"}, el("h2", {}, "Error"), longText(run.error, "text error")) : "",
    run.sealedError ? el("p", {class: "error"}, run.sealedError) : "",
  ];
}

function actionsView(run) {
  const problem = el("p", {class: "error", id: "action-error", role: "alert"});
  const sent = el("p", {class: "muted", id: "action-sent", role: "status"});
  const base = `/api/namespaces/${enc(run.namespace)}/taskruns/${enc(run.name)}`;
  const act = async (action, body, button) => {
    problem.textContent = sent.textContent = "";
    button.disabled = true;
    try {
      await post(`${base}/${action}`, body);
      sent.textContent = `${action}: sent`;
    } catch (e) {
      problem.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  };
  const out = [];
  if (run.waiting.length) out.push(el("h2", {}, "Waiting for you"));
  for (const call of run.waiting) {
    const box = el("div", {class: "waiting", data: {call: call.id, waitingFor: call.waitingFor}},
      el("p", {class: "question"}, call.question || `${call.tool}(${call.arguments})`));
    if (config.readOnly) {
      box.append(el("p", {class: "muted"}, "Read-only console: answer with `kubechain respond/approve/reject`."));
    } else if (call.waitingFor === "Answer") {
      const text = el("textarea", {class: "answer-text", rows: 2, "aria-label": "your answer"});
      const send = el("button", {type: "button", class: "answer"}, "Answer");
      send.addEventListener("click", () => act("answer", {callId: call.key, text: text.value}, send));
      box.append(text, send);
    } else {
      const reason = el("input", {class: "reason", placeholder: "reason (required to reject)", "aria-label": "reason"});
      const approve = el("button", {type: "button", class: "approve"}, "Approve");
      const reject = el("button", {type: "button", class: "reject"}, "Reject");
      approve.addEventListener("click", () => act("approve", {callId: call.key, reason: reason.value}, approve));
      reject.addEventListener("click", () => act("reject", {callId: call.key, reason: reason.value}, reject));
      box.append(reason, approve, reject);
    }
    out.push(box);
  }
  if (!config.readOnly && !TERMINAL.includes(run.phase) && !run.cancel) {
    const cancel = el("button", {type: "button", class: "cancel"}, "Cancel run");
    cancel.addEventListener("click", () => {
      if (cancel.dataset.armed) return act("cancel", {}, cancel);
      cancel.dataset.armed = "1";
      cancel.textContent = "Really cancel? Click again";
    });
    out.push(el("p", {}, cancel));
  }
  return [...out, problem, sent];
}

function childrenView(run) {
  if (!run.children.length) return [];
  const tree = (nodes) => el("ul", {class: "tree"}, nodes.map((n) => el("li", {},
    el("a", {href: runHref(n.namespace, n.name)}, n.name), " ", phaseBadge(n.phase), ` ${n.agent}`,
    n.children.length ? tree(n.children) : "")));
  return [el("h2", {}, "Child runs"), tree(run.children)];
}

function transcriptView(run) {
  const messages = run.transcript.map((m) => el("li", {class: `message role-${m.role}`, data: {role: m.role}},
    el("div", {class: "role"}, m.role === "tool" ? `tool result · ${m.toolCallId || ""}` : m.role),
    m.content ? longText(m.content) : "",
    m.toolCalls.map((c) => el("div", {class: "tool-call", data: {call: c.id}},
      el("span", {class: "tool-name"}, `→ ${c.name}`), " ", el("code", {}, c.id), longText(pretty(c.arguments), "args")))));
  return [el("h2", {}, `Transcript (${run.transcript.length} messages)`), el("ol", {class: "messages"}, messages)];
}

function callsView(run) {
  if (!run.calls.length) return [];
  const rows = run.calls.map((c) => el("tr", {data: {call: c.id}},
    el("td", {}, el("code", {}, c.id)), el("td", {}, String(c.step)), el("td", {}, c.tool),
    el("td", {class: "state"}, c.state, c.waitingFor ? ` (${c.waitingFor})` : ""),
    el("td", {}, c.error !== null ? longText(c.error, "text error") : c.result !== null ? longText(c.result) : ""),
    el("td", {}, c.response ? JSON.stringify(c.response) : ""),
    el("td", {}, c.childRun ? el("a", {href: runHref(run.namespace, c.childRun)}, c.childRun) : "")));
  return [el("h2", {}, "Tool calls"), el("table", {},
    el("thead", {}, el("tr", {}, ["Call", "Step", "Tool", "State", "Result", "Human reply", "Child run"].map((t) => el("th", {}, t)))),
    el("tbody", {}, rows))];
}

function phasesView(run) {
  return [el("h2", {}, "Phase history"), el("table", {},
    el("thead", {}, el("tr", {}, ["Time", "Phase", "Reason", "Message"].map((t) => el("th", {}, t)))),
    el("tbody", {}, run.phaseHistory.map((p) => el("tr", {},
      el("td", {}, p.time), el("td", {}, phaseBadge(p.phase)), el("td", {}, p.reason), el("td", {}, p.message)))))];
}

document.getElementById("logout").addEventListener("click", async () => {
  await post("/api/logout").catch(() => {});
  showLogin();
});
window.addEventListener("hashchange", route);
route();
