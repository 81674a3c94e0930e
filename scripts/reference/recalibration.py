"""Reference numbers for muq-calibrate's recalibrators and metrics.

Writes fixtures/recalibration.json (run from the repository root):

    python3 -m venv /tmp/calref
    /tmp/calref/bin/pip install numpy scikit-learn netcal relplot uncertainty-calibration jax jaxlib
    # dirichletcal 0.5.3 declares python>=3.12 but runs on 3.11:
    /tmp/calref/bin/pip install --ignore-requires-python --no-deps dirichletcal==0.5.3
    /tmp/calref/bin/python scripts/reference/recalibration.py

Versions the committed fixture was made with are recorded in its `versions`
field (and quoted in crates/calibrate/tests/reference.rs). Every number comes
from the named library's own code, except where marked "numpy": those are
written out here from the definitions in the comments.

Two cases of seeded synthetic logits (numpy default_rng), each split into a
fit half (the calibration split) and an apply half: every recalibrator is
fitted on the fit half and applied to the apply half.
"""

import functools
import json
import platform
import sys
from importlib.metadata import version

import numpy as np
import scipy
from scipy.optimize import brentq
from scipy.special import log_softmax, softmax

import calibration.utils as kumar
from calibration import calibrators as kumar_cal
from dirichletcal.calib import multinomial as dmult
from dirichletcal.calib.fulldirichlet import FullDirichletCalibrator
from dirichletcal.calib.tempscaling import TemperatureScaling
from dirichletcal.calib.vectorscaling import VectorScaling
from netcal.binning import HistogramBinning
from relplot import smECE
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

# ODIR strengths used for both matrix scaling and Dirichlet calibration, with
# the paper's normalisation (dirichletcal's reg_norm=True: lambda / (k (k - 1))
# on the off-diagonal weights, mu / k on the intercepts) and without a
# reference row (ref_row=False: the penalty is on the full k x (k + 1) weights,
# as in the paper). Large enough that the penalty visibly moves the fit.
ODIR_LAMBDA = 0.1
ODIR_MU = 0.1
HIST_BINS = 10  # netcal HistogramBinning default
SB_BINS = 10  # PlattBinner*Calibrator num_bins
CE_BINS = 10  # binned ECE / RMS / max and the Brier decomposition


def make_case(name, seed, k, n_fit, n_apply):
    """Miscalibrated logits: overconfident overall, class-dependent bias and
    scale (so vector/matrix scaling beat one temperature), some confusions."""
    rng = np.random.default_rng(seed)
    n = n_fit + n_apply
    labels = rng.integers(0, k, size=n)
    z = rng.normal(size=(n, k))
    margin = rng.gamma(2.0, 1.0, size=n)
    confused = rng.random(n) < 0.3
    boost = np.where(confused, rng.integers(0, k, size=n), labels)
    z[np.arange(n), boost] += margin
    bias = np.linspace(-0.6, 0.6, k)
    scale = np.linspace(0.8, 1.5, k)
    z = 1.4 * (z * scale + bias)
    # Six decimals: parsed to the same f64 by Python and serde_json.
    z = np.round(z, 6)
    return {
        "name": name,
        "seed": seed,
        "num_classes": k,
        "fit": {"logits": z[:n_fit], "labels": labels[:n_fit]},
        "apply": {"logits": z[n_fit:], "labels": labels[n_fit:]},
    }


def top(probs):
    return probs.argmax(axis=1), probs.max(axis=1)


def ovr_normalise(cal):
    """sklearn CalibratedClassifierCV's normalisation: divide by the row sum,
    uniform where the sum is 0."""
    k = cal.shape[1]
    s = cal.sum(axis=1, keepdims=True)
    out = np.full_like(cal, 1.0 / k)
    np.divide(cal, s, out=out, where=s != 0)
    return out


