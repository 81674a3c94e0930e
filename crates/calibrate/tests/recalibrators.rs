//! The recalibrators' and new metrics' contracts: names, configs, shapes,
//! errors, hand-computed cases and the laws they obey.

use muq_calibrate::{
    BootstrapConfig, BrierBinning, CalibError, Calibrator, CeBinning, CeMode, HistogramBinning,
    IsotonicCalibration, IsotonicMap, L2CeConfig, Logits, MatrixScaling, Method, Mode, Norm,
    PerMode, PlattMap, PlattScaling, Predictions, RecalibrationConfig, Recalibrator,
    ScalingBinning, TemperatureScaling, VectorScaling, bootstrap_ci, brier, brier_decomposition,
    calibration_error, fit_recalibrator, l2_calibration_error, l2_calibration_error_scores, nll,
    smooth_ece, smooth_ece_at, smooth_ece_scores,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeded overconfident logits: `n` samples, `k` classes.
fn synthetic(n: usize, k: usize, seed: u64) -> (Vec<f64>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut z = vec![0.0; n * k];
    let mut y = vec![0; n];
    for (row, label) in z.chunks_exact_mut(k).zip(y.iter_mut()) {
        *label = rng.random_range(0..k);
        for v in row.iter_mut() {
            *v = rng.random::<f64>() * 4.0 - 2.0;
        }
        let boost = if rng.random::<f64>() < 0.35 {
            rng.random_range(0..k)
        } else {
            *label
        };
        row[boost] += 3.0;
        for (j, v) in row.iter_mut().enumerate() {
            *v = 2.0 * *v + 0.3 * j as f64;
        }
    }
    (z, y)
}

#[test]
fn method_names_round_trip() {
    let names: Vec<String> = Method::ALL.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        names,
        ["ts", "vs", "ms", "dirichlet", "hist", "iso", "platt", "sb"]
    );
    for m in Method::ALL {
        assert_eq!(m.name().parse::<Method>().unwrap(), m);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, format!("\"{m}\""));
        assert_eq!(serde_json::from_str::<Method>(&json).unwrap(), m);
    }
    assert_eq!(
        Method::parse_list(" ts, vs,,iso ").unwrap(),
        [Method::Ts, Method::Vs, Method::Iso]
    );
    assert_eq!(
        "bbq".parse::<Method>().unwrap_err(),
        CalibError::UnknownRecalibrator("bbq".into())
    );
    assert!(Method::parse_list("ts,TS").is_err());
    assert!(serde_json::from_str::<Method>("\"temperature\"").is_err());
}

