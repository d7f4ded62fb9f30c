from services.quality.scheduling import RecomputeSchedule


def test_a_burst_is_recomputed_once_after_it_goes_quiet():
    s = RecomputeSchedule(quiet_seconds=2, max_delay_seconds=30)
    for t in range(5):
        s.touch("p", float(t))
    assert s.due(5.0) == []
    assert s.due(6.0) == ["p"]
    s.ran("p", 6.0)
    assert s.due(100.0) == []


def test_a_steady_stream_is_recomputed_at_the_latest_after_max_delay():
    s = RecomputeSchedule(quiet_seconds=2, max_delay_seconds=10)
    for t in range(11):
        s.touch("p", float(t))
        if t < 10:
            assert s.due(float(t)) == []
    assert s.due(10.0) == ["p"]


def test_changes_during_a_run_keep_the_project_dirty():
    s = RecomputeSchedule(quiet_seconds=0, min_interval_seconds=0)
    s.touch("p", 1.0)
    s.touch("p", 3.0)  # arrives while the run that started at 2.0 is going
    s.ran("p", 2.0)
    assert s.due(4.0) == ["p"]


def test_min_interval_holds_back_a_second_run():
    s = RecomputeSchedule(quiet_seconds=0, min_interval_seconds=5)
    s.touch("p", 0.0)
    s.ran("p", 0.0)
    s.touch("p", 1.0)
    assert s.due(2.0) == []
    assert s.due(5.0) == ["p"]


def test_projects_with_new_votes_go_ahead_of_a_start_up_backlog():
    s = RecomputeSchedule(quiet_seconds=2, max_delay_seconds=30)
    for i, project in enumerate(("old-a", "old-b", "old-c")):  # a restart's catch-up
        s.touch(project, float(i), backlog=True)
    s.touch("live", 10.0)  # labels arriving now
    s.touch("old-b", 11.0)  # a backlog project that gets new votes becomes live
    s.touch("live", 12.0, backlog=True)  # a catch-up mark never demotes fresh work
    assert s.due(20.0) == ["old-b", "live", "old-a", "old-c"]  # live, oldest change first
    s.ran("live", 20.0)
    assert s.due(21.0) == ["old-b", "old-a", "old-c"]
