"""`kubechain`: the command line (CRD generation, running the operator)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def crds(args: argparse.Namespace) -> int:
    from kubechain.api.crdgen import write_all

    for path in write_all(Path(args.out)):
        print(path)
    return 0


def operator(args: argparse.Namespace) -> int:
    """Run the kopf operator in this process, exactly as `kopf run -m kubechain.operator` would."""
    argv = ["kopf", "run", "-m", "kubechain.operator", "--standalone"]
    argv += ["--all-namespaces"] if not args.namespace else [f"--namespace={ns}" for ns in args.namespace]
    if args.verbose:
        argv.append("--verbose")
    os.execvp(argv[0], argv)
    return 1  # not reached


def transcript(args: argparse.Namespace) -> int:
    """Print a TaskRun's whole conversation, out-of-line chunks included."""
    from kubechain import transcript as t

    status, messages, _ = t.load(args.namespace, args.taskrun)
    print(t.as_json(messages) if args.json else t.render(status, messages))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubechain", description=__doc__)
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("crds", help="write the CustomResourceDefinitions generated from the API models")
    p.add_argument("--out", default="crds", help="output directory")
    p.set_defaults(fn=crds)
    p = sub.add_parser("operator", help="run the operator (kopf)")
    p.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable)")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(fn=operator)
    p = sub.add_parser("transcript", help="print a TaskRun's full conversation")
    p.add_argument("taskrun")
    p.add_argument("--namespace", "-n", default="default")
    p.add_argument("--json", action="store_true", help="the messages as OpenAI-format JSON")
    p.set_defaults(fn=transcript)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
