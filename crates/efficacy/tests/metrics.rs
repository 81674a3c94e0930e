//! Hand-computed checks of the loss AUC, the feature functions, the logit
//! helpers, `MiaFeature`'s names, and that every error names its culprit.

use muq_efficacy::{
    EfficacyError, MiaFeature, MiaSet, SvcParams, confidence, correctness, cross_entropy, entropy,
    loss_auc, mia_efficacy, mia_efficacy_with, mia_features, modified_entropy,
    modified_entropy_song_mittal, softmax_probs, svc_attack,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-14 * b.abs().max(1.0)
}

#[test]
fn loss_auc_counts_ties_as_half() {
    // forget {1, 2, 2, 4} against held-out {2, 3, 5}, pairs counted by hand:
    // 1 < all three: 3; each 2: tie with 2 (½), below 3 and 5: 2.5 each;
    // 4: below 5 only: 1. U = 3 + 2.5 + 2.5 + 1 = 9 over 12 pairs.
    let auc = loss_auc(&[1.0, 2.0, 2.0, 4.0], &[2.0, 3.0, 5.0]).unwrap();
    assert_eq!(auc, 9.0 / 12.0);
    // Order of the inputs does not matter.
    assert_eq!(
        loss_auc(&[4.0, 2.0, 1.0, 2.0], &[5.0, 2.0, 3.0]).unwrap(),
        0.75
    );
    // -0.0 and 0.0 are a tie; infinities rank.
    assert_eq!(loss_auc(&[-0.0], &[0.0]).unwrap(), 0.5);
    assert_eq!(loss_auc(&[1.0], &[f64::INFINITY]).unwrap(), 1.0);
}

#[test]
fn loss_auc_extremes() {
    // Forget losses all lower: perfectly separable as members.
    assert_eq!(loss_auc(&[0.1, 0.2, 0.3], &[0.4, 0.5]).unwrap(), 1.0);
    // All higher: 0.
    assert_eq!(loss_auc(&[0.4, 0.5], &[0.1, 0.2, 0.3]).unwrap(), 0.0);
    // All equal: indistinguishable.
    assert_eq!(loss_auc(&[0.7; 5], &[0.7; 3]).unwrap(), 0.5);
    // Identical samples: 0.5 as well.
    let l = [0.3, 0.1, 0.9, 0.5];
    assert_eq!(loss_auc(&l, &l).unwrap(), 0.5);
}

#[test]
fn loss_auc_matches_the_quadratic_definition() {
    let forget: Vec<f64> = (0..57).map(|i| ((i * 37) % 23) as f64 * 0.5).collect();
    let heldout: Vec<f64> = (0..41).map(|i| ((i * 11) % 19) as f64 * 0.6).collect();
    let mut u = 0.0;
    for f in &forget {
        for h in &heldout {
            u += if f < h {
                1.0
            } else if f == h {
                0.5
            } else {
                0.0
            };
        }
    }
    let want = u / (forget.len() * heldout.len()) as f64;
    assert!(close(loss_auc(&forget, &heldout).unwrap(), want));
}

#[test]
fn entropy_by_hand() {
    let k = 10;
    let uniform = vec![0.1; k];
    assert!(close(entropy(&uniform, k).unwrap()[0], (k as f64).ln()));
    let mut one_hot = vec![0.0; k];
    one_hot[3] = 1.0;
    assert_eq!(entropy(&one_hot, k).unwrap(), vec![0.0]);
    let h = entropy(&[0.5, 0.25, 0.25], 3).unwrap()[0];
    assert!(close(h, 1.5 * 2f64.ln()));
}

#[test]
fn confidence_and_correctness_by_hand() {
    let p = [0.1, 0.6, 0.3, 0.4, 0.4, 0.2, 0.0, 0.0, 1.0];
    let labels = [2, 1, 2];
    assert_eq!(confidence(&p, 3, &labels).unwrap(), vec![0.3, 0.4, 1.0]);
    // Row 1 ties 0 and 1: the first maximum (0) is the prediction.
    assert_eq!(correctness(&p, 3, &labels).unwrap(), vec![0.0, 0.0, 1.0]);
    assert_eq!(correctness(&p, 3, &[1, 0, 2]).unwrap(), vec![1.0, 1.0, 1.0]);
}

