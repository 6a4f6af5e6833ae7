//! Runs the real `stella-doctor` binary the way an operator would, with a
//! clean environment so the developer's own settings never leak into a test.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An invocation being put together.
pub struct Doctor {
    isolated_network: bool,
    plugins: PathBuf,
    sets: Vec<String>,
    envs: Vec<(String, String)>,
}

/// What one invocation printed and returned.
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Doctor {
    /// A doctor reading its checks from `plugins`.
    pub fn new(plugins: &Path) -> Doctor {
        Doctor {
            isolated_network: false,
            plugins: plugins.to_path_buf(),
            sets: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// Adds `--set KEY=VALUE`.
    pub fn set(mut self, key: &str, value: &str) -> Doctor {
        self.sets.push(format!("{key}={value}"));
        self
    }

    /// Adds an environment variable (`OCI__Password`, …).
    pub fn env(mut self, name: &str, value: &str) -> Doctor {
        self.envs.push((name.to_string(), value.to_string()));
        self
    }

    /// Runs the host in a network namespace of its own (`unshare --net`), with
    /// no interface but a downed loopback: for tests that aim at addresses
    /// off this machine, so that not even a bug can send a packet there.
    pub fn isolated_network(mut self) -> Doctor {
        self.isolated_network = true;
        self
    }

    /// Runs `stella-doctor ARGS… --plugins DIR --set …`.
    pub fn run(&self, args: &[&str]) -> Outcome {
        let binary = env!("CARGO_BIN_EXE_stella-doctor");
        let mut command = if self.isolated_network {
            let mut unshare = Command::new("unshare");
            unshare.args(["--net", "--", binary]);
            unshare
        } else {
            Command::new(binary)
        };
        command
            .env_clear()
            .env("NO_COLOR", "1")
            .envs(self.envs.iter().map(|(n, v)| (n, v)))
            .args(args)
            .arg("--plugins")
            .arg(&self.plugins);
        for set in &self.sets {
            command.arg("--set").arg(set);
        }
        let output = command.output().expect("run stella-doctor");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs one check with `--format json` and returns its result object.
    pub fn run_check_json(&self, check_id: &str) -> (Outcome, Value) {
        let outcome = self.run(&["run", "--check", check_id, "--format", "json"]);
        let result = outcome.result(check_id);
        (outcome, result)
    }
}

impl Outcome {
    /// stdout parsed as JSON; panics with both streams when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The result of `check_id` in JSON output.
    pub fn result(&self, check_id: &str) -> Value {
        let json = self.json();
        json["results"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["checkId"] == check_id))
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no result for {check_id} in:\n{}\nstderr:\n{}",
                    self.stdout, self.stderr
                )
            })
    }

    /// Everything the process printed, for secret scans.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}
