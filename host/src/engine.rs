//! The one Wasmtime engine and linker the host shares between all checks, and the epoch ticker
//! that lets a deadline interrupt a check spinning in WebAssembly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, Store, UpdateDeadline};

use crate::sandbox::{self, SandboxPolicy, SandboxState};

/// How often the ticker advances the engine's epoch; a deadline is noticed within about this long.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The most native stack a check's WebAssembly may use; deeper recursion traps with a stack
/// overflow. Wasmtime's default, set here so the limit is written down where it is enforced.
pub const WASM_STACK_BYTES: usize = 512 * 1024;

/// The engine, the linker every component is checked against, and the epoch ticker.
pub struct DoctorEngine {
    engine: Engine,
    linker: Linker<SandboxState>,
    _ticker: EpochTicker,
}

impl DoctorEngine {
    /// Configures the engine (component model, epoch interruption) and links every interface a
    /// check may import.
    ///
    /// Instances use the default on-demand allocator: a doctor run instantiates a handful of
    /// components, where the pooling allocator's up-front reservation buys nothing.
    pub fn new() -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(WASM_STACK_BYTES);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("failed to configure the wasmtime engine")?;

        let mut linker = Linker::new(&engine);
        sandbox::add_to_linker(&mut linker).context("failed to link the host interfaces")?;

        let ticker = EpochTicker::start(engine.clone());
        Ok(DoctorEngine {
            engine,
            linker,
            _ticker: ticker,
        })
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
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
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
            let _ = thread.join();
        }
    }
}
