"""The noise rule: a difference inside 2 standard errors is inconclusive, outside it decides."""
import math

import pytest

from sara.stats import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, compare, mean_sd, verdict_better)


def test_mean_sd_matches_the_textbook():
    m, sd, n = mean_sd([1.0, 2.0, 3.0, float("nan")])
    assert (m, n) == (2.0, 3)
    assert sd == pytest.approx(1.0)
    assert mean_sd([5.0])[1] is None
    with pytest.raises(ValueError, match="no finite values"):
        mean_sd([float("nan")])


@pytest.mark.parametrize("lower_is_better", [True, False])
def test_inside_two_se_is_inconclusive(lower_is_better):
    a, b = [10.0, 11.0, 12.0], [10.5, 11.5, 12.5]      # SE = sqrt(2/3) ≈ 0.82, diff 0.5
    c = compare(a, b, lower_is_better)
    assert c.se == pytest.approx(math.sqrt(2 / 3))
    assert not c.decided
    assert verdict_better(c, "a") == INCONCLUSIVE
    assert verdict_better(c, "b") == INCONCLUSIVE


@pytest.mark.parametrize("lower_is_better, winner", [(True, "a"), (False, "b")])
def test_outside_two_se_decides_in_both_directions(lower_is_better, winner):
    a, b = [10.0, 11.0, 12.0], [13.0, 14.0, 15.0]      # diff −3 > 2 × 0.82
    c = compare(a, b, lower_is_better)
    assert c.better == winner
    loser = "b" if winner == "a" else "a"
    assert verdict_better(c, winner) == REPRODUCED
    assert verdict_better(c, loser) == NOT_REPRODUCED
    # swapping the arguments swaps the answer
    assert compare(b, a, lower_is_better).better == loser


def test_the_boundary_is_strict():
    # diff exactly 2 SE is not enough
    a, b = [0.0, 2.0], [0.0, 2.0]
    se = compare(a, b, True).se
    shifted = [v + 2 * se for v in b]
    assert not compare(a, shifted, True).decided
    assert compare(a, [v + 2.01 * se for v in b], True).decided


def test_one_seed_needs_a_borrowed_spread():
    assert compare([1.0], [5.0], True).se is None
    assert verdict_better(compare([1.0], [5.0], True)) == INCONCLUSIVE
    c = compare([1.0], [5.0], True, borrowed_sd=1.0)      # SE sqrt(2) ≈ 1.41, diff 4
    assert c.better == "a"
    assert not compare([1.0], [3.0], True, borrowed_sd=1.0).decided
    with pytest.raises(ValueError, match="borrowed_sd"):
        compare([1.0], [2.0], True, borrowed_sd=-1.0)
