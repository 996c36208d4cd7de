
import pytest
import torch
import torch.nn.functional as F

from cifar_hw2.metrics import (ECE_GRID, Reliability, classification_metrics, expected_calibration_error, fit_temperature,
                               fit_temperature_ece,
                               nll, reliability, topk_accuracy)


def two_class(p_pred: list[float], correct: list[bool]):
    """Logits whose max-softmax confidence is p_pred (class 0), targets right or wrong as given."""
    p = torch.tensor(p_pred, dtype=torch.float64)
    logits = torch.stack([p.log(), (1 - p).log()], dim=1)
    targets = torch.tensor([0 if c else 1 for c in correct])
    return logits, targets


def test_ece_on_a_small_known_case():
    logits, targets = two_class([0.9, 0.9, 0.65, 0.65], [True, False, True, True])
    # bin (0.867, 0.933]: acc 0.5, conf 0.9; bin (0.6, 0.667]: acc 1, conf 0.65
    assert expected_calibration_error(logits, targets) == pytest.approx(0.5 * 0.4 + 0.5 * 0.35)
    rel = reliability(logits, targets)
    assert rel.counts.sum() == 4 and rel.counts[13] == 2 and rel.counts[9] == 2
    assert rel.accuracy[13] == pytest.approx(0.5) and rel.confidence[9] == pytest.approx(0.65)


def test_ece_bin_membership_is_lower_exclusive_upper_inclusive():
    logits = torch.zeros(1, 2)   # confidence exactly 0.5, the edge between 2 bins
    rel = reliability(logits, torch.tensor([0]), n_bins=2)
    assert rel.counts.tolist() == [1, 0]
    rel = reliability(torch.tensor([[50.0, -50.0]]), torch.tensor([0]), n_bins=2)  # confidence 1.0
    assert rel.counts.tolist() == [0, 1]


def test_perfectly_calibrated_predictions_have_ece_near_zero():
    torch.manual_seed(0)
    z = torch.randn(50_000, 10, dtype=torch.float64) * 2
    y = torch.multinomial(z.softmax(1), 1).squeeze(1)
    assert expected_calibration_error(z, y) < 0.01


def test_topk_and_nll():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0]])
    targets = torch.tensor([1, 1])
    assert topk_accuracy(logits, targets, 1) == 0.5
    assert topk_accuracy(logits, targets, 2) == 1.0
    assert topk_accuracy(logits, targets, 5) == 1.0  # k is capped at the class count
    assert nll(logits, targets) == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    m = classification_metrics(logits, targets)
    assert set(m) == {"top1", "top5", "nll", "ece"} and all(0 <= m[k] <= 1 for k in ("top1", "top5", "ece"))


def test_fit_temperature_recovers_a_known_temperature():
    torch.manual_seed(1)
    z = torch.randn(20_000, 10, dtype=torch.float64) * 3
    y = torch.multinomial(z.softmax(1), 1).squeeze(1)      # calibrated at T = 1
    t = fit_temperature(2.5 * z, y)                        # over-confident by 2.5
    assert t == pytest.approx(2.5, rel=0.03)
    # it is the minimiser: a little either side is worse
    best = nll(2.5 * z / t, y)
    assert best < nll(2.5 * z / (t * 1.01), y) and best < nll(2.5 * z / (t * 0.99), y)


def test_temperature_scaling_lowers_ece_of_overconfident_logits():
    torch.manual_seed(2)
    z = torch.randn(20_000, 10, dtype=torch.float64) * 2
    y = torch.multinomial(z.softmax(1), 1).squeeze(1)
    t = fit_temperature(3 * z, y)
    assert expected_calibration_error(3 * z / t, y) < expected_calibration_error(3 * z, y) / 3


def test_metrics_bad_input():
    with pytest.raises(ValueError, match="expected logits"):
        topk_accuracy(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="no samples"):
        expected_calibration_error(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="n_bins"):
        reliability(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), n_bins=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("metric", [topk_accuracy, nll, expected_calibration_error, fit_temperature, fit_temperature_ece])
def test_non_finite_logits_are_refused_by_every_metric(metric, bad):
    # A NaN used to give the NLL fit its upper bound (T = 20) and the ECE grid no T at all (None).
    logits = torch.randn(6, 3)
    logits[2, 1] = bad
    with pytest.raises(ValueError, match=r"^1 of the 18 logits are NaN or infinite"):
        metric(logits, torch.zeros(6, dtype=torch.long))


