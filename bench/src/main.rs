//! `doctor-bench`: measures the host side by side with a native build of the same probe and the
//! manual curl procedure, prints markdown tables, and rewrites the measured section of
//! `BENCHMARKS.md`. `make bench` builds everything and runs it; see BENCHMARKS.md for what each
//! table means.
//!
//! Every load goes to 127.0.0.1 only, every phase is bounded in count or time, and every process
//! started here is stopped before the next phase.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use doctor_bench::http1::Connection;
use doctor_bench::registry::Registry;
use doctor_bench::size::custom_section_bytes;
use doctor_bench::stats::{Samples, ratio, show, show_bytes};
use doctor_bench::stub::Stub;
use stella_doctor::config::Settings;
use stella_doctor::contract::{self, CheckInstance};
use stella_doctor::engine::{Allocation, DEFAULT_POOLED_RUNS, DoctorEngine};
use stella_doctor::limits::Limits;
use stella_doctor::loader::{self, LoadOptions, LoadedCheck};
use stella_doctor::policy::Allowlist;
use stella_doctor::redact::Redactor;
use stella_doctor::runner::{self, RunOptions};
use stella_doctor::sandbox::{SandboxPolicy, ScopedConfig};
use stella_doctor::tls::TlsSettings;

/// The service account every form uses, against every registry.
const USER: &str = "doctor-bench";
const PASSWORD: &str = "doctor-bench-password";
/// The repository every form opens its upload session in.
const REPOSITORY: &str = "stellaops/doctor-bench";
/// `htpasswd -B`'s default cost; distribution verifies it on every request.
const BCRYPT_COST: u32 = 5;
const PUSH_CHECK: &str = "check.integration.oci.push";

/// Where the measured section of BENCHMARKS.md starts and ends.
const BEGIN: &str = "<!-- doctor-bench:begin (written by `make bench`; edits here are lost) -->";
const END: &str = "<!-- doctor-bench:end -->";

const TARGET_DISPATCH: Duration = Duration::from_micros(50);
const TARGET_E2E_RATIO: f64 = 1.10;
const TARGET_WARM_START: Duration = Duration::from_millis(30);
const TARGET_THROUGHPUT_SHARE: f64 = 0.80;
const TARGET_RSS_PER_RUN: u64 = 2 * 1024 * 1024;
const TARGET_COMPONENT_BYTES: u64 = 500 * 1024;

struct Args {
    host: PathBuf,
    native: PathBuf,
    push: PathBuf,
    well_behaved: PathBuf,
    unstripped: PathBuf,
    write: Option<PathBuf>,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut values = std::collections::HashMap::new();
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("`{flag}` needs a value"))?;
            values.insert(flag.trim_start_matches("--").to_string(), value);
        }
        let mut path = |name: &str| {
            values.remove(name).map(PathBuf::from).with_context(|| {
                format!("missing `--{name} PATH`; run the bench with `make bench`")
            })
        };
        Ok(Args {
            host: path("host")?,
            native: path("native")?,
            push: path("push")?,
            well_behaved: path("well-behaved")?,
            unstripped: path("unstripped")?,
            write: path("write").ok(),
        })
    }
}

/// One target of the issue, its measured value and whether it is met.
struct Target {
    what: &'static str,
    goal: String,
    measured: String,
    met: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let work = tempfile::tempdir()?;
    let mut out = String::new();
    let mut targets = Vec::new();

    writeln!(out, "{}", machine(&args)?)?;
    eprintln!("[1/5] dispatch overhead");
    out.push_str(&runtime.block_on(dispatch(&args.well_behaved, &mut targets))?);

    let registry = Registry::start(USER, PASSWORD, BCRYPT_COST)?;
    let stub = Stub::start(USER, PASSWORD)?;
    let plugins = work.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(&args.push, plugins.join("oci-push-check.wasm"))?;
    let forms = Forms {
        host: args.host.clone(),
        native: args.native.clone(),
        plugins,
        cache: work.path().join("cache"),
    };

