import pytest

from autoshuikou.plan import DistillSettings, Plan


def test_json_round_trip() -> None:
    plan = Plan(
        prune={"stem.0": 0.25},
        precision={"conv1": "int8", "head": "fp32"},
        distill=DistillSettings(
            epochs=2, lr=0.003, temperature=2.0, alpha=0.7, features={"conv2": 0.5}, warmup=0.1
        ),
        round_to=8,
        importance="taylor",
    )
    assert Plan.from_dict(plan.to_dict()) == plan
    assert plan.int8_layers == ["conv1"]


def test_unknown_precision_is_rejected() -> None:
    data = Plan(prune={}, precision={"conv1": "int8"}).to_dict()
    data["precision"]["conv1"] = "int3"
    with pytest.raises(ValueError, match="int3"):
        Plan.from_dict(data)


def test_plans_written_before_importance_and_warmup_read_with_their_defaults() -> None:
    data = Plan(prune={}, precision={}).to_dict()
    del data["importance"]
    assert Plan.from_dict(data).importance == "magnitude"
    del data["distill"]["warmup"]  # plans written before warmup trained without one
    assert Plan.from_dict(data).distill.warmup == 0.0
    with pytest.raises(ValueError, match="fisher"):
        Plan.from_dict(data | {"importance": "fisher"})
