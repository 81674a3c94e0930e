//! Stratified splits and samples.

use rand::seq::{SliceRandom, index};

use crate::rng;

/// Indices of each label value, ascending, for the label values present (ascending).
fn by_class(labels: &[u8]) -> Vec<Vec<usize>> {
    let mut classes: Vec<Vec<usize>> = vec![Vec::new(); 256];
    for (i, &l) in labels.iter().enumerate() {
        classes[usize::from(l)].push(i);
    }
    classes.retain(|c| !c.is_empty());
    classes
}

/// Splits `0..labels.len()` in two, stratified by label.
///
/// Of the `n_c` indices of each class, `round(n_c · first_fraction)` chosen
/// uniformly at random go to the first part, the rest to the second. Both
/// parts are sorted and together are a partition of `0..labels.len()`.
/// Randomness comes from [`rng::stream`]`(seed, `[`rng::SPLIT`]`)`; the
/// 5,000/5,000 calibration/evaluation split of the CIFAR-10 test set is
/// `stratified_split(test.labels(), 0.5, seed)`.
///
/// # Panics
/// If `first_fraction` is not in `[0, 1]`.
pub fn stratified_split(labels: &[u8], first_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    assert!(
        (0.0..=1.0).contains(&first_fraction),
        "first_fraction must be in [0, 1], got {first_fraction}"
    );
    let mut rng = rng::stream(seed, rng::SPLIT);
    let mut first = Vec::new();
    let mut second = Vec::new();
    for mut class in by_class(labels) {
        let k = (class.len() as f64 * first_fraction).round() as usize;
        class.shuffle(&mut rng);
        let (a, b) = class.split_at(k.min(class.len()));
        first.extend_from_slice(a);
        second.extend_from_slice(b);
    }
    first.sort_unstable();
    second.sort_unstable();
    (first, second)
}

/// A class-stratified random sample of `n` indices of `0..labels.len()`, sorted.
///
/// Each class gets its share of `n` in proportion to its size, rounded by the
/// largest-remainder method (ties to the lower label), so a balanced set
/// gives a balanced sample; within a class the indices are chosen uniformly.
/// Randomness comes from [`rng::stream`]`(seed, `[`rng::SUBSET`]`)`.
///
/// # Panics
/// If `n > labels.len()`.
pub fn stratified_sample(labels: &[u8], n: usize, seed: u64) -> Vec<usize> {
    let total = labels.len();
    assert!(n <= total, "cannot sample {n} of {total} indices");
    if n == 0 {
        return Vec::new();
    }
    let classes = by_class(labels);
    let (mut quota, remainder): (Vec<usize>, Vec<u128>) = classes
        .iter()
        .map(|c| {
            let num = n as u128 * c.len() as u128;
            ((num / total as u128) as usize, num % total as u128)
        })
        .unzip();
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by(|&a, &b| remainder[b].cmp(&remainder[a]).then(a.cmp(&b)));
    let missing = n - quota.iter().sum::<usize>();
    for &c in order.iter().take(missing) {
        quota[c] += 1;
    }
    let mut rng = rng::stream(seed, rng::SUBSET);
    let mut out = Vec::with_capacity(n);
    for (class, &k) in classes.iter().zip(&quota) {
        out.extend(
            index::sample(&mut rng, class.len(), k)
                .into_iter()
                .map(|j| class[j]),
        );
    }
    out.sort_unstable();
    out
}