    eprintln!("[2/5] end to end against docker-registry");
    out.push_str(&end_to_end(&forms, &registry.url, &mut targets)?);
    eprintln!("[3/5] process start");
    out.push_str(&process_start(
        &forms,
        &stub.url,
        work.path(),
        &mut targets,
    )?);
    eprintln!("[4/5] service throughput and memory");
    out.push_str(&throughput(
        &forms,
        &[("stub", &stub.url), ("docker-registry", &registry.url)],
        &mut targets,
    )?);
    drop(registry);
    eprintln!("[5/5] component size");
    out.push_str(&size(&args, &mut targets)?);

    let mut summary =
        String::from("### Targets\n\n| target | goal | measured | met |\n|---|---|---|---|\n");
    for target in &targets {
        let met = if target.met { "yes" } else { "**no**" };
        writeln!(
            summary,
            "| {} | {} | {} | {met} |",
            target.what, target.goal, target.measured
        )?;
    }
    writeln!(
        summary,
        "\nThe whole run took {:.0} s.\n",
        started.elapsed().as_secs_f64()
    )?;
    let section = format!("{summary}{out}");
    println!("{section}");
    if let Some(path) = &args.write {
        rewrite(path, &section)?;
        eprintln!("updated {}", path.display());
    }
    Ok(())
}

/// The machine, the versions and the command, so that anyone can compare a run of their own.
fn machine(args: &Args) -> anyhow::Result<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|kib| kib.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map(|kib| format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let first_line = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .ok()
            .map(|output| {
                let text = String::from_utf8_lossy(&output.stdout).to_string();
                text.lines().next().unwrap_or_default().trim().to_string()
            })
            .unwrap_or_else(|| "not found".into())
    };
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let wasmtime = lock
        .split("[[package]]")
        .find(|block| block.contains("name = \"wasmtime\"\n"))
        .and_then(|block| block.lines().find_map(|l| l.strip_prefix("version = ")))
        .unwrap_or("unknown")
        .trim_matches('"')
        .to_string();

    let mut text = String::from("### Machine and versions\n\n| | |\n|---|---|\n");
    for (key, value) in [
        ("CPU", format!("{cpu}, {cores} cores (`nproc`)")),
        ("memory", memory),
        ("kernel", kernel.trim().to_string()),
        ("rustc", first_line("rustc", "--version")),
        ("wasmtime", wasmtime),
        ("docker-registry", first_line("docker-registry", "--version")),
        ("curl", first_line("curl", "--version")),
        ("host binary", args.host.display().to_string()),
        (
            "command",
            "`make bench` (= `make bench-build`, then `target/release/doctor-bench …` as in the Makefile)".into(),
        ),
    ] {
        writeln!(text, "| {key} | {value} |")?;
    }
    Ok(text)
}

// ----------------------------------------------------------------------------------------------
// 1. Dispatch overhead, in process.

const DISPATCH_WARMUP: usize = 200;
const DISPATCH_RUNS: usize = 3000;

