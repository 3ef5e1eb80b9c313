"""calibrate(): recovers known parameters from a synthetic cohort and reports fit and residuals."""

from __future__ import annotations

import numpy as np
import pytest

from regenguide.simulate.calibration import Observation, calibrate, predict_observations

TRUE = {"consumption_mol_cm3_s": 1.5e-10, "take_survival": 0.55, "take_regenerating": 0.30}


def _cohort(n: int, noise: float, seed: int = 7) -> list[Observation]:
    rng = np.random.default_rng(seed)
    geometry = rng.choice(["cylinder", "sphere", "slab"], n)
    diameters = np.exp(rng.uniform(np.log(0.5), np.log(15.0), n))
    obese = rng.random(n) < 0.3
    obs = [
        Observation(geometry=g, diameter_mm=float(d), observed_retention=0.0, obese=bool(o))
        for g, d, o in zip(geometry, diameters, obese, strict=True)
    ]
    truth = predict_observations(obs, TRUE)
    noisy = np.clip(truth + rng.normal(0, noise, n), 0, 1)
    return [o.model_copy(update={"observed_retention": float(y)}) for o, y in zip(obs, noisy, strict=True)]


def test_recovers_known_parameters_from_synthetic_cohort() -> None:
    result = calibrate(_cohort(300, noise=0.01))
    assert result.converged
    assert result.fitted["consumption_mol_cm3_s"] == pytest.approx(1.5e-10, rel=0.05)
    assert result.fitted["take_survival"] == pytest.approx(0.55, abs=0.01)
    assert result.fitted["take_regenerating"] == pytest.approx(0.30, abs=0.02)
    assert result.rmse == pytest.approx(0.01, rel=0.25)  # residuals at the noise level
    assert abs(np.mean(result.residuals)) < 0.003
    assert result.r_squared is not None and result.r_squared > 0.95
    for name, se in result.standard_errors.items():
        assert se is not None and se > 0
        # The truth lies within 4 standard errors.
        assert abs(result.fitted[name] - TRUE[name]) < 4 * se
    assert result.at_bound == []


def test_noise_free_cohort_fits_exactly() -> None:
    result = calibrate(_cohort(60, noise=0.0))
    assert result.rmse < 1e-6
    assert result.fitted["take_survival"] == pytest.approx(0.55, abs=1e-4)


def test_accepts_dicts_and_rejects_bad_requests() -> None:
    data = [{"geometry": "cylinder", "diameter_mm": d, "observed_retention": 0.45} for d in (1, 2, 3, 4, 6)]
    result = calibrate(data, fit=["take_survival"])
    assert result.fitted["take_survival"] == pytest.approx(0.45, abs=0.05)
    assert len(result.residuals) == 5
    with pytest.raises(ValueError, match="cannot fit"):
        calibrate(data, fit=["diffusivity_cm2_s"])
    with pytest.raises(ValueError, match="at least"):
        calibrate(data[:2], fit=["take_survival", "take_regenerating", "consumption_mol_cm3_s"])


def test_calibration_request_model() -> None:
    from regenguide.simulate import CalibrationRequest, calibrate_request

    req = CalibrationRequest.model_validate(
        {
            "observations": [
                {"geometry": "sphere", "diameter_mm": d, "observed_retention": 0.4} for d in (1, 2, 3)
            ],
            "fit": ["take_survival"],
        }
    )
    assert calibrate_request(req).n == 3
