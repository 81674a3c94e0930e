//! The modalities: pools, forget sets, corruptions, seeding and validation.

use std::sync::Arc;

use muq_data::{
    DataError, Dataset, IMAGE_BYTES, ImageSet, ModalityConfig, ModalityKind, Modification,
    NOISE_CLAMP, Normalization, synthetic,
};

fn train(n: usize) -> ImageSet {
    synthetic::generate(n, 0, 11).train
}

fn cfg(kind: ModalityKind) -> ModalityConfig {
    ModalityConfig::new(kind)
}

fn is_sorted_unique(v: &[usize]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

#[test]
fn sets_have_the_specified_sizes_and_relations() {
    let set = train(1000);
    for kind in ModalityKind::STUDY {
        let m = Modification::draw(&cfg(kind), &set, 101).unwrap();
        assert_eq!(m.kind, kind);
        assert_eq!(m.forget.len(), 50, "{kind}");
        let pool = if kind == ModalityKind::Random {
            50
        } else {
            200
        };
        assert_eq!(m.pool.len(), pool, "{kind}");
        assert_eq!(m.retain.len(), 950);
        assert_eq!(m.n_train(), 1000);
        for v in [&m.pool, &m.forget, &m.retain] {
            assert!(is_sorted_unique(v));
            assert!(v.iter().all(|&i| i < 1000));
        }
        assert!(m.forget.iter().all(|i| m.pool.binary_search(i).is_ok()));
        let mut all: Vec<usize> = m.forget.iter().chain(&m.retain).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        match kind {
            ModalityKind::Random => {
                assert_eq!(m.pool, m.forget);
                assert!(m.labels.is_empty() && m.noise.is_empty());
            }
            ModalityKind::Noise => {
                assert!(m.labels.is_empty());
                assert_eq!(m.noise.iter().map(|(i, _)| *i).collect::<Vec<_>>(), m.pool);
                assert!(m.noise.iter().all(|(_, v)| v.len() == IMAGE_BYTES));
                assert_eq!(m.sigma, 0.2);
            }
            ModalityKind::Label => {
                assert!(m.noise.is_empty());
                assert_eq!(m.labels.iter().map(|(i, _)| *i).collect::<Vec<_>>(), m.pool);
            }
            ModalityKind::Class => unreachable!("not a study modality"),
        }
    }
}

#[test]
fn full_size_defaults_give_2500_of_50000() {
    let c = cfg(ModalityKind::Noise);
    assert_eq!(c.forget_size(50_000), 2_500);
    assert_eq!(c.pool_size(50_000), 10_000);
    assert_eq!(cfg(ModalityKind::Random).pool_size(50_000), 2_500);
}

/// Each modality changes exactly its pool and nothing else.
#[test]
fn a_modality_changes_exactly_its_pool() {
    let set = Arc::new(train(300));
    let norm = Normalization::CIFAR10;
    let clean = Dataset::clean(set.clone(), norm);
    assert_eq!(clean.labels(), set.labels());
    for kind in ModalityKind::ALL {
        let m = Modification::draw(&cfg(kind), &set, 5).unwrap();
        let modified = Dataset::modified(set.clone(), &m, norm);
        assert_eq!(modified.len(), clean.len());
        let (mut a, mut b) = (vec![0.0; IMAGE_BYTES], vec![0.0; IMAGE_BYTES]);
        for i in 0..set.len() {
            clean.write_normalized(i, &mut a);
            modified.write_normalized(i, &mut b);
            let in_pool = m.pool.binary_search(&i).is_ok();
            let label_changed = clean.labels()[i] != modified.labels()[i];
            let image_changed = a != b;
            match kind {
                ModalityKind::Random | ModalityKind::Class => {
                    assert!(!label_changed && !image_changed)
                }
                ModalityKind::Label => {
                    assert_eq!(label_changed, in_pool, "{i}");
                    assert!(!image_changed);
                }
                ModalityKind::Noise => {
                    assert_eq!(image_changed, in_pool, "{i}");
                    assert!(!label_changed);
                    assert!(b.iter().all(|v| v.abs() <= NOISE_CLAMP));
                    if in_pool {
                        let noise = modified.noise(i).unwrap();
                        for ((&x, &y), &z) in a.iter().zip(&b).zip(noise) {
                            assert_eq!(y, (x + z).clamp(-3.0, 3.0));
                        }
                    } else {
                        assert!(modified.noise(i).is_none());
                    }
                }
            }
        }
    }
}

#[test]
fn flipped_labels_cover_the_other_nine_classes() {
    let set = train(2000);
    let m = Modification::draw(&cfg(ModalityKind::Label), &set, 3).unwrap();
    let mut seen = [[0usize; 10]; 10];
    for &(i, l) in &m.labels {
        let old = set.labels()[i];
        assert_ne!(l, old);
        assert!(l < 10);
        seen[usize::from(old)][usize::from(l)] += 1;
    }
    // 400 flips: every class is flipped to at least 6 distinct others.
    for (old, row) in seen.iter().enumerate() {
        assert!(
            row.iter().filter(|&&c| c > 0).count() >= 6,
            "{old}: {row:?}"
        );
    }
}

#[test]
fn noise_has_the_configured_scale() {
    let set = train(100);
    let mut c = cfg(ModalityKind::Noise);
    c.sigma = 0.5;
    let m = Modification::draw(&c, &set, 8).unwrap();
    let values: Vec<f64> = m
        .noise
        .iter()
        .flat_map(|(_, v)| v.iter().map(|&x| f64::from(x)))
        .collect();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((std - 0.5).abs() < 0.01, "std {std}");
    assert_eq!(m.sigma, 0.5);

    c.sigma = 0.0;
    let m = Modification::draw(&c, &set, 8).unwrap();
    assert!(m.noise.iter().all(|(_, v)| v.iter().all(|&x| x == 0.0)));
}

#[test]
fn same_seed_same_draw_different_seed_different() {
    let set = train(500);
    for kind in ModalityKind::ALL {
        let a = Modification::draw(&cfg(kind), &set, 101).unwrap();
        let b = Modification::draw(&cfg(kind), &set, 101).unwrap();
        let c = Modification::draw(&cfg(kind), &set, 102).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.checksum(), b.checksum());
        assert_ne!(a.forget, c.forget, "{kind}");
        assert_ne!(a.checksum(), c.checksum());
        if kind != ModalityKind::Random {
            assert_ne!(a.pool, c.pool);
        }
    }
}

