//! The crate's error type.

use std::path::PathBuf;

/// What to do when a CIFAR-10 file is missing or damaged.
pub(crate) const FIX_HINT: &str =
    "re-download with `cargo xtask download` or point --data-dir / CIFAR10_DIR at a complete copy";

/// Everything that can go wrong while reading, writing or preparing data.
///
/// Every variant names what it is about (a file and a record, an index, or a
/// configuration field) and its message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file of the CIFAR-10 layout does not exist.
    #[error("CIFAR-10 file {} is missing; {FIX_HINT}", path.display())]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An I/O operation other than finding a file failed.
    #[error("could not {op} {}", path.display())]
    Io {
        /// What was being done: "read", "write", "create directory", ...
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A batch file holds no records at all.
    #[error("CIFAR-10 file {} is empty (0 bytes); {FIX_HINT}", path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },

    /// The data directory is not a directory.
    #[error(
        "{} is not a CIFAR-10 directory: it is a file; pass the folder that holds \
         data_batch_1.bin … test_batch.bin",
        path.display()
    )]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },

    /// A batch file's size is not a whole number of 3,073-byte records.
    #[error(
        "CIFAR-10 file {} is {len} bytes, not a multiple of {record_bytes}: record {record} \
         (0-based) is truncated to {partial} bytes; {FIX_HINT}",
        path.display(),
        record_bytes = crate::RECORD_BYTES
    )]
    TruncatedFile {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
        /// Index (0-based) of the incomplete record, i.e. the number of complete ones.
        record: usize,
        /// How many bytes of that record are present.
        partial: usize,
    },

    /// A record in a batch file carries a label outside 0–9.
    #[error(
        "CIFAR-10 file {} record {record} (0-based) has label {label}, outside 0-9; \
         the file is corrupt or not CIFAR-10: {FIX_HINT}",
        path.display()
    )]
    BadLabelInFile {
        /// The file.
        path: PathBuf,
        /// Index (0-based) of the record within the file.
        record: usize,
        /// The label byte found.
        label: u8,
    },

    /// `batches.meta.txt` does not hold ten class names.
    #[error("CIFAR-10 class-name file {} {reason}; {FIX_HINT}", path.display())]
    BadMeta {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An in-memory image set has a label outside 0–9.
    #[error("image {index} has label {label}, outside 0-9: labels must be class indices below 10")]
    BadLabel {
        /// Index of the image.
        index: usize,
        /// The label found.
        label: u8,
    },

    /// Image bytes and labels of an in-memory image set do not match in length.
    #[error(
        "{images} image bytes do not make {labels} images of {image_bytes} bytes each: \
         pass exactly 3072 bytes (3x32x32, CHW) per label",
        image_bytes = crate::IMAGE_BYTES
    )]
    LengthMismatch {
        /// Length of the image buffer, in bytes.
        images: usize,
        /// Number of labels.
        labels: usize,
    },

    /// A modality configuration field has an invalid value.
    #[error("invalid `{field}`: {reason}")]
    InvalidConfig {
        /// The configuration field at fault (`remove_prop`, `pool_prop`, `sigma`, `kind`).
        field: &'static str,
        /// Why it is invalid and what would be valid.
        reason: String,
    },

    /// A function argument has an invalid value.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// The argument at fault.
        name: &'static str,
        /// Why it is invalid and what would be valid.
        reason: String,
    },
}

/// Result with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;
