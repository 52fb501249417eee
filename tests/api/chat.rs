use std::time::Duration;

use companion::config::EmbeddingProvider;
use companion::http::ws::protocol::{ClientFrame, ErrorCode, ServerFrame};

use crate::helpers::*;

#[tokio::test]
async fn a_question_streams_a_cited_answer_from_the_llm_and_both_messages_are_stored() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = spawn_app_with(|s| use_fake_llm(s, &llm)).await;
    let token = app.learner_token("ada");
    let mut ws = app.connect(&token).await;
    let ready = ws.ready().await;
    assert_eq!(ready.protocol, 1);
    assert_eq!(ready.learner.id, "ada");
    let conversation = ready.conversation_id;

    let answer = ws
        .ask(
            "q-1",
            "my while loop never stops and the program just hangs, why?",
        )
        .await;

    let kinds = answer.kinds();
    assert_eq!(kinds[0], "ack", "{kinds:?}");
    assert_eq!(kinds[1], "sources", "{kinds:?}");
    assert_eq!(*kinds.last().unwrap(), "done");
    let (question_id, duplicate) = answer.ack();
    assert!(!duplicate);
    let sources = answer.sources();
    assert!(!sources.is_empty());
    assert!(
        sources
            .iter()
            .take(3)
            .any(|s| s.url.contains("while-loops")),
        "the while-loops section is among the first sources: {sources:?}"
    );
    let deltas = answer.deltas();
    assert!(deltas.len() >= 3, "{} deltas", deltas.len());
    for (i, (id, seq, _)) in deltas.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(*id, "q-1");
    }
    let text = answer.text();
    assert_eq!(text, FakeScript::default().chunks.concat());
    let done = answer.done();
    assert_eq!(done.status, "complete");
    assert!(!done.offline);
    assert_eq!(done.model, "fake-model");
    assert_eq!(done.usage.tokens_in, 321);
    assert!(done.timings.total_ms >= 0);

    // The LLM got the system prompt first and the passages as delimited data.
    let requests = llm.requests();
    assert_eq!(requests.len(), 1);
    let messages = requests[0]["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    let user = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(user.contains("<passage n=\"1\""), "{user}");
    assert!(user.contains("my while loop never stops"));
    assert_eq!(requests[0]["stream"], true);

    // The transcript holds both messages with their metadata.
    let (status, body) = app.conversation(&token, &conversation).await;
    assert_eq!(status, 200, "{body}");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{body}");
    assert_eq!(messages[0]["role"], "learner");
    assert_eq!(messages[0]["client_id"], "q-1");
    assert_eq!(messages[0]["id"], question_id);
    let answer = &messages[1];
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["text"], text);
    assert_eq!(answer["status"], "complete");
    assert_eq!(answer["model"], "fake-model");
    assert_eq!(
        answer["prompt_version"],
        companion::prompt::TemplateName::System.default_version_id()
    );
    assert_eq!(answer["tokens_in"], 321);
    assert_eq!(answer["reply_to"], messages[0]["id"]);
    assert_eq!(answer["id"], done.message_id);
    assert_eq!(answer["sources"].as_array().unwrap().len(), sources.len());
    assert!(answer["total_ms"].as_i64().is_some());
    ws.close().await;
}

#[tokio::test]
async fn without_an_llm_the_offline_reply_says_so_and_gives_passages_with_links() {
    let app = spawn_app().await;
    let token = app.learner_token("ben");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;

    let answer = ws.ask("o-1", "how do I read a file line by line?").await;

    // Exactly one sources frame.
    let sources = answer.sources();
    assert!(!sources.is_empty());
    let text = answer.text();
    assert!(text.contains("not available"), "{text}");
    assert!(text.contains("/course/python-foundations/"), "{text}");
    assert!(text.contains("[1]"), "{text}");
    let done = answer.done();
    assert!(done.offline);
    assert_eq!(done.status, "complete");
    let (_, body) = app.conversation(&token, &conversation).await;
    let answer = &body["messages"][1];
    assert_eq!(answer["offline"], true);
    assert_eq!(answer["text"], text);
}

#[tokio::test]
async fn cancel_stops_the_stream_and_stores_what_was_said_as_cancelled() {
    let llm = FakeLlm::start(FakeScript {
        chunks: (0..50).map(|i| format!("part {i}. ")).collect(),
        delay: Duration::from_millis(100),
        fail_status: None,
    })
    .await;
    let app = spawn_app_with(|s| use_fake_llm(s, &llm)).await;
    let token = app.learner_token("cy");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;
    ws.send(ask_frame("c-1", "explain for loops")).await;
    let mut answer = Answer {
        frames: ws.until(|f| matches!(f, ServerFrame::Delta { .. })).await,
    };
    ws.send(ClientFrame::Cancel { id: "c-1".into() }).await;
    answer.extend(ws.collect_answer().await.frames);

    assert_eq!(answer.done().status, "cancelled");
    let deltas = answer.deltas();
    assert!(
        deltas.len() < 50,
        "the stream stopped early: {}",
        deltas.len()
    );
    let text = answer.text();
    let (_, body) = app.conversation(&token, &conversation).await;
    let answer = &body["messages"][1];
    assert_eq!(answer["status"], "cancelled");
    assert_eq!(answer["text"], text);

    // The connection is usable after a cancel.
    ws.send(ClientFrame::Ping {
        nonce: Some("n1".into()),
    })
    .await;
    assert!(matches!(ws.next_frame().await, ServerFrame::Pong { .. }));
}