async fn dispatch(well_behaved: &Path, targets: &mut Vec<Target>) -> anyhow::Result<String> {
    let tls = Arc::new(TlsSettings::trusting_nothing()?);
    let mut rows = Vec::new();
    let mut pooled_pre = Duration::ZERO;
    let mut guest_only = None;

    for (name, allocation) in [
        ("on-demand", Allocation::OnDemand),
        (
            "pooling",
            Allocation::Pooling {
                runs: DEFAULT_POOLED_RUNS,
            },
        ),
    ] {
        let engine = Arc::new(DoctorEngine::with_allocation(
            allocation,
            &Limits::default(),
        )?);
        let check = loader::load_file(&engine, well_behaved, &LoadOptions::default())
            .await
            .map_err(|err| anyhow::anyhow!("{}: {}", err.file, err.error))?;
        let policy = || SandboxPolicy {
            check_id: check.metadata.id.clone(),
            config: ScopedConfig::empty(&check.metadata.id),
            allowlist: Allowlist::default(),
            deadline: Instant::now() + Duration::from_secs(30),
            limits: Limits::default(),
            tls: tls.clone(),
        };

        let component = check.pre.instance_pre().component().clone();
        let linked = time_async(|| async {
            let mut store = engine.store(policy());
            let instance = engine
                .linker()
                .instantiate_async(&mut store, &component)
                .await?;
            let bindings = CheckInstance::new(&mut store, &instance)?;
            contract::call_run(&bindings, &mut store).await?;
            Ok(())
        })
        .await?;
        let pre = time_async(|| async {
            let mut store = engine.store(policy());
            let bindings = check.pre.instantiate_async(&mut store).await?;
            contract::call_run(&bindings, &mut store).await?;
            Ok(())
        })
        .await?;
        let settings = Arc::new(Settings::default());
        let options = RunOptions::from_settings(&settings)?;
        let host_path = time_async(|| full_run(&engine, &check, &settings, &options)).await?;
        if guest_only.is_none() {
            guest_only = Some(guest_run_alone(&engine, &check, policy()).await?);
        }
        if let Allocation::Pooling { .. } = allocation {
            pooled_pre = pre.median();
        }
        rows.push((format!("{name}, `Linker::instantiate` each run"), linked));
        rows.push((format!("{name}, `InstancePre` (what the host does)"), pre));
        rows.push((
            format!("{name}, `InstancePre` + `runner::run_checks` (sandbox, redaction, report)"),
            host_path,
        ));
    }

    let mut text = format!(
        "### 1. Dispatch overhead\n\n`test.well-behaved` (no I/O; `run()` folds 10 000 numbers), release component, \
         in process: store, instantiate, `run()`, drop. {DISPATCH_WARMUP} warm-up runs discarded, {DISPATCH_RUNS} measured per row.\n\n\
         | path | median | p99 |\n|---|---|---|\n"
    );
    for (name, samples) in &rows {
        writeln!(
            text,
            "| {name} | {} | {} |",
            show(samples.median()),
            show(samples.percentile(99.0))
        )?;
    }
    if let Some(guest) = &guest_only {
        writeln!(
            text,
            "| `run()` alone, again on one live instance (the check's own work) | {} | {} |",
            show(guest.median()),
            show(guest.percentile(99.0))
        )?;
    }
    text.push('\n');
    targets.push(Target {
        what: "dispatch, pooling + `InstancePre`",
        goal: format!("median < {}", show(TARGET_DISPATCH)),
        measured: show(pooled_pre),
        met: pooled_pre < TARGET_DISPATCH,
    });
    Ok(text)
}

/// `run()` called again and again on one live instance: the check's own work and the call's
/// lifting and lowering, without instantiation.
async fn guest_run_alone(
    engine: &DoctorEngine,
    check: &LoadedCheck,
    policy: SandboxPolicy,
) -> anyhow::Result<Samples> {
    let mut store = engine.store(policy);
    let bindings = check.pre.instantiate_async(&mut store).await?;
    let mut samples = Vec::with_capacity(DISPATCH_RUNS);
    for i in 0..DISPATCH_WARMUP + DISPATCH_RUNS {
        let started = Instant::now();
        contract::call_run(&bindings, &mut store).await?;
        if i >= DISPATCH_WARMUP {
            samples.push(started.elapsed());
        }
    }
    Ok(Samples::new(samples))
}

/// One run through the host's own runner, as `run` and `serve` do it.
///
/// `options` are read once, as `run` and `serve` read them: reading them loads the platform's
/// trust store, which is not part of a run.
async fn full_run(
    engine: &Arc<DoctorEngine>,
    check: &LoadedCheck,
    settings: &Arc<Settings>,
    options: &RunOptions,
) -> anyhow::Result<()> {
    let runs = runner::run_checks(
        engine.clone(),
        vec![check.clone()],
        settings.clone(),
        Arc::new(Redactor::new(Vec::<String>::new())),
        options.clone(),
    )
    .await;
    anyhow::ensure!(
        runs.iter()
            .all(|run| run.result.diagnosis.contains("ran to the end")),
        "the well-behaved check did not pass: {:?}",
        runs.first().map(|run| &run.result.diagnosis)
    );
    Ok(())
}

