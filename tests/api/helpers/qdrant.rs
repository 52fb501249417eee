//! [`QdrantServer`]: a real Qdrant server for a test, `../shared/bin/qdrant` (or
//! `COMPANION_TEST_QDRANT_BIN`) on free loopback ports with its storage in a temp dir, killed
//! when dropped.
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::repo_root;

pub struct QdrantServer {
    /// The gRPC address the service's client uses.
    pub grpc: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl QdrantServer {
    /// Starts one and waits until it is ready, or `None` (saying that `what` is skipped) when
    /// there is no binary to run.
    pub async fn start(what: &str) -> Option<Self> {
        let binary = std::env::var("COMPANION_TEST_QDRANT_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("../shared/bin/qdrant"));
        if !binary.exists() {
            eprintln!("SKIPPED: {what}: no Qdrant server at {}", binary.display());
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (http, grpc) = (free_port(), free_port());
        let child = Command::new(&binary)
            .current_dir(dir.path())
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", http.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", grpc.to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", dir.path().join("storage"))
            .env(
                "QDRANT__STORAGE__SNAPSHOTS_PATH",
                dir.path().join("snapshots"),
            )
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qdrant");
        let server = Self {
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc)),
            child,
            _dir: dir,
        };
        let ready = format!("http://127.0.0.1:{http}/readyz");
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(response) = client.get(&ready).send().await
                && response.status() == 200
            {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("qdrant never became ready");
    }
}

impl Drop for QdrantServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
