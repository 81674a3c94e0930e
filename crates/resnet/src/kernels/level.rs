//! The instruction-set level muq's CPU kernels run at: the best the CPU
//! supports, or one forced with `MUQ_CPU_LEVEL`.
//!
//! Every dispatching function — [`simd_fn!`](super::simd::simd_fn) bodies,
//! the hand-written reductions in [`super::simd`] and the GEMM front in
//! [`super::gemm`] — asks [`dispatch`] which compiled copy to run. That is
//! the process-wide level (read once from the environment, else detected)
//! except in this crate's own tests, which force a level per thread (see
//! [`at_each_level`]) so that one test binary exercises every level the
//! machine has.

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that forces the [`CpuLevel`] muq's kernels run
/// at (`baseline`, `v3` or `v4`; unset = the best this CPU supports).
pub const CPU_LEVEL_ENV: &str = "MUQ_CPU_LEVEL";

/// An instruction-set level muq's CPU kernels are compiled for and picked
/// from at run time. Levels are ordered: a CPU that runs one runs every
/// lower one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuLevel {
    /// What the workspace is compiled for: x86-64 (SSE2) on x86_64, the
    /// target's default features elsewhere (NEON on aarch64). The only
    /// level off x86_64.
    Baseline,
    /// x86-64-v3: AVX2, FMA and F16C (x86_64 only).
    V3,
    /// x86-64-v4: AVX-512 F, VL, BW and DQ on top of v3 (x86_64 only).
    V4,
}

impl CpuLevel {
    /// Every level, lowest first.
    pub const ALL: [CpuLevel; 3] = [CpuLevel::Baseline, CpuLevel::V3, CpuLevel::V4];

    /// The name results record: `x86-64`, `x86-64-v3`, `x86-64-v4`, or
    /// the architecture's name (`aarch64`, …) for [`CpuLevel::Baseline`]
    /// elsewhere than x86_64.
    pub fn name(self) -> &'static str {
        match self {
            CpuLevel::Baseline if cfg!(target_arch = "x86_64") => "x86-64",
            CpuLevel::Baseline => std::env::consts::ARCH,
            CpuLevel::V3 => "x86-64-v3",
            CpuLevel::V4 => "x86-64-v4",
        }
    }

    /// The short name `MUQ_CPU_LEVEL` takes: `baseline`, `v3` or `v4`.
    pub fn env_value(self) -> &'static str {
        match self {
            CpuLevel::Baseline => "baseline",
            CpuLevel::V3 => "v3",
            CpuLevel::V4 => "v4",
        }
    }

    /// The best level this CPU supports (detected once).
    pub fn detected() -> CpuLevel {
        static DETECTED: OnceLock<CpuLevel> = OnceLock::new();
        *DETECTED.get_or_init(detect)
    }

    /// Every level this CPU runs, lowest first: [`CpuLevel::Baseline`] up
    /// to [`CpuLevel::detected`].
    pub fn supported() -> Vec<CpuLevel> {
        let best = Self::detected();
        Self::ALL.into_iter().filter(|&l| l <= best).collect()
    }

    /// The level muq's kernels run at on the calling thread: the one
    /// `MUQ_CPU_LEVEL` forces, else [`CpuLevel::detected`].
    ///
    /// # Panics
    /// If `MUQ_CPU_LEVEL` is set to something [`CpuLevel::try_from_env`]
    /// rejects (programs check that first; muq does before any work).
    pub fn active() -> CpuLevel {
        #[cfg(test)]
        if let Some(level) = forced::level() {
            return level;
        }
        process_level()
    }

    /// The level `MUQ_CPU_LEVEL` forces: `None` when it is unset or
    /// empty.
    ///
    /// # Errors
    /// [`CpuLevelError`] if it names no level, or a level this CPU cannot
    /// run (forcing that would execute instructions the CPU lacks).
    pub fn try_from_env() -> Result<Option<CpuLevel>, CpuLevelError> {
        match std::env::var(CPU_LEVEL_ENV) {
            Ok(v) if !v.trim().is_empty() => resolve(&v, Self::detected()).map(Some),
            _ => Ok(None),
        }
    }
}

impl fmt::Display for CpuLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `MUQ_CPU_LEVEL` that cannot be honoured. The message names the
/// variable and the values this CPU accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CpuLevelError {
    /// The value names no level.
    #[error(
        "MUQ_CPU_LEVEL=`{value}` is not an instruction-set level: set it to {}, or unset it \
         (then muq uses the best this CPU runs, {detected})",
        choices(*detected)
    )]
    Unknown {
        /// The variable's value.
        value: String,
        /// The best level this CPU runs.
        detected: CpuLevel,
    },
    /// The level is above what this CPU runs.
    #[error(
        "MUQ_CPU_LEVEL=`{value}` asks for {level}, which this CPU cannot run (it runs at most \
         {detected}): set it to {}, or unset it",
        choices(*detected)
    )]
    Unsupported {
        /// The variable's value.
        value: String,
        /// The level it names.
        level: CpuLevel,
        /// The best level this CPU runs.
        detected: CpuLevel,
    },
}

