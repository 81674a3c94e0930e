//! Writing to standard output without panicking.
//!
//! `println!` panics when stdout is closed (`muq metrics … | head -0`) or
//! full (`> /dev/full`). Every command prints through [`print()`] instead: a
//! closed pipe becomes [`StdoutClosed`], which the binary treats as a quiet
//! successful exit (the reader has gone and wants no more), and any other
//! write failure an error that says what could not be written.

use std::io::Write as _;

/// Standard output was closed by its reader (a broken pipe).
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed by its reader")]
pub struct StdoutClosed;

/// Writes `text` to standard output and flushes it.
///
/// # Errors
/// [`StdoutClosed`] on a broken pipe; otherwise the I/O error, with the
/// context "writing to standard output".
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// [`print()`] with a trailing newline.
///
/// # Errors
/// As [`print()`].
pub fn println(text: &str) -> anyhow::Result<()> {
    print(&format!("{text}\n"))
}

/// Whether `err` is (or wraps) [`StdoutClosed`].
pub fn is_closed(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<StdoutClosed>())
}
