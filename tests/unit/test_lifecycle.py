from datetime import datetime, timezone

import pytest

from kubechain.api.v1alpha1 import Phase, TaskRunStatus
from kubechain.core.lifecycle import EDGES, IllegalTransition, enter

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def test_enter_records_history_at_the_given_time_and_refuses_illegal_edges():
    status = enter(TaskRunStatus(), Phase.RUNNING, "Scheduled", "go", now=NOW)
    status = enter(status, Phase.COMPLETED, "FinalAnswer", now=NOW)
    assert [(t.phase, t.reason, t.time) for t in status.phase_history] == [
        (Phase.RUNNING, "Scheduled", "2026-12-01T12:00:00.000Z"), (Phase.COMPLETED, "FinalAnswer", "2026-12-01T12:00:00.000Z")]
    with pytest.raises(IllegalTransition, match="Completed -> Running"):
        enter(status, Phase.RUNNING, "Again", now=NOW)


def test_every_phase_has_its_edges():
    assert set(EDGES) == set(Phase) and all(not EDGES[p] for p in Phase if p.terminal)
