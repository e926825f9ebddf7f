"""harness/portblocks.py: heads side by side (other processes included) never hold the same port block."""
import subprocess
import sys

from harness import portblocks


def test_a_held_block_is_not_claimed_again_here_or_by_another_process_until_released(tmp_path, monkeypatch):
    monkeypatch.setattr(portblocks, "LOCKS", tmp_path)
    first, second = portblocks.claim("t", 2), portblocks.claim("t", 2)
    assert (first.index, second.index) == (0, 1)
    assert portblocks.claim("t", 2) is None  # both held
    other = [sys.executable, "-c", "import sys; from pathlib import Path; from harness import portblocks; "
             f"portblocks.LOCKS = Path({str(tmp_path)!r}); b = portblocks.claim('t', 2); print(b and b.index)"]
    assert subprocess.run(other, capture_output=True, text=True, check=True).stdout.strip() == "None"
    first.release()
    assert subprocess.run(other, capture_output=True, text=True, check=True).stdout.strip() == "0"
    assert portblocks.claim("t", 2).index == 0  # the other process has exited: its hold went with it
