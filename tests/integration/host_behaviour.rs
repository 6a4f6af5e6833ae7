//! What the host guarantees whatever a check does: loading, selection, exit
//! codes, the outbound allowlist, redaction, and containment of a guest that
//! panics, traps or never returns.

use crate::support::doctor::{Doctor, Outcome};
use crate::support::guests::plugins_dir;
use crate::support::scripted::{ScriptedServer, respond};
use crate::{PUSH, diagnosis, evidence};
use std::fs;

const MISBEHAVING: &str = "test.misbehaving";

/// Runs `test.misbehaving` in `mode` next to the push check, which has no
/// configuration and so must still report its skip.
fn run_misbehaving(mode: &str, extra: &[(&str, &str)]) -> Outcome {
    let plugins = plugins_dir(&["oci-push-check", "misbehaving-check"]);
    let mut doctor = Doctor::new(plugins.path()).set("Test:Mode", mode);
    for (key, value) in extra {
        doctor = doctor.set(key, value);
    }
    let outcome = doctor.run(&["run", "--format", "json", "--timeout", "3s"]);
    assert_eq!(
        outcome.result(PUSH)["severity"],
        "skip",
        "the other check still runs"
    );
    outcome
}

#[test]
fn bad_components_are_reported_by_file_while_the_good_one_runs() {
    let plugins = plugins_dir(&["oci-push-check"]);
    fs::write(plugins.path().join("garbage.wasm"), b"this is not wasm").unwrap();
    // A valid core module (magic + version 1) is not a component.
    fs::write(plugins.path().join("core-module.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let doctor = Doctor::new(plugins.path());

    let listing = doctor.run(&["list", "--format", "json"]);
    let json = listing.json();
    let errors = json["errors"].as_array().expect("errors array").clone();
    let error_for = |file: &str| {
        errors
            .iter()
            .find(|e| e["file"].as_str().unwrap_or_default().ends_with(file))
            .unwrap_or_else(|| panic!("no load error for {file}: {json:#}"))["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
    };
    assert!(error_for("core-module.wasm").contains("core"), "{json:#}");
    assert!(!error_for("garbage.wasm").is_empty());
    assert_eq!(json["checks"][0]["id"], PUSH);
    assert_eq!(listing.code, 2, "a folder with a broken component");

    let run = doctor.run(&["run", "--format", "json"]);
    assert_eq!(run.result(PUSH)["severity"], "skip");
    assert!(
        run.stderr.contains("garbage.wasm"),
        "load errors go to stderr: {}",
        run.stderr
    );
    assert_eq!(
        run.code, 2,
        "the good check ran, but the report misses a check: {}",
        run.stderr
    );
}

#[test]
fn a_clean_folder_lists_and_runs_with_exit_zero() {
    let plugins = plugins_dir(&["oci-push-check"]);
    let doctor = Doctor::new(plugins.path());

    let listing = doctor.run(&["list"]);
    assert_eq!(listing.code, 0, "{}", listing.stderr);
    let run = doctor.run(&["run", "--format", "json"]);
    assert_eq!(run.code, 0, "a skip is not a failure: {}", run.stderr);
}

#[test]
fn list_prints_a_table_of_checks_with_their_component() {
    let plugins = plugins_dir(&["oci-push-check"]);

    let outcome = Doctor::new(plugins.path()).run(&["list"]);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let mut lines = outcome.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["ID", "NAME", "SEVERITY", "TAGS", "COMPONENT"]);
    let row = lines.next().unwrap_or_default();
    assert!(row.starts_with(PUSH), "{}", outcome.stdout);
    assert!(row.contains("fail"), "default severity: {row}");
    assert!(row.contains("registry,oci,push"), "tags: {row}");
    assert!(row.ends_with("oci-push-check.wasm"), "component: {row}");
}

#[test]
fn inspect_shows_world_contract_imports_and_metadata() {
    let plugins = plugins_dir(&["oci-push-check"]);
    let file = plugins.path().join("oci-push-check.wasm");
    let doctor = Doctor::new(plugins.path());

    let outcome = doctor.run(&["inspect", file.to_str().unwrap(), "--format", "json"]);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let json = outcome.json();
    assert_eq!(
        json["world"], "stellaops:doctor/doctor-check@0.1.0",
        "{json:#}"
    );
    assert_eq!(json["contractVersion"], "0.1.0", "{json:#}");
    assert_eq!(json["loadable"], true, "{json:#}");
    let imports: Vec<&str> = json["imports"]
        .as_array()
        .expect("imports")
        .iter()
        .map(|import| import["name"].as_str().unwrap())
        .collect();
    assert!(
        imports
            .iter()
            .any(|name| name.starts_with("wasi:http/outgoing-handler@")),
        "{imports:?}"
    );
    assert!(
        !imports.iter().any(|name| name.starts_with("wasi:sockets")),
        "{imports:?}"
    );
    assert_eq!(json["metadata"]["id"], PUSH);
    assert!(json.to_string().contains("OCI:RegistryUrl"), "{json:#}");

    let text = doctor.run(&["inspect", file.to_str().unwrap()]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    for line in [
        "world:     stellaops:doctor/doctor-check@0.1.0",
        "contract:  stellaops:doctor/check@0.1.0",
        "  id:               check.integration.oci.push",
        "status:    loads",
    ] {
        assert!(text.stdout.contains(line), "`{line}` in:\n{}", text.stdout);
    }
}

#[test]
fn inspect_of_a_component_for_another_world_says_it_does_not_fit() {
    let plugins = plugins_dir(&["other-world"]);
    let file = plugins.path().join("other-world.wasm");

    let outcome = Doctor::new(plugins.path()).run(&["inspect", file.to_str().unwrap()]);

    assert_eq!(outcome.code, 2, "{}", outcome.stdout);
    assert!(
        outcome
            .stdout
            .contains("world:     does not fit stellaops:doctor/doctor-check"),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome.stdout.contains("status:    does not load"),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome
            .stdout
            .contains("does not export `stellaops:doctor/check"),
        "{}",
        outcome.stdout
    );
}

#[test]
fn unknown_check_is_a_usage_error() {
    let plugins = plugins_dir(&["oci-push-check"]);

    let outcome = Doctor::new(plugins.path()).run(&["run", "--check", "check.does.not.exist"]);

    assert_eq!(outcome.code, 2);
    assert!(
        outcome.stderr.contains("check.does.not.exist"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains(PUSH),
        "lists what is available: {}",
        outcome.stderr
    );
}

#[test]
fn broken_settings_file_is_a_configuration_error_naming_the_file() {
    let plugins = plugins_dir(&["oci-push-check"]);
    let settings = plugins.path().join("settings.json");
    fs::write(&settings, "{ not json").unwrap();

    let outcome = Doctor::new(plugins.path()).run(&["run", "--config", settings.to_str().unwrap()]);

    assert_eq!(outcome.code, 2);
    assert!(
        outcome.stderr.contains("settings.json"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn selection_by_tag_and_plugin() {
    let plugins = plugins_dir(&["oci-push-check", "misbehaving-check"]);
    let doctor = Doctor::new(plugins.path()).set("Test:Mode", "pass");

    let by_tag = doctor
        .run(&["run", "--tag", "registry", "--format", "json"])
        .json();
    let by_plugin = doctor
        .run(&[
            "run",
            "--plugin",
            "stellaops.doctor.tests",
            "--format",
            "json",
        ])
        .json();

    let ids = |json: &serde_json::Value| -> Vec<String> {
        json["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["checkId"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&by_tag), vec![PUSH.to_string()]);
    assert_eq!(ids(&by_plugin), vec![MISBEHAVING.to_string()]);
}

#[test]
fn request_to_an_undeclared_host_is_denied_and_named() {
    let server = ScriptedServer::start(|_| respond(200, &[], "ok"));

    let outcome = run_misbehaving("egress", &[("Test:Url", &format!("{}/", server.url))]);

    let result = outcome.result(MISBEHAVING);
    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(
        evidence(&result, "error").contains("HttpRequestDenied"),
        "{result:#}"
    );
    let text = result["diagnosis"].as_str().unwrap();
    assert!(text.contains(&server.authority()), "names the host: {text}");
    assert!(
        text.contains("Doctor:Plugins:test.misbehaving:AllowedHosts"),
        "names the key: {text}"
    );
    assert!(server.requests().is_empty(), "nothing reached the server");
}

#[test]
fn operator_allowlist_lets_the_request_through() {
    let server = ScriptedServer::start(|_| respond(200, &[], "ok"));
    let allow = format!("http://{}", server.authority());

    let outcome = run_misbehaving(
        "egress",
        &[
            ("Test:Url", &format!("{}/", server.url)),
            ("Doctor:Plugins:test.misbehaving:AllowedHosts", &allow),
        ],
    );

    let result = outcome.result(MISBEHAVING);
    assert_eq!(result["severity"], "pass", "{result:#}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn allowlist_matches_the_port_not_just_the_name() {
    let server = ScriptedServer::start(|_| respond(200, &[], "ok"));

    let outcome = run_misbehaving(
        "egress",
        &[
            ("Test:Url", &format!("{}/", server.url)),
            (
                "Doctor:Plugins:test.misbehaving:AllowedHosts",
                "http://127.0.0.1:1",
            ),
        ],
    );

    assert_eq!(outcome.result(MISBEHAVING)["severity"], "fail");
    assert!(server.requests().is_empty());
}

#[test]
fn guest_panic_becomes_a_fail_result() {
    let outcome = run_misbehaving("panic", &[]);

    let result = outcome.result(MISBEHAVING);
    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(
        diagnosis(&result).contains("trap") || diagnosis(&result).contains("panic"),
        "{result:#}"
    );
    assert_eq!(outcome.code, 1);
}

#[test]
fn guest_trap_becomes_a_fail_result() {
    let outcome = run_misbehaving("trap", &[]);

    let result = outcome.result(MISBEHAVING);
    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(diagnosis(&result).contains("trap"), "{result:#}");
}

#[test]
fn guest_that_never_returns_is_stopped_at_its_deadline() {
    let outcome = run_misbehaving("loop", &[]);

    let result = outcome.result(MISBEHAVING);
    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(diagnosis(&result).contains("deadline"), "{result:#}");
}

#[test]
fn secret_a_guest_echoes_is_redacted() {
    let secret = "guest-echo-Secret-4411";

    let outcome = run_misbehaving("echo-secret", &[("Test:Secret", secret)]);

    let result = outcome.result(MISBEHAVING);
    assert!(
        !outcome.all_output().contains(secret),
        "{}",
        outcome.all_output()
    );
    assert!(
        result["diagnosis"].as_str().unwrap().contains("***"),
        "{result:#}"
    );
}

#[test]
fn undeclared_configuration_key_reads_as_absent() {
    let outcome = run_misbehaving(
        "read-undeclared",
        &[("OCI:Password", "hidden-from-this-check")],
    );

    let result = outcome.result(MISBEHAVING);
    assert_eq!(
        evidence(&result, "undeclared_visible"),
        "false",
        "{result:#}"
    );
}

#[test]
fn parallel_bounds_how_many_checks_run_at_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    // Each request is held until a second one is in flight (or 3 s pass), and the server keeps
    // the highest number it saw in flight at once: that is how many checks ran concurrently.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(Mutex::new(0));
    let server = {
        let (in_flight, most) = (in_flight.clone(), most.clone());
        ScriptedServer::start(move |_| {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            {
                let mut most = most.lock().unwrap();
                *most = (*most).max(now);
            }
            let held = Instant::now();
            while in_flight.load(Ordering::SeqCst) < 2 && held.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(50));
            in_flight.fetch_sub(1, Ordering::SeqCst);
            respond(404, &[], "not here")
        })
    };
    let plugins = plugins_dir(&["oci-push-check", "misbehaving-check"]);
    let doctor = Doctor::new(plugins.path())
        .set("Test:Mode", "egress")
        .set("Test:Url", &format!("{}/", server.url))
        .set(
            "Doctor:Plugins:test.misbehaving:AllowedHosts",
            &format!("http://{}", server.authority()),
        )
        .set("OCI:RegistryUrl", &server.url)
        .set("OCI:Username", "doctor")
        .set("OCI:Password", "parallel-test-password");

    for (parallel, expected) in [("1", 1), ("2", 2)] {
        *most.lock().unwrap() = 0;
        let outcome = doctor.run(&["run", "--format", "json", "--parallel", parallel]);
        assert_eq!(
            outcome.json()["results"].as_array().map(Vec::len),
            Some(2),
            "{}",
            outcome.stdout
        );
        assert_eq!(
            *most.lock().unwrap(),
            expected,
            "requests in flight at once with --parallel {parallel}"
        );
    }
}

#[test]
fn captured_output_is_shown_only_with_verbose() {
    let plugins = plugins_dir(&["misbehaving-check"]);
    let doctor = Doctor::new(plugins.path()).set("Test:Mode", "flood");

    let quiet = doctor.run(&["run", "--format", "json"]);
    let result = quiet.result(MISBEHAVING);
    assert!(result.get("output").is_none(), "{result:#}");
    let quiet_text = doctor.run(&["run"]);
    assert!(
        !quiet_text.stdout.contains("flood flood"),
        "{}",
        quiet_text.stdout
    );

    let verbose = doctor.run(&["run", "--format", "json", "--verbose"]);
    let result = verbose.result(MISBEHAVING);
    assert!(
        result["output"]["stdout"]
            .as_str()
            .is_some_and(|out| out.contains("flood flood")),
        "{result:#}"
    );
}

#[test]
fn text_output_has_colour_only_on_a_terminal() {
    use std::process::Command;

    let plugins = plugins_dir(&["oci-push-check"]);
    let binary = env!("CARGO_BIN_EXE_stella-doctor");
    let run = format!("{binary} run --plugins {}", plugins.path().display());
    // `script` (util-linux, essential on Debian) gives the host a pseudo-terminal as stdout.
    let on_terminal = |no_color: Option<&str>| {
        let mut command = Command::new("script");
        command
            .args(["-qec", &run, "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TERM", "xterm");
        if let Some(value) = no_color {
            command.env("NO_COLOR", value);
        }
        let output = command
            .output()
            .expect("`script` runs (util-linux's bsdutils package)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    let coloured = on_terminal(None);
    assert!(coloured.contains(PUSH), "{coloured}");
    assert!(
        coloured.contains("\x1b["),
        "colour on a terminal: {coloured:?}"
    );
    let plain = on_terminal(Some("1"));
    assert!(plain.contains(PUSH), "{plain}");
    assert!(!plain.contains("\x1b["), "NO_COLOR is honoured: {plain:?}");
    let piped = Command::new(binary)
        .args(["run", "--plugins"])
        .arg(plugins.path())
        .env_clear()
        .output()
        .expect("run stella-doctor");
    let piped = String::from_utf8_lossy(&piped.stdout);
    assert!(piped.contains(PUSH), "{piped}");
    assert!(!piped.contains('\x1b'), "no colour into a pipe: {piped:?}");
}

#[test]
fn a_check_whose_metadata_panics_is_a_load_error_naming_the_file() {
    let plugins = plugins_dir(&["oci-push-check", "broken-metadata-check"]);

    let outcome = Doctor::new(plugins.path()).run(&["run", "--format", "json"]);

    assert_eq!(
        outcome.result(PUSH)["severity"],
        "skip",
        "the other check runs"
    );
    let json = outcome.json();
    let errors = json["errors"].as_array().expect("errors").clone();
    assert_eq!(errors.len(), 1, "{json:#}");
    assert_eq!(errors[0]["file"], "broken-metadata-check.wasm", "{json:#}");
    let error = errors[0]["error"].as_str().unwrap();
    assert!(error.contains("`metadata()` failed"), "{error}");
    assert_eq!(
        json["results"].as_array().map(Vec::len),
        Some(1),
        "{json:#}"
    );
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
}

#[test]
fn plugins_are_read_from_the_plugins_folder_and_the_variable_by_default() {
    // With no `--plugins`, the folder is `$STELLA_DOCTOR_PLUGINS`, else `./plugins`.
    let components = plugins_dir(&["well-behaved-check"]);
    let work = tempfile::tempdir().unwrap();
    fs::create_dir(work.path().join("plugins")).unwrap();
    for entry in fs::read_dir(components.path()).unwrap() {
        let entry = entry.unwrap();
        fs::copy(
            entry.path(),
            work.path().join("plugins").join(entry.file_name()),
        )
        .unwrap();
    }
    let binary = env!("CARGO_BIN_EXE_stella-doctor");
    // Each command starts from an empty environment; only what a test adds is set.
    let list = |command: &mut std::process::Command| {
        let output = command
            .args(["list", "--format", "json"])
            .output()
            .expect("run stella-doctor");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    let from_default = list(
        std::process::Command::new(binary)
            .env_clear()
            .current_dir(work.path()),
    );
    assert!(from_default.contains("test.well-behaved"), "{from_default}");

    let elsewhere = tempfile::tempdir().unwrap();
    let from_variable = list(
        std::process::Command::new(binary)
            .env_clear()
            .current_dir(elsewhere.path())
            .env("STELLA_DOCTOR_PLUGINS", components.path()),
    );
    assert!(
        from_variable.contains("test.well-behaved"),
        "{from_variable}"
    );
}
