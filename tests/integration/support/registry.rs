//! Debian's `docker-registry` (distribution 2.8) on a free loopback port,
//! with htpasswd (bcrypt) users and filesystem storage in a temp dir.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use super::token_server::{ISSUER, SERVICE, TokenServer};

const BINARY: &str = "docker-registry";

/// Whether the registry tests can run here. Locally a missing binary skips
/// them with a note; with `CI=true` it fails them, so CI never passes by
/// testing nothing.
pub fn available() -> bool {
    binary_available(BINARY, env::var("CI").ok().as_deref())
}

/// Whether `binary` runs here; when it does not, a test failure if `ci` is `true`, else a note.
pub fn binary_available(binary: &str, ci: Option<&str>) -> bool {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            ci != Some("true"),
            "`{binary}` is not installed and CI=true: install it with `apt-get install -y docker-registry` (make test does)"
        );
        eprintln!("skipping: `{binary}` is not installed (apt-get install -y docker-registry)");
    }
    found
}

/// A running registry; stopped and its storage removed on drop.
pub struct Registry {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry that accepts the given users (htpasswd auth).
    pub fn start(users: &[(&str, &str)]) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let htpasswd: String = users
            .iter()
            .map(|(user, password)| {
                // Cost 4 keeps the tests fast; distribution accepts any cost.
                format!("{user}:{}\n", bcrypt::hash(password, 4).expect("bcrypt"))
            })
            .collect();
        let path = dir.path().join("htpasswd");
        fs::write(&path, htpasswd).expect("write htpasswd");
        let auth = format!("htpasswd: {{realm: doctor-test, path: {}}}", path.display());
        Registry::start_with(dir, &auth)
    }

    /// Starts a registry in token mode, trusting tokens from `tokens`.
    pub fn start_with_token_server(tokens: &TokenServer) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let bundle = dir.path().join("token-signer.pem");
        fs::write(&bundle, &tokens.certificate_pem).expect("write root cert bundle");
        let auth = format!(
            "token: {{realm: \"{}\", service: {SERVICE}, issuer: {ISSUER}, rootcertbundle: {}}}",
            tokens.realm(),
            bundle.display()
        );
        Registry::start_with(dir, &auth)
    }

    fn start_with(dir: tempfile::TempDir, auth: &str) -> Registry {
        // Another process may take the port between our probe and the
        // registry's bind; a few attempts make that race harmless.
        for _ in 0..5 {
            let port = free_port();
            fs::write(
                dir.path().join("config.yml"),
                config_yaml(dir.path(), port, auth),
            )
            .expect("write config");
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path).expect("log file");
            let mut child = Command::new(BINARY)
                .arg("serve")
                .arg(dir.path().join("config.yml"))
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start `{BINARY}`: {e}"));
            if wait_ready(&mut child, port) {
                let url = format!("http://127.0.0.1:{port}");
                return Registry { child, url, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("{}", fs::read_to_string(&log_path).unwrap_or_default());
        }
        panic!("`{BINARY}` did not start; its logs are above")
    }

    /// The registry's storage root.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Files in storage that an upload left behind. distribution 2.8.2 keeps
    /// an empty `hashstates` file after a cancelled upload (a known bug), so
    /// only that is tolerated.
    pub fn leftover_upload_data(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        walk(&self.storage(), &mut files);
        files
            .into_iter()
            .filter(|path| !path.components().any(|c| c.as_os_str() == "hashstates"))
            .collect()
    }

    /// Paths of upload sessions (`_uploads/<uuid>`) ever opened in storage.
    pub fn upload_sessions(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        walk(&self.storage(), &mut files);
        let mut sessions: Vec<PathBuf> = files
            .iter()
            .filter_map(|f| {
                let mut path = PathBuf::new();
                let mut parts = f.components();
                for part in parts.by_ref() {
                    path.push(part);
                    if part.as_os_str() == "_uploads" {
                        return parts.next().map(|uuid| path.join(uuid));
                    }
                }
                None
            })
            .collect();
        sessions.sort();
        sessions.dedup();
        sessions
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the child answers on `port`, or exits, or 15 s pass.
fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if answers_v2(port) {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

fn config_yaml(dir: &Path, port: u16, auth: &str) -> String {
    format!(
        "version: 0.1\n\
         log: {{level: warn, accesslog: {{disabled: true}}}}\n\
         storage: {{filesystem: {{rootdirectory: {data}}}, delete: {{enabled: true}}}}\n\
         http: {{addr: \"127.0.0.1:{port}\", secret: integration-test-secret}}\n\
         auth: {{{auth}}}\n",
        data = dir.join("data").display(),
    )
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// True once `GET /v2/` gets any HTTP answer (401 without credentials).
fn answers_v2(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 ")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}
