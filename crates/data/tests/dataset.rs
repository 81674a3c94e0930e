//! Normalisation, batching, shuffling, splits and the synthetic generator.

use std::sync::Arc;

use candle_core::{DType, Device};
use muq_data::{
    Dataset, IMAGE_BYTES, ImageSet, NUM_CLASSES, Normalization, epoch_order, rng,
    stratified_sample, stratified_split, synthetic,
};
use proptest::prelude::*;

#[test]
fn normalisation_follows_the_formula() {
    let n = Normalization::CIFAR10;
    assert_eq!(n.mean, [0.4914, 0.4822, 0.4465]);
    assert_eq!(n.std, [0.2023, 0.1994, 0.2010]);
    assert!((n.apply(0, 0) - (-0.4914 / 0.2023)).abs() < 1e-6);
    assert!((n.apply(2, 255) - ((1.0 - 0.4465) / 0.2010)).abs() < 1e-6);
    assert!((n.apply(1, 128) - ((128.0 / 255.0 - 0.4822) / 0.1994)).abs() < 1e-6);
    let table = n.table();
    for (c, row) in table.iter().enumerate() {
        for p in 0..=255u8 {
            assert_eq!(row[usize::from(p)], n.apply(c, p));
        }
    }
    // Clean images stay inside the noise clamp range.
    assert!(table.iter().flatten().all(|v| v.abs() < 3.0));
}

#[test]
fn batches_hold_the_normalised_images_and_labels() {
    let data = synthetic::generate(0, 10, 4);
    let set = Arc::new(data.test);
    let ds = Dataset::clean(set.clone(), Normalization::CIFAR10);
    let indices = [7, 2, 2, 9];
    let (x, y) = ds.batch(&indices, &Device::Cpu).unwrap();
    assert_eq!(x.dims(), [4, 3, 32, 32]);
    assert_eq!(x.dtype(), DType::F32);
    assert_eq!(y.dims(), [4]);
    assert_eq!(y.dtype(), DType::U32);
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let ys = y.to_vec1::<u32>().unwrap();
    let mut expected = vec![0.0; IMAGE_BYTES];
    for (k, &i) in indices.iter().enumerate() {
        let image = set.image(i);
        Normalization::CIFAR10.image(image, &mut expected);
        assert_eq!(
            &xs[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES],
            expected.as_slice()
        );
        // Channel 1, row 3, column 5 is at CHW offset 1024 + 3*32 + 5.
        let p = image[1024 + 3 * 32 + 5];
        assert_eq!(
            x.get(k)
                .unwrap()
                .get(1)
                .unwrap()
                .get(3)
                .unwrap()
                .get(5)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            Normalization::CIFAR10.apply(1, p)
        );
        assert_eq!(ys[k], u32::from(set.labels()[i]));
    }
}

#[test]
fn batches_cover_the_indices_in_order_with_a_partial_last_batch() {
    let data = synthetic::generate(23, 0, 4);
    let ds = Dataset::clean(Arc::new(data.train), Normalization::CIFAR10);
    let order = epoch_order(&(0..23).collect::<Vec<_>>(), 1, 0);
    let batches = ds.batches(&order, 5, &Device::Cpu);
    assert_eq!(batches.len(), 5);
    let mut labels = Vec::new();
    let mut sizes = Vec::new();
    for b in batches {
        let (x, y) = b.unwrap();
        sizes.push(x.dims()[0]);
        labels.extend(y.to_vec1::<u32>().unwrap());
    }
    assert_eq!(sizes, [5, 5, 5, 5, 3]);
    let expected: Vec<u32> = order.iter().map(|&i| u32::from(ds.labels()[i])).collect();
    assert_eq!(labels, expected);

    let mut it = ds.batches(&order, 23, &Device::Cpu);
    assert_eq!(it.len(), 1);
    it.next();
    assert_eq!(it.len(), 0);
    assert!(it.next().is_none());
    assert_eq!(ds.batches(&[], 8, &Device::Cpu).len(), 0);
}

#[test]
fn epoch_orders_are_seeded_permutations() {
    let idx: Vec<usize> = (100..400).collect();
    let a = epoch_order(&idx, 101, 0);
    assert_eq!(a, epoch_order(&idx, 101, 0));
    assert_ne!(a, idx);
    assert_ne!(a, epoch_order(&idx, 101, 1));
    assert_ne!(a, epoch_order(&idx, 102, 0));
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, idx);
}