/// Pool and corruptions come from their own stream: changing how many are
/// forgotten leaves them untouched.
#[test]
fn remove_prop_does_not_change_the_corruptions() {
    let set = train(500);
    for kind in [ModalityKind::Noise, ModalityKind::Label] {
        let a = Modification::draw(&cfg(kind), &set, 9).unwrap();
        let mut c = cfg(kind);
        c.remove_prop = 0.1;
        let b = Modification::draw(&c, &set, 9).unwrap();
        assert_eq!(a.pool, b.pool);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.noise, b.noise);
        assert_eq!(b.forget.len(), 50);
    }
}

fn field_of(err: DataError) -> &'static str {
    match err {
        DataError::InvalidConfig { field, .. } => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn invalid_configurations_name_their_field() {
    let set = train(100);
    let base = cfg(ModalityKind::Noise);
    let cases: Vec<(ModalityConfig, &str)> = vec![
        (
            ModalityConfig {
                remove_prop: 0.0,
                ..base.clone()
            },
            "remove_prop",
        ),
        (
            ModalityConfig {
                remove_prop: -0.1,
                ..base.clone()
            },
            "remove_prop",
        ),
        (
            ModalityConfig {
                remove_prop: 1.5,
                ..base.clone()
            },
            "remove_prop",
        ),
        (
            ModalityConfig {
                remove_prop: f64::NAN,
                ..base.clone()
            },
            "remove_prop",
        ),
        (
            ModalityConfig {
                pool_prop: 0.0,
                ..base.clone()
            },
            "pool_prop",
        ),
        (
            ModalityConfig {
                pool_prop: 1.01,
                ..base.clone()
            },
            "pool_prop",
        ),
        (
            ModalityConfig {
                pool_prop: f64::INFINITY,
                ..base.clone()
            },
            "pool_prop",
        ),
        (
            ModalityConfig {
                sigma: -0.1,
                ..base.clone()
            },
            "sigma",
        ),
        (
            ModalityConfig {
                sigma: f32::NAN,
                ..base.clone()
            },
            "sigma",
        ),
        (
            ModalityConfig {
                sigma: f32::INFINITY,
                ..base.clone()
            },
            "sigma",
        ),
        // forget larger than pool
        (
            ModalityConfig {
                remove_prop: 0.3,
                ..base.clone()
            },
            "remove_prop",
        ),
        (
            ModalityConfig {
                remove_prop: 0.3,
                ..cfg(ModalityKind::Label)
            },
            "remove_prop",
        ),
        // empty forget set: 0.4% of 100 rounds to 0
        (
            ModalityConfig {
                remove_prop: 0.004,
                ..base.clone()
            },
            "remove_prop",
        ),
    ];
    for (c, field) in cases {
        let err = c.validate(set.len()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("`{field}`")), "{c:?}: {msg}");
        assert_eq!(field_of(err), field, "{c:?}");
        assert_eq!(
            field_of(Modification::draw(&c, &set, 1).unwrap_err()),
            field
        );
    }
    // Random forgets from the whole set: remove_prop may exceed pool_prop.
    let ok = ModalityConfig {
        remove_prop: 0.3,
        ..cfg(ModalityKind::Random)
    };
    assert!(ok.validate(100).is_ok());
    assert_eq!(Modification::draw(&ok, &set, 1).unwrap().forget.len(), 30);
    // A pool of everything is fine, and so is forgetting all but one image.
    let most = ModalityConfig {
        remove_prop: 0.99,
        pool_prop: 1.0,
        ..base
    };
    let m = Modification::draw(&most, &set, 1).unwrap();
    assert_eq!((m.forget.len(), m.retain.len()), (99, 1));
    // Forgetting every image leaves nothing to retain: refused, naming the
    // field, before any data is touched.
    let all = ModalityConfig {
        remove_prop: 1.0,
        ..most
    };
    let err = Modification::draw(&all, &set, 1).unwrap_err();
    assert!(err.to_string().contains("none to retain"), "{err}");
    assert_eq!(field_of(err), "remove_prop");
    // An empty training set has an empty forget set.
    assert_eq!(
        field_of(cfg(ModalityKind::Random).validate(0).unwrap_err()),
        "remove_prop"
    );
}

