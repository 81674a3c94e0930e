//! Reading and writing the CIFAR-10 binary layout.
//!
//! A directory in this layout holds `data_batch_1.bin` … `data_batch_5.bin`
//! (the training set, in that order), `test_batch.bin` (the test set) and
//! `batches.meta.txt` (the ten class names, one a line). A batch file is a
//! sequence of 3,073-byte records: one label byte (0–9), then the 3,072 bytes
//! of the image (red, green, blue planes of 32×32, row-major). Any whole
//! number of records per file is accepted.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::{DataError, IMAGE_BYTES, ImageSet, NUM_CLASSES, RECORD_BYTES, Result};

/// Names of the five training files, in reading order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];

/// Name of the test file.
pub const TEST_FILE: &str = "test_batch.bin";

/// Name of the class-name file.
pub const META_FILE: &str = "batches.meta.txt";

/// The CIFAR-10 class names, in label order.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// A CIFAR-10-shaped dataset: training and test images plus class names.
#[derive(Clone, Debug, PartialEq)]
pub struct Cifar10 {
    /// The training set (the five `data_batch_*.bin` files, concatenated).
    pub train: ImageSet,
    /// The test set (`test_batch.bin`).
    pub test: ImageSet,
    /// The ten class names, in label order.
    pub class_names: Vec<String>,
}

/// The environment variable naming a real CIFAR-10 directory.
pub const DIR_VAR: &str = "CIFAR10_DIR";

/// The CIFAR-10 directory named by `$CIFAR10_DIR`, for the tests and tools
/// that use the real data set when it is there; `None` when the variable is
/// unset or empty.
///
/// An absolute path is returned as it is. A relative one is taken from the
/// current directory when it exists there, else from `base`: `cargo test`
/// runs each crate's tests in that crate's folder, so a test passes the
/// workspace root and `CIFAR10_DIR=../shared/cifar10 cargo test` means the
/// same folder from the root as from any crate.
///
/// ```
/// # use std::path::Path;
/// // Unset or empty: no real data, and the caller says what did not run.
/// if let Some(dir) = muq_data::cifar::dir_from_env(Path::new(".")) {
///     println!("real CIFAR-10 at {}", dir.display());
/// }
/// ```
pub fn dir_from_env(base: &Path) -> Option<PathBuf> {
    let var = std::env::var_os(DIR_VAR).filter(|v| !v.is_empty())?;
    Some(resolve_dir(Path::new(&var), base))
}

/// `dir` as is when absolute or present from the current directory, else
/// `base.join(dir)`.
fn resolve_dir(dir: &Path, base: &Path) -> PathBuf {
    if dir.is_absolute() || dir.exists() {
        dir.to_path_buf()
    } else {
        base.join(dir)
    }
}

/// Reads a directory in the CIFAR-10 binary layout.
///
/// # Errors
/// [`DataError::MissingFile`] if a file is absent,
/// [`DataError::TruncatedFile`] if a batch file's size is not a multiple of
/// 3,073 bytes, [`DataError::BadLabelInFile`] if a record's label is above 9,
/// [`DataError::BadMeta`] if `batches.meta.txt` does not hold ten names, and
/// [`DataError::Io`] for other read failures. Each names the file (and the
/// record, where there is one).
pub fn load_dir(dir: &Path) -> Result<Cifar10> {
    let class_names = read_meta(&dir.join(META_FILE))?;
    let mut train = ImageSet::empty();
    for name in TRAIN_FILES {
        train.extend(&read_batch_file(&dir.join(name))?);
    }
    let test = read_batch_file(&dir.join(TEST_FILE))?;
    Ok(Cifar10 {
        train,
        test,
        class_names,
    })
}

