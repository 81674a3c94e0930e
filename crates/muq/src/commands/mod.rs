//! The subcommands of the `muq` binary, one file each: its clap arguments
//! and what it prints. Everything else is the library's: the run
//! [`pipeline`](crate::pipeline), [`sweep`](crate::sweep)s,
//! [`report`](crate::report)s, [`metrics`](crate::metrics) of saved logits
//! and the [`bench`](mod@crate::bench)mark.

pub mod bench;
pub mod common;
pub mod metrics;
pub mod report;
pub mod run;
pub mod sweep;
