import math
from pathlib import Path

import optuna
import pytest

from autoshuikou.compress.prune import channel_groups
from autoshuikou.errors import UserError
from autoshuikou.space.bind import bind_space
from autoshuikou.space.schema import Refine, load_space, parse_space
from autoshuikou.study.baseline import pick_round_to
from autoshuikou.study.prepare import bind_task_space
from autoshuikou.study.refine import REFINE_MAX_EPOCHS, REFINE_STEPS, auto_epochs
from autoshuikou.tasks import Task

GOOD = """
prune:
  round_to: 4
  default: {min: 0.0, max: 0.5, step: 0.25}
  rules:
    - {match: "^stem", min: 0.0, max: 0.0}
precision:
  default: [int8, fp32]
  rules:
    - {match: "^head$", choices: [fp32]}
distill:
  epochs: {min: 0, max: 2}
  lr: {min: 0.001, max: 0.01, log: true}
  temperature: {min: 1.0, max: 4.0}
  alpha: {min: 0.0, max: 1.0}
  features:
    - match: "^conv2$"
      weight: {min: 0.0, max: 1.0}
"""


def test_shipped_default_space_loads() -> None:
    space = load_space()
    assert space.round_to is None  # "auto": measured with the baseline
    assert "int8" in space.precision_default and "fp32" in space.precision_default
    # The top-level search_spaces/default.yaml is the same file users read.
    top = Path(__file__).parents[1] / "search_spaces" / "default.yaml"
    assert top.read_text() == space.text


def test_rules_resolve_first_match_and_suggest_a_plan(tiny_task: Task) -> None:
    bound = bind_task_space_from_text(tiny_task, GOOD)
    assert bound.prune["stem.0"].fixed  # the stem's group is held at 0 by the rule
    assert bound.precision["head"] == ("fp32",)
    assert bound.precision["conv1"] == ("int8", "fp32")
    assert set(bound.features) == {"conv2"}
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    plan = bound.suggest(study.ask())
    assert plan.prune["stem.0"] == 0.0
    assert plan.precision["head"] == "fp32"
    assert plan.round_to == 4
    assert 0 <= plan.distill.epochs <= 2
    assert "conv2" in plan.distill.features
    assert plan.distill.warmup == 0.0  # none unless the space asks
    warm = bind_task_space_from_text(
        tiny_task, GOOD.replace("  features:", "  warmup: 0.2\n  features:")
    )
    assert warm.suggest(study.ask()).distill.warmup == 0.2
    assert warm.uniform_plan(0.25, int8=True).distill.warmup == 0.2
    assert load_space(None, "encoder.yaml").warmup > 0 and load_space().warmup == 0


def test_fastest_plans_prune_most_in_int8_and_in_fp32(tiny_task: Task) -> None:
    bound = bind_task_space_from_text(tiny_task, GOOD)
    int8, fp32 = bound.fastest_plan(), bound.fastest_plan(int8=False)
    assert int8.prune == fp32.prune == {g: r.high for g, r in bound.prune.items()}
    assert int8.precision["conv1"] == "int8" and fp32.precision["conv1"] == "fp32"
    assert int8.precision["head"] == fp32.precision["head"] == "fp32"  # the rule holds


def test_uniform_plans_train_with_the_spaces_start_settings(tiny_task: Task) -> None:
    classic = bind_task_space_from_text(tiny_task, GOOD).uniform_plan(0.25, int8=True)
    # Without start: classic KD (lr 1e-3, T 4, alpha 0.9), clipped to the ranges.
    assert (classic.distill.lr, classic.distill.temperature, classic.distill.alpha) == (
        pytest.approx(1e-3),
        4.0,
        0.9,
    )
    started = GOOD.replace("log: true}", "log: true, start: 0.003}").replace(
        "alpha: {min: 0.0, max: 1.0}", "alpha: {min: 0.0, max: 1.0, start: 0.3}"
    )
    plan = bind_task_space_from_text(tiny_task, started).uniform_plan(0.25, int8=True)
    assert (plan.distill.lr, plan.distill.alpha) == (pytest.approx(0.003), 0.3)
    assert plan.distill.temperature == 4.0 and plan.distill.epochs == 2  # the longest
    assert plan.prune == classic.prune and plan.precision == classic.precision
    assert classic.importance == "magnitude"
    taylor = GOOD.replace("round_to: 4", "round_to: 4\n  importance: taylor")
    bound = bind_task_space_from_text(tiny_task, taylor)
    assert bound.uniform_plan(0.5, int8=False).importance == "taylor"
    assert bound.fastest_plan().importance == bound.reference_plan("int8").importance == "taylor"