/// Reads one batch file (any whole number of records).
///
/// # Errors
/// As [`load_dir`], for this one file.
pub fn read_batch_file(path: &Path) -> Result<ImageSet> {
    let bytes = read(path)?;
    let records = bytes.len() / RECORD_BYTES;
    let partial = bytes.len() % RECORD_BYTES;
    if partial != 0 {
        return Err(DataError::TruncatedFile {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            record: records,
            partial,
        });
    }
    let mut images = Vec::with_capacity(records * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(records);
    for (record, chunk) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = chunk[0];
        if usize::from(label) >= NUM_CLASSES {
            return Err(DataError::BadLabelInFile {
                path: path.to_path_buf(),
                record,
                label,
            });
        }
        labels.push(label);
        images.extend_from_slice(&chunk[1..]);
    }
    ImageSet::new(images, labels)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| {
        if source.kind() == ErrorKind::NotFound {
            DataError::MissingFile {
                path: path.to_path_buf(),
                source,
            }
        } else {
            DataError::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

fn read_meta(path: &Path) -> Result<Vec<String>> {
    let bytes = read(path)?;
    let text = String::from_utf8(bytes).map_err(|_| DataError::BadMeta {
        path: path.to_path_buf(),
        reason: "is not UTF-8 text".to_owned(),
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if names.len() != NUM_CLASSES {
        return Err(DataError::BadMeta {
            path: path.to_path_buf(),
            reason: format!(
                "holds {} non-empty lines, expected {NUM_CLASSES} class names",
                names.len()
            ),
        });
    }
    Ok(names)
}

/// Writes `data` to `dir` in the CIFAR-10 binary layout, creating `dir` if needed.
///
/// The training set is spread as evenly as possible over the five
/// `data_batch_*.bin` files (sizes differ by at most one record, earlier
/// files taking the extra ones); `records_per_file` is the most records one
/// training file may hold, so `write_dir(dir, data, 10_000)` on a 50,000-image
/// training set writes the standard layout. The whole test set goes to
/// `test_batch.bin`, the class names to `batches.meta.txt`.
///
/// # Errors
/// [`DataError::InvalidArgument`] if the training set does not fit in five
/// files of `records_per_file` records or if `data.class_names` does not hold
/// ten single-line names; [`DataError::Io`] if a file cannot be written.
pub fn write_dir(dir: &Path, data: &Cifar10, records_per_file: usize) -> Result<()> {
    let n = data.train.len();
    let files = TRAIN_FILES.len();
    if records_per_file
        .checked_mul(files)
        .is_none_or(|cap| cap < n)
    {
        return Err(DataError::InvalidArgument {
            name: "records_per_file",
            reason: format!(
                "{records_per_file} records per file cannot hold {n} training images in \
                 {files} files; pass at least {}",
                n.div_ceil(files)
            ),
        });
    }
    if data.class_names.len() != NUM_CLASSES
        || data
            .class_names
            .iter()
            .any(|s| s.trim().is_empty() || s.contains('\n') || s.trim() != s)
    {
        return Err(DataError::InvalidArgument {
            name: "class_names",
            reason: format!(
                "expected {NUM_CLASSES} non-empty single-line names without surrounding \
                 whitespace, got {:?}",
                data.class_names
            ),
        });
    }
    fs::create_dir_all(dir).map_err(|source| DataError::Io {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut start = 0;
    for (k, name) in TRAIN_FILES.iter().enumerate() {
        let count = n / files + usize::from(k < n % files);
        write_records(&dir.join(name), &data.train, start..start + count)?;
        start += count;
    }
    write_records(&dir.join(TEST_FILE), &data.test, 0..data.test.len())?;
    let mut meta = data.class_names.join("\n");
    meta.push('\n');
    write(&dir.join(META_FILE), meta.as_bytes())
}

fn write_records(path: &Path, set: &ImageSet, range: std::ops::Range<usize>) -> Result<()> {
    let mut bytes = Vec::with_capacity(range.len() * RECORD_BYTES);
    for i in range {
        bytes.push(set.labels()[i]);
        bytes.extend_from_slice(set.image(i));
    }
    write(path, &bytes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|source| DataError::Io {
        op: "write",
        path: PathBuf::from(path),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_dirs_fall_back_to_the_base() {
        let here = std::env::current_dir().unwrap();
        let base = Path::new("/some/workspace");
        // Present from the current directory: unchanged.
        assert_eq!(resolve_dir(Path::new("src"), base), Path::new("src"));
        // Absolute: unchanged.
        assert_eq!(resolve_dir(&here, base), here);
        // Absent here: from the base.
        assert_eq!(
            resolve_dir(Path::new("../no-such-folder-here/cifar10"), base),
            base.join("../no-such-folder-here/cifar10")
        );
    }
}
