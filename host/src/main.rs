//! `stella-doctor`: runs Stella Ops doctor checks compiled to WebAssembly components.
//!
//! ```text
//! stella-doctor [--plugins DIR] [--config FILE] [--set KEY=VALUE]... [--verbose] <command>
//!   list     [--format table|json]
//!   run      [--check ID]... [--tag TAG]... [--plugin ID] [--format text|json|markdown]
//!            [--timeout 30s] [--parallel 4]
//!   inspect  FILE [--format text|json]
//!   serve    [--listen 127.0.0.1:7411]
//!   keygen   OUT
//!   sign     --key KEYFILE FILE
//! ```
//!
//! `serve` runs the HTTP API of [`stella_doctor::service`] and follows the plugins folder; it
//! exits only on a configuration error (code 2). `--cache-dir DIR` (or `Doctor:Cache:Dir`; `off`
//! turns it off) keeps compiled components between starts for every command, and a trust
//! policy (`Doctor:Trust:*`) applies to `list`, `run`, `inspect` and `serve` alike.
//!
//! Exit codes:
//!
//! - `0`: every selected check ran and none reported `fail` (`list`: every component in the
//!   folder loaded; `inspect`: the file would load);
//! - `1`: at least one check reported `fail` (a trap, panic or overrun deadline is a `fail`);
//! - `2`: a usage or configuration error, an unreadable plugins folder, a selection that matches
//!   no loaded check, or a component file that failed to load (`inspect`: the file would not
//!   load).
//!
//! A component that fails to load does not stop the others: its error is printed on stderr (and
//! listed under `"errors"` in JSON), the remaining checks run and are reported in full, and the
//! exit code is then `2` whatever their results. A broken plugin means the report is missing a
//! check, and a pipeline gate must not read that as "nothing failed"; `2` wins over `1` because
//! the operator has something to fix before the results can be trusted as complete.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use stella_doctor::config::{Settings, parse_duration};
use stella_doctor::engine::{Allocation, DoctorEngine};
use stella_doctor::limits::Limits;
use stella_doctor::loader::{self, LoadError, Plugins};
use stella_doctor::model::Severity;
use stella_doctor::redact::{LogSecrets, Redactor};
use stella_doctor::report::{self, RunReport, Style};
use stella_doctor::runner::{self, RunOptions, Selection};
use stella_doctor::service::{self, cache, trust};
use tracing_subscriber::EnvFilter;

/// Runs Stella Ops doctor health checks compiled to WebAssembly components.
#[derive(Parser)]
#[command(name = "stella-doctor", version)]
struct Cli {
    /// Folder holding the check components (`*.wasm`).
    #[arg(
        long,
        global = true,
        env = "STELLA_DOCTOR_PLUGINS",
        default_value = "plugins",
        value_name = "DIR"
    )]
    plugins: PathBuf,

    /// JSON settings file; nested objects become `Section:Key` keys.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Sets a configuration key, overriding the environment and the settings file.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,

    /// Debug logs for the host, and the checks' captured stdout/stderr in reports.
    #[arg(long, short, global = true)]
    verbose: bool,

    /// Folder for compiled components (`off` for none); default `Doctor:Cache:Dir`, else
    /// `$XDG_CACHE_HOME/stella-doctor` or `~/.cache/stella-doctor`.
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists the checks found in the plugins folder.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Runs checks and reports their results.
    Run(RunArgs),
    /// Shows what the host finds in one component file and whether it would load.
    Inspect {
        /// The component file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = InspectFormat::Text)]
        format: InspectFormat,
    },
    /// Serves the doctor API and swaps in plugin updates as the folder changes.
    Serve {
        /// Address to listen on; default `Doctor:Api:Listen`, else 127.0.0.1:7411. Any
        /// non-loopback address needs `Doctor:Api:Token`.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Makes an ed25519 key pair for signing components: OUT (private) and OUT.pub.
    Keygen {
        /// Where to write the private key; it must not exist yet.
        out: PathBuf,
    },
    /// Signs a component with a private key from `keygen`, writing FILE.sig beside it.
    Sign {
        /// The private key file.
        #[arg(long, value_name = "KEYFILE")]
        key: PathBuf,
        /// The component to sign.
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Runs only this check (repeatable).
    #[arg(long = "check", value_name = "ID")]
    checks: Vec<String>,

    /// Runs only checks with this tag (repeatable; any tag matches).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,

    /// Runs only checks contributed by this plugin id.
    #[arg(long, value_name = "ID")]
    plugin: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = RunFormat::Text)]
    format: RunFormat,

    /// Time budget of each check (`30s`, `500ms`, `2m`, or plain seconds); default
    /// `Doctor:Limits:TimeoutSeconds`, else 30s.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,

    /// How many checks run at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum RunFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Clone, Copy, ValueEnum)]
