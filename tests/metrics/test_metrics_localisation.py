"""Localisation and complexity metrics: equal Quantus on fixed inputs (2D and 3D), and hand-computed toy cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medexplain.errors import MedexplainError
from medexplain.metrics import (
    EmptyMaskWarning,
    UndefinedScoreWarning,
    entropy,
    gini,
    mask_auroc,
    pointing_game,
    relevance_mass,
    relevance_rank,
    top_k_mass,
)

SHAPES = {"2d": (4, 16, 18), "3d": (3, 6, 8, 10)}


def _inputs(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(shape, generator=g, dtype=torch.float64)
    mask = (torch.rand(shape, generator=g) < 0.3).double()
    x = torch.rand(shape[0], 1, *shape[1:], generator=g).numpy()
    return maps, mask, x


def _quantus_scores(quantus, metric, maps, mask, x, **options) -> np.ndarray:
    scores = metric(disable_warnings=True, **options)(
        model=None,
        x_batch=x,
        y_batch=np.zeros(len(x), dtype=int),
        a_batch=maps[:, None].numpy(),
        s_batch=mask[:, None].numpy(),
        channel_first=True,
    )
    return np.asarray(scores, dtype=np.float64)


@pytest.mark.parametrize("dims", SHAPES)
@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("PointingGame", pointing_game),
        ("RelevanceMassAccuracy", relevance_mass),
        ("RelevanceRankAccuracy", relevance_rank),
        ("AUC", mask_auroc),
    ],
)
def test_localisation_equals_quantus(quantus, dims, name, ours) -> None:
    maps, mask, x = _inputs(SHAPES[dims])
    if ours is relevance_mass:  # ours is defined on the positive relevance: equal to Quantus's for maps >= 0
        maps = maps.clamp(min=0)
    expected = _quantus_scores(quantus, getattr(quantus, name), maps, mask, x, normalise=False, abs=False)
    np.testing.assert_allclose(ours(maps, mask).numpy(), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("dims", SHAPES)
def test_relevance_mass_of_signed_maps_is_the_positive_share_in_0_1(quantus, dims) -> None:
    maps, mask, x = _inputs(SHAPES[dims])
    assert bool((maps < 0).any())  # signed maps, as integrated gradients, LRP and BagNet evidence give
    positive = maps.clamp(min=0).flatten(1).double()
    expected = (positive * mask.flatten(1)).sum(1) / positive.sum(1)
    scores = relevance_mass(maps, mask)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-6, atol=1e-9)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    absolute = _quantus_scores(quantus, quantus.RelevanceMassAccuracy, maps, mask, x, normalise=False, abs=True)
    np.testing.assert_allclose(relevance_mass(maps, mask, absolute=True).numpy(), absolute, rtol=0, atol=1e-9)


@pytest.mark.parametrize("dims", SHAPES)
@pytest.mark.parametrize(("name", "ours"), [("Sparseness", gini), ("Complexity", entropy)])
def test_complexity_equals_quantus(quantus, dims, name, ours) -> None:
    maps, mask, x = _inputs(SHAPES[dims], seed=1)
    expected = _quantus_scores(quantus, getattr(quantus, name), maps, mask, x, normalise=False, abs=True)
    np.testing.assert_allclose(ours(maps).numpy(), expected, rtol=0, atol=1e-9)


def test_mask_auroc_with_ties_equals_scikit_learn() -> None:
    g = torch.Generator().manual_seed(3)
    maps = torch.randint(-2, 3, (3, 10, 12), generator=g).float()  # many ties
    maps[maps == 0] = torch.tensor([0.0, -0.0]).repeat(60)[: int((maps == 0).sum())]  # +0.0 and -0.0 tie
    mask = torch.rand(3, 10, 12, generator=g) < 0.4
    expected = [roc_auc_score(m.flatten().numpy(), a.flatten().numpy()) for a, m in zip(maps, mask, strict=True)]
    np.testing.assert_allclose(mask_auroc(maps, mask).numpy(), expected, atol=1e-6)  # float32: 2 radix passes
    np.testing.assert_allclose(mask_auroc(maps.double(), mask).numpy(), expected, atol=1e-12)  # float64: 4 passes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [356, 9000, 40000])  # torch's comparison sort, padded radix sort, radix sort
def test_integer_key_sort_is_numpys_stable_argsort(dtype, size) -> None:
    """Sorting the order keys equals numpy's stable argsort of the floats (signs, +-0, ties, inf, tiny values)."""
    from medexplain.metrics._inputs import order_keys, sort_integers, sort_rows

    g = torch.Generator().manual_seed(5)
    special = torch.tensor([0.0, -0.0, 1e-30, -1e-30, math.inf, -math.inf, 1.0, -1.0])
    row = torch.cat([torch.randn(size - 58, generator=g), special, torch.randn(50, generator=g)])
    row = torch.cat([row[:-50], row[:50]]).to(dtype).numpy()  # 50 exact duplicates
    expected = np.argsort(row + 0.0, kind="stable")  # +0.0 turns -0.0 into a tie with 0.0
    keys, order = sort_integers(order_keys(row))
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(np.diff(keys) >= 0, True)
    rows = np.stack([row, row[::-1].copy()])
    ordered, orders = sort_rows(torch.from_numpy(rows))
    np.testing.assert_array_equal(ordered.numpy(), np.sort(rows, axis=1))
    np.testing.assert_array_equal(orders[1].numpy(), np.argsort(rows[1] + 0.0, kind="stable"))


