//! The `muq` binary's exit status, decided from the error it ends with.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success — also when stdout was closed by its reader (`muq metrics … \| head -1`) |
//! | 1 | the work failed: an I/O error while working, a run that failed, a sweep with failed runs |
//! | 2 | the input must change: a bad command line (clap's own usage errors are 2 too), config, data directory, logits/labels file, or an unusable output/cache folder — all found before any work |

use crate::config::ConfigError;
use crate::logits_io::is_input_error;
use crate::pipeline::FolderError;

/// Success.
pub const SUCCESS: u8 = 0;
/// The work failed.
pub const FAILURE: u8 = 1;
/// The input must change (see the module docs).
pub const INVALID_INPUT: u8 = 2;

/// An input the user must change, said in one sentence that names it and
/// what to do: for the cases that have no more specific error type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// Whether `err` is (or wraps) an input the user must fix.
pub fn is_invalid_input(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        is_input_error(e)
            || e.is::<ConfigError>()
            || e.is::<muq_data::DataError>()
            || e.is::<FolderError>()
            || e.is::<InvalidInput>()
            || matches!(
                e.downcast_ref::<muq_resnet::ResnetError>(),
                Some(
                    muq_resnet::ResnetError::Config { .. }
                        | muq_resnet::ResnetError::Checkpoint { .. }
                )
            )
            || e.is::<muq_resnet::kernels::UnknownKernels>()
            || e.is::<muq_resnet::kernels::CpuLevelError>()
    })
}

/// The exit status for a command that ended with `err`.
pub fn code(err: &anyhow::Error) -> u8 {
    if crate::stdout::is_closed(err) {
        SUCCESS
    } else if is_invalid_input(err) {
        INVALID_INPUT
    } else {
        FAILURE
    }
}