#[test]
fn modified_entropy_follows_the_reference_code() {
    let (a, b, c) = (0.7f64, 0.2f64, 0.1f64);
    let p = [a, b, c, c, b, a];
    // Labels {0, 2} occur: columns 0 and 2 take (1 - p) ln p, column 1 p ln p,
    // whatever each row's own label is.
    let want0 = -((1.0 - a) * a.ln() + b * b.ln() + (1.0 - c) * c.ln());
    let want1 = -((1.0 - c) * c.ln() + b * b.ln() + (1.0 - a) * a.ln());
    let m = modified_entropy(&p, 3, &[0, 2]).unwrap();
    assert!(close(m[0], want0) && close(m[1], want1), "{m:?}");
    assert_eq!(modified_entropy(&p, 3, &[2, 0]).unwrap(), m);
    // Only label 0 present: only column 0 is reversed.
    let m = modified_entropy(&p, 3, &[0, 0]).unwrap();
    assert!(close(m[0], -((1.0 - a) * a.ln() + b * b.ln() + c * c.ln())));
    // p = 0 uses ln(1e-30) for the log.
    let m = modified_entropy(&[1.0, 0.0], 2, &[0]).unwrap();
    assert!(close(m[0], -(1e-30f64).ln() * 0.0), "{m:?}");
    let m = modified_entropy(&[0.0, 1.0], 2, &[0]).unwrap();
    assert!(close(m[0], -(1e-30f64).ln()), "{m:?}");
}

#[test]
fn song_mittal_modified_entropy_by_hand() {
    let (a, b, c) = (0.7f64, 0.2f64, 0.1f64);
    let m = modified_entropy_song_mittal(&[a, b, c], 3, &[1]).unwrap();
    let want = -((1.0 - b) * b.ln() + a * (1.0 - a).ln() + c * (1.0 - c).ln());
    assert!(close(m[0], want));
    // A confident correct prediction has low modified entropy.
    let m = modified_entropy_song_mittal(&[1.0, 0.0], 2, &[0]).unwrap();
    assert_eq!(m[0], 0.0);
}

#[test]
fn mia_features_widths() {
    let p = [0.9, 0.1, 0.4, 0.6];
    for f in MiaFeature::ALL {
        let x = mia_features(f, &p, 2, &[0, 1]).unwrap();
        assert_eq!(x.len(), 2 * f.width(2), "{f}");
    }
}

#[test]
fn feature_names_round_trip() {
    for f in MiaFeature::ALL {
        assert_eq!(f.to_string().parse::<MiaFeature>().unwrap(), f);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, format!("\"{f}\""));
        assert_eq!(serde_json::from_str::<MiaFeature>(&json).unwrap(), f);
    }
    assert_eq!(
        serde_json::from_str::<MiaFeature>("\"m_entropy\"").unwrap(),
        MiaFeature::ModifiedEntropy
    );
    let err = "confidance".parse::<MiaFeature>().unwrap_err();
    assert!(err.to_string().contains("\"confidance\""), "{err}");
    assert_eq!(MiaFeature::default(), MiaFeature::Confidence);
}

#[test]
fn softmax_and_cross_entropy() {
    let z = [1.0f32, 2.0, 3.0, -1000.0, 0.0, 1000.0];
    let p = softmax_probs(&z, 3).unwrap();
    let e = [1f64.exp(), 2f64.exp(), 3f64.exp()];
    let s: f64 = e.iter().sum();
    for j in 0..3 {
        assert!(close(p[j], e[j] / s));
    }
    assert_eq!(&p[3..], &[0.0, 0.0, 1.0]);
    let l = cross_entropy(&z, 3, &[0, 0]).unwrap();
    assert!(close(l[0], -(e[0] / s).ln()));
    assert_eq!(l[1], 2000.0);
}