def bind_task_space_from_text(task: Task, text: str):  # type: ignore[no-untyped-def]
    from autoshuikou.study.prepare import layer_names

    space = parse_space(text, "test.yaml")
    modules = [n for n, _ in task.model.named_modules()]
    return bind_space(
        space, channel_groups(task.model, task.example_input), layer_names(task), modules
    )


def test_refine_defaults_to_two_models_with_epochs_scaled_to_the_data() -> None:
    assert parse_space(GOOD, "test.yaml").refine == Refine(models=2, epochs=None)
    one = parse_space(GOOD + "refine: {models: 1}\n", "test.yaml").refine
    assert one == Refine(models=1, epochs=None)
    assert parse_space(GOOD + "refine: {models: 1, epochs: auto}\n", "t.yaml").refine == one
    assert parse_space(GOOD + "refine: {models: 1, epochs: 9}\n", "t.yaml").refine.epochs == 9
    assert parse_space(GOOD + "refine: {models: 0}\n", "t.yaml").refine.models == 0
    assert load_space(None, "detection.yaml").refine == Refine(models=2, epochs=60)
    assert load_space().refine == Refine(models=2, epochs=None)  # every family refines


def test_auto_refine_epochs_scale_with_the_search_and_the_data() -> None:
    # Three times the longest search fine-tuning: the digits (23 batches, 4 epochs) 12.
    assert auto_epochs(23, 4) == 12 and auto_epochs(5000, 4) == 12 and auto_epochs(5000, 1) == 3
    # A small data set: at least REFINE_STEPS steps (8 batches: 32 epochs), at most 60.
    assert auto_epochs(8, 4) == math.ceil(REFINE_STEPS / 8) == 32
    assert auto_epochs(2, 4) == REFINE_MAX_EPOCHS


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (("round_to: 4", "round_to: 4\n  ratio: 3"), "test.yaml: prune.ratio"),  # unknown key
        (("max: 0.5, step", "max: 1.5, step"), "test.yaml: prune.default"),  # ratio >= 1
        (("{min: 0, max: 2}", "{min: 3, max: 2}"), "test.yaml: distill.epochs"),  # reversed
        (("choices: [fp32]", "choices: [int4]"), "test.yaml: precision.rules[0].choices[0]"),
        (
            ("alpha: {min: 0.0, max: 1.0}", "alpha: {min: 0.0, max: 1.0, log: yes please}"),
            "test.yaml: distill.alpha.log",
        ),
        (('match: "^conv2$"', 'match: "(["'), "test.yaml: distill.features[0].match"),
        (
            ("alpha: {min: 0.0, max: 1.0}", "alpha: {min: 0.0, max: 1.0, start: 1.5}"),
            "test.yaml: distill.alpha.start",
        ),
        (("max: 0.5, step", "max: 0.5, start: 0.25, step"), "test.yaml: prune.default"),
        (("round_to: 4", "round_to: 4\n  importance: fisher"), "test.yaml: prune.importance"),
        (("  features:", "  warmup: 1.0\n  features:"), "test.yaml: distill.warmup"),
        (("  features:", "  warmup: some\n  features:"), "test.yaml: distill.warmup"),
        (
            (
                "weight: {min: 0.0, max: 1.0}\n",
                "weight: {min: 0.0, max: 1.0}\nrefine: {models: -1}\n",
            ),
            "test.yaml: refine",
        ),
        (
            (
                "weight: {min: 0.0, max: 1.0}\n",
                "weight: {min: 0.0, max: 1.0}\nrefine: {epochs: 9}\n",
            ),
            "test.yaml: refine.models",
        ),
    ],
)
def test_bad_space_names_file_and_key(edit: tuple[str, str], where: str) -> None:
    assert edit[0] in GOOD
    with pytest.raises(UserError) as err:
        parse_space(GOOD.replace(edit[0], edit[1]), "test.yaml")
    assert err.value.message.startswith(where), err.value.message
    assert err.value.hint


