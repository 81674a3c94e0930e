//! A seeded synthetic CIFAR-like dataset for tests and demos.
//!
//! Each class has its own colour (hue `c/10`) and its own sinusoidal grating
//! (orientation `c·18°`, 2–4 cycles per image); every image draws a random
//! grating phase and contrast, a colour jitter and per-pixel noise, so the
//! classes overlap a little but a small CNN learns them far above chance in
//! one epoch. Classes are balanced (counts differ by at most one) and
//! shuffled. The same `(n_train, n_test, seed)` always gives the same bytes.
//!
//! ```
//! let data = muq_data::synthetic::generate(40, 20, 3);
//! assert_eq!(data.train.class_counts(), [4; 10]);
//! assert_eq!(data.test.len(), 20);
//! assert_eq!(data, muq_data::synthetic::generate(40, 20, 3));
//! ```

use std::f32::consts::PI;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::cifar::CLASS_NAMES;
use crate::{Cifar10, IMAGE_BYTES, ImageSet, NUM_CLASSES, rng};

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;

/// Generates `n_train` training and `n_test` test images from `seed`, with
/// the CIFAR-10 class names.
pub fn generate(n_train: usize, n_test: usize, seed: u64) -> Cifar10 {
    let patterns = Patterns::new();
    Cifar10 {
        train: patterns.make(n_train, &mut rng::stream(seed, "synthetic/train")),
        test: patterns.make(n_test, &mut rng::stream(seed, "synthetic/test")),
        class_names: CLASS_NAMES.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Per-class base colours and grating tables.
struct Patterns {
    colour: [[f32; 3]; NUM_CLASSES],
    /// `sin(k·u)` and `cos(k·u)` per class and pixel, where `u` is the
    /// coordinate along the class's orientation.
    sin: Vec<[f32; PLANE]>,
    cos: Vec<[f32; PLANE]>,
}

impl Patterns {
    fn new() -> Self {
        let mut colour = [[0.0; 3]; NUM_CLASSES];
        let mut sin = Vec::with_capacity(NUM_CLASSES);
        let mut cos = Vec::with_capacity(NUM_CLASSES);
        for (c, col) in colour.iter_mut().enumerate() {
            *col = hsv(c as f32 / NUM_CLASSES as f32, 0.55, 0.65);
            let theta = c as f32 * PI / NUM_CLASSES as f32;
            let cycles = 2.0 + (c % 3) as f32;
            let k = 2.0 * PI * cycles / SIDE as f32;
            let (mut s, mut co) = ([0.0; PLANE], [0.0; PLANE]);
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let u = x as f32 * theta.cos() + y as f32 * theta.sin();
                    s[y * SIDE + x] = (k * u).sin();
                    co[y * SIDE + x] = (k * u).cos();
                }
            }
            sin.push(s);
            cos.push(co);
        }
        Self { colour, sin, cos }
    }

    fn make(&self, n: usize, rng: &mut impl Rng) -> ImageSet {
        let mut labels: Vec<u8> = (0..n).map(|i| (i % NUM_CLASSES) as u8).collect();
        labels.shuffle(rng);
        let mut images = vec![0u8; n * IMAGE_BYTES];
        for (&label, image) in labels.iter().zip(images.chunks_exact_mut(IMAGE_BYTES)) {
            self.draw(usize::from(label), image, rng);
        }
        ImageSet::new(images, labels).expect("generated labels are below 10")
    }

    fn draw(&self, c: usize, image: &mut [u8], rng: &mut impl Rng) {
        let phase = rng.random_range(0.0..2.0 * PI);
        let contrast = rng.random_range(0.15..0.3f32);
        let (a, b) = (contrast * phase.cos(), contrast * phase.sin());
        for (ch, plane) in image.chunks_exact_mut(PLANE).enumerate() {
            let base = self.colour[c][ch] + rng.random_range(-0.12..0.12f32);
            let mut bits = 0u64;
            for (p, px) in plane.iter_mut().enumerate() {
                if p % 8 == 0 {
                    bits = rng.next_u64();
                }
                let noise = (f32::from((bits >> (8 * (p % 8))) as u8) / 255.0 - 0.5) * 0.2;
                let v = base + a * self.sin[c][p] + b * self.cos[c][p] + noise;
                *px = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
}

/// RGB (0–1) of a hue, saturation and value (each 0–1).
fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let f = |n: f32| {
        let k = (n + h * 6.0) % 6.0;
        v - v * s * k.min(4.0 - k).clamp(0.0, 1.0)
    };
    [f(5.0), f(3.0), f(1.0)]
}