#[test]
fn errors_name_the_culprit() {
    let ok = [0.5, 0.5];
    let lab = [0];
    let set = MiaSet::new(&ok, &lab);
    let mia = |m: MiaSet<'_>, n: MiaSet<'_>, t: MiaSet<'_>| {
        mia_efficacy(MiaFeature::Confidence, 2, m, n, t).unwrap_err()
    };

    let e = mia(set, set, MiaSet::new(&[], &[]));
    assert_eq!(e, EfficacyError::Empty { what: "target" });
    assert!(e.to_string().contains("target is empty"), "{e}");

    let e = mia(MiaSet::new(&[0.5, 0.5, 0.5], &lab), set, set);
    assert_eq!(
        e,
        EfficacyError::Ragged {
            what: "shadow members",
            len: 3,
            width: 2
        }
    );
    assert!(e.to_string().contains("shadow members is ragged"), "{e}");

    let e = mia(set, MiaSet::new(&ok, &[2]), set);
    assert_eq!(
        e,
        EfficacyError::LabelOutOfRange {
            what: "shadow non-members",
            row: 0,
            label: 2,
            num_classes: 2
        }
    );
    assert!(e.to_string().contains("label 2 at row 0"), "{e}");

    let e = mia(set, set, MiaSet::new(&ok, &[0, 1]));
    assert!(matches!(
        e,
        EfficacyError::LengthMismatch {
            what: "target",
            expected: 1,
            found: 2
        }
    ));

    let e = mia(set, set, MiaSet::new(&[0.5, f64::NAN], &lab));
    assert_eq!(
        e,
        EfficacyError::NaN {
            what: "target",
            index: 1
        }
    );
    assert!(e.to_string().contains("target: NaN at index 1"), "{e}");

    let e = mia(MiaSet::new(&[1.5, -0.5], &lab), set, set);
    assert!(matches!(
        e,
        EfficacyError::NotAProbability {
            what: "shadow members",
            row: 0,
            column: 0,
            ..
        }
    ));

    assert_eq!(
        mia_efficacy(MiaFeature::Entropy, 0, set, set, set).unwrap_err(),
        EfficacyError::ZeroClasses
    );

    let e = loss_auc(&[0.1, f64::NAN], &[0.2]).unwrap_err();
    assert_eq!(
        e,
        EfficacyError::NaN {
            what: "forget losses",
            index: 1
        }
    );
    let e = loss_auc(&[0.1], &[]).unwrap_err();
    assert_eq!(
        e,
        EfficacyError::Empty {
            what: "heldout losses"
        }
    );

    assert!(matches!(
        entropy(&[0.5, 0.5, 0.5], 2).unwrap_err(),
        EfficacyError::Ragged {
            what: "probabilities",
            len: 3,
            width: 2
        }
    ));
    assert!(matches!(
        confidence(&ok, 2, &[5]).unwrap_err(),
        EfficacyError::LabelOutOfRange {
            what: "labels",
            label: 5,
            ..
        }
    ));

    let params = SvcParams {
        c: 0.0,
        ..SvcParams::default()
    };
    let e = mia_efficacy_with(MiaFeature::Confidence, 2, set, set, set, &params).unwrap_err();
    assert_eq!(
        e,
        EfficacyError::InvalidParameter {
            name: "c",
            value: 0.0
        }
    );

    let params = SvcParams {
        max_shadow_rows: 1,
        ..SvcParams::default()
    };
    let e = mia_efficacy_with(MiaFeature::Confidence, 2, set, set, set, &params).unwrap_err();
    assert!(
        matches!(
            e,
            EfficacyError::ShadowTooLarge {
                rows: 2,
                max: 1,
                ..
            }
        ),
        "{e}"
    );

    let e = svc_attack(&[0.1], &[f64::INFINITY], &[0.2], 1, &SvcParams::default()).unwrap_err();
    assert!(matches!(
        e,
        EfficacyError::NonFinite {
            what: "non-member features",
            index: 0,
            ..
        }
    ));

    let e = cross_entropy(&[0.0f32, 1.0], 2, &[3]).unwrap_err();
    assert!(e.to_string().contains("label 3 at sample 0"), "{e}");
    let e = softmax_probs(&[0.0f32, f32::NAN], 2).unwrap_err();
    assert!(e.to_string().contains("row 0, column 1"), "{e}");
}
