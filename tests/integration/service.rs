//! `stella-doctor serve`: the API, its token, hot swaps of components while
//! runs are in flight, rejected updates, the trust policy and the compile
//! cache, all against the real binary on a free loopback port.

use crate::support::doctor::Doctor;
use crate::support::guests::{component, plugins_dir};
use crate::support::service::{Serve, Server, replace_atomically, with_custom_section};
use serde_json::Value;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use stella_doctor::loader::sha256_hex;

const WELL: &str = "test.well-behaved";
const WELL_FILE: &str = "well-behaved-check.wasm";

/// How long a change to the folder may take to be served: settle time,
/// compile and `metadata()` in a debug build, with room for a busy machine.
const SWAP_LIMIT: Duration = Duration::from_secs(60);

fn digest_of(path: &Path) -> String {
    sha256_hex(&fs::read(path).unwrap())
}

/// A valid build of the well-behaved check with another digest.
fn rebuilt_well_behaved(tag: &str) -> Vec<u8> {
    let bytes = fs::read(component("well-behaved-check")).unwrap();
    with_custom_section(&bytes, "stella-doctor-test", tag.as_bytes())
}

fn serving_digest(server: &Server, check_id: &str) -> Option<String> {
    server
        .check(check_id)
        .and_then(|c| c["digest"].as_str().map(str::to_string))
}

fn error_for(checks: &Value, file: &str) -> String {
    checks["errors"]
        .as_array()
        .and_then(|errors| errors.iter().find(|e| e["file"] == file))
        .and_then(|e| e["error"].as_str())
        .unwrap_or_else(|| panic!("no load error for {file}: {checks:#}"))
        .to_string()
}

