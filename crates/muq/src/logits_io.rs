//! Reading logits and labels from CSV/text or `.npy` files.
//!
//! Formats:
//! - **logits**: CSV with one row per sample and one comma-separated column
//!   per class, no header; or a `.npy` 2-D `float32`/`float64` array
//!   (little-endian, C order).
//! - **labels**: text with one non-negative integer per line; or a `.npy`
//!   1-D integer array (`int8/16/32/64`, `uint8/16/32/64`, little-endian).
//!
//! A file ending in `.npy` (any case) is read as NumPy, anything else as text.
//! Every problem with the *contents* is an [`InputError`] naming the file and
//! the 1-based line (text) or 0-based index (`.npy`), e.g.
//! `logits.csv line 17: expected 10 columns, found 9`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in a file an [`InputError`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole (header, shape, length, empty file).
    File,
    /// A 1-based line of a text file.
    Line(usize),
    /// A 0-based index along the first axis of a `.npy` array.
    Index(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => Ok(()),
            Location::Line(n) => write!(f, " line {n}"),
            Location::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Invalid file contents: a malformed number, a ragged row, a non-finite
/// logit, an out-of-range label, mismatched lengths, a bad `.npy` header.
///
/// Displays as one line: `PATH[ line N]: message`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{location}: {message}", path.display())]
pub struct InputError {
    /// The offending file.
    pub path: PathBuf,
    /// Where in it.
    pub location: Location,
    /// What is wrong.
    pub message: String,
}

impl InputError {
    /// An error at `location` in `path`.
    pub fn new(path: &Path, location: Location, message: impl Into<String>) -> Self {
        InputError {
            path: path.to_path_buf(),
            location,
            message: message.into(),
        }
    }
}

/// Failure to load a logits or labels file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read at all.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but its contents are invalid.
    #[error(transparent)]
    Input(#[from] InputError),
}

/// Whether `err` is (or wraps) invalid input, as opposed to an I/O or other failure.
pub fn is_input_error(err: &(dyn std::error::Error + 'static)) -> bool {
    err.is::<InputError>() || matches!(err.downcast_ref::<LoadError>(), Some(LoadError::Input(_)))
}

/// A row-major `rows × num_classes` matrix of finite logits, widened to `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitsTable {
    /// Row-major values.
    pub values: Vec<f64>,
    /// Number of rows (samples), ≥ 1.
    pub rows: usize,
    /// Number of columns (classes), ≥ 1.
    pub num_classes: usize,
}

/// Logits and matching labels read from a pair of files.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledLogits {
    /// The logits.
    pub logits: LogitsTable,
    /// One label per logits row, each `< logits.num_classes`.
    pub labels: Vec<usize>,
}

fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, LoadError> {
    let bytes = read_bytes(path)?;
    String::from_utf8(bytes)
        .map_err(|e| InputError::new(path, Location::File, format!("not UTF-8 text ({e})")).into())
}

/// Lines of a text file, 1-based, without trailing blank lines; any other
/// blank line is an error.
fn content_lines<'t>(path: &Path, text: &'t str) -> Result<Vec<(usize, &'t str)>, InputError> {
    let lines: Vec<(usize, &str)> = text
        .trim_end()
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .collect();
    if lines.is_empty() {
        return Err(InputError::new(path, Location::File, "file is empty"));
    }
    if let Some(&(n, _)) = lines.iter().find(|(_, l)| l.trim().is_empty()) {
        return Err(InputError::new(path, Location::Line(n), "empty line"));
    }
    Ok(lines)
}

/// Reads a logits file (CSV or `.npy`, chosen by extension).
///
/// # Errors
/// [`LoadError::Io`] if unreadable; [`LoadError::Input`] for an empty file,
/// unparsable or non-finite values, ragged rows, fewer than two columns or
/// a bad `.npy` array.
pub fn read_logits(path: &Path) -> Result<LogitsTable, LoadError> {
    let table = if is_npy(path) {
        npy::logits(path, &read_bytes(path)?)?
    } else {
        parse_logits_csv(path, &read_text(path)?)?
    };
    if table.num_classes < 2 {
        return Err(InputError::new(
            path,
            Location::File,
            "one column: logits need one column per class and at least two classes \
             (a one-class classifier has no calibration to measure)",
        )
        .into());
    }
    Ok(table)
}

