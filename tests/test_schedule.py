import pytest

from prune_cli.pruning import ConstantSchedule, GradualSchedule, OneShotSchedule


def test_eq1_hand_computed_from_zero():
    s = GradualSchedule(0.9, 0.0, begin_step=0, end_step=1000, frequency=100)
    # s_t = 0.9 + (0 - 0.9) * (1 - t/1000)^3 at t = 0, 100, ..., 1000
    assert s.sparsity_at(0) == 0.0
    assert s.sparsity_at(100) == pytest.approx(0.9 - 0.9 * 0.9 ** 3, abs=1e-15)
    assert s.sparsity_at(500) == pytest.approx(0.9 - 0.9 * 0.125, abs=1e-15)
    assert s.sparsity_at(1000) == 0.9


def test_eq1_exact_binary_fractions_and_holds_between_updates():
    s = GradualSchedule(0.75, 0.5, begin_step=200, end_step=600, frequency=100)
    assert s.sparsity_at(0) == 0.0 and s.sparsity_at(199) == 0.0  # dense before t0
    assert s.sparsity_at(200) == 0.5  # s_i at t0
    assert s.sparsity_at(300) == 0.64453125  # 0.75 - 0.25 * 0.75^3
    assert s.sparsity_at(399) == 0.64453125  # held until the next update
    assert s.sparsity_at(400) == 0.71875  # 0.75 - 0.25 * 0.5^3
    assert s.sparsity_at(500) == 0.74609375  # 0.75 - 0.25 * 0.25^3
    assert s.sparsity_at(600) == 0.75 and s.sparsity_at(10**9) == 0.75
    assert s.update_steps() == [200, 300, 400, 500, 600]
    assert [t for t in range(800) if s.is_update_step(t)] == [200, 300, 400, 500, 600]


def test_monotone_non_decreasing():
    s = GradualSchedule(0.975, 0.1, begin_step=7, end_step=7 + 13 * 11, frequency=11)
    values = [s.sparsity_at(t) for t in range(300)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_one_shot_and_constant():
    one = OneShotSchedule(0.8, step=50)
    assert one.sparsity_at(49) == 0.0 and one.sparsity_at(50) == 0.8 and one.sparsity_at(51) == 0.8
    assert [t for t in range(100) if one.is_update_step(t)] == [50]
    const = ConstantSchedule(0.5)
    assert const.sparsity_at(0) == 0.5 and const.update_steps() == [0]
    assert GradualSchedule(0.6, 0.0, 10, 10, 5).sparsity_at(10) == 0.6  # begin == end: one update to s_f


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(final_sparsity=1.0, end_step=10, frequency=1), "final_sparsity=1.0 is outside [0, 1)"),
    (dict(final_sparsity=-0.1, end_step=10, frequency=1), "outside [0, 1)"),
    (dict(final_sparsity=0.5, initial_sparsity=0.6, end_step=10, frequency=1), "may only grow"),
    (dict(final_sparsity=0.5, begin_step=20, end_step=10, frequency=1), "begin_step=20 > end_step=10"),
    (dict(final_sparsity=0.5, end_step=10, frequency=0), "frequency=0 must be a positive"),
    (dict(final_sparsity=0.5, end_step=10, frequency=3), "not a multiple of frequency=3"),
    (dict(final_sparsity=0.5, frequency=3), "needs end_step and frequency"),
])
def test_bad_arguments_one_line_value_error(kwargs, fragment):
    with pytest.raises(ValueError) as e:
        GradualSchedule(**kwargs)
    assert fragment in str(e.value) and "\n" not in str(e.value)
