import io

from autoshuikou.report.progress import Progress

ATTRS = {
    "metric": 0.99,
    "latency_ms": 0.2,
    "latency_ratio": 0.5,
    "size_bytes": 2048,
    "feasible": True,
}


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(out)  # StringIO is not a tty
    progress.begin(total=3, done=1)
    progress.stage(7, "distilling 2 epochs")  # no live line without a terminal
    progress.trial_done(7, ATTRS, "COMPLETE", "metric 0.99 @ 0.2 ms")
    text = out.getvalue()
    assert "\r" not in text
    assert text.startswith("[2/3 ") and "trial 7: metric 0.9900" in text and "feasible" in text


def test_live_status_line_on_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(out, live=True)
    progress.begin(total=30, done=0)
    progress.stage(4, "quantizing")
    assert "\r" in out.getvalue() and "trial 1/30 (#4) quantizing" in out.getvalue()
    progress.trial_done(4, {"error": "ValueError: boom"}, "FAIL", "none feasible yet")
    assert out.getvalue().endswith("trial 4 fail: ValueError: boom\n")
