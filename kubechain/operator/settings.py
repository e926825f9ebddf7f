"""Settings of the operator, its actors and the command line, read from the environment here and nowhere else
(kopf's OperatorSettings style: grouped dataclasses, a default and a docstring per field). `current()` is what
every module uses: one reading per process. Left to their owners: Ray's own RAY_* variables (the Ray gateway
passes the token on as Ray expects) and OpenTelemetry's OTEL_* (the SDK reads them; tracing only looks at
whether an exporter is configured)."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from kubechain.api.runspec import RayToolLimits


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class RaySettings:
    address: str = field(default_factory=lambda: _env("RAY_ADDRESS", "auto"))
    """Where the Ray head is: `ray://host:10001` (Ray Client, e.g. a KubeRay head service), a GCS
    address `host:6379` (operator on a Ray node) or `auto`. Token auth: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH
    or ~/.ray/auth_token (RAY_AUTH_MODE=token is implied when a token is found)."""
    namespace: str = field(default_factory=lambda: _env("KUBECHAIN_RAY_NAMESPACE", "kubechain"))
    """Ray namespace of the TaskRun actors."""
    actor_num_cpus: float = field(default_factory=lambda: float(_env("KUBECHAIN_ACTOR_NUM_CPUS", "0")))
    """CPUs reserved per actor. 0: actors are I/O-bound, so many share a node."""
    scheduling_strategy: str = field(default_factory=lambda: _env("KUBECHAIN_ACTOR_SCHEDULING", "SPREAD"))
    """Ray scheduling strategy of the actors. SPREAD: a lost node takes as few runs with it as possible
    (I/O-bound actors gain nothing from being packed). DEFAULT: Ray's packing."""
    standby_actors: int = field(default_factory=lambda: int(_env("KUBECHAIN_STANDBY_ACTORS", "0")))
    """Warm actors kept ready (worker process started, imports done) for the next runs: a new run's first LLM
    request then comes ~1 s sooner. Each holds a Ray worker process (~75 MB), and a run that gets one shows
    it in the Ray dashboard as `kubechain-standby-<id>` (status.actor names it). 0 (default): none, and every
    run's actor ends with it. With a pool, an actor whose run ended goes back to it (up to this many)."""
    standby_refill_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_STANDBY_REFILL_SECONDS", "2")))
    """How long after a run took a standby a new one is started, unless an ended run's actor refilled the pool
    first: short runs then reuse a few processes instead of starting one each (~1 s of CPU)."""
    standby_linger_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_STANDBY_LINGER_SECONDS", "30")))
    """With a pool, how long an ended run's actor beyond `standby_actors` stays pooled for the next run before it
    ends: in a burst, queued runs take the actors of the runs that ended instead of starting a process each (~1 s
    of CPU, the burst's bottleneck on a small node). 0: such actors end at once."""
    max_actor_starts: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_ACTOR_STARTS", "0")))
    """Actor processes that may start at once (a start is ~1 s of CPU, importing the openai SDK); the pool's refills
    count too. A run that finds no free pooled actor and no free start waits in Running, saying so in
    status.message, for whichever comes first: an ended run's actor back in the pool, or a start that finished
    (the new actor answered a ping); handed over directly, higher priority first, then round the namespaces,
    then first come, first served (kubechain/core/actorline.py). A burst's first wave then starts a few processes
    quickly instead of dozens slowly, and the ended runs' actors serve the rest. 0 (default): the Ray cluster's
    CPUs when the operator connects (bench/bench_scale.py on a 2-CPU node, quiet: with 8 the apiserver starved and
    the leader lost its Lease 40 s into a 300-Task burst; with 2 it kept it)."""
    health_interval_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_RAY_HEALTH_SECONDS", "2")))
    """How often a waiting supervisor checks that the Ray head still answers (a dead actor is noticed at once), and
    pings the actor."""
    wedged_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_ACTOR_WEDGED_SECONDS", "30")))
    """An actor that has not answered a liveness ping (a Ray call its event loop serves) for this long is wedged:
    its loop is blocked, so it neither checkpoints nor honours a cancel. The supervisor kills it (Event ActorWedged)
    and restores the run on a fresh actor from the last checkpoint. Generous: a busy node delays answers."""
    actor_token_seconds: int = field(default_factory=lambda: int(_env("KUBECHAIN_ACTOR_TOKEN_SECONDS", "3600")))
    """Lifetime of the token a run's actor gets (a TokenRequest for its namespace's `kubechain-actor`
    ServiceAccount; the apiserver's least is 600). The operator hands a fresh one once half of it has passed, for
    as long as it supervises the run: a token taken from a worker is useless within this time after the run."""


