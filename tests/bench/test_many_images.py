import json
from pathlib import Path

import pytest

from bench import many_images


def test_many_images_against_singles_on_a_real_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(many_images, "RESULTS_DIR", tmp_path)
    argv = ["--model", "lraspp_mobilenet_v3_large", "--images", "3", "--rounds", "1"]
    assert many_images.main([*argv, "--size", "48x40", "--format", "png"]) == 0
    (written,) = tmp_path.glob("many-images-*.json")
    result = json.loads(written.read_text())
    assert result["answers_equal"] is True  # the entries are the single answers, in order
    assert len(result["singles_s"]) == len(result["many_s"]) == 1
    assert result["ratio_many_over_singles_median_of_rounds"] == pytest.approx(
        result["singles_s"][0] / result["many_s"][0]
    )
    assert result["machine"]["cpu"]
    assert "images/s" in capsys.readouterr().out