async fn time_async<F, Fut>(mut once: F) -> anyhow::Result<Samples>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for _ in 0..DISPATCH_WARMUP {
        once().await?;
    }
    let mut samples = Vec::with_capacity(DISPATCH_RUNS);
    for _ in 0..DISPATCH_RUNS {
        let started = Instant::now();
        once().await?;
        samples.push(started.elapsed());
    }
    Ok(Samples::new(samples))
}

// ----------------------------------------------------------------------------------------------
// 2. End to end, and 3. process start: whole processes, as an operator runs them.

/// The programs and folders every process-level measurement uses.
struct Forms {
    host: PathBuf,
    native: PathBuf,
    plugins: PathBuf,
    cache: PathBuf,
}

impl Forms {
    /// `stella-doctor run` of the push check against `registry`.
    fn host(&self, registry: &str, cache: &Path) -> Command {
        let mut command = Command::new(&self.host);
        command
            .arg("--plugins")
            .arg(&self.plugins)
            .arg("--cache-dir")
            .arg(cache)
            .args(["run", "--check", PUSH_CHECK, "--format", "json"]);
        with_account(&mut command, registry);
        command
    }

    /// `native-probe` against `registry`.
    fn native(&self, registry: &str) -> Command {
        let mut command = Command::new(&self.native);
        with_account(&mut command, registry);
        command
    }
}

/// The same registry, repository and credentials for every form.
fn with_account(command: &mut Command, registry: &str) {
    command
        .env("OCI__RegistryUrl", registry)
        .env("OCI__Username", USER)
        .env("OCI__Password", PASSWORD)
        .env("OCI__PushTestRepository", REPOSITORY)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
}

/// Runs `command` to its end; fails unless it exits 0.
fn timed(command: &mut Command) -> anyhow::Result<(Duration, String, String)> {
    let started = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{stdout}\n{stderr}",
            output.status
        );
    }
    Ok((elapsed, stdout, stderr))
}

/// The manual procedure: curl POST to open an upload session, curl DELETE of its Location.
fn curl_procedure(registry: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let credentials = format!("{USER}:{PASSWORD}");
    let post = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-u",
            &credentials,
            "-X",
            "POST",
        ])
        .arg(format!("{registry}/v2/{REPOSITORY}/blobs/uploads/"))
        .output()
        .context("cannot run curl; install it with `apt-get install -y curl`")?;
    let headers = String::from_utf8_lossy(&post.stdout);
    anyhow::ensure!(
        headers.lines().next().is_some_and(|l| l.contains(" 202")),
        "curl POST did not get 202:\n{headers}"
    );
    let location = headers
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_string())
        })
        .context("curl POST got no Location")?;
    let location = if location.starts_with('/') {
        format!("{registry}{location}")
    } else {
        location
    };
    let delete = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            &credentials,
            "-X",
            "DELETE",
        ])
        .arg(&location)
        .output()?;
    let status = String::from_utf8_lossy(&delete.stdout).to_string();
    anyhow::ensure!(status == "204", "curl DELETE got {status}, not 204");
    Ok(started.elapsed())
}

const E2E_WARMUP: usize = 3;
const E2E_ROUNDS: usize = 30;

fn end_to_end(forms: &Forms, registry: &str, targets: &mut Vec<Target>) -> anyhow::Result<String> {
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for round in 0..E2E_WARMUP + E2E_ROUNDS {
        // The form that goes first changes every round, so none always meets a cold registry.
        for i in 0..3 {
            let form = (round + i) % 3;
            let elapsed = match form {
                0 => timed(&mut forms.host(registry, &forms.cache))?.0,
                1 => timed(&mut forms.native(registry))?.0,
                _ => curl_procedure(registry)?,
            };
            if round >= E2E_WARMUP {
                samples[form].push(elapsed);
            }
        }
    }
    let [host, native, curl] = samples.map(Samples::new);
    let mut text = format!(
        "### 2. End to end: the push check against docker-registry\n\n\
         Whole processes, wall time from start to exit: the three forms alternate within each round, {E2E_WARMUP} warm-up rounds discarded, \
         {E2E_ROUNDS} measured. Same registry (htpasswd, bcrypt cost {BCRYPT_COST}), repository `{REPOSITORY}` and account for all. \
         The host's compile cache is warm.\n\n\
         | form | median | p99 | vs native |\n|---|---|---|---|\n"
    );
    for (name, form) in [
        ("`stella-doctor run` (component in the host)", &host),
        ("`native-probe` (same probe crate, native)", &native),
        ("curl POST, then curl DELETE of the Location", &curl),
    ] {
        writeln!(
            text,
            "| {name} | {} | {} | {} |",
            show(form.median()),
            show(form.percentile(99.0)),
            ratio(form.median(), native.median())
        )?;
    }
    text.push('\n');
    let measured = host.median().as_secs_f64() / native.median().as_secs_f64();
    targets.push(Target {
        what: "end to end, component / native",
        goal: format!("≤ {TARGET_E2E_RATIO:.2}"),
        measured: format!("{measured:.2}"),
        met: measured <= TARGET_E2E_RATIO,
    });
    Ok(text)
}

