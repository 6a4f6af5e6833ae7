//! Hostile components: each test runs one way of misbehaving next to
//! `test.well-behaved` in the same host run, and asserts the outcome named
//! for it, that the well-behaved check still passed, and that no secret
//! reached any output.

use crate::support::doctor::{Doctor, Outcome};
use crate::support::guests::{component, plugins_dir};
use crate::support::scripted::{ScriptedServer, respond};
use crate::{diagnosis, evidence};
use serde_json::Value;
use std::fs;

const HOSTILE: &str = "test.misbehaving";
const GOOD: &str = "test.well-behaved";
/// Declared secret of the hostile check.
const CHECK_SECRET: &str = "hostile-suite-Check-Secret-9f2c";
/// A host-level secret (by its name) that no test check declares.
const HOST_SECRET: &str = "hostile-suite-Host-Password-71be";
const MEMORY_MIB: &str = "64";

/// Runs the hostile check in `mode` next to the well-behaved one.
fn hostile(mode: &str, settings: &[(&str, &str)]) -> (Outcome, Value) {
    let plugins = plugins_dir(&["misbehaving-check", "well-behaved-check"]);
    hostile_with(Doctor::new(plugins.path()), mode, settings)
}

fn hostile_with(doctor: Doctor, mode: &str, settings: &[(&str, &str)]) -> (Outcome, Value) {
    let mut doctor = doctor
        .env("OCI__Password", HOST_SECRET)
        .set("Test:Mode", mode)
        .set("Test:Secret", CHECK_SECRET)
        .set("Doctor:Limits:MemoryMiB", MEMORY_MIB);
    for (key, value) in settings {
        doctor = doctor.set(key, value);
    }
    let outcome = doctor.run(&["run", "--format", "json", "--timeout", "3s", "--verbose"]);
    let result = outcome.result(HOSTILE);
    assert_contained(&outcome);
    (outcome, result)
}

/// The host survived, the other check passed, and no secret got out.
fn assert_contained(outcome: &Outcome) {
    assert_eq!(
        outcome.result(GOOD)["severity"],
        "pass",
        "the well-behaved check must pass:\n{}",
        outcome.stdout
    );
    assert_no_secret(&outcome.all_output());
}

/// Neither secret appears in `text`, in any letter case: a check can change the case of what it
/// echoes, and host names are lowercased on their way into logs.
fn assert_no_secret(text: &str) {
    let lower = text.to_lowercase();
    for secret in [CHECK_SECRET, HOST_SECRET] {
        assert!(
            !lower.contains(&secret.to_lowercase()),
            "`{secret}` leaked:\n{text}"
        );
    }
}

/// The diagnosis or evidence, as one lower-case text.
fn text_of(result: &Value) -> String {
    format!("{} {}", result["diagnosis"], result["evidence"]).to_lowercase()
}

