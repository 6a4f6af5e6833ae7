//! The edge build of the push check: the `oci-push-edge` component, built
//! from source, served by a `wasi:http/proxy` host made of the pieces
//! `wasmtime serve` uses, called over real HTTP on loopback and pointed at
//! the real `docker-registry`.

use serde_json::Value;

use crate::support::doctor::Doctor;
use crate::support::edge_proxy::{self, EdgeServer};
use crate::support::guests::plugins_dir;
use crate::support::registry::{self, Registry};
use crate::{PUSH, diagnosis, evidence};

const USER: &str = "edge-ci";
const PASSWORD: &str = "pw-edge-5ecret-Kq27-do-not-print";
const CHECK_PATH: &str = "/checks/check.integration.oci.push";

/// Serves the edge component configured for `registry` under the variable
/// names Spin allows.
fn edge_for(registry: &Registry, password: &str) -> EdgeServer {
    EdgeServer::start(&[
        ("oci_registry_url", &registry.url),
        ("oci_username", USER),
        ("oci_password", password),
    ])
}

/// The one result of a doctor-shaped report.
fn only_result(report: &Value) -> &Value {
    let results = report["results"].as_array().expect("`results` is an array");
    assert_eq!(results.len(), 1, "{report:#}");
    &results[0]
}

fn keys(object: &Value) -> Vec<&str> {
    object
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {object:#}"))
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn valid_user_gets_200_with_a_pass_result_in_the_doctor_schema() {
    if !registry::available() {
        return;
    }
    let registry = Registry::start(&[(USER, PASSWORD)]);
    let edge = edge_for(&registry, PASSWORD);

    let response = edge.request("GET", "/");

    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.headers["content-type"], "application/json");
    let report = response.json();
    let result = only_result(&report);
    assert_eq!(result["checkId"], PUSH);
    assert_eq!(result["severity"], "pass", "{result:#}");
    assert_eq!(evidence(result, "status_code"), "202");
    assert_eq!(evidence(result, "upload_cancelled"), "true");
    assert_eq!(evidence(result, "auth_method"), "basic");
    assert_eq!(evidence(result, "registry_url"), registry.url);
    assert_eq!(report["summary"]["pass"], 1);
    assert_eq!(
        registry.upload_sessions().len(),
        1,
        "one session, cancelled"
    );
    assert!(!response.body.contains(PASSWORD), "{}", response.body);

    // The same schema as the host's `run --format json`: the same fields and
    // evidence keys, and the same verdict for the same registry.
    let plugins = plugins_dir(&["oci-push-check"]);
    let (_, host_result) = Doctor::new(plugins.path())
        .set("OCI:RegistryUrl", &registry.url)
        .set("OCI:Username", USER)
        .set("OCI:Password", PASSWORD)
        .run_check_json(PUSH);
    assert_eq!(keys(result), keys(&host_result));
    assert_eq!(keys(&result["evidence"]), keys(&host_result["evidence"]));
    assert_eq!(result["severity"], host_result["severity"]);
    assert_eq!(result["diagnosis"], host_result["diagnosis"]);
}

#[test]
fn wrong_password_gets_503_with_a_fail_result_and_no_password() {
    if !registry::available() {
        return;
    }
    let registry = Registry::start(&[(USER, PASSWORD)]);
    let wrong = "not-the-edge-password-4410";
    let edge = edge_for(&registry, wrong);

    let response = edge.request("GET", CHECK_PATH);

    assert_eq!(response.status, 503, "{}", response.body);
    let report = response.json();
    let result = only_result(&report);
    assert_eq!(result["severity"], "fail", "{result:#}");
    assert_eq!(evidence(result, "status_code"), "401");
    assert!(
        diagnosis(result).contains("invalid credentials"),
        "{result:#}"
    );
    assert_eq!(report["summary"]["fail"], 1);
    assert!(registry.upload_sessions().is_empty(), "nothing was opened");
    assert!(!response.body.contains(wrong), "{}", response.body);
    assert!(!response.body.contains(PASSWORD), "{}", response.body);
}

#[test]
fn no_credentials_gets_200_with_a_skip_result() {
    if !registry::available() {
        return;
    }
    let registry = Registry::start(&[(USER, PASSWORD)]);
    let edge = EdgeServer::start(&[("oci_registry_url", &registry.url)]);

    let response = edge.request("GET", "/");

    assert_eq!(response.status, 200, "a skip is not a failure");
    let result = only_result(&response.json()).clone();
    assert_eq!(result["severity"], "skip", "{result:#}");
    assert!(registry.upload_sessions().is_empty());
}

#[test]
fn unknown_path_gets_404_with_a_json_error() {
    let edge = EdgeServer::start(&[]);

    let response = edge.request("GET", "/checks/check.integration.oci.pull");

    assert_eq!(response.status, 404, "{}", response.body);
    let error = response.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("GET /"), "{error}");
}

#[test]
fn other_methods_on_the_check_get_405_naming_get() {
    let edge = EdgeServer::start(&[]);

    let response = edge.request("POST", "/");

    assert_eq!(response.status, 405, "{}", response.body);
    assert_eq!(response.headers["allow"], "GET");
    assert!(response.json()["error"].is_string(), "{}", response.body);
}

#[test]
fn the_component_imports_only_wasi_interfaces() {
    let (engine, component) = edge_proxy::compiled();

    let imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();

    // No `fermyon:spin/*` or `spin:*` import: any `wasi:http/proxy` host with
    // `wasi:config` runs it, not only Spin.
    let foreign: Vec<&String> = imports.iter().filter(|n| !n.starts_with("wasi:")).collect();
    assert!(foreign.is_empty(), "non-WASI imports: {foreign:?}");
    assert!(
        imports.iter().any(|n| n == "wasi:config/store@0.2.0-rc.1"),
        "{imports:#?}"
    );
}
