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


def test_live_bar_on_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(out, live=True)
    progress.begin(total=30, done=0)
    progress.stage(4, "quantizing")
    assert "\r" in out.getvalue() and "0/30" in out.getvalue() and "#4 quantizing" in out.getvalue()
    progress.trial_done(4, {"error": "ValueError: boom"}, "FAIL", "none feasible yet")
    assert "trial 4 fail: ValueError: boom\n" in out.getvalue()
    progress.trial_done(5, ATTRS, "COMPLETE", "metric 0.99 @ 0.2 ms")
    progress.end()
    assert "1/30" in out.getvalue()  # the bar counted the completed trial


def test_long_steps_report_the_time_left() -> None:
    out = io.StringIO()
    progress = Progress(out)
    with progress.steps("building probes", 8) as tick:
        for _ in range(8):
            tick()
    lines = out.getvalue().splitlines()
    # Without a terminal: a plain line each quarter (not at the end), with an estimate.
    assert len(lines) == 3 and lines[0].startswith("  building probes: 2/8")
    assert all("left" in line and "\r" not in line for line in lines)
    live = io.StringIO()
    with Progress(live, live=True).steps("building probes", 4) as tick:
        tick()
    assert "building probes" in live.getvalue() and "0/4" in live.getvalue()  # a tqdm bar
