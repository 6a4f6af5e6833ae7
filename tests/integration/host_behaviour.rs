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

    let run = doctor.run(&["run", "--format", "json"]);
    assert_eq!(run.result(PUSH)["severity"], "skip");
    assert!(
        run.stderr.contains("garbage.wasm"),
        "load errors go to stderr: {}",
        run.stderr
    );
}

#[test]
fn inspect_shows_contract_imports_and_metadata() {
    let plugins = plugins_dir(&["oci-push-check"]);
    let file = plugins.path().join("oci-push-check.wasm");

    let outcome =
        Doctor::new(plugins.path()).run(&["inspect", file.to_str().unwrap(), "--format", "json"]);

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let text = outcome.stdout;
    assert!(text.contains("0.1.0"), "contract version: {text}");
    assert!(text.contains("wasi:http/outgoing-handler"), "{text}");
    assert!(!text.contains("wasi:sockets"), "no sockets: {text}");
    assert!(
        text.contains(PUSH) && text.contains("OCI:RegistryUrl"),
        "{text}"
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