def test_short_rows_sorted_together_equal_numpys_stable_argsort() -> None:
    """float32 rows too short for a radix sort each are sorted in one sort of 64-bit keys (row, value): each
    row's values and stable order as numpy's, with signs, +-0, ties, inf and tiny values, in the first and the
    last row; 3 rows (a comparison sort) and 40 rows (a padded radix sort)."""
    from medexplain.metrics._inputs import sort_rows

    g = torch.Generator().manual_seed(6)
    special = torch.tensor([0.0, -0.0, 1e-30, -1e-30, math.inf, -math.inf, 1.0, -1.0, 1.0, 0.0])
    for count in (3, 40):
        rows = torch.randn(count, 300, generator=g)
        rows[:, :40] = torch.randint(-2, 3, (count, 40), generator=g) / 2  # ties within a row
        rows[0, -10:], rows[-1, 100:110] = special, special.flip(0)
        ordered, order = sort_rows(rows)
        assert order.dtype == torch.int64
        np.testing.assert_array_equal(ordered.numpy(), np.sort(rows.numpy() + 0.0, axis=1))
        np.testing.assert_array_equal(order.numpy(), np.argsort(rows.numpy() + 0.0, axis=1, kind="stable"))


def _brute_force_auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    pos, neg = scores[positive][:, None], scores[~positive][None, :]
    twice_u = 2 * int((pos > neg).sum()) + int((pos == neg).sum())
    return twice_u / 2 / (pos.numel() * neg.numel())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mann_whitney_is_exact(dtype) -> None:
    """AUROC equals brute-force pair counting exactly (2D and 3D, small and large lesions, many ties), with the
    label packed into the sort key (maps of one sign or a narrow range) and without (signed maps of a wide
    range), and on rows long enough for the radix sort."""
    g = torch.Generator().manual_seed(5)
    for shape, share in (((3, 9, 11), 0.1), ((2, 4, 5, 6), 0.7), ((1, 100, 100), 0.4)):
        tied = torch.randint(-3, 4, shape, generator=g).to(dtype) / 2  # many ties across the groups
        cases = {
            "ties": tied,
            "non-negative ties": tied.abs(),
            "signed, wide range": tied * 1e30 + torch.randn(shape, generator=g).to(dtype),
            "negative": -torch.rand(shape, generator=g).to(dtype),
        }
        mask = torch.rand(shape, generator=g) < share
        for name, maps in cases.items():
            ours = mask_auroc(maps, mask)
            for row, (m, a) in enumerate(zip(mask.flatten(1), maps.flatten(1), strict=True)):
                assert ours[row].item() == torch.tensor(_brute_force_auroc(a, m), dtype=dtype).item(), name


def test_auroc_and_rank_accuracy_on_long_tied_rows_equal_scikit_learn_and_a_sort() -> None:
    """Rows of 16384 and 40000 positions (padded and plain radix sort), tied values of both signs: AUROC equals
    scikit-learn, relevance rank the top K of a stable sort by decreasing value."""
    g = torch.Generator().manual_seed(11)
    for shape in ((2, 128, 128), (1, 40, 40, 25)):
        maps = torch.randint(-50, 50, shape, generator=g).float() / 8
        mask = torch.rand(shape, generator=g) < 0.3
        expected_auc = [roc_auc_score(m.flatten(), a.flatten()) for a, m in zip(maps, mask, strict=True)]
        np.testing.assert_allclose(mask_auroc(maps, mask).numpy(), expected_auc, rtol=0, atol=1e-7)
        expected_rank = []
        for a, m in zip(maps.flatten(1), mask.flatten(1), strict=True):
            top = np.argsort(-a.numpy(), kind="stable")[: int(m.sum())]  # ties in index order
            expected_rank.append(m.numpy()[top].mean())
        np.testing.assert_allclose(relevance_rank(maps, mask).numpy(), expected_rank, rtol=0, atol=1e-7)


