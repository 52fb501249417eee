//! A real Qdrant server for tests: `../shared/bin/qdrant` (or `COMPANION_TEST_QDRANT_BIN`) on
//! free loopback ports with its storage in a temp dir, killed when dropped ([`QdrantServer`]),
//! or several of them as the peers of one cluster in distributed mode ([`QdrantCluster`]).
//! Included with `#[path]` by each test binary that needs it.
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One Qdrant process.
pub struct QdrantServer {
    /// The gRPC address the service's client uses.
    pub grpc: SocketAddr,
    /// The REST address (readiness, cluster state).
    pub http: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The peers of one cluster; the first one started it, the others joined it.
pub struct QdrantCluster {
    pub peers: Vec<QdrantServer>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn binary(what: &str) -> Option<PathBuf> {
    let binary = std::env::var("COMPANION_TEST_QDRANT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/bin/qdrant"));
    if binary.exists() {
        Some(binary)
    } else {
        eprintln!("SKIPPED: {what}: no Qdrant server at {}", binary.display());
        None
    }
}

/// How a peer takes part in a cluster: its own peer-to-peer port, and the peer it joins.
struct Peer {
    p2p: u16,
    bootstrap: Option<u16>,
}

impl QdrantServer {
    /// Starts one and waits until it is ready, or `None` (saying that `what` is skipped) when
    /// there is no binary to run.
    pub async fn start(what: &str) -> Option<Self> {
        let binary = binary(what)?;
        let server = Self::spawn(&binary, None);
        server.wait_ready().await;
        Some(server)
    }

    fn spawn(binary: &PathBuf, peer: Option<Peer>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (http, grpc) = (free_port(), free_port());
        let mut command = Command::new(binary);
        command
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
            .stderr(Stdio::null());
        if let Some(peer) = peer {
            command
                .env("QDRANT__CLUSTER__ENABLED", "true")
                .env("QDRANT__CLUSTER__P2P__PORT", peer.p2p.to_string())
                .arg("--uri")
                .arg(format!("http://127.0.0.1:{}", peer.p2p));
            if let Some(first) = peer.bootstrap {
                command
                    .arg("--bootstrap")
                    .arg(format!("http://127.0.0.1:{first}"));
            }
        }
        let child = command.spawn().expect("start qdrant");
        Self {
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc)),
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            child,
            _dir: dir,
        }
    }

    /// The gRPC URL the service is configured with.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    async fn wait_ready(&self) {
        let ready = format!("http://{}/readyz", self.http);
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(response) = client.get(&ready).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("qdrant never became ready");
    }

    /// The peers this one knows of (`GET /cluster`).
    pub async fn cluster_peers(&self) -> usize {
        let url = format!("http://{}/cluster", self.http);
        let Ok(response) = reqwest::get(&url).await else {
            return 0;
        };
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        body["result"]["peers"]
            .as_object()
            .map_or(0, serde_json::Map::len)
    }

    /// Kills the process at once (SIGKILL), as a crashed machine would stop.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl QdrantCluster {
    /// Starts `n` peers in distributed mode on loopback, the first one bootstrapping the
    /// others, and waits until every peer sees all `n`; `None` when there is no binary.
    pub async fn start(n: usize, what: &str) -> Option<Self> {
        let binary = binary(what)?;
        let first = free_port();
        let mut peers = vec![QdrantServer::spawn(
            &binary,
            Some(Peer {
                p2p: first,
                bootstrap: None,
            }),
        )];
        peers[0].wait_ready().await;
        for _ in 1..n {
            let peer = QdrantServer::spawn(
                &binary,
                Some(Peer {
                    p2p: free_port(),
                    bootstrap: Some(first),
                }),
            );
            peer.wait_ready().await;
            peers.push(peer);
        }
        for _ in 0..300 {
            let mut all = true;
            for peer in &peers {
                all &= peer.cluster_peers().await == n;
            }
            if all {
                return Some(Self { peers });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the {n} qdrant peers never formed one cluster");
    }
}

impl Drop for QdrantServer {
    fn drop(&mut self) {
        self.kill();
    }
}
