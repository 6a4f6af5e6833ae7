//! The one Wasmtime engine and linker the host shares between all checks, and the epoch ticker
//! that lets a deadline interrupt a check spinning in WebAssembly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::Linker;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use crate::config::{ConfigError, Settings};
use crate::limits::Limits;
use crate::sandbox::{self, SandboxPolicy, SandboxState};

/// How often the ticker advances the engine's epoch; a deadline is noticed within about this long.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The most native stack a check's WebAssembly may use; deeper recursion traps with a stack
/// overflow. Wasmtime's default, set here so the limit is written down where it is enforced.
pub const WASM_STACK_BYTES: usize = 512 * 1024;

/// `Doctor:Engine:Allocator`: `on-demand` or `pooling`; see [`Allocation`].
pub const ALLOCATOR_KEY: &str = "Doctor:Engine:Allocator";

/// How many runs the pooling allocator has room for at once, unless `serve` needs more.
pub const DEFAULT_POOLED_RUNS: u32 = 256;

/// Core instances a pooled run is budgeted on average; a Rust check built for `wasm32-wasip2`
/// has three (its module and two adapter shims). A component may still have up to
/// `Doctor:Limits:Instances`, it just takes more of the shared pool.
const CORE_INSTANCES_PER_RUN: u32 = 4;

/// Freed pool slots whose pages are returned to the kernel together, in one `madvise` pass,
/// rather than one slot at a time. Each pass interrupts the other cores to flush their TLBs, which
/// under `serve`'s load cost about a tenth of the CPU per run (see BENCHMARKS.md); a slot waiting
/// in a batch is reclaimed at once when the pool would otherwise be full.
const DECOMMIT_BATCH: usize = 16;

/// Bytes of each freed table slot zeroed in place and kept mapped, rather than handed back to
/// the kernel. A check's tables are small (a Rust check's hold a few hundred functions, one
/// page or two), and the next run writes them again at once: handed back, each such write faults
/// and interrupts the other cores to flush their TLBs, about a tenth of `serve`'s CPU per run
/// (see BENCHMARKS.md). Only the table's used pages are zeroed, so a slot stays as small as the
/// table it held.
const TABLE_KEEP_RESIDENT: usize = 64 * 1024;

/// How instances get their linear memories, tables, instance state and async stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Mapped for each instance and unmapped when its store drops. Nothing is reserved up
    /// front, which suits the CLI: one process runs a handful of checks once.
    OnDemand,
    /// Slots reserved once, when the engine starts, and reused run after run: an instance only
    /// takes a slot and resets it (copy-on-write memory image, decommitted pages). This suits
    /// `serve`, which instantiates the same components again and again.
    Pooling {
        /// Runs that may be instantiated at once; one more fails to instantiate, as when out of
        /// memory.
        runs: u32,
    },
}

impl Allocation {
    /// The allocator `Doctor:Engine:Allocator` names, `default` when it is not set.
    ///
    /// `pooling` gets room for [`DEFAULT_POOLED_RUNS`] runs at once, or `runs` when that is
    /// larger.
    pub fn from_settings(
        settings: &Settings,
        default: Allocation,
        runs: u32,
    ) -> Result<Allocation, ConfigError> {
        let Some(text) = settings.get(ALLOCATOR_KEY) else {
            return Ok(default);
        };
        match text.trim().to_ascii_lowercase().as_str() {
            "on-demand" | "ondemand" => Ok(Allocation::OnDemand),
            "pooling" => Ok(Allocation::Pooling {
                runs: runs.max(DEFAULT_POOLED_RUNS),
            }),
            _ => Err(ConfigError::new(format!(
                "`{ALLOCATOR_KEY}` must be `on-demand` or `pooling`, got {text:?}"
            ))),
        }
    }
}

/// The engine, the linker every component is checked against, and the epoch ticker.
pub struct DoctorEngine {
    engine: Engine,
    linker: Linker<SandboxState>,
    allocation: Allocation,
    _ticker: EpochTicker,
}

