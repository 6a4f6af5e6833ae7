//! Debian's `docker-registry` (distribution) on a free loopback port, with htpasswd users and
//! filesystem storage in a temporary folder; stopped and removed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::http1::Connection;

/// A running registry.
pub struct Registry {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry accepting `user` with `password`, hashed with bcrypt at `cost`.
    ///
    /// Distribution checks the bcrypt hash on every request, so `cost` is a real part of the
    /// registry's answer time; `htpasswd -B` uses 5 unless told otherwise.
    pub fn start(user: &str, password: &str, cost: u32) -> anyhow::Result<Registry> {
        let dir = tempfile::tempdir().context("cannot create the registry's folder")?;
        let hash = bcrypt::hash(password, cost).context("cannot hash the password")?;
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
        let port = free_port()?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log: {{level: error, accesslog: {{disabled: true}}}}\n\
                 storage: {{filesystem: {{rootdirectory: {data}}}, delete: {{enabled: true}}}}\n\
                 http: {{addr: \"127.0.0.1:{port}\", secret: doctor-bench-secret}}\n\
                 auth: {{htpasswd: {{realm: doctor-bench, path: {htpasswd}}}}}\n",
                data = dir.path().join("data").display(),
                htpasswd = htpasswd.display(),
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `docker-registry`; install it with `apt-get install -y docker-registry`")?;
        let mut registry = Registry {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        registry.wait_ready(port)?;
        Ok(registry)
    }

    fn wait_ready(&mut self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("`docker-registry` exited at start with {status}");
            }
            let answered =
                Connection::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(1))
                    .and_then(|mut connection| connection.send("GET", "/v2/", &[], &[]))
                    .is_ok();
            if answered {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("`docker-registry` did not answer on port {port} within 15 s")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