def test_malformed_yaml_is_a_user_error() -> None:
    with pytest.raises(UserError, match="not valid YAML"):
        parse_space("prune: [unclosed", "broken.yaml")


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (('match: "^stem"', 'match: "^nothing"'), "prune.rules[0].match"),
        (('match: "^head$"', 'match: "^nope$"'), "precision.rules[0].match"),
        (('match: "^conv2$"', 'match: "^missing$"'), "distill.features[0].match"),
    ],
)
def test_pattern_matching_nothing_is_rejected(
    tiny_task: Task, edit: tuple[str, str], where: str
) -> None:
    with pytest.raises(UserError) as err:
        bind_task_space_from_text(tiny_task, GOOD.replace(*edit))
    assert f"test.yaml: {where}" in err.value.message
    assert "autoshuikou layers" in err.value.hint


def test_missing_space_file(tiny_task: Task, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        bind_task_space(tiny_task, tmp_path / "nope.yaml")


def test_round_to_picks_the_finest_rounding_within_noise_of_the_best() -> None:
    # Latency ratio = 0.1 + 0.8 * MAC ratio on the line; round_to 1 runs 0.15 above it,
    # 16 runs 0.01 below it (a tie with 4 and 8, which sit on it).
    builds = []
    for round_to, excess in ((1, 0.15), (4, 0.0), (8, 0.0), (16, -0.01)):
        for macs in (0.3, 0.5, 0.7):
            builds.append((round_to, macs, 0.1 + 0.8 * macs + excess))
    chosen, rows = pick_round_to(builds)
    assert chosen == 4
    by_rounding = {r["round_to"]: r for r in rows}
    assert by_rounding[1]["excess_latency"] > 0.1 > by_rounding[16]["excess_latency"]
    # A clear winner beyond the tie margin is taken even if coarse.
    clear = [(r, m, lat - (0.05 if r == 16 else 0)) for r, m, lat in builds]
    assert pick_round_to(clear)[0] == 16


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "search_spaces").glob("*.yaml")), ids=str
)
def test_every_shipped_space_loads(path: Path, tiny_task: Task) -> None:
    from autoshuikou.study.prepare import bind_task_space

    assert bind_task_space(tiny_task, path).prune


def test_covering_plans_reach_every_latency_level(tiny_task: Task) -> None:
    """Profiling plans must include the fast end a tight budget searches, and stay legal."""
    bound = bind_task_space_from_text(tiny_task, GOOD)
    plans = bound.covering_plans(40, seed=0)
    free = [g for g, r in bound.prune.items() if not r.fixed]
    mean_prune = [sum(p.prune[g] for g in free) / len(free) for p in plans]
    assert min(mean_prune) < 0.1 and max(mean_prune) > 0.4  # the range is 0..0.5
    choosable = [layer for layer, c in bound.precision.items() if len(c) > 1]
    int8_share = [sum(p.precision[x] == "int8" for x in choosable) / len(choosable) for p in plans]
    assert min(int8_share) < 0.2 and max(int8_share) > 0.8
    for plan in plans:  # on the space's grid, rules respected
        assert all(plan.prune[g] in (0.0, 0.25, 0.5) for g in free)
        assert plan.prune["stem.0"] == 0.0 and plan.precision["head"] == "fp32"
    assert plans == bound.covering_plans(40, seed=0)  # repeatable
