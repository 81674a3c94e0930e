//! muq: measure how machine unlearning changes a CIFAR-10 ResNet-18's
//! calibration — the library behind the `muq` binary's subcommands.

#![deny(missing_docs)]

pub mod bench;
pub mod cli;
pub mod config;
pub mod device;
pub mod evaluate;
pub mod exit;
pub mod logits_io;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod result;
pub mod run;
pub mod stdout;
pub mod summary;
pub mod sweep;