@dataclass(frozen=True)
class ReconcileSettings:
    pending_retry_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_PENDING_RETRY_SECONDS", "10")))
    """How often a blocked object (missing Secret, Task or Agent) is looked at again, besides change events."""
    max_running: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_RUNNING", "100")))
    """TaskRuns that may hold an actor at once, cluster-wide; more wait in Pending, reason Queued."""
    max_running_per_namespace: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_RUNNING_PER_NAMESPACE", "50")))
    """The same per namespace; a Namespace's annotation kubechain.dev/max-running overrides it."""
    llm_check_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_LLM_CHECK_SECONDS", "300")))
    """How often an LLM's key and model are checked with its provider again (`GET /models/{model}`: no tokens),
    besides when the LLM or its key's Secret changes. A provider that did not answer (Unreachable) is asked again
    sooner: 3 × pending_retry_seconds after the first failure, then 6 ×, then every 12 × (at most this)."""
    max_delegation_depth: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_DELEGATION_DEPTH", "5")))
    """How many runs a chain of delegations may hold, root included: a deeper delegate call is a tool error."""
    max_retry_starts: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_RETRY_STARTS", "4")))
    """Runs backing off from failed LLM requests that may start an actor for their next attempt at once; the others
    wait their turn (status.message says so). In a provider outage every run's back-off ends about together, and
    each attempt would otherwise start a process at once, only to fail in milliseconds: the processes held are
    bounded by this instead of by the number of runs."""