#[test]
fn streams_are_named_and_seeded() {
    use rand::RngCore;
    let draw = |seed, name| rng::stream(seed, name).next_u64();
    assert_eq!(draw(1, rng::SPLIT), draw(1, rng::SPLIT));
    let names = [
        rng::SPLIT,
        rng::MODALITY,
        rng::FORGET,
        rng::INIT,
        rng::SHUFFLE,
        rng::DROPOUT,
        rng::SUBSET,
    ];
    let mut values: Vec<u64> = names.iter().map(|n| draw(1, n)).collect();
    values.push(draw(2, rng::SPLIT));
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), names.len() + 1);
}

#[test]
fn test_set_splits_into_balanced_halves() {
    let labels: Vec<u8> = (0..10_000).map(|i| (i % 10) as u8).collect();
    let (cal, eval) = stratified_split(&labels, 0.5, 100);
    assert_eq!((cal.len(), eval.len()), (5_000, 5_000));
    for part in [&cal, &eval] {
        let mut counts = [0; NUM_CLASSES];
        for &i in part.iter() {
            counts[usize::from(labels[i])] += 1;
        }
        assert_eq!(counts, [500; NUM_CLASSES]);
    }
    assert_eq!(stratified_split(&labels, 0.5, 100), (cal.clone(), eval));
    assert_ne!(stratified_split(&labels, 0.5, 101).0, cal);
}

fn class_counts(labels: &[u8], part: &[usize]) -> Vec<usize> {
    let mut counts = vec![0; 256];
    for &i in part {
        counts[usize::from(labels[i])] += 1;
    }
    counts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A split is a stratified partition: sorted, disjoint, covering, and
    /// each class split round(n_c · f) / rest.
    #[test]
    fn split_is_a_stratified_partition(
        labels in prop::collection::vec(0u8..12, 0..300),
        f in 0.0f64..=1.0,
        seed in any::<u64>(),
    ) {
        let (a, b) = stratified_split(&labels, f, seed);
        prop_assert!(a.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(b.windows(2).all(|w| w[0] < w[1]));
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..labels.len()).collect::<Vec<_>>());
        let total = class_counts(&labels, &(0..labels.len()).collect::<Vec<_>>());
        let first = class_counts(&labels, &a);
        for c in 0..256 {
            prop_assert_eq!(first[c], (total[c] as f64 * f).round() as usize);
        }
    }

    /// A stratified sample has the requested size, no repeats, and gives each
    /// class its proportional share to within one.
    #[test]
    fn sample_is_stratified(
        labels in prop::collection::vec(0u8..10, 1..300),
        frac in 0.0f64..=1.0,
        seed in any::<u64>(),
    ) {
        let n = (labels.len() as f64 * frac) as usize;
        let s = stratified_sample(&labels, n, seed);
        prop_assert_eq!(s.len(), n);
        prop_assert!(s.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(s.iter().all(|&i| i < labels.len()));
        let total = class_counts(&labels, &(0..labels.len()).collect::<Vec<_>>());
        let got = class_counts(&labels, &s);
        for c in 0..10 {
            let share = n as f64 * total[c] as f64 / labels.len() as f64;
            prop_assert!((got[c] as f64 - share).abs() < 1.0, "class {} got {} share {}", c, got[c], share);
        }
        prop_assert_eq!(stratified_sample(&labels, n, seed), s);
    }

    /// An epoch order is a permutation of its input.
    #[test]
    fn epoch_order_is_a_permutation(n in 0usize..200, seed in any::<u64>(), epoch in 0usize..50) {
        let idx: Vec<usize> = (0..n).map(|i| i * 3).collect();
        let mut o = epoch_order(&idx, seed, epoch);
        o.sort_unstable();
        prop_assert_eq!(o, idx);
    }
}

#[test]
fn balanced_sample_of_a_balanced_set() {
    let labels: Vec<u8> = (0..50_000).map(|i| (i % 10) as u8).collect();
    let s = stratified_sample(&labels, 5_000, 3);
    assert_eq!(&class_counts(&labels, &s)[..10], [500; 10]);
    assert_ne!(s, stratified_sample(&labels, 5_000, 4));
}