def test_calibrated_ece_is_the_ece_that_sampling_noise_alone_gives():
    # One sample at confidence 0.5: right or wrong, |acc − conf| = 0.5.
    one = Reliability(torch.linspace(0, 1, 16, dtype=torch.float64), torch.tensor([0] * 7 + [1] + [0] * 7),
                      torch.tensor([0.0] * 7 + [0.5] + [0.0] * 7, dtype=torch.float64), torch.zeros(15), 0.0)
    assert one.calibrated_ece() == pytest.approx(0.5)
    # A model that is calibrated by construction (labels drawn from its own softmax) shows this ECE on
    # average, and it shrinks like 1/√N. The bins' mean confidence stands for each sample's (nearly the
    # same); the margin allows for that and for 200 draws' own spread.
    g = torch.Generator().manual_seed(0)
    for n in (1000, 8000):
        logits = 2 * torch.randn(n, 10, generator=g, dtype=torch.float64)
        probs = logits.softmax(dim=1)
        drawn = [reliability(logits, torch.multinomial(probs, 1, generator=g).squeeze(1)).ece for _ in range(200)]
        floor = reliability(logits, torch.zeros(n, dtype=torch.long)).calibrated_ece()   # labels play no part
        assert 0.93 < floor / (sum(drawn) / len(drawn)) < 1.12, (n, floor)


def test_a_tie_is_one_prediction_for_accuracy_and_calibration():
    # All logits equal (a collapsed network): top-1 and the ECE's accuracy both take the first class.
    logits, targets = torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)
    assert topk_accuracy(logits, targets) == 1.0
    r = reliability(logits, targets)
    assert r.accuracy[r.counts > 0].tolist() == [1.0] and r.ece == pytest.approx(0.8)
    logits[:, 1] = 1.0     # tied between classes 1 and 4 at the top
    logits[:, 4] = 1.0
    assert topk_accuracy(logits, torch.full((4,), 1)) == 1.0 and topk_accuracy(logits, torch.full((4,), 4)) == 0.0
    assert reliability(logits, torch.full((4,), 1)).accuracy.max() == 1.0


def test_fit_temperature_clamps_to_its_bounds():
    # All right with a margin: NLL keeps falling as T → 0, so the fit stops at t_min.
    z = torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    assert fit_temperature(z, y) == 0.05
    assert fit_temperature(z, y, t_min=0.2) == 0.2
    # All wrong: NLL keeps falling as T → ∞ (towards uniform), so the fit stops at t_max.
    assert fit_temperature(z, 1 - y) == 20.0
    assert fit_temperature(z, 1 - y, t_max=7.0) == 7.0


def test_fit_temperature_ece_follows_the_papers_grid_protocol():
    torch.manual_seed(3)
    z = torch.randn(20_000, 10, dtype=torch.float64) * 2
    y = torch.multinomial(z.softmax(1), 1).squeeze(1)
    t = fit_temperature_ece(2 * z, y)                  # over-confident by 2
    assert t in ECE_GRID and 1.7 <= t <= 2.3
    # It is the grid point with the lowest validation ECE, first one on ties.
    eces = [expected_calibration_error(2 * z / g, y) for g in ECE_GRID]
    assert t == ECE_GRID[eces.index(min(eces))]
    assert ECE_GRID[0] == 0.1 and ECE_GRID[-1] == 10.0 and len(ECE_GRID) == 100
    # Beyond the grid it clamps: the end point of the grid is the answer.
    assert fit_temperature_ece(30 * z, y, grid=(0.5, 1.0, 2.0)) == 2.0
    with pytest.raises(ValueError, match="positive"):
        fit_temperature_ece(z, y, grid=(0.0, 1.0))


def test_the_two_protocols_can_disagree():
    # ECE is flat and noisy, NLL is smooth: on a small validation set they pick different T.
    torch.manual_seed(4)
    z = torch.randn(300, 10, dtype=torch.float64) * 3
    y = torch.multinomial((z / 1.5).softmax(1), 1).squeeze(1)
    t_nll, t_ece = fit_temperature(z, y), fit_temperature_ece(z, y)
    assert t_nll != pytest.approx(t_ece, abs=0.05)
    assert expected_calibration_error(z / t_ece, y) <= expected_calibration_error(z / t_nll, y)
