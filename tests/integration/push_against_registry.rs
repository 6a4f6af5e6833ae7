//! The push check against a real distribution 2.8 registry with htpasswd auth.

use crate::support::doctor::Doctor;
use crate::support::guests::plugins_dir;
use crate::support::registry::{self, Registry};
use crate::{PUSH, diagnosis, evidence};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

const USER: &str = "doctor-ci";
const PASSWORD: &str = "pw-5ecret-Zq81-do-not-print";

fn doctor_for(registry: &Registry, plugins: &std::path::Path) -> Doctor {
    Doctor::new(plugins)
        .set("OCI:RegistryUrl", &registry.url)
        .set("OCI:Username", USER)
}

#[test]
fn valid_user_passes_and_leaves_no_upload_behind() {
    if !registry::available() {
        return;
    }
    let registry = Registry::start(&[(USER, PASSWORD)]);
    let plugins = plugins_dir(&["oci-push-check"]);

    let (outcome, result) = doctor_for(&registry, plugins.path())
        .set("OCI:Password", PASSWORD)
        .run_check_json(PUSH);

    assert_eq!(result["severity"], "pass", "{result:#}\n{}", outcome.stderr);
    assert_eq!(outcome.code, 0);
    assert_eq!(evidence(&result, "status_code"), "202");
    assert_eq!(evidence(&result, "upload_cancelled"), "true");
    assert_eq!(evidence(&result, "auth_method"), "basic");
    assert_eq!(evidence(&result, "repository"), "stellaops/doctor-test");
    assert_eq!(evidence(&result, "registry_url"), registry.url);
    assert_eq!(
        registry.upload_sessions().len(),
        1,
        "the probe opens exactly one upload session"
    );
    assert_eq!(
        registry.leftover_upload_data(),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(!outcome.all_output().contains(PASSWORD));
}

#[test]
fn wrong_password_fails_with_invalid_credentials() {
    if !registry::available() {
        return;
    }
    let registry = Registry::start(&[(USER, PASSWORD)]);
    let plugins = plugins_dir(&["oci-push-check"]);

    let (outcome, result) = doctor_for(&registry, plugins.path())
        .set("OCI:Password", "not-the-password-7731")
        .run_check_json(PUSH);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert_eq!(outcome.code, 1);
    assert_eq!(evidence(&result, "status_code"), "401");
    assert!(
        diagnosis(&result).contains("invalid credentials"),
        "{result:#}"
    );
    assert!(registry.upload_sessions().is_empty(), "nothing was opened");
    assert!(!outcome.all_output().contains("not-the-password-7731"));
}

#[test]
fn no_credentials_skips_naming_the_keys_to_set() {
    if !registry::available() {
        return;
    }
    let registry = Registry::start(&[(USER, PASSWORD)]);
    let plugins = plugins_dir(&["oci-push-check"]);

    let (outcome, result) = Doctor::new(plugins.path())
        .set("OCI:RegistryUrl", &registry.url)
        .run_check_json(PUSH);

    assert_eq!(result["severity"], "skip", "{result:#}");
    assert_eq!(outcome.code, 0, "a skip is not a failure");
    let text = result["diagnosis"].as_str().unwrap();
    assert!(
        text.contains("OCI:Username") && text.contains("OCI:Password"),
        "{text}"
    );
    assert!(text.contains("OCI:Token"), "{text}");
    assert_eq!(evidence(&result, "auth_method"), "anonymous");
    assert!(registry.upload_sessions().is_empty());
}

#[test]
fn username_without_password_fails_saying_so() {
    if !registry::available() {
        return;
    }
    let registry = Registry::start(&[(USER, PASSWORD)]);
    let plugins = plugins_dir(&["oci-push-check"]);

    let (_, result) = doctor_for(&registry, plugins.path()).run_check_json(PUSH);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(
        result["diagnosis"]
            .as_str()
            .unwrap()
            .contains("OCI:Password"),
        "{result:#}"
    );
}

#[test]
fn credentials_from_environment_and_settings_file_reach_the_check() {
    if !registry::available() {
        return;
    }
    let registry = Registry::start(&[(USER, PASSWORD)]);
    let plugins = plugins_dir(&["oci-push-check"]);
    let settings = tempfile::NamedTempFile::new().unwrap();
    // Nested objects become `OCI:Username`; keys are case-insensitive.
    let json = serde_json::json!({ "oci": { "registryUrl": registry.url, "username": USER } });
    std::fs::write(settings.path(), json.to_string()).unwrap();

    let outcome = Doctor::new(plugins.path())
        .env("OCI__PASSWORD", PASSWORD)
        .run(&[
            "run",
            "--check",
            PUSH,
            "--format",
            "json",
            "--config",
            settings.path().to_str().unwrap(),
        ]);

    let result = outcome.result(PUSH);
    assert_eq!(result["severity"], "pass", "{result:#}\n{}", outcome.stderr);
}

#[test]
fn later_configuration_sources_win() {
    if !registry::available() {
        return;
    }
    let registry = Registry::start(&[(USER, PASSWORD)]);
    let plugins = plugins_dir(&["oci-push-check"]);

    // The environment holds a wrong password; `--set` overrides it.
    let (_, result) = doctor_for(&registry, plugins.path())
        .env("OCI__Password", "stale-password")
        .set("OCI:Password", PASSWORD)
        .run_check_json(PUSH);

    assert_eq!(result["severity"], "pass", "{result:#}");
}

#[test]
fn secret_never_appears_in_json_text_or_markdown_output() {
    if !registry::available() {
        return;
    }
    let registry = Registry::start(&[(USER, PASSWORD)]);
    let plugins = plugins_dir(&["oci-push-check"]);
    let doctor = doctor_for(&registry, plugins.path());
    let basic = STANDARD.encode(format!("{USER}:{PASSWORD}"));

    for password in [PASSWORD, "wrong-Pa55word-visible?"] {
        let doctor = doctor_for(&registry, plugins.path()).set("OCI:Password", password);
        for format in ["json", "text", "markdown"] {
            let outcome = doctor.run(&["run", "--check", PUSH, "--format", format, "--verbose"]);
            let all = outcome.all_output();
            assert!(outcome.stdout.contains(PUSH), "{format}: {all}");
            assert!(
                !all.contains(password),
                "{format} output leaks the password:\n{all}"
            );
            assert!(
                !all.contains(&basic),
                "{format} output leaks the basic header"
            );
        }
    }
    let listing = doctor
        .set("OCI:Password", PASSWORD)
        .run(&["list", "--format", "json"]);
    assert!(!listing.all_output().contains(PASSWORD));
}

#[test]
fn text_output_shows_severity_diagnosis_and_evidence() {
    if !registry::available() {
        return;
    }
    let registry = Registry::start(&[(USER, PASSWORD)]);
    let plugins = plugins_dir(&["oci-push-check"]);

    let outcome = doctor_for(&registry, plugins.path())
        .set("OCI:Password", "wrong")
        .run(&["run", "--check", PUSH]);

    assert_eq!(outcome.code, 1);
    let text = outcome.stdout.to_lowercase();
    for expected in [
        "fail",
        PUSH,
        "invalid credentials",
        "status_code",
        "401",
        "stella-doctor run --check",
    ] {
        assert!(
            text.contains(expected),
            "text output lacks `{expected}`:\n{}",
            outcome.stdout
        );
    }
    assert!(
        !outcome.stdout.contains('\u{1b}'),
        "no colour when stdout is not a terminal"
    );
}

#[test]
#[should_panic(expected = "CI=true")]
fn under_ci_a_missing_registry_fails_the_tests() {
    registry::binary_available("docker-registry-not-installed-here", Some("true"));
}

#[test]
fn outside_ci_a_missing_registry_skips_the_tests() {
    assert!(!registry::binary_available(
        "docker-registry-not-installed-here",
        None
    ));
}