const COLD_RUNS: usize = 5;
const WARM_WARMUP: usize = 3;
const WARM_RUNS: usize = 20;

fn process_start(
    forms: &Forms,
    stub: &str,
    work: &Path,
    targets: &mut Vec<Target>,
) -> anyhow::Result<String> {
    // Cold: an empty cache folder each time, so each start compiles; the first run's log proves it.
    let mut cold = Vec::new();
    for i in 0..COLD_RUNS {
        let cache = work.join(format!("cold-cache-{i}"));
        let mut command = forms.host(stub, &cache);
        if i == 0 {
            command.env("RUST_LOG", "stella_doctor=debug");
        }
        let (elapsed, _, stderr) = timed(&mut command)?;
        if i == 0 {
            anyhow::ensure!(
                stderr.contains("compiled component cached"),
                "the cold start did not compile:\n{stderr}"
            );
        } else {
            cold.push(elapsed);
        }
    }

    let warm_cache = work.join("warm-cache");
    let (_, _, stderr) = timed(
        forms
            .host(stub, &warm_cache)
            .env("RUST_LOG", "stella_doctor=debug"),
    )?;
    anyhow::ensure!(
        stderr.contains("compiled component cached"),
        "no compile:\n{stderr}"
    );
    let (_, _, stderr) = timed(
        forms
            .host(stub, &warm_cache)
            .env("RUST_LOG", "stella_doctor=debug"),
    )?;
    anyhow::ensure!(
        stderr.contains("loaded from the cache") && !stderr.contains("compiled component cached"),
        "the warm start compiled again:\n{stderr}"
    );

    let mut warm: [Vec<Duration>; 3] = Default::default();
    for round in 0..WARM_WARMUP + WARM_RUNS {
        for (form, slot) in warm.iter_mut().enumerate() {
            let elapsed = match form {
                0 => timed(&mut forms.host(stub, &warm_cache))?.0,
                1 => {
                    timed(
                        forms
                            .host(stub, &warm_cache)
                            .env("Doctor__Engine__Allocator", "pooling"),
                    )?
                    .0
                }
                _ => timed(&mut forms.native(stub))?.0,
            };
            if round >= WARM_WARMUP {
                slot.push(elapsed);
            }
        }
    }
    let cold = Samples::new(cold);
    let [on_demand, pooling, native] = warm.map(Samples::new);
    let mut text = format!(
        "### 3. Process start to result\n\n\
         `stella-doctor run --check {PUSH_CHECK}` against the loopback stub registry (network time near zero), wall time from \
         start to exit. Cold: an empty `--cache-dir`, so the component is compiled (the debug log of a first run shows \
         `compiled component cached`), {} measured after one discarded. Warm: the same cache folder (the log shows \
         `loaded from the cache` and no compile), {WARM_WARMUP} discarded, {WARM_RUNS} measured, alternating.\n\n\
         | start | median | p99 |\n|---|---|---|\n",
        COLD_RUNS - 1
    );
    for (name, samples) in [
        ("cold: compiles the component (on-demand allocator)", &cold),
        (
            "warm cache, on-demand allocator (the CLI default)",
            &on_demand,
        ),
        (
            "warm cache, pooling allocator (`Doctor:Engine:Allocator=pooling`)",
            &pooling,
        ),
        (
            "`native-probe` process, same stub (process start + network)",
            &native,
        ),
    ] {
        writeln!(
            text,
            "| {name} | {} | {} |",
            show(samples.median()),
            show(samples.percentile(99.0))
        )?;
    }
    text.push('\n');
    let budget = TARGET_WARM_START + native.median();
    targets.push(Target {
        what: "warm-cache process start to result",
        goal: format!(
            "< 30 ms + network (native process: {}) = {}",
            show(native.median()),
            show(budget)
        ),
        measured: show(on_demand.median()),
        met: on_demand.median() < budget,
    });
    Ok(text)
}

