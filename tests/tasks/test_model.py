from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.config import ModelSpec, ThresholdSpec, load_training_config
from tasks.dataset import prepare_dataset
from tasks.generator import generate_transactions
from tasks.model import ScoringModel
from tasks.train import build_scoring_model, fit_logistic, select_and_fit

CONFIG = load_training_config(Path(__file__).resolve().parents[2] / "tasks" / "configs" / "card_fraud.yaml")


@pytest.fixture(scope="module")
def trained() -> tuple[ScoringModel, pl.DataFrame]:
    raw = generate_transactions(30_000, seed=21)
    prepared = prepare_dataset(raw, CONFIG, source="generated")
    split = prepared.split
    fit = select_and_fit(
        prepared.train, prepared.labels[split.train], prepared.valid, prepared.labels[split.valid], CONFIG.model
    )
    model = build_scoring_model(
        prepared.pipeline, fit, prepared.valid, prepared.labels[split.valid], CONFIG.threshold, "m"
    )
    return model, raw


def test_score_equals_sklearn_predict_proba(trained: tuple[ScoringModel, pl.DataFrame]) -> None:
    # given the fitted ScoringModel and the same weights inside a scikit-learn estimator
    from sklearn.linear_model import LogisticRegression

    model, raw = trained
    design = model.design_matrix(raw)
    reference = LogisticRegression()
    reference.classes_ = np.array([0, 1])
    reference.coef_ = model.weights()[None, :]
    reference.intercept_ = np.array([model.intercept])
    # when both score the same rows
    ours = model.score(raw)
    theirs = reference.predict_proba(design)[:, 1]
    # then they agree within 1e-9
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)


def test_saved_model_loads_and_scores_identically(tmp_path: Path, trained: tuple[ScoringModel, pl.DataFrame]) -> None:
    model, raw = trained
    digest = model.save(tmp_path / "m.json")
    loaded = ScoringModel.load(tmp_path / "m.json", expected_sha256=digest)
    np.testing.assert_array_equal(loaded.score(raw[:1000]), model.score(raw[:1000]))


def test_a_tampered_model_file_is_refused(tmp_path: Path, trained: tuple[ScoringModel, pl.DataFrame]) -> None:
    # given a saved model whose file is changed afterwards
    model, _ = trained
    digest = model.save(tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text(encoding="utf-8")
    (tmp_path / "m.json").write_text(text.replace('"threshold": ', '"threshold": 0.0001 + ', 1)[:0] + text + " ")
    # when it is loaded against the recorded digest
    # then it is refused
    with pytest.raises(ValueError, match="does not match"):
        ScoringModel.load(tmp_path / "m.json", expected_sha256=digest)


def test_coefficient_table_undoes_standardisation(trained: tuple[ScoringModel, pl.DataFrame]) -> None:
    # given the model and the fitted statistics of the amount feature
    model, _ = trained
    fit = model.pipeline.fits["amount"]
    table = {row.feature: row for row in model.coefficient_table()}
    # when / then: raw = standardized / std, odds ratio = exp(raw), and the intercept is listed
    assert table["amount"].raw == pytest.approx(table["amount"].standardized / fit.std)  # type: ignore[union-attr]
    assert table["amount"].odds_ratio == pytest.approx(np.exp(table["amount"].raw))
    assert "(intercept)" in table
    # and a raw-unit linear predictor reproduces the model's own
    assert len(table) == len(model.feature_names) + 1


def test_unpenalised_fit_matches_statsmodels_logit() -> None:
    # given a small data set with a known logistic mechanism
    import statsmodels.api as sm

    rng = np.random.default_rng(0)
    design = rng.normal(size=(2_000, 3))
    logits = -0.5 + design @ np.array([1.0, -2.0, 0.5])
    labels = (rng.random(2_000) < 1 / (1 + np.exp(-logits))).astype(np.int8)
    # when fitted with C = inf and with statsmodels' maximum-likelihood Logit
    coefficients, intercept, _, warnings = fit_logistic(
        design, labels, C=float("inf"), class_weight=None, max_iter=1000, tol=1e-10
    )
    reference = sm.Logit(labels, sm.add_constant(design)).fit(disp=0, tol=1e-12, maxiter=200)
    # then the estimates agree
    np.testing.assert_allclose(np.r_[intercept, coefficients], reference.params, rtol=0, atol=1e-6)
    assert warnings == []


def test_convergence_warning_is_reported_not_swallowed() -> None:
    # given too few iterations for an unpenalised fit
    rng = np.random.default_rng(1)
    design = rng.normal(size=(500, 4)) * 50
    labels = (design[:, 0] + rng.normal(size=500) > 0).astype(np.int8)
    # when fitted
    _, _, _, warnings = fit_logistic(design, labels, C=float("inf"), class_weight=None, max_iter=10, tol=1e-4)
    # then the warning comes back with the C it concerns
    assert warnings and warnings[0].startswith("C=inf:")


def test_validation_picks_a_c_from_the_grid() -> None:
    # given a grid with a absurdly strong penalty next to a reasonable one
    rng = np.random.default_rng(2)
    design = rng.normal(size=(3_000, 2))
    labels = (rng.random(3_000) < 1 / (1 + np.exp(-(design @ np.array([2.0, -1.0]))))).astype(np.int8)
    spec = ModelSpec(C=[1e-6, 1.0])
    # when selected on a validation split
    result = select_and_fit(design[:2000], labels[:2000], design[2000:], labels[2000:], spec)
    # then the useful model wins
    assert result.best.C == 1.0
    assert len(result.candidates) == 2


def test_threshold_spec_is_honoured(trained: tuple[ScoringModel, pl.DataFrame]) -> None:
    model, _ = trained
    assert model.threshold_method == "max_f1"
    assert 0.0 < model.threshold < 1.0
    assert isinstance(ThresholdSpec(), ThresholdSpec)
