from autoshuikou.study.pareto import dominates, pareto_indices


def test_dominance_needs_no_worse_everywhere_and_better_somewhere() -> None:
    assert dominates((0.9, 1.0, 10), (0.9, 2.0, 10))  # faster, else equal
    assert dominates((0.95, 1.0, 10), (0.9, 1.0, 10))  # more accurate
    assert not dominates((0.9, 1.0, 10), (0.9, 1.0, 10))  # equal
    assert not dominates((0.95, 2.0, 10), (0.9, 1.0, 10))  # a trade-off


def test_front_by_hand() -> None:
    points = [
        (0.99, 2.0, 100),  # 0: most accurate
        (0.95, 1.0, 100),  # 1: faster
        (0.94, 1.5, 100),  # 2: dominated by 1
        (0.90, 1.0, 50),  # 3: smallest
        (0.95, 1.0, 100),  # 4: duplicate of 1
    ]
    assert pareto_indices(points) == [0, 1, 3]


def test_energy_as_a_fourth_objective_keeps_the_frugal_model() -> None:
    # (metric, latency, size, energy): the second is worse everywhere but energy.
    points = [(0.9, 1.0, 100.0, 5.0), (0.9, 1.1, 120.0, 2.0), (0.8, 1.2, 130.0, 6.0)]
    assert pareto_indices(points) == [0, 1]
    assert pareto_indices([p[:3] for p in points]) == [0]
