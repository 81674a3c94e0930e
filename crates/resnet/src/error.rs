//! The error type of muq-resnet.

use std::path::PathBuf;

/// Everything that can go wrong while building, training, evaluating or
/// (de)serialising a model.
#[derive(Debug, thiserror::Error)]
pub enum ResnetError {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A configuration value is impossible; `field` names it.
    #[error("invalid model/training setting `{field}`: {reason}")]
    Config {
        /// The offending field, as spelled in a config file.
        field: &'static str,
        /// Why it is rejected and what to use instead.
        reason: String,
    },
    /// The loss became NaN or infinite during training.
    #[error(
        "training diverged: loss is {loss} at epoch {epoch}, step {step}; \
         lower the learning rate or check the input data for NaN/inf"
    )]
    NonFiniteLoss {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// The offending loss value.
        loss: f32,
    },
    /// A gradient sum came out NaN or infinite.
    #[error("non-finite gradient over the {what} (loss {loss}); the model may have diverged")]
    NonFiniteGradient {
        /// What the gradient was taken over.
        what: String,
        /// The summed loss.
        loss: f64,
    },
    /// A checkpoint could not be read or does not fit the model.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The data handed to a loop is empty.
    #[error("{0} is empty: nothing to train on or evaluate")]
    EmptyData(&'static str),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ResnetError>;