/// "`baseline`, `v3` or `v4`": the values a CPU whose best is `best` takes.
fn choices(best: CpuLevel) -> String {
    let names: Vec<String> = CpuLevel::ALL
        .into_iter()
        .filter(|&l| l <= best)
        .map(|l| format!("`{}`", l.env_value()))
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

/// Parses a `MUQ_CPU_LEVEL` value (the short names, the recorded names,
/// and `scalar` for the baseline; case and surrounding space ignored) and
/// checks that a CPU whose best level is `detected` runs it.
pub(crate) fn resolve(value: &str, detected: CpuLevel) -> Result<CpuLevel, CpuLevelError> {
    let v = value.trim().to_ascii_lowercase();
    let level = match v.as_str() {
        "baseline" | "scalar" | "x86-64" => CpuLevel::Baseline,
        "v3" | "x86-64-v3" => CpuLevel::V3,
        "v4" | "x86-64-v4" => CpuLevel::V4,
        other if other == std::env::consts::ARCH => CpuLevel::Baseline,
        _ => {
            return Err(CpuLevelError::Unknown {
                value: value.to_owned(),
                detected,
            });
        }
    };
    if level > detected {
        return Err(CpuLevelError::Unsupported {
            value: value.to_owned(),
            level,
            detected,
        });
    }
    Ok(level)
}

/// The process-wide level: `MUQ_CPU_LEVEL`, else detected; read once.
fn process_level() -> CpuLevel {
    static LEVEL: OnceLock<CpuLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| match CpuLevel::try_from_env() {
        Ok(level) => level.unwrap_or_else(CpuLevel::detected),
        Err(e) => panic!("{e}"),
    })
}

/// The level a dispatching function runs its body at, on this thread.
/// Never above [`CpuLevel::detected`]: the forced levels are checked
/// against it.
#[inline]
pub(crate) fn dispatch() -> CpuLevel {
    #[cfg(test)]
    if let Some(level) = forced::count() {
        return level;
    }
    process_level()
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuLevel {
    use std::arch::is_x86_feature_detected as has;
    // v3 as the `gemm` crate's V3 type checks it (it needs F16C too), so
    // that a forced or detected v3 can always run gemm's v3 micro-kernels.
    let v3 = has!("sse3")
        && has!("ssse3")
        && has!("sse4.1")
        && has!("sse4.2")
        && has!("avx")
        && has!("avx2")
        && has!("fma")
        && has!("f16c");
    let v4 = v3 && has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq");
    if v4 {
        CpuLevel::V4
    } else if v3 {
        CpuLevel::V3
    } else {
        CpuLevel::Baseline
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> CpuLevel {
    CpuLevel::Baseline
}

/// Runs `f` once at every level this CPU supports, lowest first, and
/// returns the levels it ran at (printing each with its dispatch count).
///
/// Each run happens inside a fresh rayon pool whose worker threads all
/// force that level, so the kernels' parallel parts run at it too; `f`
/// itself runs on one of those workers. Panics if a run dispatched nothing
/// at its level (the closure ran no muq kernel, so the test would prove
/// nothing about that level).
#[cfg(test)]
pub(crate) fn at_each_level(mut f: impl FnMut(CpuLevel) + Send) -> Vec<CpuLevel> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let mut ran = Vec::new();
    for level in CpuLevel::supported() {
        let dispatches = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&dispatches);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads().max(2))
            .start_handler(move |_| forced::set(level, Arc::clone(&counter)))
            .build()
            .expect("a rayon pool for the forced level");
        pool.install(|| {
            assert_eq!(
                CpuLevel::active(),
                level,
                "the pool's threads force {level}"
            );
            f(level)
        });
        let n = dispatches.load(Ordering::Relaxed);
        assert!(
            n > 0,
            "the closure dispatched nothing at {level}: it ran no muq kernel"
        );
        eprintln!("ran at {level}: {n} dispatches");
        ran.push(level);
    }
    ran
}

/// The tests' per-thread override: a level forced on one thread, with a
/// count of the dispatches it served.
#[cfg(test)]
mod forced {
    use std::cell::RefCell;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::CpuLevel;

    thread_local! {
        static FORCED: RefCell<Option<(CpuLevel, Arc<AtomicUsize>)>> = const { RefCell::new(None) };
    }

    /// Forces `level` on this thread; `dispatches` counts what it serves.
    pub(super) fn set(level: CpuLevel, dispatches: Arc<AtomicUsize>) {
        assert!(
            level <= CpuLevel::detected(),
            "{level} is not supported here"
        );
        FORCED.with(|f| *f.borrow_mut() = Some((level, dispatches)));
    }

    /// The forced level, if any.
    pub(super) fn level() -> Option<CpuLevel> {
        FORCED.with(|f| f.borrow().as_ref().map(|(l, _)| *l))
    }

    /// The forced level, if any, counting one dispatch.
    pub(super) fn count() -> Option<CpuLevel> {
        FORCED.with(|f| {
            f.borrow().as_ref().map(|(l, n)| {
                n.fetch_add(1, Ordering::Relaxed);
                *l
            })
        })
    }
}
