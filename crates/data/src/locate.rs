//! Where the CIFAR-10 directory is: the one resolver that `muq`, `cargo
//! xtask` and the real-data tests share (`cargo xtask` compiles this file
//! into itself with `#[path]`, so that it needs no dependency on
//! muq-data). Plain `std` only.

use std::path::{Path, PathBuf};

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

/// The CIFAR-10 directory a command uses: `flag` (its `--data-dir`) when
/// given, else `$CIFAR10_DIR` as [`dir_from_env`] resolves it; `None` when
/// neither names one (`muq` then says what to pass, `cargo xtask sweep`
/// downloads a copy).
///
/// ```
/// # use std::path::Path;
/// let flag = Path::new("/data/cifar10");
/// assert_eq!(
///     muq_data::cifar::data_dir(Some(flag), Path::new(".")).as_deref(),
///     Some(flag)
/// );
/// ```
pub fn data_dir(flag: Option<&Path>, base: &Path) -> Option<PathBuf> {
    flag.map(Path::to_path_buf).or_else(|| dir_from_env(base))
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