#[tokio::test]
async fn resending_an_ask_with_the_same_id_creates_no_second_question() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = spawn_app_with(|s| use_fake_llm(s, &llm)).await;
    let token = app.learner_token("dee");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;
    let first = ws.ask("same-id", "what is a dictionary?").await;
    let again = ws.ask("same-id", "what is a dictionary?").await;

    assert_eq!(again.kinds()[0], "ack");
    assert_eq!(again.ack(), (first.ack().0, true));
    let done = again.done();
    assert!(done.replayed);
    assert_eq!(done.message_id, first.done().message_id);
    assert_eq!(again.text(), first.text());

    // After a reconnect (a new connection, as the widget does) it is still the same question.
    ws.close().await;
    let mut ws = app.connect(&token).await;
    ws.ready().await;
    let third = ws.ask("same-id", "what is a dictionary?").await;
    assert_eq!(third.kinds()[0], "ack");
    assert!(third.ack().1);

    assert_eq!(llm.requests().len(), 1, "the LLM was asked once");
    let (_, body) = app.conversation(&token, &conversation).await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 2, "{body}");
}

#[tokio::test]
async fn a_failing_llm_gives_an_error_frame_and_a_failed_answer() {
    let llm = FakeLlm::start(FakeScript {
        fail_status: Some(500),
        ..Default::default()
    })
    .await;
    let app = spawn_app_with(|s| use_fake_llm(s, &llm)).await;
    let token = app.learner_token("eve");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;
    let answer = ws.ask("f-1", "what is recursion?").await;
    let errors = answer.errors();
    assert_eq!(errors.len(), 1, "{answer:?}");
    assert_eq!(errors[0].1, ErrorCode::LlmUnavailable);
    assert_eq!(answer.done().status, "failed");
    let (_, body) = app.conversation(&token, &conversation).await;
    assert_eq!(body["messages"][0]["text"], "what is recursion?");
    assert_eq!(body["messages"][1]["status"], "failed");
}

#[tokio::test]
async fn another_learner_cannot_read_or_resume_the_conversation() {
    let app = spawn_app().await;
    let ada = app.learner_token("ada");
    let mut ws = app.connect(&ada).await;
    let conversation = ws.ready().await.conversation_id;
    ws.ask("x-1", "what is a tuple?").await;

    let bob = app.learner_token("bob");
    let (status, _) = app.conversation(&bob, &conversation).await;
    assert_eq!(status, 404);
    let url = format!(
        "ws://{}/ws?token={bob}&conversation={conversation}",
        app.addr
    );
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

/// The process is the point here: a real SIGTERM to the `companion` binary.
#[tokio::test]
async fn sigterm_lets_the_answer_in_flight_finish_and_stores_it() {
    let llm = FakeLlm::start(FakeScript {
        chunks: (0..8).map(|i| format!("step {i}. ")).collect(),
        delay: Duration::from_millis(100),
        fail_status: None,
    })
    .await;
    let base_url = llm.base_url();
    let app = SpawnedApp::start(&[
        ("COMPANION__LLM__BASE_URL", base_url.as_str()),
        ("COMPANION__LLM__API_KEY", "test-key"),
        ("COMPANION__LLM__MODEL", "fake-model"),
    ])
    .await;
    let token = app.learner_token("fay");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;
    ws.send(ask_frame("t-1", "what is a set?")).await;
    let mut answer = Answer {
        frames: ws.until(|f| matches!(f, ServerFrame::Delta { .. })).await,
    };
    app.send_sigterm();
    answer.extend(ws.collect_answer().await.frames);
    assert_eq!(answer.done().status, "complete");
    assert_eq!(
        answer.text(),
        (0..8).map(|i| format!("step {i}. ")).collect::<String>()
    );
    let (status, data_dir, temp) = app.wait_exit().await;
    assert!(status.success(), "{status:?}");

    // Started again on the same data (in-process: only the data matters now), the whole
    // answer is there.
    let app = TestApp::start(test_settings(&data_dir), Some(temp)).await;
    let (_, body) = app.conversation(&token, &conversation).await;
    assert_eq!(body["messages"][1]["status"], "complete");
    assert_eq!(body["messages"][1]["text"], answer.text());
}

#[tokio::test]
async fn with_the_in_process_model_hybrid_retrieval_finds_a_paraphrased_question() {
    let model_dir = repo_root().join("data/models/all-MiniLM-L6-v2");
    if !model_dir.join("model.safetensors").is_file() {
        eprintln!(
            "SKIPPED: no model in {} (scripts/fetch-model.sh)",
            model_dir.display()
        );
        return;
    }
    // A small course so the model's ingest stays quick in a debug build.
    let content = tempfile::tempdir().unwrap();
    let course = repo_root().join("course-content/python-foundations");
    for file in [
        "02-control-flow/02-while-loops.md",
        "02-control-flow/03-for-loops-and-range.md",
        "04-collections/03-dictionaries.md",
        "05-files-and-errors/02-handling-exceptions.md",
    ] {
        let target = content.path().join("python-foundations").join(file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(course.join(file), target).unwrap();
    }
    let app = spawn_app_with(|s| {
        s.content.dir = content.path().to_path_buf();
        s.embedding.provider = EmbeddingProvider::Local {
            model_dir: model_dir.clone(),
        };
        s.embedding.allow_bm25_fallback = false;
    })
    .await;
    let token = app.learner_token("mia");
    let mut ws = app.connect(&token).await;
    ws.ready().await;
    // No word of the while-loops page's vocabulary beyond "program".
    let answer = ws
        .ask(
            "p-1",
            "my program keeps going round and round forever and never finishes",
        )
        .await;
    let sources = answer.sources();
    assert!(sources[0].url.contains("while-loops"), "{sources:?}");
    assert!(answer.done().offline);
}
