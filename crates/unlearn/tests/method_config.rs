//! `Method` as a config file sees it: tags, defaults, unknown fields,
//! validation that names the field.

use muq_resnet::{BnPolicy, Reduction};
use muq_unlearn::{
    FineTuneConfig, FirstOrderConfig, GradientAscentConfig, Method, RetrainConfig,
    SecondOrderConfig, Solver, UnlearnError,
};

fn parse(json: &str) -> Result<Method, serde_json::Error> {
    serde_json::from_str(json)
}

#[test]
fn a_bare_tag_gives_the_spec_defaults() {
    let m = parse(r#"{"method": "first_order"}"#).unwrap();
    assert_eq!(m, Method::default());
    let Method::FirstOrder(c) = &m else {
        panic!("{m:?}")
    };
    assert_eq!(c.tau, 2e-5);
    assert_eq!(c.bn, BnPolicy::Train);
    assert_eq!(c.reduction, Reduction::Sum);
    assert_eq!(c.batch_size, 128);
    assert!(m.is_original_first_order());
    for name in Method::SHORT_NAMES {
        let m = parse(&format!(r#"{{"method": "{name}"}}"#)).unwrap();
        assert_eq!(m.short_name(), name);
        assert_eq!(m.state_name(), name);
        assert_eq!(m, Method::from_short_name(name).unwrap());
        // Display and FromStr are the short name both ways.
        assert_eq!(m.to_string(), name);
        assert_eq!(name.parse::<Method>().unwrap(), m);
        m.validate().unwrap();
    }
}

#[test]
fn settings_are_read_beside_the_tag() {
    let m = parse(
        r#"{"method": "first_order", "tau": 1e-4, "bn": "frozen", "reduction": "mean",
            "name": "fo_frozen"}"#,
    )
    .unwrap();
    assert_eq!(
        m,
        Method::FirstOrder(FirstOrderConfig {
            name: Some("fo_frozen".into()),
            tau: 1e-4,
            bn: BnPolicy::Frozen,
            reduction: Reduction::Mean,
            batch_size: 128,
        })
    );
    assert_eq!(m.state_name(), "fo_frozen");
    assert_eq!(m.first_order_bn(), Some(BnPolicy::Frozen));
    assert!(!m.is_original_first_order());
    let m = parse(r#"{"method": "second_order", "solver": "lissa", "damping": 0.1, "tau": 1}"#)
        .unwrap();
    let Method::SecondOrder(c) = m else { panic!() };
    assert_eq!(c.solver, Solver::Lissa);
    assert_eq!(c.tau, Some(1.0));
    assert_eq!(c.damping, 0.1);
    assert_eq!(c.bn, BnPolicy::Frozen);
    assert_eq!(c.hessian_samples, 1024);
}

#[test]
fn unknown_fields_and_methods_are_errors_that_name_them() {
    let err = parse(r#"{"method": "first_order", "tua": 1e-4}"#).unwrap_err();
    assert!(err.to_string().contains("tua"), "{err}");
    let err = parse(r#"{"method": "retrain", "epochs": 3}"#).unwrap_err();
    assert!(err.to_string().contains("epochs"), "{err}");
    let err = parse(r#"{"method": "first_order", "bn": "eval"}"#).unwrap_err();
    assert!(err.to_string().contains("eval"), "{err}");
    let err = parse(r#"{"method": "newton"}"#).unwrap_err();
    assert!(err.to_string().contains("newton"), "{err}");
    let err = Method::from_short_name("newton").unwrap_err();
    assert!(
        err.to_string().contains("first_order, second_order"),
        "{err}"
    );
    let err = "newton".parse::<Method>().unwrap_err();
    assert!(err.to_string().contains("newton"), "{err}");
}

#[test]
fn every_method_round_trips_through_json() {
    let methods = [
        Method::FirstOrder(FirstOrderConfig {
            reduction: Reduction::Mean,
            ..Default::default()
        }),
        Method::SecondOrder(SecondOrderConfig {
            tau: Some(0.5),
            solver: Solver::Lissa,
            ..Default::default()
        }),
        Method::SecondOrder(SecondOrderConfig::default()),
        Method::GradientAscent(GradientAscentConfig {
            steps: 3,
            ..Default::default()
        }),
        Method::FineTune(FineTuneConfig {
            name: Some("ft2".into()),
            epochs: 2,
            ..Default::default()
        }),
        Method::Retrain(RetrainConfig::default()),
    ];
    for m in methods {
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.contains(&format!(r#""method":"{}""#, m.short_name())),
            "{json}"
        );
        assert!(!json.contains("null"), "unset options are left out: {json}");
        assert_eq!(parse(&json).unwrap(), m, "{json}");
    }
}

fn field_of(m: Method) -> (&'static str, &'static str) {
    match m.validate() {
        Err(UnlearnError::Config { method, field, .. }) => (method, field),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn validation_names_the_bad_field() {
    let cases = [
        (
            Method::FirstOrder(FirstOrderConfig {
                tau: -1.0,
                ..Default::default()
            }),
            ("first_order", "tau"),
        ),
        (
            Method::FirstOrder(FirstOrderConfig {
                batch_size: 1,
                ..Default::default()
            }),
            ("first_order", "batch_size"),
        ),
        (
            Method::FirstOrder(FirstOrderConfig {
                name: Some("original".into()),
                ..Default::default()
            }),
            ("first_order", "name"),
        ),
        (
            Method::SecondOrder(SecondOrderConfig {
                damping: f64::NAN,
                ..Default::default()
            }),
            ("second_order", "damping"),
        ),
        (
            Method::SecondOrder(SecondOrderConfig {
                max_iters: 0,
                ..Default::default()
            }),
            ("second_order", "max_iters"),
        ),
        (
            Method::SecondOrder(SecondOrderConfig {
                fd_eps: 0.0,
                ..Default::default()
            }),
            ("second_order", "fd_eps"),
        ),
        (
            Method::SecondOrder(SecondOrderConfig {
                hessian_samples: 0,
                ..Default::default()
            }),
            ("second_order", "hessian_samples"),
        ),
        (
            Method::SecondOrder(SecondOrderConfig {
                tau: Some(0.0),
                ..Default::default()
            }),
            ("second_order", "tau"),
        ),
        (
            Method::GradientAscent(GradientAscentConfig {
                steps: 0,
                ..Default::default()
            }),
            ("gradient_ascent", "steps"),
        ),
        (
            Method::GradientAscent(GradientAscentConfig {
                lr: f64::INFINITY,
                ..Default::default()
            }),
            ("gradient_ascent", "lr"),
        ),
        (
            Method::FineTune(FineTuneConfig {
                momentum: 1.0,
                ..Default::default()
            }),
            ("fine_tune", "momentum"),
        ),
        (
            Method::FineTune(FineTuneConfig {
                epochs: 0,
                ..Default::default()
            }),
            ("fine_tune", "epochs"),
        ),
        (
            Method::Retrain(RetrainConfig {
                name: Some("re train".into()),
            }),
            ("retrain", "name"),
        ),
    ];
    for (m, want) in cases {
        let msg = m.validate().unwrap_err().to_string();
        assert!(msg.contains(want.1), "{msg}");
        assert_eq!(field_of(m), want);
    }
    // Batch size 1 is fine when BatchNorm is frozen.
    Method::FirstOrder(FirstOrderConfig {
        batch_size: 1,
        bn: BnPolicy::Frozen,
        ..Default::default()
    })
    .validate()
    .unwrap();
}

/// Every setting of the field's methods, set impossibly in a config entry,
/// is rejected naming that field.
#[test]
fn field_method_settings_are_validated_by_name() {
    let cases = [
        (r#"{"method": "random_label", "epochs": 0}"#, "epochs"),
        (r#"{"method": "random_label", "lr": 0}"#, "lr"),
        (r#"{"method": "random_label", "momentum": 1}"#, "momentum"),
        (
            r#"{"method": "random_label", "weight_decay": -1}"#,
            "weight_decay",
        ),
        (
            r#"{"method": "random_label", "batch_size": 1}"#,
            "batch_size",
        ),
        (r#"{"method": "random_label", "name": "original"}"#, "name"),
        (
            r#"{"method": "salun", "mask_fraction": 0}"#,
            "mask_fraction",
        ),
        (
            r#"{"method": "salun", "mask_fraction": 1.5}"#,
            "mask_fraction",
        ),
        (r#"{"method": "salun", "epochs": 0}"#, "epochs"),
        (r#"{"method": "salun", "lr": -0.1}"#, "lr"),
        (r#"{"method": "salun", "batch_size": 0}"#, "batch_size"),
        (r#"{"method": "scrub", "epochs": 0, "msteps": 0}"#, "epochs"),
        (r#"{"method": "scrub", "msteps": 4}"#, "msteps"),
        (r#"{"method": "scrub", "kd_t": 0}"#, "kd_t"),
        (r#"{"method": "scrub", "ce_weight": -1}"#, "ce_weight"),
        (r#"{"method": "scrub", "kl_weight": -0.5}"#, "kl_weight"),
        (
            r#"{"method": "scrub", "forget_batch_size": 1}"#,
            "forget_batch_size",
        ),
        (r#"{"method": "scrub", "batch_size": 1}"#, "batch_size"),
        (r#"{"method": "scrub", "momentum": -0.1}"#, "momentum"),
        (r#"{"method": "l1_sparse", "alpha": -1e-4}"#, "alpha"),
        (
            r#"{"method": "l1_sparse", "no_l1_epochs": 11}"#,
            "no_l1_epochs",
        ),
        (r#"{"method": "l1_sparse", "epochs": 0}"#, "epochs"),
        (
            r#"{"method": "l1_sparse", "weight_decay": -1}"#,
            "weight_decay",
        ),
        (r#"{"method": "neggrad_plus", "alpha": 1}"#, "alpha"),
        (r#"{"method": "neggrad_plus", "alpha": 0}"#, "alpha"),
        (r#"{"method": "neggrad_plus", "epochs": 0}"#, "epochs"),
        (
            r#"{"method": "neggrad_plus", "batch_size": 1}"#,
            "batch_size",
        ),
        (
            r#"{"method": "neggrad_plus", "forget_batch_size": 1}"#,
            "forget_batch_size",
        ),
        (r#"{"method": "neggrad_plus", "lr": 0}"#, "lr"),
        (r#"{"method": "fisher", "alpha": 0}"#, "alpha"),
        (r#"{"method": "fisher", "name": "a b"}"#, "name"),
    ];
    for (json, field) in cases {
        let m = parse(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        let method = m.short_name();
        let msg = m.validate().unwrap_err().to_string();
        assert!(msg.contains(field), "{json}: {msg}");
        assert_eq!(field_of(m), (method, field), "{json}");
    }
    // Unknown settings of the new methods name themselves.
    for (json, word) in [
        (r#"{"method": "scrub", "T": 4}"#, "T"),
        (r#"{"method": "salun", "threshold": 0.5}"#, "threshold"),
        (r#"{"method": "fisher", "lr": 0.1}"#, "lr"),
    ] {
        let err = parse(json).unwrap_err().to_string();
        assert!(err.contains(word), "{err}");
    }
}

/// The defaults recorded from the reference code, and a round trip.
#[test]
fn field_method_defaults_follow_the_reference_code() {
    use muq_unlearn::{
        FisherConfig, L1SparseConfig, NegGradPlusConfig, RandomLabelConfig, SalunConfig,
        ScrubConfig,
    };
    assert_eq!(Method::FIELD_NAMES, Method::SHORT_NAMES[5..]);
    let Method::RandomLabel(rl) = parse(r#"{"method": "random_label"}"#).unwrap() else {
        panic!()
    };
    assert_eq!(
        (
            rl.epochs,
            rl.lr,
            rl.momentum,
            rl.weight_decay,
            rl.batch_size
        ),
        (10, 0.013, 0.9, 5e-4, 256)
    );
    let salun = SalunConfig::default();
    assert_eq!(salun.mask_fraction, 0.5);
    assert_eq!(salun.random_label(), rl);
    let s = ScrubConfig::default();
    assert_eq!((s.epochs, s.msteps, s.lr, s.kd_t), (3, 2, 5e-4, 4.0));
    assert_eq!((s.ce_weight, s.kl_weight), (0.99, 0.001));
    assert_eq!((s.forget_batch_size, s.batch_size), (512, 256));
    let l1 = L1SparseConfig::default();
    assert_eq!(
        (l1.epochs, l1.alpha, l1.no_l1_epochs, l1.lr),
        (10, 5e-4, 0, 0.01)
    );
    let ng = NegGradPlusConfig::default();
    assert_eq!(
        (ng.alpha, ng.epochs, ng.lr, ng.momentum),
        (0.9999, 5, 0.01, 0.0)
    );
    let fi = FisherConfig::default();
    assert_eq!((fi.alpha, fi.samples), (1e-7, 0));
    for m in [
        Method::RandomLabel(RandomLabelConfig {
            name: Some("rl2".into()),
            ..Default::default()
        }),
        Method::Salun(SalunConfig {
            mask_fraction: 0.3,
            ..Default::default()
        }),
        Method::Scrub(ScrubConfig::default()),
        Method::L1Sparse(L1SparseConfig::default()),
        Method::NegGradPlus(NegGradPlusConfig::default()),
        Method::Fisher(FisherConfig {
            samples: 64,
            ..Default::default()
        }),
    ] {
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.contains(&format!(r#""method":"{}""#, m.short_name())),
            "{json}"
        );
        assert_eq!(parse(&json).unwrap(), m, "{json}");
        assert_eq!(
            Method::from_short_name(m.short_name())
                .unwrap()
                .short_name(),
            m.short_name()
        );
    }
}
