//! Per-channel normalisation of pixel values.

use crate::IMAGE_BYTES;

/// Per-channel normalisation: `x = (pixel/255 − mean[c]) / std[c]`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    /// Mean of each channel (R, G, B) on the 0–1 scale.
    pub mean: [f32; 3],
    /// Standard deviation of each channel (R, G, B) on the 0–1 scale.
    pub std: [f32; 3],
}

impl Normalization {
    /// The CIFAR-10 statistics used by the original study.
    pub const CIFAR10: Normalization = Normalization {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2023, 0.1994, 0.2010],
    };

    /// The normalised value of `pixel` in channel `channel` (0 = R, 1 = G, 2 = B).
    ///
    /// # Panics
    /// If `channel > 2`.
    pub fn apply(&self, channel: usize, pixel: u8) -> f32 {
        (f32::from(pixel) / 255.0 - self.mean[channel]) / self.std[channel]
    }

    /// The normalised value of every pixel value in every channel:
    /// `table()[c][p] == apply(c, p)`.
    pub fn table(&self) -> [[f32; 256]; 3] {
        let mut t = [[0.0; 256]; 3];
        for (c, row) in t.iter_mut().enumerate() {
            for (p, v) in (0..=u8::MAX).zip(row.iter_mut()) {
                *v = self.apply(c, p);
            }
        }
        t
    }

    /// Normalises one CHW image of 3,072 bytes into `out` (3,072 values).
    ///
    /// # Panics
    /// If either slice is not 3,072 long.
    pub fn image(&self, image: &[u8], out: &mut [f32]) {
        assert_eq!(image.len(), IMAGE_BYTES, "an image is 3072 bytes");
        assert_eq!(out.len(), IMAGE_BYTES, "an output image is 3072 values");
        let plane = IMAGE_BYTES / 3;
        for c in 0..3 {
            let range = c * plane..(c + 1) * plane;
            for (o, &p) in out[range.clone()].iter_mut().zip(&image[range]) {
                *o = self.apply(c, p);
            }
        }
    }
}

impl Default for Normalization {
    /// [`Normalization::CIFAR10`].
    fn default() -> Self {
        Self::CIFAR10
    }
}
