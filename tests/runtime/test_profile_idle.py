"""`profile.idle_before` and `profile.advance`: a step's device time, checked against the spans' arithmetic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fusegraph.runtime.profile import ProfileReport, advance, idle_before, span_times


def test_idle_before__gaps_go_to_the_kernel_that_waited() -> None:
    spans = [("norm", 0.0, 2.0), ("gemv", 3.5, 6.0), ("norm", 6.0, 7.0), ("gemv", 9.0, 10.0)]
    assert idle_before(spans) == {"norm": 0.0, "gemv": 1.5 + 2.0}


def test_idle_before__an_overlap_is_not_idle_and_order_of_the_list_does_not_matter() -> None:
    # "b" starts while "a" runs (programmatic dependent launch); "c" starts after b but before a ends
    spans = [("c", 7.0, 8.0), ("a", 0.0, 7.5), ("b", 1.0, 3.0)]
    assert idle_before(spans) == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert idle_before([("a", 0.0, 7.5), ("b", 1.0, 3.0), ("c", 9.0, 9.5)]) == {"a": 0.0, "b": 0.0, "c": 1.5}


_RAW_SPANS = st.lists(
    st.tuples(st.sampled_from("abc"), st.integers(0, 1000), st.integers(0, 50)), min_size=1, max_size=30
)


def _spans_and_coverage(raw) -> tuple[list[tuple[str, float, float]], list[bool]]:
    """The spans of (name, start, length) triples, and for each unit of time from the first start to the last end
    whether a span covers it (counted unit by unit, not by the sweep under test)."""
    spans = [(name, float(start), float(start + length)) for name, start, length in raw]
    first, last = min(s for _, s, _ in spans), max(e for _, _, e in spans)
    covered = [False] * int(last - first)
    for _, start, end in spans:
        for t in range(int(start - first), int(end - first)):
            covered[t] = True
    return spans, covered


@given(_RAW_SPANS)
def test_idle_before__sums_to_the_uncovered_time_between_first_start_and_last_end(raw) -> None:
    spans, covered = _spans_and_coverage(raw)
    assert sum(idle_before(spans).values()) == covered.count(False)


def test_profile_report__prints_the_idle_column_only_when_measured() -> None:
    ops = [("gemv", 61.0, 2.0), ("norm", 5.0, 1.0)]
    with_idle = str(
        ProfileReport("profile of 'm'", 20, 40.0, 80.0, "cuda", ops, {"gemv": 1.25, "norm": 10.0})
    )
    assert "device 66.0 us/step in 2 kernels, idle 11.2 us/step between them" in with_idle
    assert with_idle.splitlines()[2].split() == ["us/step", "calls/step", "idle", "before", "name"]
    assert with_idle.splitlines()[3].split() == ["61.0", "2.0", "1.2", "gemv"]
    assert with_idle.splitlines()[4].split() == ["5.0", "1.0", "10.0", "norm"]
    cpu = str(ProfileReport("profile of 'm'", 20, 40.0, 80.0, "cpu", ops))
    assert "idle" not in cpu and cpu.splitlines()[3].split() == ["61.0", "2.0", "gemv"]


def test_advance__an_overlapped_kernel_counts_only_what_it_added() -> None:
    # "gemv" starts (PDL) while "norm" runs and ends 3 after it; the second gemv ends inside the second norm
    spans = [("norm", 0.0, 2.0), ("gemv", 1.0, 5.0), ("norm", 6.0, 7.0), ("gemv", 6.5, 6.8)]
    assert advance(spans) == {"norm": 2.0 + 1.0, "gemv": 3.0 + 0.0}
    assert idle_before(spans) == {"norm": 1.0, "gemv": 0.0}


@given(_RAW_SPANS)
def test_advance__with_the_idle_sums_to_the_time_from_first_start_to_last_end(raw) -> None:
    spans, covered = _spans_and_coverage(raw)
    assert sum(advance(spans).values()) == covered.count(True)
    assert sum(advance(spans).values()) + sum(idle_before(spans).values()) == len(covered)


def test_profile_report__prints_the_advance_column_and_its_total() -> None:
    ops = [("gemv", 61.0, 2.0), ("norm", 5.0, 1.0)]
    report = ProfileReport("profile of 'm'", 20, 40.0, 80.0, "cuda", ops, {"gemv": 1.25, "norm": 10.0},
                           {"gemv": 58.5, "norm": 4.0})  # fmt: skip
    text = str(report)
    assert ", 62.5 us/step on the path" in text
    assert text.splitlines()[2].split() == ["us/step", "calls/step", "idle", "before", "advance", "name"]
    assert text.splitlines()[3].split() == ["61.0", "2.0", "1.2", "58.5", "gemv"]


def test_span_times__each_span_in_order_of_start_with_its_idle_and_advance() -> None:
    spans = [("gemv", 1.0, 5.0), ("norm", 0.0, 2.0), ("gemv", 6.5, 6.8), ("norm", 6.0, 7.0)]
    assert span_times(spans) == [
        ("norm", 0.0, 2.0),
        ("gemv", 0.0, 3.0),
        ("norm", 1.0, 1.0),
        ("gemv", 0.0, 0.0),
    ]
