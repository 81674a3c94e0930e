//! The benchmark of `muq bench`: how fast one training step, one eval batch and one
//! forget-set gradient run on this machine, and how much memory they take.
//!
//! After `--warmup` untimed steps it times `--steps` training steps (forward
//! with the loss; backward with reading the gradients out; the SGD update)
//! and as many eval batches, reports their medians, then times one
//! [`grad_sum`] over `--grad-images` images in batches of `--batch`
//! (training-mode BatchNorm, as the unlearning methods use it). Peak memory
//! is the process's resident high-water mark (`VmHWM`). The images are
//! synthetic (the timing does not depend on their content).
//! `bench/pytorch_reference.py` measures the same model and step in PyTorch
//! and prints the same keys; `bench/compare.sh` runs both.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use clap::builder::TypedValueParser as _;
use muq_data::{Dataset, Normalization, rng, synthetic};
use muq_resnet::bench::{OpTiming, median, op_timings};
use muq_resnet::kernels::profile;
use muq_resnet::{
    BnMode, BnPolicy, GradSumOptions, Kernels, Reduction, ResNet, ResNetConfig, SgdConfig,
    TrainStep, grad_sum,
};
use serde::Serialize;

/// Steps in one epoch of the full CIFAR-10 training set (50,000 / 128).
pub const EPOCH_STEPS: usize = 391;

/// What `muq bench` measures: model, batch, steps, device and kernels, as
/// its command-line arguments (the `muq bench` command flattens this
/// struct).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchConfig {
    /// Model width (64 = full-size ResNet-18).
    #[arg(long, default_value_t = 64)]
    pub width: usize,
    /// Images per training step, eval batch and gradient batch (2 to 8,192).
    #[arg(long, default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(2..=8192).map(|v| v as usize))]
    pub batch: usize,
    /// Timed training steps (and eval batches); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    /// Untimed training steps and eval batches before timing.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// `muq` (muq's CPU kernels), `winograd` (muq's, with Winograd 3×3
    /// convolutions) or `stock` (candle's ops).
    #[arg(long, default_value_t = Kernels::Muq)]
    pub kernels: Kernels,
    /// Images in the timed gradient sum (0 skips it).
    #[arg(long, default_value_t = 2500,
          value_parser = clap::value_parser!(u32).range(0..=50_000).map(|v| v as usize))]
    pub grad_images: usize,
    /// Also time single ops (convolutions, BatchNorm) at each stage's shape.
    #[arg(long)]
    pub ops: bool,
    /// Seed of the model and the synthetic images.
    // Listed after the command's own `--json` in `muq bench --help`.
    #[arg(long, default_value_t = 0, display_order = 100)]
    pub seed: u64,
}

/// What `muq bench` measured (`--json` prints this object).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `muq-candle`.
    pub framework: String,
    /// The kernels (`muq`, `winograd` or `stock`).
    pub kernels: Kernels,
    /// The device, as given.
    pub device: String,
    /// Threads candle and rayon use.
    pub threads: usize,
    /// Model width.
    pub width: usize,
    /// Batch size.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Median ms of a whole training step (forward + backward + optimiser).
    pub train_step_ms: f64,
    /// Median CPU ms (all threads) of a training step; about
    /// `threads × train_step_ms` when the machine is otherwise idle, less
    /// when other processes took cores.
    pub train_step_cpu_ms: Option<f64>,
    /// Mean ms per training step inside muq's kernels (zero with stock
    /// kernels); the rest of the step is candle's own ops (autograd
    /// bookkeeping, the head, the loss) and the optimiser.
    pub kernel_ms: muq_resnet::kernels::profile::KernelTimes,
    /// Median ms of the forward pass and loss.
    pub forward_ms: f64,
    /// Median ms of the backward pass (incl. reading the gradients out).
    pub backward_ms: f64,
    /// Median ms of the SGD update.
    pub optimizer_ms: f64,
    /// Median ms of one eval-mode forward pass over a batch.
    pub eval_batch_ms: f64,
    /// Ms of one gradient sum over `grad_images` images (null if skipped).
    pub grad_sum_ms: Option<f64>,
    /// Images in the gradient sum.
    pub grad_images: usize,
    /// Peak resident memory of the process, MiB (`VmHWM`).
    pub peak_rss_mib: Option<f64>,
    /// Minutes one epoch of 391 steps takes at the median step time.
    pub epoch_min: f64,
    /// Single-op timings (with `--ops`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<OpTiming>,
}

