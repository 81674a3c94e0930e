//! Named random streams derived from the run seed.
//!
//! Every random choice of a run draws from its own stream, so changing how
//! one is made (or how many numbers it takes) changes nothing else. A stream
//! is a [`ChaCha8Rng`] seeded with `sha256(seed.to_le_bytes() ++ name)`.
//!
//! ```
//! use muq_data::rng;
//! use rand::Rng;
//!
//! let a: u64 = rng::stream(101, rng::SPLIT).random();
//! let b: u64 = rng::stream(101, rng::SPLIT).random();
//! let c: u64 = rng::stream(101, rng::INIT).random();
//! assert_eq!(a, b);
//! assert_ne!(a, c);
//! ```

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// The stream for the calibration/evaluation split of the test set.
pub const SPLIT: &str = "split";
/// The stream for the modality's pool and its corruptions.
pub const MODALITY: &str = "modality";
/// The stream for choosing the forget set.
pub const FORGET: &str = "forget";
/// The stream for model initialisation.
pub const INIT: &str = "init";
/// The stream for shuffling training batches ([`crate::epoch_order`] derives
/// one sub-stream `"shuffle/{epoch}"` per epoch).
pub const SHUFFLE: &str = "shuffle";
/// The stream for dropout masks.
pub const DROPOUT: &str = "dropout";
/// The stream for subsets (such as `--train-subset` or a sample of the retain set).
pub const SUBSET: &str = "subset";

/// `n` of `items` drawn without replacement from stream `name` of seed
/// `seed`, in ascending order of position (all of them, in order, when
/// `n ≥ items.len()`): the seeded samples of a run — the retain sample it
/// evaluates, the retained images a second-order Hessian is estimated on.
///
/// ```
/// let retain: Vec<usize> = (0..100).map(|i| 3 * i).collect();
/// let a = muq_data::rng::sample_sorted(&retain, 10, 1, "example");
/// assert_eq!(a, muq_data::rng::sample_sorted(&retain, 10, 1, "example"));
/// assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|i| retain.contains(i)));
/// assert_eq!(muq_data::rng::sample_sorted(&retain, 500, 1, "example"), retain);
/// ```
pub fn sample_sorted<T: Copy + Ord>(items: &[T], n: usize, seed: u64, name: &str) -> Vec<T> {
    if n >= items.len() {
        return items.to_vec();
    }
    let mut picked: Vec<T> = rand::seq::index::sample(&mut stream(seed, name), items.len(), n)
        .into_iter()
        .map(|i| items[i])
        .collect();
    picked.sort_unstable();
    picked
}

/// The random stream called `name` of the run with seed `seed`.
pub fn stream(seed: u64, name: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(name.as_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}
