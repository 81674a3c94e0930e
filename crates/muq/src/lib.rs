//! muq: measure how machine unlearning changes a CIFAR-10 ResNet-18's
//! calibration — the library behind the `muq` binary's subcommands.

pub mod logits_io;
pub mod metrics;
pub mod plot;
pub mod report;