/// The process's peak resident memory in MiB, from `/proc/self/status`.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU time (user + system) of the whole process so far, in ms, from
/// `/proc/self/stat` (10 ms resolution); `None` where it cannot be read.
pub fn process_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at ")".
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

/// Runs the benchmark.
pub fn measure(args: &BenchConfig) -> anyhow::Result<BenchReport> {
    muq_resnet::kernels::CpuLevel::try_from_env()?;
    let device = crate::device::open(&args.device)?;
    let config = ResNetConfig {
        width: args.width,
        ..Default::default()
    };
    let mut model = ResNet::new(&config, &mut rng::stream(args.seed, rng::INIT), &device)?;
    model.set_kernels(args.kernels);
    let n_images = args.grad_images.max(args.batch);
    let data = synthetic::generate(n_images, 0, args.seed);
    let data = Dataset::clean(Arc::new(data.train), Normalization::CIFAR10);
    let all: Vec<usize> = (0..data.len()).collect();
    let steps = args.steps as usize;

    // Training steps, exactly as `muq_resnet::train` takes them.
    let mut step_fn = TrainStep::new(&model, SgdConfig::default())?;
    let (mut fwd, mut bwd, mut upd, mut total) = (vec![], vec![], vec![], vec![]);
    let mut cpu = vec![];
    for step in 0..args.warmup + steps {
        if step == args.warmup {
            profile::take();
        }
        let start = (step * args.batch) % (n_images - args.batch + 1);
        let (x, y) = data.batch(&all[start..start + args.batch], &device)?;
        let c0 = process_cpu_ms();
        let t0 = Instant::now();
        let forward = step_fn.forward(&model, &x, &y, None)?;
        device.synchronize()?;
        let t1 = Instant::now();
        let out = step_fn.backward(&model, forward, &y)?;
        if !out.loss_sum.is_finite() {
            bail!(
                "the loss is {} at bench step {step}",
                out.loss_sum / args.batch as f32
            );
        }
        let t2 = Instant::now();
        step_fn.update(&out.grads)?;
        device.synchronize()?;
        let t3 = Instant::now();
        if step >= args.warmup {
            fwd.push((t1 - t0).as_secs_f64() * 1e3);
            bwd.push((t2 - t1).as_secs_f64() * 1e3);
            upd.push((t3 - t2).as_secs_f64() * 1e3);
            total.push((t3 - t0).as_secs_f64() * 1e3);
            if let (Some(a), Some(b)) = (c0, process_cpu_ms()) {
                cpu.push(b - a);
            }
        }
    }

    let kernel_ms = profile::take().per(steps as f64);

    // Eval batches.
    let (x, _) = data.batch(&all[..args.batch], &device)?;
    let mut eval = vec![];
    for step in 0..args.warmup + steps {
        let t0 = Instant::now();
        let out = model.infer(&x, BnMode::Eval, None)?;
        device.synchronize()?;
        drop(out);
        if step >= args.warmup {
            eval.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }

    // One gradient sum over the forget-set-sized set.
    let grad_sum_ms = if args.grad_images > 0 {
        let opts = GradSumOptions {
            batch_size: args.batch,
            bn: BnPolicy::Train,
            reduction: Reduction::Sum,
            seed: args.seed,
        };
        let t0 = Instant::now();
        let g = grad_sum(&model, &data, &all[..args.grad_images], opts)?;
        device.synchronize()?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        drop(g);
        Some(ms)
    } else {
        None
    };

    let ops = if args.ops {
        op_timings(args.width, args.batch, args.kernels, steps, &device)?
    } else {
        Vec::new()
    };
    let train_step_ms = median(&mut total);
    Ok(BenchReport {
        framework: "muq-candle".into(),
        kernels: args.kernels,
        device: args.device.clone(),
        threads: candle_core::utils::get_num_threads(),
        width: args.width,
        batch: args.batch,
        steps,
        train_step_ms,
        train_step_cpu_ms: (!cpu.is_empty()).then(|| median(&mut cpu)),
        kernel_ms,
        forward_ms: median(&mut fwd),
        backward_ms: median(&mut bwd),
        optimizer_ms: median(&mut upd),
        eval_batch_ms: median(&mut eval),
        grad_sum_ms,
        grad_images: args.grad_images,
        peak_rss_mib: peak_rss_mib(),
        epoch_min: train_step_ms * EPOCH_STEPS as f64 / 60_000.0,
        ops,
    })
}