fn parse_logits_csv(path: &Path, text: &str) -> Result<LogitsTable, InputError> {
    let lines = content_lines(path, text)?;
    let mut values = Vec::new();
    let mut num_classes = 0;
    for (n, line) in &lines {
        let at = Location::Line(*n);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if num_classes == 0 {
            num_classes = fields.len();
        } else if fields.len() != num_classes {
            return Err(InputError::new(
                path,
                at,
                format!("expected {num_classes} columns, found {}", fields.len()),
            ));
        }
        for (col, field) in fields.iter().enumerate() {
            let v: f64 = field.parse().map_err(|_| {
                InputError::new(
                    path,
                    at,
                    format!("column {}: cannot parse {field:?} as a number", col + 1),
                )
            })?;
            if !v.is_finite() {
                return Err(InputError::new(
                    path,
                    at,
                    format!("column {}: non-finite logit {field:?}", col + 1),
                ));
            }
            values.push(v);
        }
    }
    Ok(LogitsTable {
        values,
        rows: lines.len(),
        num_classes,
    })
}

/// Reads a labels file (text or `.npy`) and checks every label is `< num_classes`.
///
/// # Errors
/// [`LoadError::Io`] if unreadable; [`LoadError::Input`] for an empty file,
/// a value that is not a non-negative integer, a label `≥ num_classes`, or a
/// bad `.npy` array.
pub fn read_labels(path: &Path, num_classes: usize) -> Result<Vec<usize>, LoadError> {
    let (labels, location): (Vec<i128>, fn(usize) -> Location) = if is_npy(path) {
        let bytes = read_bytes(path)?;
        (npy::labels(path, &bytes)?, Location::Index)
    } else {
        let text = read_text(path)?;
        (parse_labels_text(path, &text)?, |i| Location::Line(i + 1))
    };
    let mut out = Vec::with_capacity(labels.len());
    for (i, &label) in labels.iter().enumerate() {
        if label < 0 {
            return Err(
                InputError::new(path, location(i), format!("negative label {label}")).into(),
            );
        }
        match usize::try_from(label) {
            Ok(l) if l < num_classes => out.push(l),
            _ => {
                return Err(InputError::new(
                    path,
                    location(i),
                    format!("label {label} out of range for {num_classes} classes (labels must be 0..={})", num_classes - 1),
                )
                .into());
            }
        }
    }
    Ok(out)
}

fn parse_labels_text(path: &Path, text: &str) -> Result<Vec<i128>, InputError> {
    content_lines(path, text)?
        .into_iter()
        .map(|(n, line)| {
            let field = line.trim();
            field.parse::<i128>().map_err(|_| {
                InputError::new(
                    path,
                    Location::Line(n),
                    format!("cannot parse {field:?} as an integer label"),
                )
            })
        })
        .collect()
}

/// Reads logits and labels and checks there is exactly one label per row.
///
/// A missing or extra label is reported at the labels file's first line (or
/// index) without a partner.
///
/// # Errors
/// As [`read_logits`] and [`read_labels`], plus [`LoadError::Input`] for a
/// row-count mismatch.
pub fn read_labelled(logits_path: &Path, labels_path: &Path) -> Result<LabelledLogits, LoadError> {
    let logits = read_logits(logits_path)?;
    let labels = read_labels(labels_path, logits.num_classes)?;
    if labels.len() != logits.rows {
        let first_unmatched = labels.len().min(logits.rows);
        let location = if is_npy(labels_path) {
            Location::Index(first_unmatched)
        } else {
            Location::Line(first_unmatched + 1)
        };
        let what = if labels.len() < logits.rows {
            "missing label"
        } else {
            "extra label"
        };
        return Err(InputError::new(
            labels_path,
            location,
            format!(
                "{what}: {} has {} rows but {} has {} labels",
                logits_path.display(),
                logits.rows,
                labels_path.display(),
                labels.len()
            ),
        )
        .into());
    }
    Ok(LabelledLogits { logits, labels })
}

/// A minimal reader for NumPy `.npy` files (format versions 1.0–3.0).
mod npy {
    use std::path::Path;

    use super::{InputError, Location, LogitsTable};