// ----------------------------------------------------------------------------------------------
// 4. Throughput and memory of the service.

const LOAD_WARMUP: Duration = Duration::from_secs(1);
const LOAD_WINDOW: Duration = Duration::from_secs(4);
const CONCURRENCY: [usize; 3] = [1, 8, 64];

/// A server process started for one measurement; killed on drop.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    /// Starts `command` and reads the `http://ADDR` it prints on its first line.
    fn start(mut command: Command) -> anyhow::Result<Server> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some((_, address)) = line.trim().split_once("http://") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{command:?} did not say where it listens: {line:?}");
        };
        Ok(Server {
            address: address.to_string(),
            child,
        })
    }

    /// Resident memory now, from `/proc/PID/status`.
    fn rss(&self) -> u64 {
        rss_of(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// User plus system CPU time the process has used so far, all threads, from `/proc/PID/stat`.
fn cpu_of(pid: u32) -> Duration {
    // Fields 14 and 15 (utime, stime), counted after the parenthesised command name, which may
    // itself hold spaces. They are in USER_HZ ticks, which Linux fixes at 100 per second.
    const USER_HZ: u64 = 100;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 1000 / USER_HZ)
}

/// What one load phase measured.
struct Load {
    completed: u64,
    failed: u64,
    peak_rss: u64,
    /// CPU time the serving process used during the measured window.
    cpu: Duration,
}

impl Load {
    fn per_second(&self) -> f64 {
        self.completed as f64 / LOAD_WINDOW.as_secs_f64()
    }

    /// The serving process's CPU time per answered run in the measured window.
    fn cpu_per_run(&self) -> Duration {
        let runs = (self.completed + self.failed).max(1);
        self.cpu / u32::try_from(runs).unwrap_or(u32::MAX)
    }
}

/// `concurrency` clients, each on its own kept-alive connection, posting `body` to `path` back
/// to back; answers that end inside the measured window count, the warm-up before it does not.
fn load(server: &Server, path: &str, body: &str, concurrency: usize) -> anyhow::Result<Load> {
    let start = Instant::now() + Duration::from_millis(50);
    let window = (start + LOAD_WARMUP, start + LOAD_WARMUP + LOAD_WINDOW);
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let (address, path, body) = (server.address.clone(), path.to_string(), body.to_string());
        let (completed, failed) = (completed.clone(), failed.clone());
        clients.push(std::thread::spawn(move || {
            let headers = [("content-type".to_string(), "application/json".to_string())];
            let mut connection = None;
            while Instant::now() < window.1 {
                if connection.is_none() {
                    connection = Connection::connect(&address, Duration::from_secs(60)).ok();
                }
                let Some(open) = connection.as_mut() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let reply = open.send("POST", &path, &headers, body.as_bytes());
                let finished = Instant::now();
                let counted = finished >= window.0 && finished < window.1;
                match reply {
                    Ok(reply) => {
                        let passed = reply.status == 200
                            && String::from_utf8_lossy(&reply.body).contains("\"pass\"");
                        if counted {
                            let counter = if passed { &completed } else { &failed };
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        if reply.closes {
                            connection = None;
                        }
                    }
                    Err(_) => {
                        if counted {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        connection = None;
                    }
                }
            }
        }));
    }

    // Resident memory sampled through the measured window, and CPU time at its two ends.
    let pid = server.child.id();
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut peak, mut cpu_start, mut cpu_end) = (0, None, None);
            while !done.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now >= window.0 && cpu_start.is_none() {
                    cpu_start = Some(cpu_of(pid));
                }
                if now >= window.1 && cpu_end.is_none() {
                    cpu_end = Some(cpu_of(pid));
                }
                if now >= window.0 && now < window.1 {
                    peak = peak.max(rss_of(pid));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // The clients stop at the window's end, so a reading taken as they finish is late
            // by no work at all.
            cpu_end = cpu_end.or_else(|| Some(cpu_of(pid)));
            let cpu = match (cpu_start, cpu_end) {
                (Some(start), Some(end)) => end.saturating_sub(start),
                _ => Duration::ZERO,
            };
            (peak, cpu)
        })
    };
    for client in clients {
        let _ = client.join();
    }
    done.store(true, Ordering::Relaxed);
    let (peak_rss, cpu) = sampler.join().unwrap_or((0, Duration::ZERO));
    Ok(Load {
        completed: completed.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        peak_rss,
        cpu,
    })
}

