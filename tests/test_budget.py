import pytest

from autoshuikou.errors import UserError
from autoshuikou.study.budget import parse_budget


@pytest.mark.parametrize(
    ("text", "ms", "relative"),
    [
        ("75ms", 75.0, False),
        ("0.8ms", 0.8, False),
        ("1.5s", 1500.0, False),
        ("500us", 0.5, False),
        (" 50% ", 50.0, True),
    ],
)
def test_parses_absolute_and_relative(text: str, ms: float, relative: bool) -> None:
    budget = parse_budget(text)
    assert budget.value == pytest.approx(ms)
    assert budget.relative is relative


def test_relative_budget_resolves_against_baseline() -> None:
    assert parse_budget("50%").resolve_ms(0.4) == pytest.approx(0.2)
    assert parse_budget("75ms").resolve_ms(0.4) == pytest.approx(75.0)


@pytest.mark.parametrize("text", ["fast", "75", "ms", "-3ms", "0ms", "75 parsecs", "5000%"])
def test_rejects_unreadable_budgets(text: str) -> None:
    with pytest.raises(UserError) as err:
        parse_budget(text)
    assert text.strip() in err.value.message
    assert "75ms" in err.value.hint or "percentage" in err.value.hint
