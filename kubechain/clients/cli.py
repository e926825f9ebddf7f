"""`kubechain`: the command line (CRD generation, running the operator)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kubechain.operator.settings import current


def crds(args: argparse.Namespace) -> int:
    from kubechain.api.crdgen import write_all

    for path in write_all(Path(args.out)):
        print(path)
    return 0


def operator(args: argparse.Namespace) -> int:
    """One replica's reconciler: waits for the Lease, then runs the kopf operator (kubechain/operator/replica.py)."""
    from kubechain.operator import replica

    return replica.main(args.namespace or (), args.verbose)


def webhooks(args: argparse.Namespace) -> int:
    """One replica's admission and conversion webhooks (kubechain/operator/admission/main.py)."""
    from kubechain.operator.admission import main as server

    return server.main(args.verbose)


def transcript(args: argparse.Namespace) -> int:
    """Print a TaskRun's whole conversation, out-of-line chunks included."""
    from kubechain.clients import transcript as t

    status, messages, _ = t.load(args.namespace, args.taskrun)
    if args.json and (note := t.dropped(status)):
        print(note, file=sys.stderr)  # the JSON stays the list of messages that are there
    print(t.as_json(messages) if args.json else t.render(status, messages))
    return 0


def _api():
    from kubernetes import client, config

    config.load_config()
    return client.CustomObjectsApi()


def _reply(args: argparse.Namespace) -> int:
    from kubechain.api.v1alpha1 import HumanResponse, WaitingFor
    from kubechain.clients.respond import Refused, Reply, send_reply

    if args.fn is respond:
        reply = Reply(WaitingFor.ANSWER, HumanResponse(answer=args.text, by=args.by))
    else:
        reply = Reply(WaitingFor.APPROVAL, HumanResponse(approved=args.fn is approve, reason=args.reason, by=args.by))
    try:
        call_id = send_reply(_api(), args.namespace, args.taskrun, reply, args.call)
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(f"taskrun/{args.taskrun}: call {call_id} {'answered' if args.fn is respond else args.fn.__name__ + 'd'}")
    return 0


def respond(args: argparse.Namespace) -> int:
    """Answer an ask_human question of a paused TaskRun."""
    return _reply(args)


def approve(args: argparse.Namespace) -> int:
    """Approve a call that waits for approval: the tool runs."""
    return _reply(args)


def reject(args: argparse.Namespace) -> int:
    """Reject a call that waits for approval: the LLM gets the reason as the tool's result."""
    return _reply(args)


def cancel(args: argparse.Namespace) -> int:
    from kubechain.clients.respond import send_cancel

    send_cancel(_api(), args.namespace, args.taskrun)
    print(f"taskrun/{args.taskrun}: cancel requested")
    return 0


def fork(args: argparse.Namespace) -> int:
    """Start a new TaskRun from another's checkpoint at a step (spec.forkOf), with the caller's own credentials."""
    from kubernetes.client.exceptions import ApiException

    from kubechain.api.v1alpha1 import GROUP, VERSION
    from kubechain.clients.forking import fork_body

    api = _api()
    try:
        source = api.get_namespaced_custom_object(GROUP, VERSION, args.namespace, "taskruns", args.taskrun)
        body = fork_body(source, args.at_step, args.input, args.name)
        api.create_namespaced_custom_object(GROUP, VERSION, args.namespace, "taskruns", body)
    except ApiException as exc:
        print(f"refused: {_api_message(exc)}", file=sys.stderr)
        return 1
    print(f"taskrun/{body['metadata']['name']} created: a fork of {args.taskrun} at step {args.at_step}")
    return 0


def _api_message(exc) -> str:
    import json

    try:
        return json.loads(exc.body).get("message") or str(exc)
    except (TypeError, ValueError):
        return f"{exc.status} {exc.reason}"


def ui(args: argparse.Namespace) -> int:
    """Serve the web console (kubechain/ui) until interrupted."""
    from kubechain.ui.app import Settings, serve

    serve(Settings(host=args.host, port=args.port, kubeconfig=args.kubeconfig, allow_actions=args.allow_actions,
                   as_kubeconfig_user=args.as_kubeconfig_user, namespace=args.namespace,
                   ray_dashboard_url=args.ray_dashboard_url, tracing_url=args.tracing_url,
                   sign_in_burst=args.sign_in_burst, sign_in_per_minute=args.sign_in_per_minute,
                   stream_url=args.stream_url or None))
    return 0


def run(args: argparse.Namespace) -> int:
    """Create a Task for an agent; with --follow, print the conversation as it grows until the run ends."""
    import uuid

    from kubechain.api.v1alpha1 import API_VERSION, GROUP, VERSION
    from kubechain.core.naming import taskrun_name

    api = _api()
    name = args.name or f"{args.agent}-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": API_VERSION, "kind": "Task", "metadata": {"name": name},
            "spec": {"agentRef": {"name": args.agent}, "userInput": args.input}}
    api.create_namespaced_custom_object(GROUP, VERSION, args.namespace, "tasks", body)
    run_name = taskrun_name(name)
    print(f"task/{name} created; its run is taskrun/{run_name}")
    if not args.follow:
        return 0
    return follow(argparse.Namespace(taskrun=run_name, namespace=args.namespace, timeout=args.timeout,
                                     stream_url=args.stream_url))