/// Waits until the service lists the push check.
fn wait_loaded(server: &Server) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let listed = Connection::connect(&server.address, Duration::from_secs(5))
            .and_then(|mut c| c.send("GET", "/api/v1/doctor/checks", &[], &[]))
            .is_ok_and(|reply| String::from_utf8_lossy(&reply.body).contains(PUSH_CHECK));
        if listed {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the service did not load `{PUSH_CHECK}` within 60 s")
}

fn throughput(
    forms: &Forms,
    registries: &[(&str, &str)],
    targets: &mut Vec<Target>,
) -> anyhow::Result<String> {
    let max_in_flight = CONCURRENCY.iter().max().copied().unwrap_or(1);
    let mut table = String::from(
        "| registry | concurrency | `stella-doctor serve` runs/s | `native-probe --serve` runs/s | serve / native | CPU per run (serve, native) | failed (serve, native) |\n|---|---|---|---|---|---|---|\n",
    );
    let mut memory = String::from(
        "| registry | process | idle RSS | peak RSS at 64 in flight | per in-flight run |\n|---|---|---|---|---|\n",
    );
    for (name, url) in registries {
        let mut serve = Command::new(&forms.host);
        serve
            .arg("--plugins")
            .arg(&forms.plugins)
            .arg("--cache-dir")
            .arg(&forms.cache)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("Doctor__Api__MaxConcurrentRuns", max_in_flight.to_string());
        with_account(&mut serve, url);
        let mut native = Command::new(&forms.native);
        native.args(["--serve", "127.0.0.1:0"]);
        with_account(&mut native, url);

        let mut results: Vec<(Load, u64)> = Vec::new();
        for (command, path, body) in [
            (
                serve,
                "/api/v1/doctor/run",
                format!("{{\"checks\":[\"{PUSH_CHECK}\"]}}"),
            ),
            (native, "/run", String::new()),
        ] {
            let server = Server::start(command)?;
            if path != "/run" {
                wait_loaded(&server)?;
            }
            std::thread::sleep(Duration::from_millis(300));
            let idle = server.rss();
            for concurrency in CONCURRENCY {
                results.push((load(&server, path, &body, concurrency)?, idle));
            }
        }
        let (serve_runs, native_runs) = results.split_at(CONCURRENCY.len());
        for (i, concurrency) in CONCURRENCY.iter().enumerate() {
            let (serve, native) = (&serve_runs[i].0, &native_runs[i].0);
            let share = serve.per_second() / native.per_second().max(f64::MIN_POSITIVE);
            writeln!(
                table,
                "| {name} | {concurrency} | {:.0} | {:.0} | {share:.2} | {}, {} | {}, {} |",
                serve.per_second(),
                native.per_second(),
                show(serve.cpu_per_run()),
                show(native.cpu_per_run()),
                serve.failed,
                native.failed
            )?;
            if *concurrency == max_in_flight {
                targets.push(Target {
                    what: if *name == "stub" {
                        "service throughput at 64, stub registry"
                    } else {
                        "service throughput at 64, docker-registry"
                    },
                    goal: format!("≥ {TARGET_THROUGHPUT_SHARE:.2} of native"),
                    measured: format!("{share:.2}"),
                    met: share >= TARGET_THROUGHPUT_SHARE && serve.failed == 0,
                });
            }
        }
        for (process, runs) in [
            ("stella-doctor serve", serve_runs),
            ("native-probe --serve", native_runs),
        ] {
            let (last, idle) = runs.last().map(|(l, i)| (l, *i)).context("no load")?;
            let per_run = last.peak_rss.saturating_sub(idle) / max_in_flight as u64;
            writeln!(
                memory,
                "| {name} | {process} | {} | {} | {} |",
                show_bytes(idle),
                show_bytes(last.peak_rss),
                show_bytes(per_run)
            )?;
            if *name == "docker-registry" && process == "stella-doctor serve" {
                targets.push(Target {
                    what: "resident memory per in-flight run (serve)",
                    goal: format!("≤ {}", show_bytes(TARGET_RSS_PER_RUN)),
                    measured: show_bytes(per_run),
                    met: per_run <= TARGET_RSS_PER_RUN,
                });
            }
        }
    }
    Ok(format!(
        "### 4. Service throughput and memory\n\n\
         `POST /api/v1/doctor/run` with `{{\"checks\":[\"{PUSH_CHECK}\"]}}` to `stella-doctor serve` (pooling allocator, \
         warm compile cache, `Doctor:Api:MaxConcurrentRuns={max_in_flight}`), and `POST /run` to `native-probe --serve` \
         (tokio + hyper, the probe on the blocking pool), each client on a kept-alive connection. Per level {} s of warm-up \
         discarded, then {} s counted; a run counts when its answer is a pass. The load generator runs on the same 2 cores. \
         CPU per run is the serving process's user and system time over the counted window (`/proc/PID/stat`, all \
         threads), divided by the runs answered in it.\n\n\
         {table}\n\
         Resident memory (`VmRSS`) of the serving process: idle after loading, and the peak sampled every 20 ms through the \
         64-client window; per in-flight run is (peak − idle) / {max_in_flight}.\n\n{memory}\n",
        LOAD_WARMUP.as_secs(),
        LOAD_WINDOW.as_secs()
    ))
}

