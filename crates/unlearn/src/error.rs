//! The error type of muq-unlearn.

use muq_resnet::ResnetError;

/// Everything that can go wrong while unlearning.
#[derive(Debug, thiserror::Error)]
pub enum UnlearnError {
    /// Building, training or differentiating the model failed (this includes
    /// non-finite gradients and diverged fine-tuning or retraining).
    #[error(transparent)]
    Resnet(#[from] ResnetError),
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A method setting is impossible; `field` names it as spelled in a
    /// config file.
    #[error("invalid {method} setting `{field}`: {reason}")]
    Config {
        /// The method's short name (`first_order`, …).
        method: &'static str,
        /// The offending field.
        field: &'static str,
        /// Why it is rejected and what to use instead.
        reason: String,
    },
    /// The data handed to [`unlearn`](crate::unlearn) does not fit together;
    /// `field` names the [`UnlearnContext`](crate::UnlearnContext) field.
    #[error("invalid unlearning input `{field}`: {reason}")]
    Context {
        /// The offending context field (`forget`, `retain`, …).
        field: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
    /// An iterative solver or update produced NaN/inf or blew up.
    #[error("{what} diverged at iteration {iteration} (value {value}); {hint}")]
    Diverged {
        /// What diverged (`lissa`, `gradient_ascent`, …).
        what: &'static str,
        /// 1-based iteration or step at which it was noticed.
        iteration: usize,
        /// The offending value (a residual or a loss).
        value: f64,
        /// What to change.
        hint: &'static str,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, UnlearnError>;
