//! [`SpawnedApp`]: the `companion` binary as a child process, for the tests where the process
//! itself is the point (SIGKILL, SIGTERM). Configured through `COMPANION__*` variables, the
//! way an operator would.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use companion::auth::Role;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{SECRET, WsClient, repo_root};

pub struct SpawnedApp {
    pub addr: SocketAddr,
    child: Child,
    data_dir: PathBuf,
    temp: Option<tempfile::TempDir>,
}

impl SpawnedApp {
    /// `companion serve` on a free port with a fresh temp data dir, the test secret, the
    /// repository's course, BM25 only, a short shutdown grace, and `env` on top.
    pub async fn start(env: &[(&str, &str)]) -> SpawnedApp {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().to_path_buf();
        let mut command = Command::new(env!("CARGO_BIN_EXE_companion"));
        command
            .arg("serve")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("COMPANION_CONFIG")
            .env("COMPANION__SERVER__LISTEN", "127.0.0.1:0")
            .env("COMPANION__SERVER__DATA_DIR", &data_dir)
            .env("COMPANION__SERVER__SHUTDOWN_GRACE_SECS", "2")
            .env("COMPANION__AUTH__SECRET", SECRET)
            .env(
                "COMPANION__CONTENT__DIR",
                repo_root().join("course-content"),
            )
            .env("COMPANION__EMBEDDING__PROVIDER", "none")
            .env("RUST_LOG", "companion=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start companion");
        let (child, addr) = wait_listening(child).await;
        super::app::wait_ready(addr).await;
        SpawnedApp {
            addr,
            child,
            data_dir,
            temp: Some(temp),
        }
    }

    pub fn learner_token(&self, id: &str) -> String {
        super::app::token(Role::Learner, id)
    }

    pub async fn connect(&self, token: &str) -> WsClient {
        WsClient::connect(self.addr, &format!("token={token}")).await
    }

    /// SIGKILL, no chance to clean up; keeps the data dir for a restart.
    pub async fn kill(mut self) -> (PathBuf, tempfile::TempDir) {
        self.child.kill().await.unwrap();
        let _ = self.child.wait().await;
        (
            self.data_dir.clone(),
            self.temp.take().expect("the data dir"),
        )
    }

    /// Sends SIGTERM without waiting.
    pub fn send_sigterm(&self) {
        let pid = self.child.id().expect("running");
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
    }

    /// Waits for the process to exit; keeps the data dir for a restart.
    pub async fn wait_exit(mut self) -> (std::process::ExitStatus, PathBuf, tempfile::TempDir) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("companion exits within 30 s")
            .unwrap();
        (
            status,
            self.data_dir.clone(),
            self.temp.take().expect("the data dir"),
        )
    }
}

async fn wait_listening(mut child: Child) -> (Child, SocketAddr) {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(url) = line.strip_prefix("companion listening on http://") {
                return url.parse::<SocketAddr>().expect("address");
            }
        }
        panic!("companion exited before listening");
    })
    .await
    .expect("companion did not start listening within 60 s");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}
