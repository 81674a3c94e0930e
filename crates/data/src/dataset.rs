//! Datasets as a model sees them, and batching them into candle tensors.

use std::fmt;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;

use crate::{IMAGE_BYTES, ImageSet, Modification, Normalization, rng};

/// Clamp range of noisy images in normalised space.
pub const NOISE_CLAMP: f32 = 3.0;

/// Fixed noise of some images: `slot[i]` is the position of image `i`'s noise
/// in `data` (in units of 3,072 values), or `u32::MAX` if it has none.
struct NoiseTable {
    slot: Vec<u32>,
    data: Vec<f32>,
}

/// A dataset as a model sees it: shared `u8` images, the labels to train or
/// evaluate with (possibly overridden by a modality), optional fixed additive
/// noise per image, and the normalisation.
///
/// Images are normalised only when a batch is made; a noisy image is
/// `clamp(normalised + noise, −3, 3)`.
#[derive(Clone)]
pub struct Dataset {
    images: Arc<ImageSet>,
    labels: Vec<u8>,
    noise: Option<Arc<NoiseTable>>,
    norm: Normalization,
    table: [[f32; 256]; 3],
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("len", &self.len())
            .field("noisy_images", &self.noisy_count())
            .field("norm", &self.norm)
            .finish()
    }
}

impl Dataset {
    /// The images with their own labels, no noise.
    pub fn clean(images: Arc<ImageSet>, norm: Normalization) -> Self {
        Self {
            labels: images.labels().to_vec(),
            images,
            noise: None,
            norm,
            table: norm.table(),
        }
    }

    /// The images with `m`'s label overrides and noise applied.
    ///
    /// # Panics
    /// If `m` was drawn for a training set of another size, or a noise
    /// vector is not 3,072 long.
    pub fn modified(images: Arc<ImageSet>, m: &Modification, norm: Normalization) -> Self {
        let n = images.len();
        assert_eq!(
            m.n_train(),
            n,
            "the modification was drawn for {} images, the image set has {n}",
            m.n_train()
        );
        let mut ds = Self::clean(images, norm);
        for &(i, l) in &m.labels {
            ds.labels[i] = l;
        }
        if !m.noise.is_empty() {
            let mut slot = vec![u32::MAX; n];
            let mut data = Vec::with_capacity(m.noise.len() * IMAGE_BYTES);
            for (k, (i, v)) in m.noise.iter().enumerate() {
                assert_eq!(
                    v.len(),
                    IMAGE_BYTES,
                    "noise of image {i} is not 3072 values"
                );
                slot[*i] = u32::try_from(k).expect("fewer than 2^32 noisy images");
                data.extend_from_slice(v);
            }
            ds.noise = Some(Arc::new(NoiseTable { slot, data }));
        }
        ds
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels the model sees.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The underlying `u8` images (with their original labels).
    pub fn images(&self) -> &Arc<ImageSet> {
        &self.images
    }

    /// The normalisation.
    pub fn normalization(&self) -> Normalization {
        self.norm
    }

    /// The fixed noise added to image `i`, if any.
    pub fn noise(&self, i: usize) -> Option<&[f32]> {
        let t = self.noise.as_ref()?;
        let s = *t.slot.get(i)?;
        (s != u32::MAX).then(|| &t.data[s as usize * IMAGE_BYTES..(s as usize + 1) * IMAGE_BYTES])
    }

    /// SHA-256 (lower-case hex) of everything a model sees of this dataset:
    /// the image bytes, the labels it trains or is evaluated with, the fixed
    /// noise (each noisy image's index and values) and the normalisation.
    ///
    /// Two datasets with equal checksums give the same batches bit for bit;
    /// a modification that changes nothing (the `random` modality, which
    /// overrides no label and adds no noise) leaves it equal to the clean
    /// dataset's. Base-model caches key on it.
    pub fn checksum(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.images.images());
        h.update((self.labels.len() as u64).to_le_bytes());
        h.update(&self.labels);
        for v in self.norm.mean.iter().chain(&self.norm.std) {
            h.update(v.to_le_bytes());
        }
        if let Some(t) = &self.noise {
            for (i, &s) in t.slot.iter().enumerate() {
                if s != u32::MAX {
                    h.update((i as u64).to_le_bytes());
                    let at = s as usize * IMAGE_BYTES;
                    for z in &t.data[at..at + IMAGE_BYTES] {
                        h.update(z.to_le_bytes());
                    }
                }
            }
        }
        crate::hex(&h.finalize())
    }

