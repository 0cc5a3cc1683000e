"""bnlib.progress: progress reports, and stopping a real training run cooperatively."""

from __future__ import annotations

import threading

import pytest

from bnlib import data, engine, models
from bnlib.progress import Stopped, progress_bar, request_stop, stoppable


@pytest.fixture(scope="module")
def mnist():
    return data.load("mnist", "train")


def _train(mnist, steps: int):
    model = models.MLP(hidden=(32, 32), norm="bnlib")
    engine.train(model, mnist, steps=steps, batch_size=32, lr=0.1)
    return model


def test_stop_ends_a_real_training_run_at_the_next_step_and_says_where(mnist):
    reports = []

    def listen(desc, done, total):
        reports.append((desc, done, total))
        if done >= 5:
            control.stop()

    with stoppable(on_progress=listen) as control, pytest.raises(Stopped) as stopped:
        _train(mnist, steps=10_000)
    assert str(stopped.value) == f"Stopped at step {stopped.value.done} of 10000"
    # the stop takes effect at the very step whose report asked for it (reports come at
    # most every 0.1 s, so how many steps that is depends on the machine's speed)
    assert stopped.value.done == reports[-1][1] >= 5
    assert reports[0] == ("training", 0, 10_000)
    assert all(d == "training" and t == 10_000 for d, _, t in reports)
    assert [done for _, done, _ in reports] == sorted(done for _, done, _ in reports)


def test_a_listener_gets_the_first_and_last_step_and_a_finished_run_is_not_stopped(mnist):
    reports = []
    with stoppable(on_progress=lambda *r: reports.append(r)):
        _train(mnist, steps=20)
    assert reports[0][1:] == (0, 20) and reports[-1][1:] == (20, 20)
    assert len(reports) <= 2 + 20


def test_a_stop_request_reaches_only_runs_that_are_going():
    request_stop()  # nothing runs: forgotten
    with stoppable() as control:
        bar = progress_bar(3, "x", enabled=False)
        bar.update()
        assert not control.stop_requested
        request_stop()  # reaches every run going: this one
        with pytest.raises(Stopped, match="Stopped at step 2 of 3"):
            bar.update()
    bar = progress_bar(3, "outside any stoppable block", enabled=False)
    request_stop()
    bar.update(3)  # no block, nothing to stop


def test_stopping_one_thread_s_run_leaves_another_thread_s_run_alone():
    started, outcome = threading.Barrier(2), {}

    def run(name, stop_it):
        with stoppable() as control:
            bar = progress_bar(1000, name, enabled=False)
            started.wait()
            try:
                for _ in range(1000):
                    if stop_it:
                        control.stop()
                    bar.update()
                outcome[name] = "finished"
            except Stopped as stopped:
                outcome[name] = str(stopped)

    threads = [threading.Thread(target=run, args=(n, n == "a")) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcome == {"a": "Stopped at step 1 of 1000", "b": "finished"}


def test_enabled_false_reports_nothing_but_can_still_be_stopped():
    reports = []
    with stoppable(on_progress=lambda *r: reports.append(r)) as control:
        bar = progress_bar(5, "quiet", enabled=False)
        control.stop()
        with pytest.raises(Stopped):
            bar.update()
    assert reports == []
