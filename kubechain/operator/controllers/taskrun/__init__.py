"""Everything the operator does for a TaskRun, in one folder:

- handlers.py   the kopf handlers: events and retries (`reconcile`), deadlines (`keep_time`)
- supervisor.py the daemon that keeps one actor on a Running run (`supervise`)
- observe.py    what a decision is made from (the run, its neighbours in the indexes, this process's books)
- effects.py    the applier: the only TaskRun code that calls Kubernetes or Ray or posts Events
- queue.py      admission: who may start now, and waking the runs a freed slot admits
- jobs.py       container tools' Jobs: their index, results and wake-ups
- indexes.py    the TaskRun indexes; filters.py: which runs a handler is for

The decisions themselves are kubechain/core/reconciler.py (pure), over the state machine of
kubechain/core/lifecycle.py. Importing this package registers the handlers.
"""
from . import handlers, indexes, jobs, supervisor  # noqa: F401