impl DoctorEngine {
    /// An engine with the on-demand allocator; see [`DoctorEngine::with_allocation`].
    pub fn new() -> anyhow::Result<Self> {
        DoctorEngine::with_allocation(Allocation::OnDemand, &Limits::default())
    }

    /// Configures the engine (component model, epoch interruption, the allocator) and links
    /// every interface a check may import.
    ///
    /// A pooling allocator is sized from `limits`, so that the sandbox's own limiter, not the
    /// pool, is what refuses a run too much memory, tables or instances, and the operator sees
    /// the same diagnosis with either allocator.
    pub fn with_allocation(allocation: Allocation, limits: &Limits) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(WASM_STACK_BYTES);
        if let Allocation::Pooling { runs } = allocation {
            // A slot is as large as the memory limit, not wasmtime's 4 GiB: hundreds of slots
            // then take tens of GiB of address space instead of terabytes. Bounds checks the
            // 4 GiB reservation would have elided cost little in checks that mostly wait on I/O.
            config.memory_reservation(limits.memory_bytes() as u64);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
                limits, runs,
            )));
        }
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("failed to configure the wasmtime engine")?;

        let mut linker = Linker::new(&engine);
        sandbox::add_to_linker(&mut linker).context("failed to link the host interfaces")?;

        let ticker = EpochTicker::start(engine.clone());
        Ok(DoctorEngine {
            engine,
            linker,
            allocation,
            _ticker: ticker,
        })
    }

    /// The allocator this engine was built with.
    pub fn allocation(&self) -> Allocation {
        self.allocation
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker holding every host interface.
    pub fn linker(&self) -> &Linker<SandboxState> {
        &self.linker
    }

    /// A fresh store for one call, limited as `policy.limits` says and interrupted at
    /// `policy.deadline`.
    ///
    /// Each epoch tick yields to the async executor, so other checks and the host's own timeout
    /// keep running while a check computes; once the deadline has passed the next tick traps.
    pub fn store(&self, policy: SandboxPolicy) -> Store<SandboxState> {
        let deadline: Instant = policy.deadline;
        let mut store = Store::new(&self.engine, SandboxState::new(policy));
        store.limiter(|state| state.limiter());
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }
}

/// Pool sizes for `runs` runs at once, each within `limits`.
fn pooling_config(limits: &Limits, runs: u32) -> PoolingAllocationConfig {
    let clamp = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
    let runs = runs.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(runs)
        .total_core_instances(runs.saturating_mul(CORE_INSTANCES_PER_RUN))
        .total_memories(runs)
        .total_tables(runs.saturating_mul(CORE_INSTANCES_PER_RUN))
        .total_stacks(runs)
        .max_memory_size(limits.memory_bytes())
        .table_elements(usize::try_from(limits.table_elements).unwrap_or(usize::MAX))
        .max_core_instances_per_component(clamp(limits.instances))
        .max_memories_per_component(clamp(limits.memories))
        .max_tables_per_component(clamp(limits.tables))
        .max_memories_per_module(clamp(limits.memories))
        .max_tables_per_module(clamp(limits.tables))
        .decommit_batch_size(DECOMMIT_BATCH)
        .table_keep_resident(TABLE_KEEP_RESIDENT);
    pool
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("stella-doctor-epoch".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    // Parked rather than asleep, so that dropping the ticker wakes it at once
                    // instead of making every process exit wait up to a tick. An early wake-up
                    // only advances the epoch early, and deadlines are checked against the clock.
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                }
            })
            .ok();
        if thread.is_none() {
            // Without the ticker a spinning check is still stopped by the host's timeout at
            // its next host call, but not inside a pure loop.
            tracing::warn!(
                "could not start the epoch ticker thread; deadlines cannot interrupt running WebAssembly"
            );
        }
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