#[test]
fn synthetic_data_is_seeded_and_balanced() {
    let a = synthetic::generate(105, 20, 1);
    assert_eq!(a, synthetic::generate(105, 20, 1));
    assert_ne!(a.train, synthetic::generate(105, 20, 2).train);
    let counts = a.train.class_counts();
    assert!(counts.iter().all(|&c| c == 10 || c == 11), "{counts:?}");
    assert_eq!(a.test.class_counts(), [2; NUM_CLASSES]);
    assert_eq!(a.class_names, muq_data::CLASS_NAMES);
    // Labels are shuffled, not round-robin.
    assert_ne!(a.train.labels()[..10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // Pixels use the whole range, not a constant.
    let px = a.train.images();
    assert!(px.iter().min().unwrap() < &40 && px.iter().max().unwrap() > &200);
}

/// Average-pooled 8×8 features of a set (192 values per image).
fn pooled(set: &ImageSet) -> Vec<Vec<f32>> {
    (0..set.len())
        .map(|i| {
            let img = set.image(i);
            let mut f = vec![0.0; 3 * 8 * 8];
            for c in 0..3 {
                for y in 0..32 {
                    for x in 0..32 {
                        f[c * 64 + (y / 4) * 8 + x / 4] +=
                            f32::from(img[c * 1024 + y * 32 + x]) / 16.0;
                    }
                }
            }
            f
        })
        .collect()
}

/// The classes are learnable: even a nearest-centroid classifier on 8×8
/// pooled pixels is far above chance (10%).
#[test]
fn synthetic_classes_are_learnable() {
    let data = synthetic::generate(2_000, 500, 5);
    let train = pooled(&data.train);
    let mut centroid = vec![vec![0.0f32; 192]; NUM_CLASSES];
    for (f, &l) in train.iter().zip(data.train.labels()) {
        for (c, v) in centroid[usize::from(l)].iter_mut().zip(f) {
            *c += v / 200.0;
        }
    }
    let test = pooled(&data.test);
    let correct = test
        .iter()
        .zip(data.test.labels())
        .filter(|(f, l)| {
            let dist = |c: &Vec<f32>| {
                c.iter()
                    .zip(f.iter())
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
            };
            let best = (0..NUM_CLASSES)
                .min_by(|&a, &b| dist(&centroid[a]).total_cmp(&dist(&centroid[b])))
                .unwrap();
            best == usize::from(**l)
        })
        .count();
    let acc = correct as f64 / test.len() as f64;
    eprintln!("nearest-centroid accuracy on synthetic data: {acc:.3}");
    assert!(acc > 0.5, "accuracy {acc}");
}

/// The checksum is what base-model caches key on: a modification that
/// changes nothing (random) leaves it equal to the clean dataset's, and any
/// real change (a label, the noise, another seed's noise, the images) moves it.
#[test]
fn checksum_follows_the_data_a_model_sees() {
    use muq_data::{ModalityConfig, ModalityKind, Modification};
    let data = synthetic::generate(200, 0, 5);
    let set = Arc::new(data.train);
    let norm = Normalization::CIFAR10;
    let clean = Dataset::clean(set.clone(), norm);
    let modified = |kind, seed| {
        let m = Modification::draw(&ModalityConfig::new(kind), &set, seed).unwrap();
        Dataset::modified(set.clone(), &m, norm)
    };
    assert_eq!(
        clean.checksum(),
        Dataset::clean(set.clone(), norm).checksum()
    );
    assert_eq!(
        modified(ModalityKind::Random, 1).checksum(),
        clean.checksum(),
        "random forgetting changes no training data"
    );
    let noise = modified(ModalityKind::Noise, 1).checksum();
    let label = modified(ModalityKind::Label, 1).checksum();
    for other in [&noise, &label] {
        assert_ne!(other, &clean.checksum());
    }
    assert_ne!(noise, label);
    assert_ne!(noise, modified(ModalityKind::Noise, 2).checksum());
    assert_ne!(label, modified(ModalityKind::Label, 2).checksum());
    let mut other_norm = norm;
    other_norm.mean[0] += 0.01;
    assert_ne!(
        Dataset::clean(set.clone(), other_norm).checksum(),
        clean.checksum()
    );
    let fewer = Arc::new(set.subset(&(0..199).collect::<Vec<_>>()));
    assert_ne!(Dataset::clean(fewer, norm).checksum(), clean.checksum());
}
