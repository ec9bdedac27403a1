"""Feature profiles: the bins both training and serving count into, and the PSI between them."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from pydantic import ValidationError

from modelstore import Feature
from modelstore.metadata import FeatureProfile
from modelstore.profile import MAX_BINS, Binner, NumberBins, build_profile, psi


def test_numbers_get_decile_bins_that_hold_a_tenth_each() -> None:
    values = [float(v) for v in range(1, 1001)] + [math.nan] * 10
    profile = build_profile(Feature(name="x", type="number", nullable=True), values)
    assert profile.edges is not None
    assert len(profile.edges) == 9
    assert profile.shares == pytest.approx([0.1] * 10, abs=0.002)
    assert profile.missing == pytest.approx(10 / 1010, abs=1e-6)


def test_bins_are_closed_on_the_right_and_open_ended() -> None:
    profile = FeatureProfile(name="x", missing=0, edges=[1.0, 2.0], shares=[0.3, 0.3, 0.4])
    counts, missing = Binner(profile).count([-1e9, 1.0, 1.5, 2.0, 2.0001, 1e9, None, math.nan])
    assert counts.tolist() == [2, 2, 2]
    assert missing == 2


def test_many_features_binned_at_once_count_as_one_at_a_time() -> None:
    """The drift monitor bins every number feature in one NumberBins call: features with
    different numbers of edges, values on the edges and beyond every edge, gaps;
    each held to a binary search per value."""
    rng = np.random.default_rng(7)
    edges = [
        [0.0],
        [-1.0, 0.0, 1.0],
        [-1.5, -0.7, -0.3, -0.1, 0.0, 0.2, 0.4, 0.9, 1.6],
        [5.0, 6.0],
    ]
    numbers = rng.normal(size=(len(edges), 500)).round(1)
    numbers[rng.random(numbers.shape) < 0.05] = math.nan
    numbers[:, :4] = [math.inf, -math.inf, -1e300, 1e300]
    counts, missing = NumberBins(edges).count(numbers)
    assert counts.shape == (4, 10)
    assert counts.sum() + missing.sum() == numbers.size
    empty, no_gaps = NumberBins(edges).count(np.empty((4, 0)))
    assert empty.tolist() == [[0] * 10] * 4
    assert no_gaps.tolist() == [0] * 4
    for row, feature_edges in enumerate(edges):
        shares = [0.0] * (len(feature_edges) + 1)
        profile = FeatureProfile(name="x", missing=0, edges=feature_edges, shares=shares)
        alone, gaps = Binner(profile).count(numbers[row].tolist())
        expected = [np.searchsorted(feature_edges, v) for v in numbers[row] if not math.isnan(v)]
        assert alone.tolist() == np.bincount(expected, minlength=len(shares)).tolist()
        assert counts[row].tolist() == [*alone.tolist(), *[0] * (10 - len(shares))]
        assert missing[row] == gaps == int(np.isnan(numbers[row]).sum())


def test_repeated_integers_collapse_their_edges() -> None:
    values = [2007] * 50 + [2008] * 30 + [2009] * 20
    profile = build_profile(Feature(name="year", type="integer", nullable=False), values)
    assert profile.edges == [2007.0, 2008.0, 2009.0]
    assert profile.shares == [0.5, 0.3, 0.2, 0.0]


def test_strings_keep_the_most_frequent_categories_and_one_other_bin() -> None:
    rng = random.Random(0)
    names = [f"c{i:02d}" for i in range(30)]
    values: list[object] = [rng.choice(names[:5]) for _ in range(900)] + names * 3 + [None] * 10
    feature = Feature(name="s", type="string", nullable=True, categories=sorted(names))
    profile = build_profile(feature, values)
    assert profile.categories is not None
    assert len(profile.shares) == MAX_BINS
    assert set(names[:5]) <= set(profile.categories)
    assert profile.shares[-1] > 0  # the rarer categories
    counts, missing = Binner(profile).count(["never seen", names[0], None])
    assert counts[-1] == 1
    assert missing == 1


def test_booleans_are_false_and_true() -> None:
    profile = build_profile(
        Feature(name="b", type="boolean", nullable=False), [True, False, True, True]
    )
    assert profile.categories == ["false", "true"]
    assert profile.shares == [0.25, 0.75, 0.0]


def test_psi_is_zero_for_the_same_spread_and_grows_with_a_shift() -> None:
    reference = [0.25, 0.25, 0.25, 0.25]
    assert psi(reference, np.array([250, 250, 250, 250])) == pytest.approx(0)
    small = psi(reference, np.array([270, 240, 250, 240]))
    large = psi(reference, np.array([0, 100, 400, 500]))
    assert 0 < small < 0.1 < 0.2 < large
    assert math.isnan(psi(reference, np.array([0, 0, 0, 0])))


def test_a_profile_must_match_its_bins() -> None:
    with pytest.raises(ValidationError, match="3 bins need 3 shares"):
        FeatureProfile(name="x", missing=0, edges=[1.0, 2.0], shares=[1.0])
    with pytest.raises(ValidationError, match="edges must increase"):
        FeatureProfile(name="x", missing=0, edges=[2.0, 1.0], shares=[0.5, 0.5, 0.0])
