"""Imported by every Ray worker before it accepts work, when the Ray node runs with
`RAY_preload_python_modules=actors.preload` (set it in the RayCluster's container env).

A TaskRun actor spends most of its start-up importing openai (~0.4 s); prestarted idle workers that
already did it start a TaskRun almost at once.
"""
import openai  # noqa: F401
import urllib3  # noqa: F401
import yaml  # noqa: F401

from . import checkpoint, kubeconn, llm, loop, taskrun_actor, telemetry  # noqa: F401
