import pytest

from alignflow.sdk.plans import AllSDE, SDEWindow, StepPlan


def test_flow_grpo_plan_trains_all_but_the_last_step():
    p = AllSDE()(10, 0, 0)
    assert all(p.sde) and p.trained_steps == list(range(9))
    assert AllSDE(0.5)(10, 0, 0).trained_steps == [0, 1, 2, 3, 4]


def test_window_plan_is_deterministic_per_iteration_and_covers_its_range():
    plan = SDEWindow(window=2)
    starts = {plan(10, it, seed=3).shared_prefix for it in range(200)}
    assert starts == {0, 1, 2, 3}  # N // 2 - w = 3
    assert plan(10, 17, 3) == plan(10, 17, 3)
    p = plan(10, 5, 3)
    k = p.shared_prefix
    assert p.trained_steps == [k, k + 1] and sum(p.sde) == 2


def test_invalid_plans_are_rejected():
    with pytest.raises(ValueError, match="trained but deterministic"):
        StepPlan((False, True), (True, True))
    with pytest.raises(ValueError, match="shared_prefix"):
        StepPlan((True, True), (True, False), shared_prefix=1)
    with pytest.raises(ValueError, match="does not fit"):
        SDEWindow(window=5)(4, 0, 0)


def test_ode_first_keeps_the_first_steps_deterministic_and_untrained():
    from alignflow.sdk.plans import AllSDE, SDEWindow

    plan = AllSDE(0.99, ode_first=2)(12, 0, 0)
    assert plan.sde == (False, False) + (True,) * 10
    assert plan.trained_steps == list(range(2, 11))
    for it in range(20):
        window = SDEWindow(2, ode_first=3)(12, it, 0)
        assert window.trained_steps[0] >= 3 and window.shared_prefix >= 3
    assert AllSDE(0.99)(12, 0, 0) == AllSDE(0.99, ode_first=0)(12, 0, 0)
    with pytest.raises(ValueError, match="ode_first"):
        AllSDE(0.99, ode_first=12)(12, 0, 0)


def test_mixgrpo_window_slides_with_the_iteration_and_rolls_back():
    from alignflow.sdk.plans import SlidingWindow

    plan = SlidingWindow(window=4, every=25, stride=1)  # N = 10: starts 0..5
    starts = [plan(10, it, 0).shared_prefix for it in range(0, 200, 25)]
    assert starts == [0, 1, 2, 3, 4, 5, 0, 1]
    p = plan(10, 60, 0)
    assert p.trained_steps == [2, 3, 4, 5] and sum(p.sde) == 4 and p.shared_prefix == 2
    assert SlidingWindow(4, every=1, roll_back=False)(10, 99, 0).trained_steps == [5, 6, 7, 8]
    assert SlidingWindow(4, mode="frozen", start=3)(10, 99, 0).trained_steps == [3, 4, 5, 6]
    random = {SlidingWindow(2, mode="random")(10, it, 1).shared_prefix for it in range(100)}
    assert random == set(range(8))
    with pytest.raises(ValueError, match="does not fit"):
        SlidingWindow(window=4, start=7)(10, 0, 0)