def _resources(text: str) -> tuple[tuple[str, float], ...]:
    """`name=amount,name=amount` -> ((name, amount), ...)."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    return tuple((name.strip(), float(amount)) for name, amount in pairs)


@dataclass(frozen=True)
class LimitSettings:
    """What one run, its LLM and its tenant may make the cluster do. Hitting a limit is a tool error the LLM reads
    (the run goes on) or a refused object, and the message names the variable."""
    tool_calls_per_reply: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_TOOL_CALLS_PER_REPLY", "64")))
    """Tool calls of one LLM reply that run; the ones past it get a tool error naming the limit."""
    child_runs_per_turn: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_CHILD_RUNS_PER_TURN", "8")))
    """Delegate calls of one LLM reply that start a child run; the ones past it get a tool error."""
    runs_per_tree: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_RUNS_PER_TREE", "50")))
    """Runs one delegation tree may hold, root included (depth alone allows childRunsPerTurn^depth): a delegate call
    past it is a tool error and creates no run. Counted from the runs the operator has seen, so delegations made at
    the same moment in different branches may pass it by the few the watch has not shown yet."""
    journal_bytes: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_JOURNAL_BYTES", str(64 * 1024 * 1024))))
    """Bytes of tool results, arguments and messages a run keeps (status and sealed chunks): a tool result that
    would pass it is not kept and the call is a tool error saying so."""
    max_priority: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_PRIORITY", "0")))
    """Highest `priority` a Task or TaskRun may set in a namespace, unless the Namespace's annotation
    kubechain.dev/max-priority (a cluster admin's: tenants cannot edit Namespaces) says otherwise. Over it is
    refused by the validating webhook; the queue also never ranks a run above its namespace's maximum."""
    ray_tool_min_cpus: float = field(default_factory=lambda: float(_env("KUBECHAIN_RAY_TOOL_MIN_CPUS", "0.1")))
    """Least `numCpus` a ray tool may reserve: a task of 0 CPUs takes no slot, so a run could start any number."""
    ray_tool_max_cpus: float = field(default_factory=lambda: float(_env("KUBECHAIN_RAY_TOOL_MAX_CPUS", "4")))
    """Most `numCpus` a ray tool may reserve."""
    ray_tool_max_gpus: float = field(default_factory=lambda: float(_env("KUBECHAIN_RAY_TOOL_MAX_GPUS", "1")))
    """Most `numGpus` a ray tool may reserve."""
    ray_tool_max_memory: int = field(default_factory=lambda: int(_env("KUBECHAIN_RAY_TOOL_MAX_MEMORY",
                                                                       str(8 * 1024 ** 3))))
    """Most `memory` (bytes) a ray tool may reserve."""
    ray_tool_resources: tuple[tuple[str, float], ...] = field(
        default_factory=lambda: _resources(_env("KUBECHAIN_RAY_TOOL_RESOURCES", "")))
    """Custom Ray resources a ray tool may reserve, with the most of each: `name=amount,...`. Default: none."""


def ray_tool_limits(limits: LimitSettings) -> RayToolLimits:
    """The ray tool limits as the webhook and the actor check them (kubechain/core/limits.py)."""
    return RayToolLimits(min_cpus=limits.ray_tool_min_cpus, max_cpus=limits.ray_tool_max_cpus,
                         max_gpus=limits.ray_tool_max_gpus, max_memory=limits.ray_tool_max_memory,
                         resources=dict(limits.ray_tool_resources))


@dataclass(frozen=True)
class StorageSettings:
    """What kubechain keeps in the apiserver (so in etcd: its backend quota is 2 GiB by default, and a full etcd
    stops every write in the cluster), and for how long. A TaskRun's status holds a bounded tail of its conversation;
    older messages and tool calls are sealed into ConfigMaps owned by the run (docs: README, Storage)."""
    ttl_seconds_after_finished: int = field(default_factory=lambda: int(_env("KUBECHAIN_TTL_SECONDS_AFTER_FINISHED",
                                                                             str(7 * 24 * 3600))))
    """A run that does not set ttlSecondsAfterFinished (nor its Task) is deleted this long after it ended, with
    its chunks. 0: kept until someone deletes it. Default 7 days."""
    context_retention_seconds: int = field(default_factory=lambda: int(_env("KUBECHAIN_CONTEXT_RETENTION_SECONDS",
                                                                            "0")))
    """A run that does not set contextRetentionSeconds keeps its sealed chunks this long after it ended; then the
    operator deletes them and keeps the TaskRun (output, usage, the tail): its transcript says what was dropped
    and when. 0 (default): the chunks live as long as the run."""
    namespace_bytes: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_NAMESPACE_STORED_BYTES",
                                                                  str(1024 ** 3))))
    """Bytes the TaskRuns of one namespace may keep in the apiserver (statuses and sealed chunks, finished runs
    too), unless the Namespace's annotation kubechain.dev/max-stored-bytes (a cluster admin's) says otherwise;
    0: no cap. Runs that would not fit wait in the queue; a run at its allowance fails StorageQuotaExceeded
    (kubechain/core/storage.py says how the cap holds). Keep the sum over namespaces under etcd's quota (2 GiB by
    default). Default 1 GiB."""
    run_bytes: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_RUN_STORED_BYTES", str(16 * 1024 ** 2))))
    """Bytes one run may keep in the apiserver (at most its namespace's cap): its allowance, reserved from the cap
    while it runs, so cap / this is how many runs of a namespace may run at once. 0: the whole cap. Default 16 MiB."""
    context_storage_secret: str = field(default_factory=lambda: _env("KUBECHAIN_CONTEXT_STORAGE_SECRET", ""))
    """The default external context store: `namespace/name` of a Secret whose key context_storage_key holds a
    PostgreSQL DSN. Runs without contextStorageRef seal their chunks there instead of ConfigMaps; runs with
    contextStorageRef kind ConfigMap move there when they reach their allowance. Empty (default): none."""
    context_storage_key: str = field(default_factory=lambda: _env("KUBECHAIN_CONTEXT_STORAGE_KEY", "dsn"))
    """The key of that Secret holding the DSN."""
    context_store_wait_seconds: float = field(default_factory=lambda: float(_env(
        "KUBECHAIN_CONTEXT_STORE_WAIT_SECONDS", "600")))
    """How long an actor waits for an external store that does not answer (condition ContextStoreAvailable=False,
    a Warning Event) before its run fails with reason ContextStoreUnavailable. Nothing is lost while it waits."""


@dataclass(frozen=True)
class ToolSettings:
    local_timeout_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_LOCAL_TOOL_TIMEOUT_SECONDS", "10")))
    """Time limit of the work a tool call does inside the actor: checking its arguments against the tool's schema,
    and running a builtin. Past it the call is a tool error the LLM reads, naming this limit, and the run goes on.
    The work runs in a thread (actors/tools/offload.py), which cannot be stopped: it is bounded by its input, and
    this limit only stops the run waiting for it."""


