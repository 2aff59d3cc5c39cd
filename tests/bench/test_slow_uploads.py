import json
from pathlib import Path

import pytest

from bench import slow_uploads


def test_trickled_uploads_end_in_408_while_others_are_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slow_uploads, "RESULTS_DIR", tmp_path)
    argv = ["--trickles", "2", "--requests", "2", "--read-timeout", "4"]
    assert slow_uploads.main(argv) == 0  # every trickle was answered 408
    (written,) = tmp_path.glob("slow-uploads-*.json")
    result = json.loads(written.read_text())
    assert result["trickle_statuses"] == [408, 408]
    assert len(result["latency_during_trickles_s"]) == 2
    # The two requests were answered while both trickles still held their connections.
    assert sum(result["latency_during_trickles_s"]) < result["trickles_ended_after_s"]
