import json
from pathlib import Path

import pytest

from bench import client_overhead


def test_client_and_plain_httpx_alternate_on_one_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_overhead, "RESULTS_DIR", tmp_path)
    assert client_overhead.main(["--requests", "2", "--size", "48x40"]) == 0
    (written,) = tmp_path.glob("client-overhead-*.json")
    result = json.loads(written.read_text())
    assert len(result["client_s"]) == len(result["plain_httpx_s"]) == 2
    assert result["without_server"]["client_ms"] > 0 < result["without_server"]["plain_httpx_ms"]
    assert result["overhead"] == pytest.approx(
        result["median_client_s"] / result["median_plain_s"] - 1
    )