def fill_top_label(probs, conf):
    """muq's full vector from a top-label confidence: the predicted class gets
    the calibrated confidence, the others share the rest in proportion to
    their uncalibrated probabilities (equally if those are all 0)."""
    pred, pmax = top(probs)
    n, k = probs.shape
    out = np.empty_like(probs)
    for i in range(n):
        rest = 1.0 - pmax[i]
        others = probs[i].copy()
        others[pred[i]] = 0.0
        if rest > 0:
            row = others * ((1.0 - conf[i]) / rest)
        else:
            row = np.full(k, (1.0 - conf[i]) / (k - 1))
        row[pred[i]] = conf[i]
        out[i] = row
    return out


def exact_temperature(z, y):
    """The exact NLL minimiser over T (root of d NLL / d beta, beta = 1/T)."""

    def dnll(beta):
        p = softmax(beta * z, axis=1)
        return np.mean((p * z).sum(axis=1) - z[np.arange(len(y)), y])

    beta = brentq(dnll, 1e-3, 1e3, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    return 1.0 / beta


def odir_multinomial(x_fit, y, x_apply):
    """dirichletcal's MultinomialRegression (Newton, jax derivatives) with ODIR."""
    k = x_fit.shape[1]
    m = dmult.MultinomialRegression(
        method="Full", reg_lambda=ODIR_LAMBDA, reg_mu=ODIR_MU, reg_norm=True, ref_row=False
    )
    m.fit(x_fit, y)
    xf = np.hstack([x_fit, np.ones((len(x_fit), 1))])
    target = np.eye(k)[y]
    params = np.asarray(m.weights_).ravel()
    # The objective at the solution (with the normalised strengths the fit
    # used: reg_norm rescales m.reg_lambda / m.reg_mu in place).
    args = (xf, None, target, k, "Full", m.reg_lambda, m.reg_mu, False, "identity", None)
    objective = float(dmult._objective(params, *args))
    grad = np.asarray(dmult._gradient(params, *args))
    nll = float(-np.mean(log_softmax(xf @ np.asarray(m.weights_).T, axis=1)[np.arange(len(y)), y]))
    return {
        "weights": np.asarray(m.weights_),
        "objective": objective,
        "nll_fit": nll,
        "grad_l1": float(np.abs(grad).sum()),
        "probs": np.asarray(m.predict_proba(x_apply)),
    }


def isotonic_top(conf_fit, correct_fit, conf_apply):
    ir = IsotonicRegression(out_of_bounds="clip").fit(conf_fit, correct_fit.astype(float))
    return ir.predict(conf_apply)


def isotonic_ovr(p_fit, y, p_apply):
    k = p_fit.shape[1]
    cal = np.zeros_like(p_apply)
    for c in range(k):
        ir = IsotonicRegression(out_of_bounds="clip").fit(p_fit[:, c], (y == c).astype(float))
        cal[:, c] = ir.predict(p_apply[:, c])
    return ovr_normalise(cal)


def platt_params(probs, targets):
    """The fitted (slope, intercept) of Kumar's get_platt_scaler."""
    _, clf = kumar.get_platt_scaler(probs, targets, get_clf=True)
    return [float(clf.coef_[0][0]), float(clf.intercept_[0])]


def with_converged_logistic(fn):
    """Runs fn with uncertainty-calibration's LogisticRegression(C=1e10,
    solver='lbfgs') converged (tol 1e-12, up to 100000 iterations) instead of
    sklearn's default tol=1e-4: the same model, fitted to the optimum."""
    original = kumar.LogisticRegression
    kumar.LogisticRegression = functools.partial(LogisticRegression, tol=1e-12, max_iter=100000)
    try:
        return fn()
    finally:
        kumar.LogisticRegression = original


def platt_reference(p_fit, y, p_apply):
    pred_f, conf_f = top(p_fit)
    correct_f = (pred_f == y).astype(np.int64)
    _, conf_a = top(p_apply)
    k = p_fit.shape[1]

    def run():
        out = {}
        t = kumar_cal.PlattTopCalibrator(len(y), SB_BINS)
        t.train_calibration(p_fit, y)
        out["top"] = t.calibrate(p_apply)
        out["top_params"] = platt_params(conf_f, correct_f)
        cal = np.zeros_like(p_apply)
        params = []
        for c in range(k):
            scaler = kumar.get_platt_scaler(p_fit[:, c], (y == c).astype(np.int64))
            cal[:, c] = scaler(p_apply[:, c])
            params.append(platt_params(p_fit[:, c], (y == c).astype(np.int64)))
        out["ovr"] = ovr_normalise(cal)
        out["ovr_params"] = params
        sbt = kumar_cal.PlattBinnerTopCalibrator(len(y), SB_BINS)
        sbt.train_calibration(p_fit, y)
        out["sb_top"] = sbt.calibrate(p_apply)
        sbm = kumar_cal.PlattBinnerMarginalCalibrator(len(y), SB_BINS)
        sbm.train_calibration(p_fit, y)
        out["sb_marginal_raw"] = sbm.calibrate(p_apply)
        out["sb_ovr"] = ovr_normalise(out["sb_marginal_raw"])
        return out

    default = run()
    converged = with_converged_logistic(run)
    return default, converged


def hist_top(conf_fit, correct_fit, conf_apply):
    h = HistogramBinning(bins=HIST_BINS)
    h.fit(conf_fit, correct_fit)
    return np.asarray(h.transform(conf_apply))


def hist_ovr(p_fit, y, p_apply):
    h = HistogramBinning(bins=HIST_BINS)
    h.fit(p_fit, y)
    return np.asarray(h.transform(p_apply))


# ---------------------------------------------------------------- metrics (numpy)


def upper_edges(bins):
    return np.arange(1, bins + 1) / bins


def binned_ce(conf, correct, bins):
    """The notebook's equal-width binning ([b/B, (b+1)/B), numpy.digitize on
    the upper edges, right=False; confidence 1.0 in no bin but counted in n)
    under the L1 (ECE), L2 (RMS) and max norms."""
    idx = np.digitize(conf, upper_edges(bins), right=False)
    n = len(conf)
    l1 = l2 = 0.0
    lmax = 0.0
    for b in range(bins):
        mask = idx == b
        c = mask.sum()
        if c == 0:
            continue
        gap = abs(correct[mask].mean() - conf[mask].mean())
        l1 += c / n * gap
        l2 += c / n * gap**2
        lmax = max(lmax, gap)
    return {"l1": l1, "l2": np.sqrt(l2), "linf": lmax}


def brier_decomposition(probs, labels, bins):
    """Murphy (1973) per class (one-vs-rest), summed over classes, on
    equal-width bins [b/B, (b+1)/B) of each class's probability (1.0 in the
    last bin), with Stephenson et al. (2008)'s two within-bin terms that make
    it exact: brier = rel - res + unc + wbv - wbc."""
    n, k = probs.shape
    onehot = np.eye(k)[labels]
    rel = res = unc = wbv = wbc = 0.0
    for c in range(k):
        f = probs[:, c]
        o = onehot[:, c]
        obar = o.mean()
        unc += obar * (1 - obar)
        idx = np.minimum(np.digitize(f, upper_edges(bins), right=False), bins - 1)
        for b in range(bins):
            mask = idx == b
            m = mask.sum()
            if m == 0:
                continue
            fb, ob = f[mask].mean(), o[mask].mean()
            rel += m / n * (fb - ob) ** 2
            res += m / n * (ob - obar) ** 2
            wbv += ((f[mask] - fb) ** 2).sum() / n
            wbc += 2 * ((f[mask] - fb) * (o[mask] - ob)).sum() / n
    brier = ((probs - onehot) ** 2).sum(axis=1).mean()
    return {
        "reliability": rel,
        "resolution": res,
        "uncertainty": unc,
        "within_bin_variance": wbv,
        "within_bin_covariance": wbc,
        "brier": brier,
    }


def kumar_metrics(probs, labels):
    out = {}
    for mode in ["top-label", "marginal"]:
        for debias in [True, False]:
            key = f"{mode.replace('-', '_')}_{'debiased' if debias else 'plugin'}"
            out[key] = float(kumar.get_calibration_error(probs, labels, p=2, debias=debias, mode=mode))
    return out


def kumar_binary(conf, correct):
    """Kumar's estimator on (confidence, correct) pairs: the 1-D path, which is
    what mode='top-label' computes from the pairs."""
    return {
        "debiased": float(kumar.get_calibration_error(conf, correct, p=2, debias=True)),
        "plugin": float(kumar.get_calibration_error(conf, correct, p=2, debias=False)),
        "discrete": bool(kumar.is_discrete(conf)),
    }


def smooth(conf, correct):
    value, sigma = smECE(conf, correct.astype(float), return_width=True)
    return {"smece": float(value), "sigma": float(sigma)}


def metric_block(probs, labels):
    pred, conf = top(probs)
    correct = (pred == labels).astype(np.int64)
    block = {
        "smooth_ece": smooth(conf, correct),
        "kumar": kumar_metrics(probs, labels),
        "binned": binned_ce(conf, correct.astype(float), CE_BINS),
        "brier_decomposition": brier_decomposition(probs, labels, CE_BINS),
        # uncertainty-calibration's plug-in ECE (p=1) and RMS (p=2) on its
        # equal-width bins, (lo, hi] edges (get_equal_prob_bins, searchsorted
        # left): the same bins as the notebook's where no confidence lies on
        # an edge or at 1.0.
        "kumar_equal_width": {
            "l1": float(kumar.lower_bound_scaling_ce(probs, labels, p=1, debias=False, num_bins=CE_BINS,
                                                     binning_scheme=kumar.get_equal_prob_bins, mode="top-label")),
            "l2": float(kumar.lower_bound_scaling_ce(probs, labels, p=2, debias=False, num_bins=CE_BINS,
                                                     binning_scheme=kumar.get_equal_prob_bins, mode="top-label")),
        },
    }
    edges = upper_edges(CE_BINS)
    assert not np.isin(conf, edges).any(), "a confidence lies on a bin edge"
    return block


def run_case(case):
    k = case["num_classes"]
    zf, yf = case["fit"]["logits"], case["fit"]["labels"]
    za, ya = case["apply"]["logits"], case["apply"]["labels"]
    pf, pa = softmax(zf, axis=1), softmax(za, axis=1)
    pred_f, conf_f = top(pf)
    correct_f = (pred_f == yf).astype(np.int64)
    _, conf_a = top(pa)
    assert len(np.unique(yf)) == k, "every class must occur in the fit half"

    out = {}

    # Temperature scaling: the exact minimiser, and dirichletcal's FixDiag Newton.
    t_exact = exact_temperature(zf, yf)
    ts = TemperatureScaling(logit_input=True).fit(zf, yf)
    out["ts"] = {
        "temperature_exact": t_exact,
        "temperature_dirichletcal": float(1.0 / np.asarray(ts.weights_)[0, 0]) if np.asarray(ts.weights_)[0, 0] != 0 else None,
        "probs": softmax(za / t_exact, axis=1),
    }

    # Vector scaling on logits (dirichletcal VectorScaling, logit_input=True).
    vs = VectorScaling(logit_input=True).fit(zf, yf)
    xf = np.hstack([zf, np.ones((len(zf), 1))])
    nll_vs = float(-np.mean(np.log(np.asarray(vs.predict_proba(zf))[np.arange(len(yf)), yf])))
    out["vs"] = {"probs": np.asarray(vs.predict_proba(za)), "nll_fit": nll_vs,
                 "weights": np.asarray(vs.weights_)}

    # Matrix scaling on logits and Dirichlet calibration on log-probabilities,
    # both with ODIR (dirichletcal MultinomialRegression / FullDirichletCalibrator).
    out["ms"] = odir_multinomial(zf, yf, za)
    dc = FullDirichletCalibrator(reg_lambda=ODIR_LAMBDA, reg_mu=ODIR_MU, reg_norm=True, ref_row=False)
    dc.fit(pf, yf)
    dref = odir_multinomial(np.log(kumar_clip(pf)), yf, np.log(kumar_clip(pa)))
    # FullDirichletCalibrator is that same fit on log(clip(p)); check it is.
    assert np.array_equal(np.asarray(dc.predict_proba(pa)), dref["probs"])
    out["dirichlet"] = dref

    # Histogram binning (netcal), top-label and one-vs-rest.
    out["hist"] = {
        "top": hist_top(conf_f, correct_f, conf_a),
        "ovr": hist_ovr(pf, yf, pa),
    }

    # Isotonic regression (scikit-learn), top-label and one-vs-rest.
    out["iso"] = {
        "top": isotonic_top(conf_f, correct_f, conf_a),
        "ovr": isotonic_ovr(pf, yf, pa),
    }

    # Platt scaling and scaling-binning (uncertainty-calibration).
    default, converged = platt_reference(pf, yf, pa)
    out["platt"] = {
        "top": converged["top"], "ovr": converged["ovr"],
        "top_params": converged["top_params"], "ovr_params": converged["ovr_params"],
        "top_sklearn_default_tol": default["top"],
    }
    out["sb"] = {
        "top": converged["sb_top"], "ovr": converged["sb_ovr"],
        "top_sklearn_default_tol": default["sb_top"],
    }

    # Metrics on the apply half: uncalibrated, temperature-scaled (at the
    # exact temperature), and netcal's top-label histogram-binned confidences
    # (discrete: uncertainty-calibration then takes its binned-model path).
    metrics = {
        "uncalibrated": metric_block(pa, ya),
        "temperature": metric_block(softmax(za / t_exact, axis=1), ya),
    }
    pred_a = pa.argmax(axis=1)
    correct_a = (pred_a == ya).astype(np.int64)
    hconf = out["hist"]["top"]
    metrics["hist_top_confidences"] = {
        "smooth_ece": smooth(hconf, correct_a),
        "kumar_binary": kumar_binary(hconf, correct_a),
        "binned": binned_ce(hconf, correct_a.astype(float), CE_BINS),
    }
    metrics["uncalibrated_binary"] = {"kumar_binary": kumar_binary(conf_a, correct_a)}
    out["metrics"] = metrics
    return out


def kumar_clip(p):
    """dirichletcal's clip_for_log: [tiny, 1 - tiny] before the log."""
    eps = np.finfo(p.dtype).tiny
    return np.clip(p, eps, 1 - eps)


def to_json(x):
    if isinstance(x, dict):
        return {k: to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_json(x.tolist())
    if isinstance(x, (float, np.floating)):
        # 14 significant digits keep the file small; every test tolerance is
        # far above the 5e-15 relative rounding this adds.
        return float(f"{float(x):.14g}")
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def main():
    cases = [
        make_case("k4", 20261202, 4, 200, 150),
        make_case("k10", 20261203, 10, 300, 200),
    ]
    packages = ["numpy", "scipy", "scikit-learn", "netcal", "relplot",
                "uncertainty-calibration", "dirichletcal", "jax", "jaxlib"]
    root = {
        "source": "scripts/reference/recalibration.py",
        "versions": {"python": platform.python_version(), **{p: version(p) for p in packages}},
        "settings": {"odir_lambda": ODIR_LAMBDA, "odir_mu": ODIR_MU, "hist_bins": HIST_BINS,
                     "sb_bins": SB_BINS, "ce_bins": CE_BINS},
        "cases": [],
    }
    for case in cases:
        expected = run_case(case)
        root["cases"].append({**case, "expected": expected})
    with open("fixtures/recalibration.json", "w") as f:
        json.dump(to_json(root), f, separators=(",", ":"))
        f.write("\n")
    print("wrote fixtures/recalibration.json", file=sys.stderr)


if __name__ == "__main__":
    main()