    /// Element type of an array, from the header's `descr`.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Dtype {
        Float { bytes: usize },
        Int { bytes: usize, signed: bool },
    }

    struct Array<'b> {
        dtype: Dtype,
        shape: Vec<usize>,
        data: &'b [u8],
    }

    fn err(path: &Path, message: impl Into<String>) -> InputError {
        InputError::new(path, Location::File, message)
    }

    fn parse<'b>(path: &Path, bytes: &'b [u8]) -> Result<Array<'b>, InputError> {
        const MAGIC: &[u8] = b"\x93NUMPY";
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(err(path, "not a .npy file (bad magic string)"));
        }
        let Some(&version) = bytes.get(6) else {
            return Err(err(
                path,
                "truncated .npy file: it ends before its format version",
            ));
        };
        let prefix = match version {
            1 => 10,
            _ => 12,
        };
        let (header_len, start) = match version {
            1..=3 if bytes.len() < prefix => {
                return Err(err(
                    path,
                    format!(
                        "truncated .npy file: {} bytes, too short for a version-{version} header",
                        bytes.len(),
                    ),
                ));
            }
            1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
            2 | 3 => (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            ),
            v => {
                return Err(err(
                    path,
                    format!("unsupported .npy format version {v} (versions 1, 2 and 3 are read)"),
                ));
            }
        };
        let header = bytes
            .get(start..start + header_len)
            .ok_or_else(|| err(path, "truncated .npy header"))?;
        let header =
            std::str::from_utf8(header).map_err(|_| err(path, "the .npy header is not text"))?;
        let descr = dict_value(header, "descr")
            .and_then(quoted)
            .ok_or_else(|| err(path, format!("no 'descr' in .npy header {header:?}")))?;
        let fortran = dict_value(header, "fortran_order")
            .ok_or_else(|| err(path, "no 'fortran_order' in .npy header"))?;
        if fortran.starts_with("True") {
            return Err(err(
                path,
                "Fortran-order arrays are not supported; save with C order",
            ));
        }
        let shape = dict_value(header, "shape").and_then(tuple).ok_or_else(|| {
            err(
                path,
                format!("no readable 'shape' in .npy header {header:?}"),
            )
        })?;
        let dtype = dtype(path, descr)?;
        let data = &bytes[start + header_len..];
        let elems = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let size = match dtype {
            Dtype::Float { bytes } | Dtype::Int { bytes, .. } => bytes,
        };
        let expected = elems
            .and_then(|e| e.checked_mul(size))
            .ok_or_else(|| err(path, "array shape is too large"))?;
        if data.len() != expected {
            return Err(err(
                path,
                format!(
                    "shape {shape:?} needs {expected} bytes of data, found {}",
                    data.len()
                ),
            ));
        }
        Ok(Array { dtype, shape, data })
    }

    /// The text after `'key':` in a Python dict literal.
    fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
        let pat_single = format!("'{key}'");
        let pat_double = format!("\"{key}\"");
        let pos = header
            .find(&pat_single)
            .map(|p| p + pat_single.len())
            .or_else(|| header.find(&pat_double).map(|p| p + pat_double.len()))?;
        let rest = header[pos..].trim_start().strip_prefix(':')?;
        Some(rest.trim_start())
    }

    /// The contents of a leading quoted string.
    fn quoted(s: &str) -> Option<&str> {
        let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let rest = &s[1..];
        rest.find(q).map(|end| &rest[..end])
    }

    /// A leading tuple of non-negative integers, e.g. `(1000, 10)` or `(5,)`.
    fn tuple(s: &str) -> Option<Vec<usize>> {
        let inner = s.strip_prefix('(')?;
        let inner = &inner[..inner.find(')')?];
        inner
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.trim_end_matches('L').parse().ok())
            .collect()
    }

    fn dtype(path: &Path, descr: &str) -> Result<Dtype, InputError> {
        let bad = || err(path, format!("unsupported dtype {descr:?}"));
        let mut chars = descr.chars();
        let order = chars.next().ok_or_else(bad)?;
        let kind = chars.next().ok_or_else(bad)?;
        let bytes: usize = chars.as_str().parse().map_err(|_| bad())?;
        match order {
            '<' | '|' => {}
            '=' if cfg!(target_endian = "little") => {}
            '>' if bytes > 1 => {
                return Err(err(
                    path,
                    format!("big-endian dtype {descr:?} is not supported"),
                ));
            }
            '>' => {}
            _ => return Err(bad()),
        }
        match (kind, bytes) {
            ('f', 4 | 8) => Ok(Dtype::Float { bytes }),
            ('i', 1 | 2 | 4 | 8) => Ok(Dtype::Int {
                bytes,
                signed: true,
            }),
            ('u', 1 | 2 | 4 | 8) => Ok(Dtype::Int {
                bytes,
                signed: false,
            }),
            _ => Err(bad()),
        }
    }

    /// Reads a 2-D float array as logits.
    pub(super) fn logits(path: &Path, bytes: &[u8]) -> Result<LogitsTable, InputError> {
        let a = parse(path, bytes)?;
        let Dtype::Float { bytes: size } = a.dtype else {
            return Err(err(path, "logits must be a float32 or float64 array"));
        };
        let &[rows, num_classes] = a.shape.as_slice() else {
            return Err(err(
                path,
                format!("logits must be a 2-D array, found shape {:?}", a.shape),
            ));
        };
        if rows == 0 || num_classes == 0 {
            return Err(err(
                path,
                format!("logits array is empty (shape {:?})", a.shape),
            ));
        }
        let values: Vec<f64> = a
            .data
            .chunks_exact(size)
            .map(|c| match c.len() {
                4 => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                _ => f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            })
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(InputError::new(
                path,
                Location::Index(i / num_classes),
                format!(
                    "column {}: non-finite logit {}",
                    i % num_classes + 1,
                    values[i]
                ),
            ));
        }
        Ok(LogitsTable {
            values,
            rows,
            num_classes,
        })
    }

    /// Reads a 1-D integer array as (unchecked) labels.
    pub(super) fn labels(path: &Path, bytes: &[u8]) -> Result<Vec<i128>, InputError> {
        let a = parse(path, bytes)?;
        let Dtype::Int {
            bytes: size,
            signed,
        } = a.dtype
        else {
            return Err(err(path, "labels must be an integer array"));
        };
        if a.shape.len() != 1 {
            return Err(err(
                path,
                format!("labels must be a 1-D array, found shape {:?}", a.shape),
            ));
        }
        if a.shape[0] == 0 {
            return Err(err(path, "labels array is empty"));
        }
        Ok(a.data
            .chunks_exact(size)
            .map(|c| {
                let mut buf = [0u8; 16];
                buf[..size].copy_from_slice(c);
                if signed && c[size - 1] & 0x80 != 0 {
                    buf[size..].fill(0xff);
                }
                i128::from_le_bytes(buf)
            })
            .collect())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A version-1.0 file exactly as `numpy.save` lays it out: magic,
        /// version, header length, dict padded with spaces to a multiple of 64
        /// bytes (16 before numpy 1.14) ending in a newline, then the data.
        fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
            let mut header =
                format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
            while (10 + header.len() + 1) % 64 != 0 {
                header.push(' ');
            }
            header.push('\n');
            let mut out = b"\x93NUMPY\x01\x00".to_vec();
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            out
        }

        #[test]
        fn reads_f32_and_f64_matrices() {
            let p = Path::new("x.npy");
            let data: Vec<u8> = [1.5f32, -2.0, 0.25, 3.0, 4.0, -0.5]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let t = logits(p, &npy("<f4", "(2, 3)", &data)).unwrap();
            assert_eq!((t.rows, t.num_classes), (2, 3));
            assert_eq!(t.values, vec![1.5, -2.0, 0.25, 3.0, 4.0, -0.5]);
            let data: Vec<u8> = [0.1f64, 0.2].iter().flat_map(|v| v.to_le_bytes()).collect();
            let t = logits(p, &npy("<f8", "(1, 2)", &data)).unwrap();
            assert_eq!(t.values, vec![0.1, 0.2]);
        }

        #[test]
        fn reads_every_integer_label_width() {
            let p = Path::new("y.npy");
            assert_eq!(
                labels(p, &npy("|u1", "(3,)", &[0, 9, 255])).unwrap(),
                vec![0, 9, 255]
            );
            assert_eq!(
                labels(p, &npy("|i1", "(2,)", &[0xff, 7])).unwrap(),
                vec![-1, 7]
            );
            let d: Vec<u8> = [3i32, -4].iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(labels(p, &npy("<i4", "(2,)", &d)).unwrap(), vec![3, -4]);
            let d: Vec<u8> = [5i64, 6].iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(labels(p, &npy("<i8", "(2,)", &d)).unwrap(), vec![5, 6]);
            let d: Vec<u8> = [u64::MAX].iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(
                labels(p, &npy("<u8", "(1,)", &d)).unwrap(),
                vec![i128::from(u64::MAX)]
            );
            let d: Vec<u8> = [7u32].iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(labels(p, &npy("<u4", "(1,)", &d)).unwrap(), vec![7]);
        }

        #[test]
        fn rejects_bad_arrays() {
            let p = Path::new("z.npy");
            let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            let msg = |e: InputError| e.to_string();
            assert!(msg(logits(p, b"PK\x03\x04garbage").unwrap_err()).contains("bad magic"));
            assert!(
                msg(logits(p, &npy("<f4", "(2, 3)", &f32s(&[1.0; 5]))).unwrap_err())
                    .contains("needs 24 bytes")
            );
            assert!(
                msg(logits(p, &npy("<f4", "(6,)", &f32s(&[1.0; 6]))).unwrap_err()).contains("2-D")
            );
            assert!(
                msg(logits(p, &npy(">f4", "(1, 1)", &f32s(&[1.0]))).unwrap_err())
                    .contains("big-endian")
            );
            assert!(
                msg(logits(p, &npy("<i4", "(1, 1)", &[0; 4])).unwrap_err()).contains("float32")
            );
            assert!(msg(labels(p, &npy("<f4", "(1,)", &[0; 4])).unwrap_err()).contains("integer"));
            let e =
                logits(p, &npy("<f4", "(2, 2)", &f32s(&[0.0, 1.0, f32::NAN, 2.0]))).unwrap_err();
            assert_eq!(e.location, Location::Index(1));
            assert_eq!(e.to_string(), "z.npy[1]: column 1: non-finite logit NaN");
            let mut fortran = npy("<f4", "(1, 1)", &f32s(&[1.0]));
            let at = fortran.windows(5).position(|w| w == b"False").unwrap();
            fortran[at..at + 5].copy_from_slice(b"True ");
            assert!(msg(logits(p, &fortran).unwrap_err()).contains("Fortran"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_err(text: &str) -> String {
        parse_logits_csv(Path::new("logits.csv"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_csv_logits() {
        let t = parse_logits_csv(Path::new("l.csv"), "1, 2.5,-3\r\n4e-1,5,6\n\n").unwrap();
        assert_eq!((t.rows, t.num_classes), (2, 3));
        assert_eq!(t.values, vec![1.0, 2.5, -3.0, 0.4, 5.0, 6.0]);
    }

    #[test]
    fn csv_errors_name_file_and_line() {
        assert_eq!(
            csv_err("1,2\n3,4\n5\n"),
            "logits.csv line 3: expected 2 columns, found 1"
        );
        assert_eq!(
            csv_err("1,2\n3,NaN\n"),
            "logits.csv line 2: column 2: non-finite logit \"NaN\""
        );
        assert_eq!(
            csv_err("1,inf\n"),
            "logits.csv line 1: column 2: non-finite logit \"inf\""
        );
        assert_eq!(
            csv_err("1,x\n"),
            "logits.csv line 1: column 2: cannot parse \"x\" as a number"
        );
        assert_eq!(csv_err("1,2\n\n3,4\n"), "logits.csv line 2: empty line");
        assert_eq!(
            csv_err("1,\n"),
            "logits.csv line 1: column 2: cannot parse \"\" as a number"
        );
        assert_eq!(csv_err(" \n"), "logits.csv: file is empty");
    }

    #[test]
    fn label_text_errors_name_file_and_line() {
        let p = Path::new("labels.txt");
        assert_eq!(parse_labels_text(p, "1\n2\n").unwrap(), vec![1, 2]);
        assert_eq!(
            parse_labels_text(p, "1\n2.0\n").unwrap_err().to_string(),
            "labels.txt line 2: cannot parse \"2.0\" as an integer label"
        );
    }

    #[test]
    fn input_errors_are_recognised_through_wrappers() {
        let e: LoadError = InputError::new(Path::new("a"), Location::File, "bad").into();
        assert!(is_input_error(&e));
        let io = LoadError::Io {
            path: "b".into(),
            source: std::io::Error::other("x"),
        };
        assert!(!is_input_error(&io));
    }
}
