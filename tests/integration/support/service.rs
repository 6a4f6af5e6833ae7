//! The real `stella-doctor serve` on a free loopback port, and a small
//! HTTP/1.1 client over a std `TcpStream` to talk to it.
//!
//! The server is started with `--listen 127.0.0.1:0` and prints the address
//! the kernel gave it; it is killed when the [`Server`] is dropped.

use serde_json::Value;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to load its plugins and start listening
/// (a cold start compiles every component in a debug build).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A `serve` invocation being put together.
pub struct Serve {
    plugins: PathBuf,
    args: Vec<String>,
    token: Option<String>,
}

/// A running `stella-doctor serve`.
pub struct Server {
    child: Child,
    address: SocketAddr,
    token: Option<String>,
    stderr: Arc<Mutex<String>>,
}

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Serve {
    /// A server reading its checks from `plugins`.
    pub fn new(plugins: &Path) -> Serve {
        Serve {
            plugins: plugins.to_path_buf(),
            args: Vec::new(),
            token: None,
        }
    }

    /// Adds `--set KEY=VALUE`.
    pub fn set(mut self, key: &str, value: &str) -> Serve {
        self.args.push("--set".into());
        self.args.push(format!("{key}={value}"));
        self
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Serve {
        self.args.push(arg.as_ref().to_string_lossy().into_owned());
        self
    }

    /// Configures `Doctor:Api:Token` and makes the client send it.
    pub fn token(mut self, token: &str) -> Serve {
        self.token = Some(token.to_string());
        self.set("Doctor:Api:Token", token)
    }

    fn command(&self, listen: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stella-doctor"));
        command
            .env_clear()
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn,stella_doctor=info")
            .args(["serve", "--listen", listen, "--plugins"])
            .arg(&self.plugins)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Starts the server and waits until it listens.
    pub fn start(self) -> Server {
        let mut child = self
            .command("127.0.0.1:0")
            .spawn()
            .expect("start stella-doctor serve");
        let stderr = collect(child.stderr.take().expect("stderr"));
        let (found, address) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("stella-doctor serving on http://") {
                    let _ = found.send(address.parse::<SocketAddr>().expect("address"));
                }
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let address = loop {
            if let Ok(address) = address.recv_timeout(Duration::from_millis(200)) {
                break address;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "serve exited with {status} before listening:\n{}",
                    stderr.lock().unwrap()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "serve did not listen within {START_TIMEOUT:?}:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        Server {
            child,
            address,
            token: self.token,
            stderr,
        }
    }

    /// Runs `serve --listen ADDR` expecting it to exit on its own within
    /// `limit`; returns its exit code, stdout and stderr.
    pub fn expect_exit(self, listen: &str, limit: Duration) -> (i32, String, String) {
        let mut child = self
            .command(listen)
            .spawn()
            .expect("start stella-doctor serve");
        let deadline = Instant::now() + limit;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve --listen {listen} kept running; it should have refused to start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().expect("output");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// Reads a child's stream into a shared string on a thread of its own.
fn collect(mut stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    text
}

impl Server {
    /// Where it listens, for tests that speak HTTP by hand.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends one request, with the configured token unless `token` overrides it.
    pub fn request_as(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        request(self.address, method, path, token, body)
    }

    /// A request carrying the configured token, if any.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        request(self.address, method, path, self.token.as_deref(), body)
    }

    /// `GET /api/v1/doctor/checks`, which must answer 200.
    pub fn checks(&self) -> Value {
        let reply = self.request("GET", "/api/v1/doctor/checks", None);
        assert_eq!(reply.status, 200, "{reply:?}\n{}", self.log());
        reply.json()
    }

    /// The entry of `check_id` in `/checks`, if it is serving.
    pub fn check(&self, check_id: &str) -> Option<Value> {
        self.checks()["checks"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == check_id)
            .cloned()
    }

    /// `POST /api/v1/doctor/run` with a JSON body.
    pub fn run(&self, body: &str) -> Reply {
        self.request("POST", "/api/v1/doctor/run", Some(body))
    }

    /// The value of one sample line of `/metrics`, such as
    /// `stella_doctor_compiles_total` or `stella_doctor_swaps_total{kind="added"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        let reply = self.request("GET", "/metrics", None);
        assert_eq!(reply.status, 200, "{reply:?}");
        reply
            .body
            .lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().expect("a number"))
            })
            .unwrap_or_else(|| panic!("no `{sample}` in /metrics:\n{}", reply.body))
    }

    /// Polls `condition` every 100 ms until it holds, failing after `limit`.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut condition: impl FnMut(&Server) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; /checks:\n{:#}\nlog:\n{}",
                self.checks(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Reply {
    /// The body as JSON; panics with the reply when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(10)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let body = body.unwrap_or("");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(body.as_bytes()).expect("send body");

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read reply");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (headers, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {headers:?}"));
    Reply {
        status,
        headers: headers.to_string(),
        body: body.to_string(),
    }
}

/// `bytes` with a custom section appended: a valid component with another
/// digest and the same behaviour, as a rebuild would produce.
pub fn with_custom_section(bytes: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut content = leb128(name.len());
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.extend(leb128(content.len()));
    out.extend(content);
    out
}

fn leb128(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Replaces `path` the way writers should: write beside it, then rename.
pub fn replace_atomically(path: &Path, bytes: &[u8]) {
    let temp = path.with_extension("wasm.tmp");
    std::fs::write(&temp, bytes).expect("write temp");
    std::fs::rename(&temp, path).expect("rename into place");
}
