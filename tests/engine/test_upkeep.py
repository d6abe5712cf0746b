"""The engine process's background work runs off one timer (pyengine.upkeep): table-driven ticks."""

import logging

from pyengine.upkeep import Upkeep


def _upkeep(log, fail=()):
    def job(name):
        def run():
            log.append(name)
            if name in fail:
                raise RuntimeError(f"{name} broke")
        return run
    return Upkeep([(0.1, job("flush"), "flush"), (0.5, job("watch"), "watch"), (1.0, job("sweep"), "sweep")])


def test_each_job_runs_at_its_own_interval_off_one_tick():
    ran = []
    u = _upkeep(ran)
    assert u.tick_s == 0.1
    steps = [(0.0, []), (0.1, ["flush"]), (0.2, ["flush"]), (0.5, ["flush", "watch"]),
             (0.6, ["flush"]), (1.0, ["flush", "watch", "sweep"]), (1.05, []), (1.1, ["flush"])]
    for now_s, expected in steps:
        assert u.tick(now_s) == expected, now_s
    # Every time: the job's own run, in the order given.
    assert ran == ["flush", "flush", "flush", "watch", "flush", "flush", "watch", "sweep", "flush"]


def test_a_late_tick_runs_each_job_once_not_a_burst_of_catch_ups():
    u = _upkeep([])
    u.tick(0.0)
    assert u.tick(5.0) == ["flush", "watch", "sweep"]
    assert u.tick(5.05) == []
    assert u.tick(5.1) == ["flush"]


def test_a_job_that_raises_is_logged_and_the_others_still_run(caplog):
    ran = []
    u = _upkeep(ran, fail={"flush"})
    u.tick(0.0)
    with caplog.at_level(logging.ERROR, logger="fairvisor.server"):
        assert u.tick(1.0) == ["flush", "watch", "sweep"]
    assert ran == ["flush", "watch", "sweep"]
    assert "engine flush failed" in caplog.text
    assert u.tick(1.1) == ["flush"]  # and it runs again at its next turn


def test_a_job_that_raises_is_counted_each_time():
    errors = []
    u = Upkeep([(0.1, lambda: 1 / 0, "broken"), (0.1, lambda: None, "fine")], count_error=lambda: errors.append(1))
    for now_s in (0.0, 0.1, 0.2):
        u.tick(now_s)
    assert len(errors) == 2  # the first tick only schedules