    fn noisy_count(&self) -> usize {
        self.noise
            .as_ref()
            .map_or(0, |t| t.data.len() / IMAGE_BYTES)
    }

    /// Writes image `i` exactly as the model sees it (3,072 `f32`, CHW) into `out`.
    ///
    /// # Panics
    /// If `i` is out of range or `out` is not 3,072 long.
    pub fn write_normalized(&self, i: usize, out: &mut [f32]) {
        assert_eq!(out.len(), IMAGE_BYTES, "an output image is 3072 values");
        let image = self.images.image(i);
        let plane = IMAGE_BYTES / 3;
        for (c, table) in self.table.iter().enumerate() {
            let range = c * plane..(c + 1) * plane;
            for (o, &p) in out[range.clone()].iter_mut().zip(&image[range]) {
                *o = table[usize::from(p)];
            }
        }
        if let Some(noise) = self.noise(i) {
            for (o, &z) in out.iter_mut().zip(noise) {
                *o = (*o + z).clamp(-NOISE_CLAMP, NOISE_CLAMP);
            }
        }
    }

    /// The images and labels at `indices` as tensors on `device`:
    /// `x` of shape `(len, 3, 32, 32)`, `f32`; `y` of shape `(len,)`, `u32`.
    ///
    /// The batch is built on the host and moved to `device` in one copy.
    ///
    /// # Errors
    /// Candle's, if a tensor cannot be created on `device`.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let mut x = vec![0.0f32; indices.len() * IMAGE_BYTES];
        for (&i, out) in indices.iter().zip(x.chunks_exact_mut(IMAGE_BYTES)) {
            self.write_normalized(i, out);
        }
        let y: Vec<u32> = indices.iter().map(|&i| u32::from(self.labels[i])).collect();
        let x = Tensor::from_vec(x, (indices.len(), 3, 32, 32), device)?;
        let y = Tensor::from_vec(y, indices.len(), device)?;
        Ok((x, y))
    }

    /// Batches of `batch_size` of the images at `indices`, in that order; the
    /// last batch holds the remainder.
    ///
    /// # Panics
    /// If `batch_size` is 0.
    pub fn batches<'a>(
        &'a self,
        indices: &'a [usize],
        batch_size: usize,
        device: &'a Device,
    ) -> Batches<'a> {
        assert!(batch_size > 0, "batch_size must be positive");
        Batches {
            dataset: self,
            indices,
            batch_size,
            device,
        }
    }
}

/// Iterator over batches of a [`Dataset`], from [`Dataset::batches`].
#[derive(Debug)]
pub struct Batches<'a> {
    dataset: &'a Dataset,
    indices: &'a [usize],
    batch_size: usize,
    device: &'a Device,
}

impl Iterator for Batches<'_> {
    type Item = candle_core::Result<(Tensor, Tensor)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.indices.is_empty() {
            return None;
        }
        let (now, rest) = self
            .indices
            .split_at(self.batch_size.min(self.indices.len()));
        self.indices = rest;
        Some(self.dataset.batch(now, self.device))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.indices.len().div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

impl std::iter::FusedIterator for Batches<'_> {}

/// A shuffled copy of `indices` for epoch `epoch` of the run with seed `seed`.
///
/// Uses the stream `"shuffle/{epoch}"` ([`rng::SHUFFLE`] plus the epoch), so
/// the same `(seed, epoch)` always gives the same order and epochs differ.
pub fn epoch_order(indices: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = rng::stream(seed, &format!("{}/{epoch}", rng::SHUFFLE));
    let mut v = indices.to_vec();
    v.shuffle(&mut rng);
    v
}
