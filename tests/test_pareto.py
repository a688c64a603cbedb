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