#[test]
fn config_defaults_and_partial_overrides() {
    let d = RecalibrationConfig::default();
    assert_eq!((d.ms.lambda, d.ms.mu), (0.01, 0.01));
    assert_eq!((d.dirichlet.lambda, d.dirichlet.mu), (0.01, 0.01));
    assert_eq!((d.hist.bins, d.hist.mode), (10, Mode::TopLabel));
    assert_eq!((d.sb.bins, d.sb.c, d.platt.c), (10, 1e10, 1e10));
    assert_eq!(d.iso.mode, Mode::TopLabel);
    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(
        serde_json::from_str::<RecalibrationConfig>(&json).unwrap(),
        d
    );
    let partial: RecalibrationConfig =
        serde_json::from_str(r#"{"ms": {"lambda": 0.5}, "iso": {"mode": "one_vs_rest"}}"#).unwrap();
    assert_eq!(partial.ms.lambda, 0.5);
    assert_eq!(partial.ms.mu, 0.01);
    assert_eq!(partial.iso.mode, Mode::OneVsRest);
    assert_eq!(partial.ts, d.ts);
    assert!(serde_json::from_str::<RecalibrationConfig>(r#"{"ms": {"lamda": 0.5}}"#).is_err());
    assert!(serde_json::from_str::<RecalibrationConfig>(r#"{"bbq": {}}"#).is_err());
}

#[test]
fn every_method_gives_probability_rows() {
    let (z, y) = synthetic(400, 5, 1);
    let (fit, eval) = (
        Logits::new(&z[..1000], 5).unwrap(),
        Logits::new(&z[1000..], 5).unwrap(),
    );
    let (fit_y, eval_y) = (&y[..200], &y[200..]);
    for mode in [Mode::TopLabel, Mode::OneVsRest] {
        let mut config = RecalibrationConfig::default();
        config.hist.mode = mode;
        config.iso.mode = mode;
        config.platt.mode = mode;
        config.sb.mode = mode;
        for method in Method::ALL {
            let fitted = fit_recalibrator(method, &config, &fit, fit_y).unwrap();
            assert_eq!(fitted.method(), method);
            assert_eq!(fitted.num_classes(), 5);
            let out = fitted.apply(&eval).unwrap();
            assert_eq!(out.probs().len(), 200 * 5);
            for i in 0..out.len() {
                let row = out.row(i);
                assert!(
                    row.iter().all(|v| (0.0..=1.0).contains(v)),
                    "{method} {mode:?}: {row:?}"
                );
                let sum: f64 = row.iter().sum();
                assert!(
                    (sum - 1.0).abs() < 1e-12,
                    "{method} {mode:?}: row sums to {sum}"
                );
            }
            let p = out.predictions(eval_y).unwrap();
            assert_eq!(p.confidences(), out.confidences().as_slice());
            assert!((0.0..=2.0).contains(&brier(&p)));
            // Wrong number of classes.
            let other = Logits::new(&z[..12], 4).unwrap();
            assert!(matches!(
                fitted.apply(&other).unwrap_err(),
                CalibError::LengthMismatch {
                    expected: 5,
                    found: 4,
                    ..
                }
            ));
        }
    }
}

#[test]
fn scaling_methods_nest_temperature_scaling() {
    // vs, ms (unregularised) and dirichlet (unregularised) contain T-scaling
    // as a special case, so their fitted NLL is no larger.
    let (z, y) = synthetic(500, 4, 2);
    let l = Logits::new(&z, 4).unwrap();
    let ts = TemperatureScaling::default().fit(&l, &y).unwrap();
    let vs = VectorScaling::default().fit(&l, &y).unwrap();
    let free = MatrixScaling {
        lambda: 0.0,
        mu: 0.0,
        ..MatrixScaling::default()
    };
    let ms = free.fit(&l, &y).unwrap();
    let dir = muq_calibrate::DirichletCalibration {
        lambda: 0.0,
        mu: 0.0,
        ..Default::default()
    }
    .fit(&l, &y)
    .unwrap();
    for fit in [&vs.fit, &ms.fit, &dir.fit] {
        assert!(fit.converged, "{fit:?}");
        assert!(
            fit.nll <= ts.fit.nll_after + 1e-12,
            "{fit:?} vs {:?}",
            ts.fit
        );
        assert!(fit.nll <= fit.nll_before);
    }
    // Regularised: objective = NLL + penalty ≥ NLL, and the regularised NLL
    // is no better than the free one.
    let reg = MatrixScaling::default().fit(&l, &y).unwrap();
    assert!(reg.fit.objective >= reg.fit.nll);
    assert!(reg.fit.nll >= ms.fit.nll - 1e-12);
}

#[test]
fn fit_errors_name_their_cause() {
    let z = [1.0f64, 2.0, 3.0];
    let one = Logits::new(&z, 1).unwrap();
    assert_eq!(
        TemperatureScaling::default()
            .fit(&one, &[0, 0, 0])
            .unwrap_err(),
        CalibError::TooFewClasses(1)
    );
    let (z, y) = synthetic(20, 3, 3);
    let l = Logits::new(&z, 3).unwrap();
    assert!(matches!(
        VectorScaling::default().fit(&l, &y[..5]).unwrap_err(),
        CalibError::LengthMismatch { .. }
    ));
    let mut bad = y.clone();
    bad[4] = 3;
    assert!(matches!(
        HistogramBinning::default().fit(&l, &bad).unwrap_err(),
        CalibError::LabelOutOfRange {
            index: 4,
            label: 3,
            ..
        }
    ));
    let neg = MatrixScaling {
        lambda: -1.0,
        ..MatrixScaling::default()
    };
    assert!(matches!(
        neg.fit(&l, &y).unwrap_err(),
        CalibError::InvalidSetting { name: "lambda", .. }
    ));
    let c0 = PlattScaling {
        c: 0.0,
        ..PlattScaling::default()
    };
    assert!(matches!(
        c0.fit(&l, &y).unwrap_err(),
        CalibError::InvalidSetting { name: "c", .. }
    ));
    let zero_bins = ScalingBinning {
        bins: 0,
        ..ScalingBinning::default()
    };
    assert_eq!(zero_bins.fit(&l, &y).unwrap_err(), CalibError::ZeroBins);
    let zero_hist = HistogramBinning {
        bins: 0,
        ..HistogramBinning::default()
    };
    assert_eq!(zero_hist.fit(&l, &y).unwrap_err(), CalibError::ZeroBins);
}

#[test]
fn top_label_keeps_the_prediction_and_shares_the_rest() {
    // Two classes make the top-label histogram hand-computable: softmax of
    // (ln 3, 0) is (0.75, 0.25); of (0, 0) is (0.5, 0.5).
    let z = [3f64.ln(), 0.0, 3f64.ln(), 0.0, 3f64.ln(), 0.0, 0.0, 0.0];
    let l = Logits::new(&z, 2).unwrap();
    // Confidence 0.75 (bin 7): correct, correct, wrong → 2/3; 0.5 (bin 5): wrong → 0.
    let fitted = HistogramBinning::default().fit(&l, &[0, 0, 1, 1]).unwrap();
    let PerMode::TopLabel(map) = &fitted.maps else {
        panic!("top-label map expected");
    };
    assert_eq!(map.values[7], 2.0 / 3.0);
    assert_eq!(map.values[5], 0.0);
    assert_eq!(map.values[0], 0.05); // empty: the bin's centre
    let out = fitted.apply(&l).unwrap();
    assert_eq!(out.predicted(), &[0, 0, 0, 0]);
    assert_eq!(out.row(0)[0], 2.0 / 3.0);
    assert!((out.row(0)[1] - 1.0 / 3.0).abs() < 1e-15);
    // Confidence 0 at the prediction; the other class gets the rest, so the
    // row's maximum is no longer the kept prediction.
    assert_eq!(out.row(3), &[0.0, 1.0]);
    let p = out.predictions(&[0, 0, 1, 1]).unwrap();
    assert_eq!(p.predicted(), &[0, 0, 0, 0]);
    assert_eq!(p.confidences()[3], 0.0);
    // Correct at 0 probability: infinite NLL, by definition.
    let p = out.predictions(&[0, 0, 1, 0]).unwrap();
    assert_eq!(nll(&p), f64::INFINITY);
}

#[test]
fn isotonic_merges_near_ties_and_clips() {
    // x 0.1, 0.1 + 5e-16 (merged: within 1e-15), 0.2, 0.3 with targets
    // 1, 0, 0, 1: merged point (0.1, 0.5) of weight 2, then (0.2, 0) and
    // (0.3, 1) → PAVA pools the first two to (0.5·2 + 0)/3 = 1/3.
    let x = [0.3, 0.1, 0.1 + 5e-16, 0.2];
    let t = [true, true, false, false];
    let map = IsotonicMap::fit(&x, &t);
    assert_eq!(map.x, vec![0.1, 0.2, 0.3]);
    assert_eq!(map.y, vec![1.0 / 3.0, 1.0 / 3.0, 1.0]);
    // Exactly the same through the calibrator on logits (one-vs-rest).
    let z = [0.0f64, 0.0];
    let l = Logits::new(&z, 2).unwrap();
    let iso = IsotonicCalibration {
        mode: Mode::OneVsRest,
    };
    let out = iso.fit(&l, &[0]).unwrap().apply(&l).unwrap();
    // Class 0: one point (0.5, 1) → constant 1; class 1: (0.5, 0) → 0.
    assert_eq!(out.row(0), &[1.0, 0.0]);
}

#[test]
fn platt_with_one_kind_of_target_is_constant() {
    let z = [2.0f64, 0.0, 1.5, 0.0, 3.0, 0.0];
    let l = Logits::new(&z, 2).unwrap();
    let fitted = PlattScaling::default().fit(&l, &[0, 0, 0]).unwrap();
    assert!(matches!(
        fitted.maps,
        PerMode::TopLabel(PlattMap::Constant(1.0))
    ));
    let out = fitted.apply(&l).unwrap();
    assert_eq!(out.confidences(), vec![1.0; 3]);
}

#[test]
fn smooth_ece_laws_and_errors() {
    let (z, y) = synthetic(300, 4, 4);
    let p = Predictions::new(&Logits::new(&z, 4).unwrap(), &y).unwrap();
    let s = smooth_ece(&p).unwrap();
    assert!((0.0..=1.0).contains(&s.value), "{s:?}");
    assert!(s.bandwidth > 0.0 && s.bandwidth <= 1.0);
    // relplot's fixed point: the value at the chosen bandwidth is close to it.
    let correct: Vec<bool> = (0..p.len()).map(|i| p.is_correct(i)).collect();
    assert_eq!(
        smooth_ece_at(p.confidences(), &correct, s.bandwidth).unwrap(),
        s.value
    );
    assert!((s.value - s.bandwidth).abs() < 2f64.powi(-9), "{s:?}");
    // Scores equal to the outcome frequency everywhere: small.
    let f = vec![0.5; 400];
    let y: Vec<bool> = (0..400).map(|i| i % 2 == 0).collect();
    assert!(smooth_ece_scores(&f, &y).unwrap().value < 0.01);
    assert_eq!(smooth_ece_scores(&[], &[]).unwrap_err(), CalibError::Empty);
    assert!(matches!(
        smooth_ece_scores(&[1.5], &[true]).unwrap_err(),
        CalibError::InvalidProbability { .. }
    ));
    assert!(matches!(
        smooth_ece_at(&[0.5], &[true], 0.0).unwrap_err(),
        CalibError::InvalidSetting { name: "sigma", .. }
    ));
}

#[test]
fn smooth_ece_bootstraps() {
    let (z, y) = synthetic(200, 4, 5);
    let p = Predictions::new(&Logits::new(&z, 4).unwrap(), &y).unwrap();
    let cfg = BootstrapConfig {
        resamples: 100,
        ..BootstrapConfig::default()
    };
    let stat = |idx: &[usize]| smooth_ece(&p.select(idx).unwrap()).unwrap().value;
    let ci = bootstrap_ci(p.len(), &cfg, stat).unwrap();
    assert_eq!(ci.estimate, smooth_ece(&p).unwrap().value);
    assert!(ci.lower < ci.estimate && ci.estimate < ci.upper, "{ci:?}");
    assert!(ci.upper - ci.lower < 0.3, "{ci:?}");
    assert_eq!(ci, bootstrap_ci(p.len(), &cfg, stat).unwrap());
    // Any metric works the same way, e.g. the debiased L2 error.
    let l2 = |idx: &[usize]| {
        l2_calibration_error(&p.select(idx).unwrap(), &L2CeConfig::default()).unwrap()
    };
    let ci = bootstrap_ci(p.len(), &cfg, l2).unwrap();
    assert!(ci.lower <= ci.upper);
}

#[test]
fn l2_error_hand_computed() {
    // Scores with 2 distinct values (discrete: 2 < 8/4 is false, so force it).
    let f = [0.2, 0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.8];
    let y = [false, false, true, false, true, true, true, false];
    let cfg = L2CeConfig {
        binning: CeBinning::Distinct,
        ..L2CeConfig::default()
    };
    // Bins {0.2}: ȳ = 1/4, gap² = 0.05² = 0.0025, variance (1/4·3/4)/3 = 0.0625;
    // {0.8}: ȳ = 3/4, same. Debiased: 0.0025 − 0.0625 < 0 → 0.
    assert_eq!(l2_calibration_error_scores(&f, &y, &cfg).unwrap(), 0.0);
    let plugin = L2CeConfig {
        debias: false,
        ..cfg
    };
    let got = l2_calibration_error_scores(&f, &y, &plugin).unwrap();
    assert!((got - 0.05).abs() < 1e-15, "{got}");
    assert_eq!(
        l2_calibration_error_scores(&f, &y, &L2CeConfig { bins: 0, ..cfg }).unwrap_err(),
        CalibError::ZeroBins
    );
    // Top-label mode on predictions equals the scores path on (conf, correct).
    let (z, labels) = synthetic(100, 3, 6);
    let p = Predictions::new(&Logits::new(&z, 3).unwrap(), &labels).unwrap();
    let correct: Vec<bool> = (0..p.len()).map(|i| p.is_correct(i)).collect();
    let top = L2CeConfig {
        mode: CeMode::TopLabel,
        ..L2CeConfig::default()
    };
    assert_eq!(
        l2_calibration_error(&p, &top).unwrap(),
        l2_calibration_error_scores(p.confidences(), &correct, &top).unwrap()
    );
}

#[test]
fn binned_norms_are_ordered() {
    for seed in 0..5 {
        let (z, y) = synthetic(150, 4, 10 + seed);
        let p = Predictions::new(&Logits::new(&z, 4).unwrap(), &y).unwrap();
        let l1 = calibration_error(&p, 15, Norm::L1).unwrap();
        let l2 = calibration_error(&p, 15, Norm::L2).unwrap();
        let linf = calibration_error(&p, 15, Norm::Linf).unwrap();
        assert!(l1 <= l2 + 1e-15 && l2 <= linf + 1e-15, "{l1} {l2} {linf}");
    }
}

#[test]
fn brier_decomposition_identities() {
    let (z, y) = synthetic(250, 5, 7);
    let l = Logits::new(&z, 5).unwrap();
    let p = Predictions::new(&l, &y).unwrap();
    for bins in [1, 3, 10, 40] {
        let d = brier_decomposition(&p, BrierBinning::EqualWidth(bins)).unwrap();
        assert_eq!(d.brier, brier(&p));
        assert!((d.reconstructed() - d.brier).abs() < 1e-14, "{bins}: {d:?}");
        assert!(d.reliability >= 0.0 && d.resolution >= 0.0 && d.within_bin_variance >= 0.0);
    }
    // One bin: all forecasts' mean is the bin mean, resolution 0.
    let one = brier_decomposition(&p, BrierBinning::EqualWidth(1)).unwrap();
    assert_eq!(one.resolution, 0.0);
    // Discrete forecasts (top-label histogram binning's output, one-vs-rest
    // so every column takes few values): Murphy's three terms are exact.
    let hist = HistogramBinning {
        mode: Mode::OneVsRest,
        ..HistogramBinning::default()
    };
    let binned = hist
        .fit(&l, &y)
        .unwrap()
        .apply(&l)
        .unwrap()
        .predictions(&y)
        .unwrap();
    let d = brier_decomposition(&binned, BrierBinning::Distinct).unwrap();
    assert_eq!((d.within_bin_variance, d.within_bin_covariance), (0.0, 0.0));
    assert!((d.murphy() - d.brier).abs() < 1e-14, "{d:?}");
    assert_eq!(
        brier_decomposition(&p, BrierBinning::EqualWidth(0)).unwrap_err(),
        CalibError::ZeroBins
    );
}

#[test]
fn predictions_from_probabilities() {
    let probs = [0.7, 0.2, 0.1, 0.2, 0.2, 0.6];
    let p = Predictions::from_probabilities(&probs, 3, &[0, 1]).unwrap();
    assert_eq!(p.predicted(), &[0, 2]);
    assert_eq!(p.confidences(), &[0.7, 0.6]);
    assert!((nll(&p) - 0.5 * (-(0.7f64.ln()) - 0.2f64.ln())).abs() < 1e-15);
    assert!(matches!(
        Predictions::from_probabilities(&[0.5, 1.5], 2, &[0]).unwrap_err(),
        CalibError::InvalidProbability {
            row: 0,
            column: 1,
            ..
        }
    ));
    assert!(matches!(
        Predictions::from_probabilities(&[0.5, f64::NAN], 2, &[0]).unwrap_err(),
        CalibError::InvalidProbability { .. }
    ));
    assert!(matches!(
        Predictions::from_probabilities(&[0.5, 0.5, 0.1], 2, &[0]).unwrap_err(),
        CalibError::LengthMismatch { .. }
    ));
}