#[test]
fn infinite_loop_is_stopped_at_the_deadline() {
    let (outcome, result) = hostile("loop", &[]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(diagnosis(&result).contains("deadline"), "{result:#}");
    assert_eq!(outcome.code, 1);
}

#[test]
fn unbounded_memory_growth_trips_the_memory_limit() {
    let (_, result) = hostile("grow-memory", &[]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    let text = text_of(&result);
    assert!(
        text.contains("memory") && text.contains("doctor:limits:memorymib"),
        "names the limit: {result:#}"
    );
}

#[test]
fn deep_recursion_is_a_stack_overflow() {
    let (_, result) = hostile("recurse", &[]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(diagnosis(&result).contains("stack overflow"), "{result:#}");
}

#[test]
fn panic_is_a_fail_naming_the_panic() {
    let (_, result) = hostile("panic", &[]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(diagnosis(&result).contains("panic"), "{result:#}");
}

#[test]
fn explicit_trap_is_a_fail_naming_the_trap() {
    let (_, result) = hostile("trap", &[]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(diagnosis(&result).contains("trap"), "{result:#}");
}

#[test]
fn huge_response_body_trips_the_body_limit() {
    let server = ScriptedServer::start(|_| respond(200, &[], &"x".repeat(8 << 20)));
    let allow = format!("http://{}", server.authority());

    let (_, result) = hostile(
        "huge-body",
        &[
            ("Test:Url", &format!("{}/big", server.url)),
            ("Doctor:Plugins:test.misbehaving:AllowedHosts", &allow),
        ],
    );

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(
        text_of(&result).contains("doctor:limits:responsebodybytes"),
        "names the limit: {result:#}"
    );
}

#[test]
fn oversized_response_headers_trip_the_header_limit() {
    // Twice the default `Doctor:Limits:HeaderBytes` (16384), in one header field.
    let padding = "x".repeat(32 * 1024);
    let server = ScriptedServer::start(move |_| respond(200, &[("X-Padding", &padding)], "ok"));
    let allow = format!("http://{}", server.authority());

    let (_, result) = hostile(
        "egress",
        &[
            ("Test:Url", &format!("{}/", server.url)),
            ("Doctor:Plugins:test.misbehaving:AllowedHosts", &allow),
        ],
    );

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(
        evidence(&result, "error").contains("HttpResponseHeaderSectionSize"),
        "the check saw the header error: {result:#}"
    );
    assert!(
        text_of(&result).contains("doctor:limits:headerbytes=16384"),
        "names the limit: {result:#}"
    );
}

#[test]
fn output_flood_is_captured_bounded_and_marked_truncated() {
    let (_, result) = hostile("flood", &[]);

    assert_eq!(result["severity"], "pass", "{result:#}");
    for stream in ["stdout", "stderr"] {
        let captured = result["output"][stream]
            .as_str()
            .unwrap_or_else(|| panic!("no {stream}: {result:#}"));
        // The default `Doctor:Limits:OutputBytes` (64 KiB), and the line saying so.
        assert!(
            captured.len() <= 64 * 1024 + 200,
            "{stream} is bounded, got {} bytes",
            captured.len()
        );
        assert!(
            captured.contains("truncated") && captured.contains("Doctor:Limits:OutputBytes"),
            "{stream} says it was truncated and by which limit"
        );
    }
    assert!(
        evidence(&result, "limit_exceeded").contains("Doctor:Limits:OutputBytes=65536"),
        "{result:#}"
    );
}

#[test]
fn request_to_an_undeclared_host_is_denied() {
    let server = ScriptedServer::start(|_| respond(200, &[], "ok"));

    let (_, result) = hostile("egress", &[("Test:Url", &format!("{}/", server.url))]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(
        result["diagnosis"]
            .as_str()
            .unwrap()
            .contains("Doctor:Plugins:test.misbehaving:AllowedHosts")
    );
    assert!(server.requests().is_empty());
}

#[test]
fn cloud_metadata_address_behind_an_allowed_name_is_refused() {
    // `2852039166` is a name the check declares and the operator allows, and
    // it resolves to 169.254.169.254. The host runs without a network of its
    // own, so even a broken policy could not reach that address.
    let plugins = plugins_dir(&["misbehaving-check", "well-behaved-check"]);
    let doctor = Doctor::new(plugins.path()).isolated_network();

    let (_, result) = hostile_with(
        doctor,
        "declared-metadata",
        &[(
            "Doctor:Plugins:test.misbehaving:AllowedHosts",
            "http://2852039166",
        )],
    );

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(
        evidence(&result, "error").contains("HttpRequestDenied"),
        "{result:#}"
    );
    assert!(
        text_of(&result).contains("169.254.169.254"),
        "names the address: {result:#}"
    );
}

#[test]
fn loopback_behind_a_name_the_operator_did_not_give_is_refused() {
    let (_, result) = hostile("declared-loopback", &[]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(
        evidence(&result, "error").contains("HttpRequestDenied"),
        "{result:#}"
    );
    assert!(
        text_of(&result).contains("loopback"),
        "says why: {result:#}"
    );
}

#[test]
fn undeclared_configuration_key_reads_as_absent() {
    let (_, result) = hostile("read-undeclared", &[("OCI:Password", HOST_SECRET)]);

    assert_eq!(
        evidence(&result, "undeclared_visible"),
        "false",
        "{result:#}"
    );
}

#[test]
fn echoed_secret_is_redacted_in_diagnosis_and_evidence() {
    let (_, result) = hostile("echo-secret", &[]);

    assert!(
        result["diagnosis"].as_str().unwrap().contains("***"),
        "{result:#}"
    );
    assert_eq!(evidence(&result, "secret_value"), "***");
}

#[test]
fn secret_smuggled_into_output_remediation_and_a_logged_host_name_is_redacted() {
    let (outcome, result) = hostile("smuggle-secret", &[]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    // The denied request is logged with its host name, which carried the secret.
    assert!(
        outcome.stderr.contains("denied outbound request")
            && outcome.stderr.contains("***.invalid"),
        "the log line is there, redacted:\n{}",
        outcome.stderr
    );
    assert_eq!(
        result["output"]["stdout"], "stdout carries ***\n",
        "{result:#}"
    );
    assert!(
        result["output"]["stderr"]
            .as_str()
            .is_some_and(|stderr| stderr.contains("stderr carries ***")),
        "{result:#}"
    );
    assert_eq!(result["likelyCauses"][0], "cause ***", "{result:#}");
    assert_eq!(result["remediation"][0]["title"], "step ***", "{result:#}");
    assert_eq!(
        result["remediation"][0]["commands"][0], "echo ***",
        "{result:#}"
    );
    assert_eq!(result["verificationCommand"], "verify ***", "{result:#}");
}

#[test]
fn secret_cut_by_the_output_limit_leaves_no_beginning_behind() {
    let (_, result) = hostile("cut-secret", &[("Doctor:Limits:OutputBytes", "1010")]);

    let stdout = result["output"]["stdout"].as_str().unwrap_or_default();
    let (kept, rest) = stdout.split_at(1000.min(stdout.len()));
    assert_eq!(kept, ".".repeat(1000), "{result:#}");
    // The limit kept the secret's first 10 bytes; they are masked like the whole secret.
    assert!(rest.starts_with("***\n[output truncated"), "{rest:?}");
    assert!(!stdout.contains(&CHECK_SECRET[..10]), "{stdout:?}");
}

#[test]
fn opening_a_file_is_refused() {
    let (outcome, result) = hostile("open-file", &[]);

    assert!(
        result["evidence"]["file_error"].is_string(),
        "the guest saw an error: {result:#}"
    );
    assert!(result["evidence"]["file_bytes"].is_null(), "{result:#}");
    assert!(
        !outcome.all_output().contains("root:x:0:0"),
        "no host file content"
    );
}

#[test]
fn environment_variables_are_invisible() {
    let (_, result) = hostile("read-env", &[]);

    assert_eq!(
        evidence(&result, "env_names"),
        "",
        "the guest sees no variables: {result:#}"
    );
}

/// Loads `bad` (a file name and its bytes) next to the well-behaved check.
fn load_next_to_good(bad_name: &str, bytes: &[u8]) -> (Outcome, String) {
    let plugins = plugins_dir(&["well-behaved-check"]);
    fs::write(plugins.path().join(bad_name), bytes).unwrap();
    let doctor = Doctor::new(plugins.path());

    let listing = doctor.run(&["list", "--format", "json"]).json();
    let error = listing["errors"]
        .as_array()
        .and_then(|errors| {
            errors
                .iter()
                .find(|e| e["file"].as_str().unwrap_or_default().ends_with(bad_name))
        })
        .unwrap_or_else(|| panic!("no load error for {bad_name}: {listing:#}"))["error"]
        .as_str()
        .unwrap()
        .to_string();
    let run = doctor.run(&["run", "--format", "json"]);
    assert_contained(&run);
    assert!(
        run.stderr.contains(bad_name),
        "the run names the bad file: {}",
        run.stderr
    );
    (run, error)
}

#[test]
fn component_for_another_world_is_a_load_error() {
    let (_, error) = load_next_to_good(
        "other-world.wasm",
        &fs::read(component("other-world")).unwrap(),
    );

    assert!(
        error.contains("stellaops:doctor/check"),
        "says what is missing: {error}"
    );
}

#[test]
fn core_module_is_a_load_error() {
    let (_, error) = load_next_to_good("core.wasm", b"\0asm\x01\0\0\0");

    assert!(error.to_lowercase().contains("core"), "{error}");
}

#[test]
fn truncated_component_is_a_load_error() {
    let bytes = fs::read(component("well-behaved-check")).unwrap();

    let (_, error) = load_next_to_good("truncated.wasm", &bytes[..bytes.len() / 2]);

    assert!(
        error.contains("is not a valid component") && error.contains("failed to parse"),
        "says why: {error}"
    );
}

#[test]
fn newer_contract_version_is_a_load_error_naming_both_versions() {
    let (_, error) = load_next_to_good(
        "future.wasm",
        &fs::read(component("future-contract-check")).unwrap(),
    );

    assert!(error.contains("0.2.0") && error.contains("0.1"), "{error}");
}

#[test]
fn no_secret_in_any_output_of_the_whole_suite() {
    let mut outputs = Vec::new();
    for mode in [
        "pass",
        "echo-secret",
        "read-undeclared",
        "read-env",
        "open-file",
        "panic",
        "trap",
        "flood",
        "egress",
        "smuggle-secret",
        "cut-secret",
    ] {
        let (outcome, _) = hostile(mode, &[("Test:Url", "http://127.0.0.1:9/")]);
        for format in ["text", "markdown"] {
            let plugins = plugins_dir(&["misbehaving-check", "well-behaved-check"]);
            let text = Doctor::new(plugins.path())
                .env("OCI__Password", HOST_SECRET)
                .set("Test:Mode", mode)
                .set("Test:Secret", CHECK_SECRET)
                .run(&["run", "--format", format, "--verbose"]);
            outputs.push(text.all_output());
        }
        outputs.push(outcome.all_output());
    }

    let everything = outputs.join("\n");
    assert!(
        everything.contains("***"),
        "the echoed secret shows as redacted"
    );
    assert_no_secret(&everything);
}

/// Runs the well-behaved check alone under `key` = `value`, a limit too small for any
/// component, and asserts the run fails naming it.
fn assert_limit_trips_and_is_named(key: &str, value: &str) {
    let plugins = plugins_dir(&["well-behaved-check"]);

    let outcome = Doctor::new(plugins.path())
        .set(key, value)
        .run(&["run", "--format", "json"]);

    let result = outcome.result(GOOD);
    assert_eq!(result["severity"], "fail", "{result:#}");
    assert_eq!(outcome.code, 1);
    assert!(
        result["diagnosis"]
            .as_str()
            .unwrap_or_default()
            .contains(key),
        "the diagnosis names the limit: {result:#}"
    );
    assert_eq!(
        evidence(&result, "limit_exceeded"),
        format!("{key}={value}"),
        "{result:#}"
    );
}

#[test]
fn instance_cap_trips_and_is_named() {
    // A component needs several core instances; one is too few for any.
    assert_limit_trips_and_is_named("Doctor:Limits:Instances", "1");
}

#[test]
fn table_count_cap_trips_and_is_named() {
    // A Rust component defines a table in its main module and one in the shim that lowers
    // its imports.
    assert_limit_trips_and_is_named("Doctor:Limits:Tables", "1");
}

#[test]
fn table_size_cap_trips_and_is_named() {
    // The main module's function table starts with more than one element.
    assert_limit_trips_and_is_named("Doctor:Limits:TableElements", "1");
}