@dataclass(frozen=True)
class WebhookSettings:
    """The webhook server (`kubechain webhooks`: its own process, every replica runs one) and its certificate."""
    port: int = field(default_factory=lambda: int(_env("KUBECHAIN_WEBHOOK_PORT", "9443")))
    """HTTPS port of the admission and conversion webhooks (0: no webhooks)."""
    address: str = field(default_factory=lambda: _env("KUBECHAIN_WEBHOOK_ADDRESS", "0.0.0.0"))
    """Interface to listen on."""
    host: str = field(default_factory=lambda: _env("KUBECHAIN_WEBHOOK_HOST", "kubechain-webhooks.kubechain-system.svc"))
    """Host name (or IP) the apiserver reaches the webhooks at; it is in the certificate and the webhook URLs."""
    url: str = field(default_factory=lambda: _env("KUBECHAIN_WEBHOOK_URL", ""))
    """The base URL the apiserver calls when there is no Service (local runs): empty, https://<host>:<port>; a
    local stack with two replicas sets its proxy's address, the Service's stand-in."""
    service: str = field(default_factory=lambda: _env("KUBECHAIN_WEBHOOK_SERVICE", ""))
    """`namespace/name:port` of the Service in front of the webhooks: the apiserver is pointed at it (in a
    cluster); empty: at the URL above (local runs)."""
    cert_secret: str = field(default_factory=lambda: _env("KUBECHAIN_WEBHOOK_CERT_SECRET", ""))
    """`namespace/name` of the Secret holding the webhook CA and certificate, shared by every replica: created by
    whichever starts first (create-if-absent: racing replicas agree on the winner's), rotated before expiry. Empty:
    the files in cert_dir (a mounted cert-manager Secret, or generated there once for a single local process)."""
    cert_dir: str = field(default_factory=lambda: _env("KUBECHAIN_WEBHOOK_CERT_DIR", "/tmp/kubechain-webhook"))
    """ca.crt, tls.crt, tls.key: mounted (cert-manager; re-read when they change) or generated here; with
    cert_secret, where the server keeps its copy of the Secret's certificate (TLS loads files)."""
    cert_lifetime_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_WEBHOOK_CERT_LIFETIME_SECONDS",
                                                                            str(90 * 24 * 3600))))
    """Lifetime of a generated CA and serving certificate (a new CA each rotation). Rotation starts at two thirds
    of it, as cert-manager renews."""
    cert_overlap_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_WEBHOOK_CERT_OVERLAP_SECONDS",
                                                                           "120")))
    """How long both CAs are trusted around a rotation: the new CA is in the caBundle this long before any server
    presents the certificate it signed, and the old one stays this long after. More than cert_check_seconds (every
    replica sees each step) plus the apiserver's pick-up of a changed webhook configuration (about a second)."""
    cert_check_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_WEBHOOK_CERT_CHECK_SECONDS", "20")))
    """How often each replica reads the certificate Secret (or files): it loads a new certificate, takes the next
    rotation step when due, and puts the caBundle back into the webhook configurations if someone changed it."""
    drain_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_WEBHOOK_DRAIN_SECONDS", "5")))
    """On SIGTERM the server says it is not ready at once but keeps answering this long (closing each connection
    after its answer), so the Service stops sending it requests before it stops: a rollout refuses none."""


@dataclass(frozen=True)
class LeaderSettings:
    """Leader election: every replica serves the webhooks, one reconciles. A coordination.k8s.io/v1 Lease with
    client-go's semantics (kubechain/core/leases.py)."""
    lease: str = field(default_factory=lambda: _env("KUBECHAIN_LEASE", "kubechain-system/kubechain-operator"))
    """`namespace/name` of the Lease. Empty: no election, this process reconciles (one replica only)."""
    identity: str = field(default_factory=lambda: _env("KUBECHAIN_LEASE_IDENTITY", ""))
    """This replica's name in the Lease (holderIdentity). Empty: <hostname>_<random>, the pod's name in a cluster."""
    duration_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_LEASE_DURATION_SECONDS", "15")))
    """How long the others wait, after they last saw the holder renew, before taking the Lease: a dead leader is
    replaced within this plus retry_seconds."""
    renew_deadline_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_LEASE_RENEW_DEADLINE_SECONDS",
                                                                             "10")))
    """The leader that could not renew for this long stops reconciling at once (the process exits and is
    restarted as a standby): less than duration_seconds, so it has stopped before anyone else may start."""
    retry_seconds: float = field(default_factory=lambda: float(_env("KUBECHAIN_LEASE_RETRY_SECONDS", "2")))
    """How often the leader renews and the others try to take the Lease (a released Lease is taken this soon)."""


def _list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in _env(name, "").split(",") if item.strip())


