//! Raw images and labels, kept as bytes.

use sha2::{Digest, Sha256};

use crate::{DataError, IMAGE_BYTES, NUM_CLASSES, Result};

/// Raw images and their labels, as `u8`.
///
/// Image `i` occupies bytes `i*3072 .. (i+1)*3072` of [`images`](Self::images):
/// the 1,024 red, 1,024 green and 1,024 blue values of a 32×32 image, each
/// plane row-major (the CIFAR-10 record layout without its label byte).
/// Every label is a class index below [`NUM_CLASSES`].
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    images: Vec<u8>,
    labels: Vec<u8>,
}

impl ImageSet {
    /// Builds a set from `images` (`labels.len() * 3072` bytes) and `labels`.
    ///
    /// # Errors
    /// [`DataError::LengthMismatch`] if the lengths disagree,
    /// [`DataError::BadLabel`] if a label is 10 or more.
    pub fn new(images: Vec<u8>, labels: Vec<u8>) -> Result<Self> {
        if Some(images.len()) != labels.len().checked_mul(IMAGE_BYTES) {
            return Err(DataError::LengthMismatch {
                images: images.len(),
                labels: labels.len(),
            });
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| usize::from(l) >= NUM_CLASSES)
        {
            return Err(DataError::BadLabel { index, label });
        }
        Ok(Self { images, labels })
    }

    /// An empty set.
    pub fn empty() -> Self {
        Self {
            images: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 3,072 bytes (CHW) of image `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// The label of every image.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// All image bytes, image after image.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// The images at `indices`, in that order (repeats allowed).
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let mut images = Vec::with_capacity(indices.len() * IMAGE_BYTES);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        ImageSet { images, labels }
    }

    /// Appends all images of `other` after those of `self`.
    pub fn extend(&mut self, other: &ImageSet) {
        self.images.extend_from_slice(&other.images);
        self.labels.extend_from_slice(&other.labels);
    }

    /// How many images each class has.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// SHA-256 (lower-case hex) of the image bytes followed by the label bytes.
    pub fn checksum(&self) -> String {
        let mut h = Sha256::new();
        h.update(&self.images);
        h.update(&self.labels);
        crate::hex(&h.finalize())
    }

    /// Splits the set into its image bytes and labels.
    pub fn into_parts(self) -> (Vec<u8>, Vec<u8>) {
        (self.images, self.labels)
    }
}