enum InspectFormat {
    Text,
    Json,
}

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };

    match runtime.block_on(execute(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Logs go to stderr: `warn` by default, `debug` for this crate with `--verbose`, or `RUST_LOG`.
///
/// Every line passes [`LogSecrets`] first, which learns the secrets as the configuration and the
/// checks become known.
fn init_logging(verbose: bool) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::new(directives),
        _ if verbose => EnvFilter::new("warn,stella_doctor=debug"),
        _ => EnvFilter::new("warn"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogSecrets::global().writer(std::io::stderr))
        .with_ansi(std::io::stderr().is_terminal() && !no_color())
        .with_target(false)
        .init();
}

/// True when the operator asked for no colour (`NO_COLOR` set and non-empty).
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty())
}

async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let env = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    let settings = Settings::layered(env, cli.config.as_deref(), &cli.set)?;
    LogSecrets::global().protect(&Redactor::new(settings.secret_values([])));
    match &cli.command {
        Command::Keygen { out } => return keygen(out),
        Command::Sign { key, file } => {
            let signature = trust::sign(key, file)?;
            println!("{}", signature.display());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let engine = Arc::new(match cli.command {
        Command::Serve { .. } => service::engine(&settings)?,
        _ => engine_for(&settings)?,
    });
    let load = load_options(&settings, &engine, cli.cache_dir.as_deref())?;

    match cli.command {
        Command::Keygen { .. } | Command::Sign { .. } => unreachable!("handled above"),
        Command::Serve { listen } => {
            let options = service::ServeOptions {
                plugins: cli.plugins,
                listen,
                load,
                engine,
            };
            service::serve(settings, options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { file, format } => {
            let inspection = loader::inspect_with(&engine, &file, &load).await;
            if inspection.digest.is_none() && !file.exists() {
                anyhow::bail!("cannot read `{}`: no such file", file.display());
            }
            let redactor = Redactor::new(settings.secret_values([]));
            let text = match format {
                InspectFormat::Text => report::inspect_text(&inspection),
                InspectFormat::Json => report::inspect_json(&inspection),
            };
            print!("{}", redactor.text(&text));
            Ok(exit_code(inspection.problems.is_empty(), EXIT_USAGE))
        }
        Command::List { format } => {
            let plugins = loader::load_dir_with(&engine, &cli.plugins, &load).await?;
            let redactor = redactor_for(&settings, &plugins);
            let errors = redacted_errors(&plugins.errors, &redactor);
            match format {
                ListFormat::Table => {
                    print!("{}", report::list_table(&plugins.checks));
                    print_load_errors(&errors);
                }
                ListFormat::Json => {
                    print!("{}", report::list_json(&plugins.checks, &errors));
                    print_load_errors(&errors);
                }
            }
            Ok(exit_code(errors.is_empty(), EXIT_USAGE))
        }
        Command::Run(args) => run(cli.plugins, cli.verbose, args, settings, engine, &load).await,
    }
}

async fn run(
    plugins_dir: PathBuf,
    verbose: bool,
    args: RunArgs,
    settings: Settings,
    engine: Arc<DoctorEngine>,
    load: &loader::LoadOptions,
) -> anyhow::Result<ExitCode> {
    let mut options = RunOptions::from_settings(&settings)?;
    options.parallel = usize::from(args.parallel);
    if let Some(timeout) = args.timeout {
        options = options.with_timeout(timeout);
    }
    let plugins = loader::load_dir_with(&engine, &plugins_dir, load).await?;
    let redactor = Arc::new(redactor_for(&settings, &plugins));
    let errors = redacted_errors(&plugins.errors, &redactor);
    print_load_errors(&errors);

    if plugins.checks.is_empty() {
        eprintln!(
            "error: no checks loaded from `{}`; put check components (`*.wasm`) there or pass `--plugins DIR`",
            plugins_dir.display()
        );
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let selection = Selection {
        checks: args.checks,
        tags: args.tags,
        plugin: args.plugin,
    };
    let selected = match selection.apply(&plugins.checks) {
        Ok(selected) => selected,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };

    let started = Instant::now();
    let runs = runner::run_checks(engine, selected, Arc::new(settings), redactor, options).await;
    let report = RunReport {
        runs: &runs,
        errors: &errors,
        duration: started.elapsed(),
        provenance: None,
    };

    let output = match args.format {
        RunFormat::Text => {
            let color = std::io::stdout().is_terminal() && !no_color();
            report::run_text(&report, verbose, Style::new(color))
        }
        RunFormat::Json => report::run_json(&report, verbose),
        RunFormat::Markdown => report::run_markdown(&report, verbose),
    };
    print!("{output}");

    if !errors.is_empty() {
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let failed = runs.iter().any(|run| run.result.severity == Severity::Fail);
    Ok(exit_code(!failed, EXIT_FAILED))
}

/// The engine of `list`, `run` and `inspect`: on-demand allocation unless
/// `Doctor:Engine:Allocator` asks for pooling, as one process instantiates only a few
/// components (BENCHMARKS.md measures both).
fn engine_for(settings: &Settings) -> anyhow::Result<DoctorEngine> {
    let allocation = Allocation::from_settings(settings, Allocation::OnDemand, 0)?;
    let limits = match allocation {
        Allocation::OnDemand => Limits::default(),
        Allocation::Pooling { .. } => Limits::from_settings(settings)?,
    };
    DoctorEngine::with_allocation(allocation, &limits)
}

/// The compile cache and trust policy every command loads components with.
///
/// A cache that cannot be opened costs compile time, not correctness: it is logged and skipped.
fn load_options(
    settings: &Settings,
    engine: &DoctorEngine,
    cache_dir: Option<&std::path::Path>,
) -> anyhow::Result<loader::LoadOptions> {
    let trust = trust::TrustPolicy::from_settings(settings)?.map(Arc::new);
    let cache =
        cache::configured_root(cache_dir, settings.get(cache::CACHE_DIR_KEY)).and_then(|root| {
            match cache::CompileCache::open(engine.engine(), &root) {
                Ok(cache) => Some(Arc::new(cache)),
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "compile cache disabled");
                    None
                }
            }
        });
    Ok(loader::LoadOptions {
        cache,
        trust,
        ..Default::default()
    })
}

/// `keygen OUT`: writes the key pair and says how to trust it.
fn keygen(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    let public = trust::keygen(out)?;
    println!("private key: {}", out.display());
    println!("public key:  {}.pub", out.display());
    println!("trust it with: --set {}={public}", trust::PUBLIC_KEYS_KEY);
    Ok(ExitCode::SUCCESS)
}

/// A redactor for the configured secrets, including keys any loaded check declares secret; the
/// log writer learns them too.
fn redactor_for(settings: &Settings, plugins: &Plugins) -> Redactor {
    let declared = plugins
        .checks
        .iter()
        .flat_map(|check| &check.metadata.config_keys)
        .filter(|key| key.secret)
        .map(|key| key.name.as_str());
    let redactor = Redactor::new(settings.secret_values(declared));
    LogSecrets::global().protect(&redactor);
    redactor
}

/// Load errors can quote what a component returned, so they are redacted like results.
fn redacted_errors(errors: &[LoadError], redactor: &Redactor) -> Vec<LoadError> {
    errors
        .iter()
        .map(|error| LoadError {
            file: error.file.clone(),
            error: redactor.text(&error.error),
        })
        .collect()
}

fn print_load_errors(errors: &[LoadError]) {
    for error in errors {
        eprintln!("error: plugin `{}`: {}", error.file, error.error);
    }
}

fn exit_code(success: bool, failure: u8) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_accepts_repeated_filters_and_durations() {
        let cli = Cli::try_parse_from([
            "stella-doctor",
            "--plugins",
            "p",
            "run",
            "--check",
            "a",
            "--check",
            "b",
            "--tag",
            "oci",
            "--timeout",
            "500ms",
            "--parallel",
            "2",
            "--set",
            "A:B=c",
            "--format",
            "json",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.checks, ["a", "b"]);
        assert_eq!(args.timeout, Some(Duration::from_millis(500)));
        assert_eq!(args.parallel, 2);
        assert_eq!(cli.set, ["A:B=c"]);
    }

    #[test]
    fn bad_durations_and_parallelism_are_usage_errors() {
        let err = Cli::try_parse_from(["stella-doctor", "run", "--timeout", "soon"]).err();
        assert_eq!(err.map(|e| e.exit_code()), Some(2));
        let err = Cli::try_parse_from(["stella-doctor", "run", "--parallel", "0"]).err();
        assert_eq!(err.map(|e| e.exit_code()), Some(2));
    }
}