@dataclass(frozen=True)
class CodeToolSettings:
    """Code tools - `ray` tools and stdio MCP servers - run code of the tenant's choosing on the Ray workers (never
    in the operator). Each is refused (at admission, and again where it would run) unless its namespace is opted
    in and it passes the allowlists below; every list is comma-separated and empty by default: none run.
    docs/threat-model.md says who may change what."""
    namespaces: tuple[str, ...] = field(default_factory=lambda: _list("KUBECHAIN_CODE_TOOLS_NAMESPACES"))
    """Namespaces where code tools may run, besides those whose Namespace carries the label
    kubechain.dev/code-tools=allowed. `*`: every namespace (a single-tenant cluster)."""
    ray_functions: tuple[str, ...] = field(default_factory=lambda: _list("KUBECHAIN_RAY_FUNCTIONS"))
    """Callables a ray tool may call: `module:callable`, or `module:*` for any public function defined in that
    module (not one it imported). `*`: any callable, i.e. any code on the workers."""
    ray_runtime_env_keys: tuple[str, ...] = field(default_factory=lambda: _list("KUBECHAIN_RAY_RUNTIME_ENV_KEYS"))
    """Keys a ray tool's runtimeEnv may set, e.g. `env_vars` (its names pass KUBECHAIN_CODE_TOOLS_ENV). `pip`,
    `working_dir`, `py_modules`... bring the tenant's own code: list them only for namespaces you trust so."""
    stdio_commands: tuple[str, ...] = field(default_factory=lambda: _list("KUBECHAIN_MCP_STDIO_COMMANDS"))
    """Exact `command` values a stdio MCP server may run (`*`: any). List only servers whose arguments cannot
    run code of their choosing: never interpreters (node, npx, python, uvx, sh...)."""
    env_names: tuple[str, ...] = field(default_factory=lambda: _list("KUBECHAIN_CODE_TOOLS_ENV"))
    """Environment variables a stdio server's `env` or a ray tool's runtimeEnv.env_vars may set: names or
    shell-style patterns (GITHUB_*). Loader and interpreter variables (LD_*, PYTHON*, NODE_OPTIONS, BROWSER...:
    kubechain/core/codetools.py NEVER_ENV) are refused even when listed."""


@dataclass(frozen=True)
class ConsoleSettings:
    """Defaults of `kubechain ui` (its flags override them)."""
    host: str = field(default_factory=lambda: _env("KUBECHAIN_UI_HOST", "127.0.0.1"))
    """Address the console listens on."""
    port: int = field(default_factory=lambda: int(_env("KUBECHAIN_UI_PORT", "8090")))
    """Port the console listens on."""
    ray_dashboard_url: str | None = field(default_factory=lambda: os.environ.get("KUBECHAIN_UI_RAY_DASHBOARD_URL"))
    """Link each run to its actor in the Ray dashboard, e.g. http://localhost:8265."""
    tracing_url: str | None = field(default_factory=lambda: os.environ.get("KUBECHAIN_UI_TRACING_URL"))
    """Link each run to its trace: a URL with {trace_id}."""
    sign_in_burst: int = field(default_factory=lambda: int(_env("KUBECHAIN_UI_SIGN_IN_BURST", "10")))
    """Failed sign-ins (tokens the apiserver refuses) a client address may make at once; then 429."""
    sign_in_per_minute: float = field(default_factory=lambda: float(_env("KUBECHAIN_UI_SIGN_IN_PER_MINUTE", "10")))
    """How many of those come back per minute."""


@dataclass(frozen=True)
class Settings:
    ray: RaySettings = field(default_factory=RaySettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    tools: ToolSettings = field(default_factory=ToolSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    leader: LeaderSettings = field(default_factory=LeaderSettings)
    code_tools: CodeToolSettings = field(default_factory=CodeToolSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    metrics_port: int = field(default_factory=lambda: int(_env("KUBECHAIN_METRICS_PORT", "8080")))
    """Port of the operator's Prometheus /metrics (0: off)."""
    health_port: int = field(default_factory=lambda: int(_env("KUBECHAIN_HEALTH_PORT", "0")))
    """Port of the operator's liveness probe /healthz (0: off): served while waiting for the Lease and while
    reconciling."""
    stream_port: int = field(default_factory=lambda: int(_env("KUBECHAIN_STREAM_PORT", "0")))
    """Port of the live streams of runs' open steps (kubechain/operator/streams.py: server-sent events for the CLI
    and the console, each request checked with the user's own token; 0: off)."""
    max_streams: int = field(default_factory=lambda: int(_env("KUBECHAIN_MAX_STREAMS", "200")))
    """Live streams served at once by one replica (each holds a long-poll Ray call); past it, 503."""
    json_logs: bool = field(default_factory=lambda: _env("KUBECHAIN_LOG_FORMAT", "").lower() == "json")
    """KUBECHAIN_LOG_FORMAT=json: the operator's logs (kopf's) and its actors' are one JSON object per line."""


@functools.cache
def current() -> Settings:
    """This process's settings, read from the environment once."""
    return Settings()
