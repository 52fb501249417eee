//! Issue 11, hole 11 ("tokens in URLs copied into trace spans"), through the real router: what
//! the service logs at debug level while serving requests whose query carries a token never
//! holds the token. `http::security::tests` checks the span function alone; this checks that
//! the router's trace layer is the one using it. A test binary of its own, because the
//! capturing subscriber must be the process's global one (the app serves on a runtime and
//! threads of its own) and the `api` binary installs another.
#[path = "api/helpers/mod.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;

use std::sync::{Arc, Mutex};

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_token_in_a_request_query_never_reaches_the_debug_log_of_the_request() {
    let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "companion=debug,tower_http=debug",
        ))
        .with_ansi(false)
        .with_writer(move || Capture(writer.clone()))
        .try_init()
        .expect("the first and only subscriber of this test binary");

    let app = helpers::spawn_app().await;
    let token = app.learner_token("lin");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/healthz", "/ws"] {
        let response = client
            .get(app.url(&format!("{path}?token={token}")))
            .send()
            .await
            .unwrap();
        let _ = response.bytes().await;
    }

    let logs = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    // The trace layer did record the requests, in their span...
    assert!(
        logs.contains("request{") && logs.contains("/healthz"),
        "no request span in the log:\n{logs}"
    );
    // ...and nowhere is the token.
    let leaked: Vec<&str> = logs.lines().filter(|l| l.contains(&token)).collect();
    assert!(
        leaked.is_empty(),
        "the token reached the log in {} lines, the first: {}",
        leaked.len(),
        leaked[0]
    );
}
