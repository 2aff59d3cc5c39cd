import math

import numpy as np
import pytest

from bench.stats import TRANSPORT_ERROR, Sample, error_counts, percentile, summarise


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101])
@pytest.mark.parametrize("q", [0, 50, 90, 99, 100])
def test_percentile_is_numpys_linear_definition(n: int, q: float) -> None:
    values = list(np.random.default_rng(n).exponential(1.0, n))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_interpolates_between_order_statistics() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0], 99) == pytest.approx(1.99)


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_nonsense(values: list[float], q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile(values, q)


def test_summary_counts_only_successes_as_throughput() -> None:
    samples = [
        Sample(0.0, 1.0, 200),
        Sample(0.0, 2.0, 200),
        Sample(0.0, 0.1, 503),
        Sample(0.0, 0.2, 503),
        Sample(0.0, 5.0, TRANSPORT_ERROR),
    ]
    summary = summarise(samples, window_s=4.0, images_per_request=3)
    assert summary["requests"] == 5
    assert summary["ok"] == 2
    assert summary["throughput_rps"] == 0.5
    assert summary["throughput_ips"] == 1.5
    # Latency of the successes only: the fast 503s do not flatter it.
    assert summary["latency_s"]["p50"] == 1.5
    assert summary["latency_s"]["max"] == 2.0
    assert summary["errors"] == {"503": 2, "transport": 1}


def test_summary_without_successes_has_no_latency() -> None:
    summary = summarise([Sample(0.0, 1.0, 500)], window_s=1.0)
    assert summary["throughput_rps"] == 0
    assert all(v is None for v in summary["latency_s"].values())
    assert summary["errors"] == {"500": 1}


def test_summary_refuses_an_empty_window() -> None:
    with pytest.raises(ValueError, match="window"):
        summarise([], window_s=0.0)


def test_error_counts_treat_2xx_as_success() -> None:
    assert error_counts([Sample(0, 1, 204), Sample(0, 1, 404), Sample(0, 1, 404)]) == {"404": 2}
    assert math.isclose(Sample(1.0, 3.5, 200).latency, 2.5)