def test_gini_on_tied_and_signed_maps_equals_the_sorted_sum() -> None:
    g = torch.Generator().manual_seed(2)
    for maps in (torch.randint(-4, 5, (2, 130, 130), generator=g).float(), torch.randn(2, 6, 7, 8, generator=g)):
        a = np.sort(np.abs(maps.flatten(1).double().numpy()) + 1e-7, axis=1)
        n = a.shape[1]
        expected = (a * (2 * np.arange(1, n + 1) - n - 1)).sum(1) / (n * a.sum(1))
        np.testing.assert_allclose(gini(maps).numpy(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(2, 24, 24), (2, 12, 12, 12)])
def test_perfect_random_and_inverted_maps(shape) -> None:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[(slice(None), *tuple(slice(2, n // 2) for n in shape[1:]))] = True
    perfect = mask.float() + 0.01 * torch.rand(shape, generator=g)
    inverted = -perfect
    random = torch.rand(shape, generator=g)
    share = mask.flatten(1).float().mean(1)
    for metric in (pointing_game, relevance_rank, mask_auroc):
        assert torch.equal(metric(perfect, mask), torch.ones(2))
        assert torch.equal(metric(inverted, mask), torch.zeros(2))
    assert torch.equal(relevance_mass(mask.float(), mask), torch.ones(2, dtype=torch.float32))
    assert torch.equal(relevance_mass(1 - mask.float(), mask), torch.zeros(2))
    # chance level: rank accuracy ~ mask share, AUROC ~ 1/2, relevance mass ~ mask share
    assert torch.allclose(relevance_rank(random, mask), share, atol=0.08)
    assert torch.allclose(mask_auroc(random, mask), torch.full((2,), 0.5), atol=0.06)
    assert torch.allclose(relevance_mass(random, mask), share, atol=0.04)


def test_relevance_rank_breaks_ties_in_index_order() -> None:
    maps = torch.tensor([[[3.0, 1.0, 1.0], [1.0, 1.0, 0.0]]])
    mask = torch.tensor([[[0, 1, 0], [0, 1, 1]]])  # K = 3: the 3.0, then the first two tied 1.0s (indices 1, 2)
    assert relevance_rank(maps, mask).item() == pytest.approx(1 / 3)
    assert relevance_rank(torch.zeros(1, 2, 3), mask).item() == pytest.approx(1 / 3)  # indices 0, 1, 2


def test_pointing_game_tolerance_is_euclidean() -> None:
    mask = torch.zeros(1, 9, 9)
    mask[0, 0, 0] = 1
    maps = torch.zeros(1, 9, 9)
    maps[0, 1, 1] = 1.0  # sqrt(2) away from the mask
    assert pointing_game(maps, mask, tolerance=1).item() == 0
    assert pointing_game(maps, mask, tolerance=1.5).item() == 1
    volume = torch.zeros(1, 5, 5, 5)
    volume[0, 0, 0, 0] = 1
    peak = torch.zeros(1, 5, 5, 5)
    peak[0, 0, 0, 2] = 1.0
    assert pointing_game(peak, volume, tolerance=1).item() == 0
    assert pointing_game(peak, volume, tolerance=2).item() == 1


def test_complexity_toy_cases() -> None:
    n = 400
    uniform = torch.ones(1, 20, 20)
    one_hot = torch.zeros(1, 20, 20)
    one_hot[0, 3, 4] = 5.0
    assert gini(uniform).item() == pytest.approx(0.0, abs=1e-9)
    assert gini(one_hot).item() == pytest.approx(1 - 1 / n, abs=1e-4)  # up to the 1e-7 offset
    assert entropy(uniform).item() == pytest.approx(math.log(n), abs=1e-5)
    assert entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    assert entropy(torch.zeros(1, 20, 20)).item() == pytest.approx(math.log(n), abs=1e-5)
    assert top_k_mass(uniform, fraction=0.1).item() == pytest.approx(0.1)
    assert top_k_mass(one_hot, fraction=0.1).item() == pytest.approx(1.0)
    assert gini(-one_hot).item() == gini(one_hot).item()  # absolute values


def test_batched_equals_per_sample_and_channel_axis_is_accepted() -> None:
    maps, mask, _ = _inputs((3, 6, 8, 10), seed=5)
    for metric in (pointing_game, relevance_mass, relevance_rank, mask_auroc):
        batched = metric(maps, mask)
        single = torch.cat([metric(maps[i : i + 1], mask[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(batched, single)
        torch.testing.assert_close(metric(maps[:, None], mask), batched)
        torch.testing.assert_close(metric(maps, mask[:, None]), batched)


def test_bad_input_is_a_clear_error() -> None:
    maps, mask, _ = _inputs((2, 8, 8))
    with pytest.raises(MedexplainError, match=r"maps shape .* and mask shape .* differ"):
        relevance_rank(maps, mask[:, :7])
    with pytest.raises(MedexplainError, match="does not match spatial shape"):
        relevance_rank(maps[:, None].expand(2, 3, 8, 8), mask)
    bad = maps.clone()
    bad[1, 2, 2] = float("nan")
    with pytest.raises(MedexplainError, match="maps contains NaN"):
        pointing_game(bad, mask)
    for value in (float("inf"), -float("inf"), float("nan")):  # one bad value anywhere, any dtype, 2D or 3D
        for dtype in (torch.float32, torch.float64):
            volume = torch.rand(2, 3, 4, 5, dtype=dtype)
            volume[1, 2, 3, 4] = value
            with pytest.raises(MedexplainError, match="maps contains NaN or infinite"):
                gini(volume)
            with pytest.raises(MedexplainError, match="maps contains NaN or infinite"):
                mask_auroc(volume[:, 2], torch.rand(2, 4, 5) > 0.5)
    with pytest.raises(MedexplainError, match="mask must be binary"):
        pointing_game(maps, mask * 0.5)


def test_empty_mask_scores_nan_with_a_warning() -> None:
    maps, mask, _ = _inputs((3, 8, 8))
    mask[1] = 0
    for metric in (pointing_game, relevance_mass, relevance_rank, mask_auroc):
        with pytest.warns(EmptyMaskWarning, match=r"samples \[1\]"):
            scores = metric(maps, mask)
        assert torch.isnan(scores[1]) and not torch.isnan(scores[[0, 2]]).any()


def test_tied_maxima_score_their_share_in_the_mask_and_massless_maps_nan() -> None:
    """A constant map points everywhere at once: it scores the mask's share of the image (chance), not a hit."""
    mask = torch.zeros(3, 6, 6, dtype=torch.bool)
    mask[:, 1:3, 1:3] = True
    maps = torch.rand(3, 6, 6)
    maps[0] = 0.0  # all zero: constant and massless
    maps[1] = 0.5  # constant but with mass: relevance mass is the mask's share
    maps[2] = 0.0
    maps[2, 1, 1] = maps[2, 5, 5] = 1.0  # two maxima, one of them in the mask
    torch.testing.assert_close(pointing_game(maps, mask), torch.tensor([4 / 36, 4 / 36, 0.5]))
    with pytest.warns(UndefinedScoreWarning, match=r"relevance-mass: map with zero total relevance for samples \[0\]"):
        mass = relevance_mass(maps, mask)
    assert torch.isnan(mass[0]) and mass[1].item() == pytest.approx(4 / 36)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_a_random_map_scores_the_pointing_game_at_chance(dtype) -> None:
    """Seeded random maps stored at float16 tie at their maximum often; any tied pixel in the mask used to count
    as a hit (a random map scored 0.675 against a chance of 0.275 on real masks)."""
    from medexplain.metrics import bootstrap_interval

    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(300, 64, 64, dtype=torch.bool)
    for i in range(300):  # lesions of varied size, about a quarter of the image on average
        side = int(torch.randint(16, 48, (), generator=g))
        top, left = (int(v) for v in torch.randint(0, 64 - side, (2,), generator=g))
        mask[i, top : top + side, left : left + side] = True
    maps = torch.rand(300, 64, 64, generator=g).to(dtype).float()
    ties = (maps.flatten(1) == maps.flatten(1).amax(1, keepdim=True)).sum(1)
    assert dtype == torch.float32 or float((ties > 1).float().mean()) > 0.5  # float16 maps really do tie
    chance = float(mask.flatten(1).float().mean(1).mean())
    mean, low, high = bootstrap_interval(pointing_game(maps, mask).tolist(), seed=0)
    assert low <= chance <= high, (mean, low, high, chance)