def follow(args: argparse.Namespace) -> int:
    """Print a run's conversation as it happens (the open step's answer live, with a stream URL) until it ends."""
    from kubechain.clients.follow import follow as follow_run

    return follow_run(args.namespace, args.taskrun, args.timeout, args.stream_url or None)


def _stream_url(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stream-url", default=os.environ.get("KUBECHAIN_STREAM_URL", ""),
                   help="the operator's live streams (KUBECHAIN_STREAM_URL), e.g. http://kubechain-streams:8091; "
                        "without it the run is followed step by step from its checkpoints")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubechain", description=__doc__)
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("crds", help="write the CustomResourceDefinitions generated from the API models")
    p.add_argument("--out", default="crds", help="output directory")
    p.set_defaults(fn=crds)
    p = sub.add_parser("operator", help="run the operator's reconciler (kopf, while holding the Lease)")
    p.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable)")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(fn=operator)
    p = sub.add_parser("webhooks", help="run the operator's admission and conversion webhooks")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(fn=webhooks)
    p = sub.add_parser("transcript", help="print a TaskRun's full conversation")
    p.add_argument("taskrun")
    p.add_argument("--namespace", "-n", default="default")
    p.add_argument("--json", action="store_true", help="the messages as OpenAI-format JSON")
    p.set_defaults(fn=transcript)
    for fn, usage in ((respond, "answer a paused TaskRun's question"), (approve, "approve a call waiting for approval"),
                      (reject, "reject a call waiting for approval")):
        p = sub.add_parser(fn.__name__, help=usage)
        p.add_argument("taskrun")
        if fn is respond:
            p.add_argument("text", help="the answer")
        p.add_argument("--call", help="the waiting call: its key (idempotencyKey) or the LLM's call id "
                                         "(default: the only call waiting)")
        p.add_argument("--reason", default="", required=fn is reject, help="why (a rejection's reason reaches the LLM)")
        p.add_argument("--by", default=os.environ.get("USER", ""), help="who responds (audit)")
        p.add_argument("--namespace", "-n", default="default")
        p.set_defaults(fn=fn)
    p = sub.add_parser("cancel", help="cancel a TaskRun (and its child runs)")
    p.add_argument("taskrun")
    p.add_argument("--namespace", "-n", default="default")
    p.set_defaults(fn=cancel)
    p = sub.add_parser("fork", help="start a new TaskRun from a run's checkpoint at a step")
    p.add_argument("taskrun", help="the run to fork (it is only read)")
    p.add_argument("--at-step", type=int, required=True, help="keep the run's conversation up to and including "
                   "this step's reply and its calls' results (status.step counts LLM requests)")
    p.add_argument("--input", help="the answer to that step's ask_human question (instead of the run's own)")
    p.add_argument("--name", help="the fork's name (default: <taskrun>-fork-<random>)")
    p.add_argument("--namespace", "-n", default="default")
    p.set_defaults(fn=fork)
    p = sub.add_parser("run", help="create a Task for an agent (and follow its run)")
    p.add_argument("agent")
    p.add_argument("input", help="the user's message")
    p.add_argument("--name", help="Task name (default: <agent>-<random>)")
    p.add_argument("--follow", "-f", action="store_true", help="print the conversation until the run ends")
    p.add_argument("--timeout", type=float, default=3600, help="stop following after this many seconds")
    p.add_argument("--namespace", "-n", default="default")
    _stream_url(p)
    p.set_defaults(fn=run)
    p = sub.add_parser("follow", help="print a TaskRun's conversation as it happens, the open step live")
    p.add_argument("taskrun")
    p.add_argument("--timeout", type=float, default=3600, help="stop following after this many seconds")
    p.add_argument("--namespace", "-n", default="default")
    _stream_url(p)
    p.set_defaults(fn=follow)
    p = sub.add_parser("ui", help="serve the web console (read-only unless --allow-actions)")
    console = current().console
    p.add_argument("--host", default=console.host, help="address to listen on")
    p.add_argument("--port", type=int, default=console.port)
    p.add_argument("--kubeconfig", help="the console's own credentials (default: in-cluster, then $KUBECONFIG)")
    p.add_argument("--namespace", "-n", help="watch only this namespace (default: all)")
    p.add_argument("--allow-actions", action="store_true",
                   help="let users answer, approve, reject and cancel (with their own credentials)")
    p.add_argument("--as-kubeconfig-user", action="store_true",
                   help="local use: requests without a token act as the kubeconfig's user (never in a cluster)")
    p.add_argument("--ray-dashboard-url", default=console.ray_dashboard_url,
                   help="link each run to its actor there, e.g. http://localhost:8265")
    p.add_argument("--tracing-url", default=console.tracing_url,
                   help="link each run to its trace: a URL with {trace_id}, e.g. http://jaeger:16686/trace/{trace_id}")
    p.add_argument("--sign-in-burst", type=int, default=console.sign_in_burst,
                   help="failed sign-ins a client address may make at once before it gets 429")
    p.add_argument("--sign-in-per-minute", type=float, default=console.sign_in_per_minute,
                   help="how many failed sign-ins per minute come back to an address")
    _stream_url(p)
    p.set_defaults(fn=ui)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
