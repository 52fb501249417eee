//! Test harness: the service in-process on port 0 with its own data dir and SQLite file
//! ([`TestApp`]), the `companion` binary where the process itself is under test
//! ([`SpawnedApp`]), a fake OpenAI-compatible server that streams SSE like the real API, and a
//! WebSocket client that speaks the crate's own typed frames.
mod app;
mod fake_llm;
mod fault_proxy;
mod process;
#[path = "../../common/qdrant.rs"]
mod qdrant;
mod ws;

use std::path::PathBuf;
use std::time::Duration;

use companion::auth::TokenKeys;
use secrecy::SecretString;

pub use app::{
    Asked, TestApp, spawn_app, spawn_app_with, spawn_app_with_llm, test_settings, today,
    use_fake_llm,
};
pub use fake_llm::{Behaviour, FakeLlm, FakeScript};
pub use fault_proxy::FaultProxy;
pub use process::SpawnedApp;
pub use qdrant::{QdrantCluster, QdrantServer};
pub use ws::{Answer, WsClient, ask_frame, attach_frame};

pub const SECRET: &str = "test-secret-for-companion-at-least-32-bytes";
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn keys() -> TokenKeys {
    TokenKeys::new(&SecretString::from(SECRET.to_string()), 0)
}