// ----------------------------------------------------------------------------------------------
// 5. Size.

fn size(args: &Args, targets: &mut Vec<Target>) -> anyhow::Result<String> {
    let mut text = String::from(
        "### 5. Component size\n\n`cargo build --profile guest-release --target wasm32-wasip2 -p oci-push-check` \
         (opt-level s, LTO, one codegen unit, panic=abort, `strip = true`), and the same with \
         `CARGO_PROFILE_GUEST_RELEASE_STRIP=false`.\n\n\
         | build | bytes | size | custom sections |\n|---|---|---|---|\n",
    );
    let mut stripped = 0;
    for (name, path) in [
        ("`guest-release` (stripped)", &args.push),
        ("`guest-release`, not stripped", &args.unstripped),
        ("`test.well-behaved`, `guest-release`", &args.well_behaved),
    ] {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let custom = custom_section_bytes(&bytes).unwrap_or(0);
        writeln!(
            text,
            "| {name} | {} | {} | {} ({:.1} %) |",
            bytes.len(),
            show_bytes(bytes.len() as u64),
            show_bytes(custom),
            100.0 * custom as f64 / bytes.len() as f64
        )?;
        if stripped == 0 {
            stripped = bytes.len() as u64;
        }
    }
    text.push('\n');
    targets.push(Target {
        what: "release push component",
        goal: format!("< {}", show_bytes(TARGET_COMPONENT_BYTES)),
        measured: show_bytes(stripped),
        met: stripped < TARGET_COMPONENT_BYTES,
    });
    Ok(text)
}

/// Replaces the marked section of `path`, or appends one when there is none.
fn rewrite(path: &Path, section: &str) -> anyhow::Result<()> {
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let marked = format!("{BEGIN}\n\n{section}\n{END}");
    let updated = match (current.find(BEGIN), current.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!(
                "{}{marked}{}",
                &current[..begin],
                &current[end + END.len()..]
            )
        }
        _ => format!("{current}\n{marked}\n"),
    };
    std::fs::write(path, updated).with_context(|| format!("cannot write {}", path.display()))
}
