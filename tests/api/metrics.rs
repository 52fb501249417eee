//! `/metrics` (issue 16): after real turns over a WebSocket, the node's Prometheus text shows
//! each stage of the turns, what the service added before the first token, error frames by
//! code, and the sockets open.
use std::time::Duration;

use crate::helpers::{FakeLlm, FakeScript, spawn_app_with, use_fake_llm};

/// The value of the sample named exactly `name` (with its labels), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_show_the_stages_of_real_turns_errors_by_code_and_open_sockets() {
    let llm = FakeLlm::start(FakeScript {
        chunks: vec![
            "A loop ".into(),
            "stops when ".into(),
            "its test fails.".into(),
        ],
        delay: Duration::from_millis(50),
        fail_status: None,
    })
    .await;
    let app = spawn_app_with(|s| use_fake_llm(s, &llm)).await;
    let mut ws = app.connect(&app.learner_token("ada")).await;
    ws.ready().await;
    for i in 0..3 {
        let answer = ws
            .ask(&format!("m-{i}"), "How do I stop a while loop?")
            .await;
        assert_eq!(answer.done().status, "complete");
    }
    // An ask with an empty question is refused with an error frame.
    ws.send_json(serde_json::json!({"type": "ask", "id": "m-empty", "text": "   "}))
        .await;
    let (_, code, _) = ws.next_error().await;
    let code = serde_json::to_value(code).unwrap();

    let (status, _) = app.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let response = reqwest::get(app.url("/metrics")).await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.unwrap();
    for stage in [
        "store_question",
        "retrieve",
        "prepare",
        "assemble",
        "llm_first_token",
        "stream",
        "store_answer",
    ] {
        let count = sample(
            &text,
            &format!("companion_turn_stage_seconds_count{{stage=\"{stage}\"}}"),
        );
        assert_eq!(count, Some(3.0), "{stage} in\n{text}");
    }
    // The model waits 50 ms before each part: its first-token stage holds that delay, and the
    // time the service added leaves it out.
    let llm_sum = sample(
        &text,
        "companion_turn_stage_seconds_sum{stage=\"llm_first_token\"}",
    )
    .unwrap();
    assert!(llm_sum >= 0.15, "{llm_sum}\n{text}");
    assert_eq!(
        sample(&text, "companion_added_first_token_seconds_count"),
        Some(3.0),
        "{text}"
    );
    let added = sample(&text, "companion_added_first_token_seconds_sum").unwrap();
    assert!(
        added < llm_sum,
        "added {added} s vs the model's {llm_sum} s"
    );
    // `code` is a JSON string: printed with its quotes, as a label value is.
    let errors = format!("companion_error_frames_total{{code={code}}}");
    assert_eq!(sample(&text, &errors), Some(1.0), "{errors} in\n{text}");
    assert_eq!(sample(&text, "companion_sockets_open"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "companion_answers_streaming"),
        Some(0.0),
        "{text}"
    );

    ws.close().await;
    let mut open = None;
    for _ in 0..50 {
        let text = reqwest::get(app.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        open = sample(&text, "companion_sockets_open");
        if open == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open, Some(0.0), "the closed socket is still counted");
}