#[test]
fn kind_parses_and_prints() {
    for kind in ModalityKind::ALL {
        assert_eq!(kind.to_string().parse::<ModalityKind>().unwrap(), kind);
    }
    assert_eq!(
        "Noise".parse::<ModalityKind>().unwrap(),
        ModalityKind::Noise
    );
    assert_eq!(ModalityKind::Label.to_string(), "label");
    let err = "gaussian".parse::<ModalityKind>().unwrap_err();
    assert_eq!(field_of(err), "kind");
}

#[test]
#[should_panic(expected = "drawn for")]
fn modified_rejects_a_modification_for_another_set() {
    let m = Modification::draw(&cfg(ModalityKind::Label), &train(100), 1).unwrap();
    let _ = Dataset::modified(Arc::new(train(50)), &m, Normalization::CIFAR10);
}

/// Class-wise forgetting: the forget set is exactly one class, the pool is
/// the forget set, nothing is corrupted; the class is the configured one or
/// a seeded draw; impossible settings name the `class` field.
#[test]
fn class_modality_forgets_one_whole_class() {
    let set = train(500);
    let mut c = cfg(ModalityKind::Class);
    c.class = Some(3);
    let m = Modification::draw(&c, &set, 1).unwrap();
    assert_eq!(m.class, Some(3));
    let expected: Vec<usize> = (0..500).filter(|&i| set.labels()[i] == 3).collect();
    assert!(!expected.is_empty());
    assert_eq!(m.forget, expected);
    assert_eq!(m.pool, m.forget);
    assert!(m.labels.is_empty() && m.noise.is_empty());
    assert_eq!(m.n_train(), 500);
    assert!(m.retain.iter().all(|&i| set.labels()[i] != 3));
    assert!(!ModalityKind::Class.changes_data());

    // Left out: a seeded choice, the same for the same seed.
    let seeded = |seed| Modification::draw(&cfg(ModalityKind::Class), &set, seed).unwrap();
    assert_eq!(seeded(7), seeded(7));
    let classes: std::collections::BTreeSet<u8> = (0..20).filter_map(|s| seeded(s).class).collect();
    assert!(
        classes.len() > 3,
        "the seeded class varies with the seed: {classes:?}"
    );

    // Errors name the field.
    c.class = Some(10);
    assert_eq!(field_of(c.validate_values().unwrap_err()), "class");
    let mut wrong_kind = cfg(ModalityKind::Random);
    wrong_kind.class = Some(1);
    assert_eq!(field_of(wrong_kind.validate_values().unwrap_err()), "class");
    let only_zeros = {
        let mut s = train(50);
        let (images, _) = s.clone().into_parts();
        s = ImageSet::new(images, vec![0; 50]).unwrap();
        s
    };
    c.class = Some(4);
    let err = Modification::draw(&c, &only_zeros, 1).unwrap_err();
    assert_eq!(field_of(err), "class");
    // The configured class is serialised only when given, so older configs
    // keep their ids.
    let json = serde_json::to_string(&cfg(ModalityKind::Random)).unwrap();
    assert!(!json.contains("class"), "{json}");
}