/// Runs the well-behaved check once and returns the digest that ran it.
fn run_well(server: &Server) -> String {
    let reply = server.run(&format!(r#"{{"checks":["{WELL}"]}}"#));
    assert_eq!(reply.status, 200, "{reply:?}");
    let result = &reply.json()["results"][0];
    assert_eq!(result["severity"], "pass", "{result:#}");
    result["digest"].as_str().expect("digest").to_string()
}

#[test]
fn the_api_lists_and_runs_checks_in_the_cli_schema_with_their_digest() {
    let plugins = plugins_dir(&["well-behaved-check", "oci-push-check"]);
    fs::write(plugins.path().join("garbage.wasm"), b"not wasm").unwrap();
    let digest = digest_of(&plugins.path().join(WELL_FILE));
    let server = Serve::new(plugins.path()).start();

    let health = server.request("GET", "/healthz", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");

    let checks = server.checks();
    let well = server.check(WELL).expect("well-behaved listed");
    assert_eq!(well["digest"], digest.as_str());
    assert_eq!(well["status"], "loaded");
    assert_eq!(well["revision"], 1);
    assert_eq!(well["component"], WELL_FILE);
    assert_eq!(well["contractVersion"], "0.1.0");
    assert_eq!(well["tags"][0], "test");
    assert!(!error_for(&checks, "garbage.wasm").is_empty());

    let reply = server.run(&format!(r#"{{"checks":["{WELL}"]}}"#));
    assert_eq!(reply.status, 200, "{reply:?}");
    let report = reply.json();
    let result = &report["results"][0];
    assert_eq!(result["checkId"], WELL);
    assert_eq!(result["severity"], "pass");
    assert_eq!(result["component"], WELL_FILE);
    assert_eq!(result["digest"], digest.as_str());
    assert_eq!(report["summary"]["total"], 1);
    assert_eq!(report["errors"][0]["file"], "garbage.wasm");

    let by_tag = server.run(r#"{"tags":["oci"]}"#).json();
    assert_eq!(
        by_tag["results"][0]["checkId"],
        "check.integration.oci.push"
    );
    assert_eq!(by_tag["results"][0]["severity"], "skip");
    let everything = server.run("{}").json();
    assert_eq!(everything["summary"]["total"], 2);

    let unknown = server.run(r#"{"checks":["no.such.check"]}"#);
    assert_eq!(unknown.status, 400);
    assert!(unknown.json()["error"].as_str().unwrap().contains(WELL));
    assert_eq!(server.run(r#"{"check":"typo"}"#).status, 400);
    assert_eq!(
        server.request("GET", "/api/v1/doctor/run", None).status,
        405
    );
    assert_eq!(server.request("GET", "/nowhere", None).status, 404);

    assert_eq!(
        server.metric(&format!(
            "stella_doctor_check_runs_total{{check=\"{WELL}\",severity=\"pass\"}}"
        )),
        2.0
    );
    assert_eq!(
        server.metric("stella_doctor_run_duration_seconds_count"),
        3.0
    );
    assert_eq!(server.metric("stella_doctor_load_errors_total"), 1.0);
    assert_eq!(server.metric("stella_doctor_checks_loaded"), 2.0);
}

/// The evidence keys of the first result of a JSON run report, in the
/// order the text lists them (a `serde_json::Value` would sort them).
fn evidence_keys_in_order(report: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Report {
        results: Vec<Run>,
    }
    #[derive(serde::Deserialize)]
    struct Run {
        evidence: Keys,
    }
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(input: D) -> Result<Keys, D::Error> {
            struct InOrder;
            impl<'de> serde::de::Visitor<'de> for InOrder {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an evidence object")
                }
                fn visit_map<M: serde::de::MapAccess<'de>>(
                    self,
                    mut map: M,
                ) -> Result<Keys, M::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            input.deserialize_map(InOrder)
        }
    }
    let report: Report = serde_json::from_str(report).expect("a run report");
    report
        .results
        .into_iter()
        .next()
        .expect("a result")
        .evidence
        .0
}

#[test]
fn api_results_keep_the_evidence_order_the_cli_shows() {
    // A username without a password: the check reports `present_key` before
    // `missing_key`, the reverse of their alphabetical order.
    let plugins = plugins_dir(&["oci-push-check"]);
    let settings = [
        ("OCI:RegistryUrl", "http://127.0.0.1:9"),
        ("OCI:Username", "stella"),
    ];
    let cli = settings
        .iter()
        .fold(Doctor::new(plugins.path()), |doctor, (key, value)| {
            doctor.set(key, value)
        })
        .run(&["run", "--format", "json"]);
    let server = settings
        .iter()
        .fold(Serve::new(plugins.path()), |serve, (key, value)| {
            serve.set(key, value)
        })
        .start();
    let api = server.run("{}");
    assert_eq!(api.status, 200, "{api:?}");

    let expected = evidence_keys_in_order(&cli.stdout);
    assert_eq!(
        expected.iter().take(2).collect::<Vec<_>>(),
        ["present_key", "missing_key"],
        "{}",
        cli.stdout
    );
    assert_eq!(evidence_keys_in_order(&api.body), expected, "{}", api.body);
}

#[test]
fn a_missing_or_wrong_token_gets_401_json() {
    let plugins = plugins_dir(&["well-behaved-check"]);
    let server = Serve::new(plugins.path()).token("s3cret-api-token").start();

    for path in ["/api/v1/doctor/checks", "/metrics"] {
        let missing = server.request_as("GET", path, None, None);
        assert_eq!(missing.status, 401, "{missing:?}");
        assert!(missing.json()["error"].as_str().unwrap().contains("Bearer"));
        assert!(missing.headers.contains("www-authenticate"), "{missing:?}");

        let wrong = server.request_as("GET", path, Some("s3cret-api-tokem"), None);
        assert_eq!(wrong.status, 401, "{wrong:?}");
        assert!(
            wrong.json()["error"]
                .as_str()
                .unwrap()
                .contains("not valid")
        );
    }
    let run = server.request_as(
        "POST",
        "/api/v1/doctor/run",
        None,
        Some(r#"{"checks":["test.well-behaved"]}"#),
    );
    assert_eq!(run.status, 401);

    assert_eq!(server.request_as("GET", "/healthz", None, None).status, 200);
    assert!(server.check(WELL).is_some(), "the right token is accepted");
    assert_eq!(run_well(&server).len(), 64);
    assert_eq!(
        server.metric("stella_doctor_unauthorized_requests_total"),
        5.0
    );
    assert!(
        !server.log().contains("s3cret-api-token"),
        "the token is never logged"
    );
}

#[test]
fn listening_beyond_loopback_without_a_token_refuses_to_start() {
    let plugins = plugins_dir(&[]);
    let (code, stdout, stderr) =
        Serve::new(plugins.path()).expect_exit("0.0.0.0:0", Duration::from_secs(30));

    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("refusing to serve"), "{stderr}");
    assert!(stderr.contains("Doctor:Api:Token"), "{stderr}");
    assert!(
        !stdout.contains("serving on"),
        "it never listened: {stdout}"
    );
}

#[test]
fn runs_beyond_the_concurrency_bound_get_429() {
    let plugins = plugins_dir(&["misbehaving-check", "well-behaved-check"]);
    let server = Arc::new(
        Serve::new(plugins.path())
            .set("Doctor:Api:MaxConcurrentRuns", "1")
            .set("Test:Mode", "loop")
            .start(),
    );

    let slow = std::thread::spawn({
        let server = server.clone();
        move || server.run(r#"{"checks":["test.misbehaving"],"timeout":"3s"}"#)
    });
    server.wait_for("the slow run to start", Duration::from_secs(10), |s| {
        s.metric("stella_doctor_runs_in_flight") == 1.0
    });
    let refused = server.run(&format!(r#"{{"checks":["{WELL}"]}}"#));
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.json()["maxConcurrentRuns"], 1);
    assert!(refused.headers.to_lowercase().contains("retry-after: 1"));

    let slow = slow.join().unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(slow.json()["results"][0]["severity"], "fail");
    assert_eq!(run_well(&server).len(), 64, "free again after the slow run");
    assert_eq!(server.metric("stella_doctor_runs_throttled_total"), 1.0);
}

#[test]
fn run_requests_beyond_the_operators_bounds_are_refused_and_a_stalled_body_holds_no_slot() {
    let plugins = plugins_dir(&["well-behaved-check"]);
    let server = Serve::new(plugins.path())
        .set("Doctor:Api:MaxConcurrentRuns", "1")
        .set("Doctor:Api:MaxParallel", "2")
        .set("Doctor:Api:MaxTimeoutSeconds", "5")
        .start();

    let wide = server.run(r#"{"parallel":3}"#);
    assert_eq!(wide.status, 400, "{wide:?}");
    assert!(wide.body.contains("Doctor:Api:MaxParallel"), "{wide:?}");
    let long = server.run(r#"{"timeout":"6s"}"#);
    assert_eq!(long.status, 400, "{long:?}");
    assert!(
        long.body.contains("Doctor:Api:MaxTimeoutSeconds"),
        "{long:?}"
    );
    // Headers only: the body is not sent, so the server has nothing unread when it closes.
    let opened = |length: usize| {
        let mut stream = std::net::TcpStream::connect(server.address()).unwrap();
        let head = format!(
            "POST /api/v1/doctor/run HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
            server.address()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream
    };
    let answer = |mut stream: std::net::TcpStream| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stream, &mut text).unwrap();
        text
    };

    // A declared length beyond 64 KiB is refused without waiting for the body.
    let large = answer(opened(100 * 1024));
    assert!(large.starts_with("HTTP/1.1 413"), "{large}");

    // A client that sends its headers and then nothing: with one run slot, a slot held while
    // waiting for a body would make the next request a 429.
    let stalled = opened(100);
    std::thread::sleep(Duration::from_millis(300));
    let within = server.run(r#"{"parallel":2,"timeout":"5s"}"#);
    assert_eq!(within.status, 200, "{within:?}");
    assert_eq!(server.metric("stella_doctor_runs_throttled_total"), 0.0);

    // The stalled request is answered 408 once the body timeout (10 s) passes.
    let stalled = answer(stalled);
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    assert!(
        stalled.to_lowercase().contains("connection: close"),
        "{stalled}"
    );
}

#[test]
fn swapping_a_component_under_load_fails_no_run() {
    let plugins = plugins_dir(&["well-behaved-check"]);
    let path = plugins.path().join(WELL_FILE);
    let old = digest_of(&path);
    let new_bytes = rebuilt_well_behaved("v2");
    let new = sha256_hex(&new_bytes);
    let server = Arc::new(Serve::new(plugins.path()).start());

    let done = Arc::new(AtomicUsize::new(0));
    let swapped = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + SWAP_LIMIT;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (server, done, swapped) = (server.clone(), done.clone(), swapped.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                // At least 10 runs each, and on until the new version has served.
                while seen.len() < 10 || !swapped.load(Ordering::SeqCst) {
                    assert!(Instant::now() < deadline, "the new version never served");
                    let reply = server.run(&format!(r#"{{"checks":["{WELL}"]}}"#));
                    assert_eq!(reply.status, 200, "a run failed during the swap: {reply:?}");
                    let result = &reply.json()["results"][0];
                    assert_eq!(result["severity"], "pass", "{result:#}");
                    let digest = result["digest"].as_str().unwrap().to_string();
                    if seen.len() < 200 {
                        seen.push(digest);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                seen
            })
        })
        .collect();

    while done.load(Ordering::SeqCst) < 8 {
        assert!(Instant::now() < deadline, "the first runs never finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    replace_atomically(&path, &new_bytes);
    server.wait_for("the new version", SWAP_LIMIT, |s| {
        serving_digest(s, WELL).as_deref() == Some(new.as_str())
    });
    swapped.store(true, Ordering::SeqCst);

    let mut total = 0;
    let mut saw_old = false;
    for thread in threads {
        let seen = thread.join().expect("no run failed");
        total += seen.len();
        saw_old |= seen.contains(&old);
        for digest in &seen {
            assert!(digest == &old || digest == &new, "unknown digest {digest}");
        }
        // Snapshots are published in order: once a caller saw the new version,
        // it never gets the old one again.
        if let Some(first_new) = seen.iter().position(|d| d == &new) {
            assert!(seen[first_new..].iter().all(|d| d == &new), "{seen:?}");
        }
    }
    assert!(total >= 40, "{total} runs");
    assert!(saw_old, "runs before the swap used the old version");
    assert_eq!(run_well(&server), new);
    let well = server.check(WELL).unwrap();
    assert_eq!(well["revision"], 2);
    assert_eq!(
        server.metric("stella_doctor_swaps_total{kind=\"replaced\"}"),
        1.0
    );
}

#[test]
fn an_invalid_update_is_rejected_and_the_old_version_keeps_serving() {
    let plugins = plugins_dir(&["well-behaved-check"]);
    let path = plugins.path().join(WELL_FILE);
    let old = digest_of(&path);
    let server = Serve::new(plugins.path()).start();

    for (n, (bad, expected)) in [
        (fs::read(component("other-world")).unwrap(), ""),
        (
            fs::read(component("future-contract-check")).unwrap(),
            "contract",
        ),
        (b"\0asm garbage".to_vec(), ""),
    ]
    .into_iter()
    .enumerate()
    {
        let bad_digest = sha256_hex(&bad);
        replace_atomically(&path, &bad);
        server.wait_for("the rejection", SWAP_LIMIT, |s| {
            s.check(WELL).is_some_and(|c| {
                c["rejectedUpdate"]["digest"].as_str() == Some(bad_digest.as_str())
            })
        });
        let well = server.check(WELL).unwrap();
        assert_eq!(well["status"], "update-rejected");
        assert_eq!(well["digest"], old.as_str(), "the old version serves");
        let error = well["rejectedUpdate"]["error"].as_str().unwrap();
        assert!(error.contains(expected), "{error}");
        assert_eq!(run_well(&server), old);
        assert_eq!(
            server.metric("stella_doctor_rejected_updates_total"),
            (n + 1) as f64
        );
    }
    assert!(
        server.log().contains("update rejected"),
        "rejections are logged: {}",
        server.log()
    );

    let fixed = rebuilt_well_behaved("fixed");
    replace_atomically(&path, &fixed);
    server.wait_for("the fixed version", SWAP_LIMIT, |s| {
        s.check(WELL).is_some_and(|c| c["status"] == "loaded")
    });
    assert_eq!(run_well(&server), sha256_hex(&fixed));
}

#[test]
fn added_files_become_checks_and_removed_files_take_theirs_away() {
    let plugins = plugins_dir(&["oci-push-check", "well-behaved-check"]);
    let server = Serve::new(plugins.path()).start();
    assert!(server.check("test.misbehaving").is_none());

    replace_atomically(
        &plugins.path().join("misbehaving-check.wasm"),
        &fs::read(component("misbehaving-check")).unwrap(),
    );
    server.wait_for("the new check", SWAP_LIMIT, |s| {
        s.check("test.misbehaving").is_some()
    });

    fs::remove_file(plugins.path().join(WELL_FILE)).unwrap();
    server.wait_for("the removal", SWAP_LIMIT, |s| s.check(WELL).is_none());
    let reply = server.run(&format!(r#"{{"checks":["{WELL}"]}}"#));
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(server.run("{}").json()["summary"]["total"], 2);
    assert_eq!(
        server.metric("stella_doctor_swaps_total{kind=\"added\"}"),
        3.0
    );
    assert_eq!(
        server.metric("stella_doctor_swaps_total{kind=\"removed\"}"),
        1.0
    );
}

#[test]
fn a_half_written_file_is_never_served() {
    let plugins = plugins_dir(&["well-behaved-check"]);
    let path = plugins.path().join(WELL_FILE);
    let old = digest_of(&path);
    let new_bytes = rebuilt_well_behaved("written slowly");
    let server = Serve::new(plugins.path()).start();

    // A writer that does not rename: truncate in place, write half, pause.
    let mut file = fs::File::create(&path).unwrap();
    let half = new_bytes.len() / 2;
    file.write_all(&new_bytes[..half]).unwrap();
    file.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    assert_eq!(serving_digest(&server, WELL).as_deref(), Some(old.as_str()));
    assert_eq!(run_well(&server), old, "the old version keeps serving");

    file.write_all(&new_bytes[half..]).unwrap();
    drop(file);
    let new = sha256_hex(&new_bytes);
    server.wait_for("the complete file", SWAP_LIMIT, |s| {
        s.check(WELL)
            .is_some_and(|c| c["digest"] == new.as_str() && c["status"] == "loaded")
    });
    assert_eq!(run_well(&server), new);
}

#[test]
fn a_renamed_component_keeps_its_check_serving() {
    let plugins = plugins_dir(&["well-behaved-check"]);
    let digest = digest_of(&plugins.path().join(WELL_FILE));
    let server = Serve::new(plugins.path()).start();

    fs::rename(
        plugins.path().join(WELL_FILE),
        plugins.path().join("renamed.wasm"),
    )
    .unwrap();

    server.wait_for("the renamed file to serve", SWAP_LIMIT, |s| {
        s.check(WELL)
            .is_some_and(|c| c["component"] == "renamed.wasm")
    });
    let checks = server.checks();
    assert_eq!(checks["errors"], serde_json::json!([]), "{checks:#}");
    assert_eq!(run_well(&server), digest);
}

#[test]
fn a_duplicate_check_id_is_refused_then_takes_over_when_the_original_goes() {
    let plugins = plugins_dir(&["well-behaved-check"]);
    let original = digest_of(&plugins.path().join(WELL_FILE));
    let duplicate = rebuilt_well_behaved("a second file with the same id");
    let server = Serve::new(plugins.path()).start();

    replace_atomically(&plugins.path().join("duplicate.wasm"), &duplicate);
    server.wait_for("the duplicate to be refused", SWAP_LIMIT, |s| {
        s.checks()["errors"]
            .as_array()
            .is_some_and(|errors| errors.iter().any(|e| e["file"] == "duplicate.wasm"))
    });
    let error = error_for(&server.checks(), "duplicate.wasm");
    assert!(error.contains(WELL_FILE), "names the other file: {error}");
    assert_eq!(run_well(&server), original, "the original keeps serving");

    fs::remove_file(plugins.path().join(WELL_FILE)).unwrap();
    let new = sha256_hex(&duplicate);
    server.wait_for("the duplicate to take over", SWAP_LIMIT, |s| {
        s.check(WELL)
            .is_some_and(|c| c["component"] == "duplicate.wasm" && c["status"] == "loaded")
    });
    assert_eq!(run_well(&server), new);
}

#[test]
fn a_replacement_that_keeps_size_and_modification_time_is_picked_up() {
    let plugins = plugins_dir(&["well-behaved-check"]);
    let path = plugins.path().join(WELL_FILE);
    let first = rebuilt_well_behaved("same size, same mtime 1");
    let second = rebuilt_well_behaved("same size, same mtime 2");
    assert_eq!(first.len(), second.len());
    replace_atomically(&path, &first);
    let server = Serve::new(plugins.path()).start();
    assert_eq!(run_well(&server), sha256_hex(&first));
    let before = fs::metadata(&path).unwrap();

    // What `cp -p`, `rsync -t` or `tar x` leave: other bytes, the same length, the same
    // modification time.
    let mut file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all(&second).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    let after = fs::metadata(&path).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap()),
        (before.len(), before.modified().unwrap())
    );

    let new = sha256_hex(&second);
    server.wait_for("the replacement", SWAP_LIMIT, |s| {
        s.check(WELL).is_some_and(|c| c["digest"] == new.as_str())
    });
    assert_eq!(run_well(&server), new);
}

/// `stella-doctor keygen` into `dir`; returns the private key path and the
/// public key text.
fn keygen(dir: &Path) -> (std::path::PathBuf, String) {
    let key = dir.join("signing.key");
    let outcome = Doctor::new(dir).run(&["keygen", key.to_str().unwrap()]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let public = fs::read_to_string(dir.join("signing.key.pub")).unwrap();
    (key, public.trim().to_string())
}

fn sign(key: &Path, file: &Path) {
    let outcome = Doctor::new(file.parent().unwrap()).run(&[
        "sign",
        "--key",
        key.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
}

#[test]
fn under_a_signature_policy_unsigned_and_tampered_components_are_refused() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = keygen(keys.path());
    let plugins = plugins_dir(&["well-behaved-check", "oci-push-check", "misbehaving-check"]);
    let path = plugins.path().join(WELL_FILE);
    sign(&key, &path);
    let old = digest_of(&path);
    // Another component under a trusted signature that is not its own.
    fs::copy(
        plugins.path().join(format!("{WELL_FILE}.sig")),
        plugins.path().join("misbehaving-check.wasm.sig"),
    )
    .unwrap();

    // At start: the signed one loads; the unsigned and the mis-signed ones are refused.
    let server = Serve::new(plugins.path())
        .set("Doctor:Trust:PublicKeys", &public)
        .start();
    assert_eq!(serving_digest(&server, WELL).as_deref(), Some(old.as_str()));
    let checks = server.checks();
    assert!(
        error_for(&checks, "oci-push-check.wasm").contains("not signed"),
        "{checks:#}"
    );
    assert!(
        error_for(&checks, "misbehaving-check.wasm").contains("does not verify"),
        "{checks:#}"
    );
    assert!(server.check("test.misbehaving").is_none(), "{checks:#}");

    // On swap: a changed file under the old signature is refused.
    let tampered = rebuilt_well_behaved("tampered");
    replace_atomically(&path, &tampered);
    server.wait_for("the refusal", SWAP_LIMIT, |s| {
        s.check(WELL)
            .is_some_and(|c| c["status"] == "update-rejected")
    });
    let well = server.check(WELL).unwrap();
    assert!(
        well["rejectedUpdate"]["error"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{well:#}"
    );
    assert_eq!(run_well(&server), old);

    // Signing the new file is what lets it in.
    sign(&key, &path);
    server.wait_for("the signed version", SWAP_LIMIT, |s| {
        s.check(WELL).is_some_and(|c| c["status"] == "loaded")
    });
    assert_eq!(run_well(&server), sha256_hex(&tampered));

    // The CLI honours the same policy.
    let listing = Doctor::new(plugins.path())
        .set("Doctor:Trust:PublicKeys", &public)
        .run(&["list", "--format", "json"]);
    assert!(
        error_for(&listing.json(), "oci-push-check.wasm").contains("not signed"),
        "{}",
        listing.stdout
    );
}

#[test]
fn under_pinned_digests_only_pinned_builds_load() {
    let plugins = plugins_dir(&["well-behaved-check", "oci-push-check"]);
    let path = plugins.path().join(WELL_FILE);
    let pinned = digest_of(&path);
    let server = Serve::new(plugins.path())
        .set("Doctor:Trust:Digests", &pinned)
        .start();

    assert_eq!(
        serving_digest(&server, WELL).as_deref(),
        Some(pinned.as_str())
    );
    assert!(error_for(&server.checks(), "oci-push-check.wasm").contains("Doctor:Trust:Digests"));

    replace_atomically(&path, &rebuilt_well_behaved("not pinned"));
    server.wait_for("the refusal", SWAP_LIMIT, |s| {
        s.check(WELL)
            .is_some_and(|c| c["status"] == "update-rejected")
    });
    assert_eq!(run_well(&server), pinned);
}

#[test]
fn a_restart_with_a_warm_cache_does_not_compile() {
    let cache = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(&["well-behaved-check", "oci-push-check"]);
    let path = plugins.path().join(WELL_FILE);
    let original = fs::read(&path).unwrap();
    let start = || {
        Serve::new(plugins.path())
            .arg("--cache-dir")
            .arg(cache.path())
            .start()
    };

    let cold = start();
    assert_eq!(cold.metric("stella_doctor_compiles_total"), 2.0);
    assert_eq!(cold.metric("stella_doctor_cache_hits_total"), 0.0);
    drop(cold);

    let warm = start();
    assert_eq!(warm.metric("stella_doctor_compiles_total"), 0.0);
    assert_eq!(warm.metric("stella_doctor_cache_hits_total"), 2.0);
    let digest = run_well(&warm);

    // A swap to a new build compiles it; swapping back takes the cache.
    let rebuilt = rebuilt_well_behaved("v2");
    replace_atomically(&path, &rebuilt);
    warm.wait_for("the new build", SWAP_LIMIT, |s| {
        serving_digest(s, WELL).as_deref() == Some(sha256_hex(&rebuilt).as_str())
    });
    replace_atomically(&path, &original);
    warm.wait_for("the original build", SWAP_LIMIT, |s| {
        serving_digest(s, WELL).as_deref() == Some(digest.as_str())
    });
    assert_eq!(warm.metric("stella_doctor_compiles_total"), 1.0);
    assert_eq!(warm.metric("stella_doctor_cache_hits_total"), 3.0);
    drop(warm);

    // A tampered entry is discarded and the component compiled again.
    let entry = find_entry(cache.path(), &digest);
    let mut bytes = fs::read(&entry).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&entry, bytes).unwrap();
    let after_tamper = start();
    assert_eq!(after_tamper.metric("stella_doctor_compiles_total"), 1.0);
    assert_eq!(after_tamper.metric("stella_doctor_cache_hits_total"), 1.0);
    assert_eq!(run_well(&after_tamper), digest);
    assert!(
        after_tamper
            .log()
            .contains("discarding a compile cache entry"),
        "{}",
        after_tamper.log()
    );
}

/// The cache entry of the component with `digest`, in whichever engine folder.
fn find_entry(root: &Path, digest: &str) -> std::path::PathBuf {
    fs::read_dir(root)
        .unwrap()
        .map(|engine| engine.unwrap().path().join(format!("{digest}.cwasm")))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("no cache entry for {digest} under {}", root.display()))
}
