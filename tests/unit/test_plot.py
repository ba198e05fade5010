"""The learning curve's time axis."""

from services.local.plot import PAUSE_S, training_hours


def test_pauses_between_runs_are_left_out_of_training_time():
    step = PAUSE_S / 2  # games this far apart belong to one run
    resumed = 2 * step + 10 * PAUSE_S  # a long pause, then the run is continued
    times = [0.0, step, 2 * step, resumed, resumed + step]
    hours = [h * 3600 / step for h in training_hours(times)]
    assert hours == [0.0, 1.0, 2.0, 2.0, 3.0]
