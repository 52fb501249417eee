use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_question_streams_a_cited_answer_from_the_llm_and_both_messages_are_stored() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = spawn_app_with(AppOptions {
        llm_url: Some(llm.base_url()),
        ..Default::default()
    })
    .await;
    let token = app.learner_token("ada");
    let mut ws = app.connect(&token).await;
    let ready = ws.ready().await;
    assert_eq!(ready["protocol"], 1);
    assert_eq!(ready["learner"]["id"], "ada");
    let conversation = ready["conversation_id"].as_str().unwrap().to_string();

    let frames = ws
        .ask(
            "q-1",
            "my while loop never stops and the program just hangs, why?",
        )
        .await;

    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "ack", "{kinds:?}");
    assert_eq!(kinds[1], "sources", "{kinds:?}");
    assert_eq!(*kinds.last().unwrap(), "done");
    let ack = &frames[0];
    assert_eq!(ack["duplicate"], false);
    let sources = frames[1]["sources"].as_array().unwrap();
    assert!(!sources.is_empty());
    assert!(
        sources
            .iter()
            .take(3)
            .any(|s| s["url"].as_str().unwrap().contains("while-loops")),
        "the while-loops section is among the first sources: {sources:?}"
    );
    let deltas = of_type(&frames, "delta");
    assert!(deltas.len() >= 3, "{} deltas", deltas.len());
    for (i, d) in deltas.iter().enumerate() {
        assert_eq!(d["seq"], i as u64);
        assert_eq!(d["id"], "q-1");
    }
    let text = answer_text(&frames);
    assert_eq!(text, FakeScript::default().chunks.concat());
    let done = frames.last().unwrap();
    assert_eq!(done["status"], "complete");
    assert_eq!(done["offline"], false);
    assert_eq!(done["model"], "fake-model");
    assert_eq!(done["usage"]["tokens_in"], 321);
    assert!(done["timings"]["total_ms"].as_i64().unwrap() >= 0);

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
    assert_eq!(messages[0]["id"], ack["message_id"]);
    let answer = &messages[1];
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["text"], text);
    assert_eq!(answer["status"], "complete");
    assert_eq!(answer["model"], "fake-model");
    assert_eq!(answer["prompt_version"], "system-v2");
    assert_eq!(answer["tokens_in"], 321);
    assert_eq!(answer["reply_to"], messages[0]["id"]);
    assert_eq!(answer["id"], done["message_id"]);
    assert_eq!(answer["sources"].as_array().unwrap().len(), sources.len());
    assert!(answer["total_ms"].as_i64().is_some());
    ws.close().await;
}

#[tokio::test]
async fn without_an_llm_the_offline_reply_says_so_and_gives_passages_with_links() {
    let app = spawn_app().await;
    let token = app.learner_token("ben");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();

    let frames = ws.ask("o-1", "how do I read a file line by line?").await;

    let sources = of_type(&frames, "sources");
    assert_eq!(sources.len(), 1);
    let sources = sources[0]["sources"].as_array().unwrap();
    assert!(!sources.is_empty());
    let text = answer_text(&frames);
    assert!(text.contains("not available"), "{text}");
    assert!(text.contains("/course/python-foundations/"), "{text}");
    assert!(text.contains("[1]"), "{text}");
    let done = frames.last().unwrap();
    assert_eq!(done["offline"], true);
    assert_eq!(done["status"], "complete");
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
    let app = spawn_app_with(AppOptions {
        llm_url: Some(llm.base_url()),
        ..Default::default()
    })
    .await;
    let token = app.learner_token("cy");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    ws.send_json(json!({"type": "ask", "id": "c-1", "text": "explain for loops"}))
        .await;
    let mut frames = ws.until("delta").await;
    ws.send_json(json!({"type": "cancel", "id": "c-1"})).await;
    frames.extend(ws.until("done").await);

    let done = frames.last().unwrap();
    assert_eq!(done["status"], "cancelled");
    let deltas = of_type(&frames, "delta");
    assert!(
        deltas.len() < 50,
        "the stream stopped early: {}",
        deltas.len()
    );
    let text = answer_text(&frames);
    let (_, body) = app.conversation(&token, &conversation).await;
    let answer = &body["messages"][1];
    assert_eq!(answer["status"], "cancelled");
    assert_eq!(answer["text"], text);

    // The connection is usable after a cancel.
    ws.send_json(json!({"type": "ping", "nonce": "n1"})).await;
    assert_eq!(ws.next_frame().await["type"], "pong");
}

#[tokio::test]
async fn resending_an_ask_with_the_same_id_creates_no_second_question() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = spawn_app_with(AppOptions {
        llm_url: Some(llm.base_url()),
        ..Default::default()
    })
    .await;
    let token = app.learner_token("dee");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let first = ws.ask("same-id", "what is a dictionary?").await;
    let again = ws.ask("same-id", "what is a dictionary?").await;

    assert_eq!(again[0]["type"], "ack");
    assert_eq!(again[0]["duplicate"], true);
    assert_eq!(again[0]["message_id"], first[0]["message_id"]);
    let done = again.last().unwrap();
    assert_eq!(done["replayed"], true);
    assert_eq!(done["message_id"], first.last().unwrap()["message_id"]);
    assert_eq!(answer_text(&again), answer_text(&first));

    // After a reconnect (a new connection, as the widget does) it is still the same question.
    ws.close().await;
    let mut ws = app.connect(&token).await;
    ws.ready().await;
    let third = ws.ask("same-id", "what is a dictionary?").await;
    assert_eq!(third[0]["duplicate"], true);

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
    let app = spawn_app_with(AppOptions {
        llm_url: Some(llm.base_url()),
        ..Default::default()
    })
    .await;
    let token = app.learner_token("eve");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let frames = ws.ask("f-1", "what is recursion?").await;
    let errors = of_type(&frames, "error");
    assert_eq!(errors.len(), 1, "{frames:?}");
    assert_eq!(errors[0]["code"], "llm_unavailable");
    assert_eq!(frames.last().unwrap()["status"], "failed");
    let (_, body) = app.conversation(&token, &conversation).await;
    assert_eq!(body["messages"][0]["text"], "what is recursion?");
    assert_eq!(body["messages"][1]["status"], "failed");
}

#[tokio::test]
async fn another_learner_cannot_read_or_resume_the_conversation() {
    let app = spawn_app().await;
    let ada = app.learner_token("ada");
    let mut ws = app.connect(&ada).await;
    let conversation = ws.ready().await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
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

#[tokio::test]
async fn sigterm_lets_the_answer_in_flight_finish_and_stores_it() {
    let llm = FakeLlm::start(FakeScript {
        chunks: (0..8).map(|i| format!("step {i}. ")).collect(),
        delay: Duration::from_millis(100),
        fail_status: None,
    })
    .await;
    let app = spawn_app_with(AppOptions {
        llm_url: Some(llm.base_url()),
        ..Default::default()
    })
    .await;
    let token = app.learner_token("fay");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    ws.send_json(json!({"type": "ask", "id": "t-1", "text": "what is a set?"}))
        .await;
    let mut frames = ws.until("delta").await;
    app.send_sigterm();
    frames.extend(ws.until("done").await);
    assert_eq!(frames.last().unwrap()["status"], "complete");
    assert_eq!(
        answer_text(&frames),
        (0..8).map(|i| format!("step {i}. ")).collect::<String>()
    );
    let (status, data_dir, _keep) = app.wait_exit().await;
    assert!(status.success(), "{status:?}");

    // Started again on the same data, the whole answer is there.
    let app = spawn_app_with(AppOptions {
        data_dir: Some(data_dir),
        ..Default::default()
    })
    .await;
    let (_, body) = app.conversation(&token, &conversation).await;
    assert_eq!(body["messages"][1]["status"], "complete");
    assert_eq!(body["messages"][1]["text"], answer_text(&frames));
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
    let app = spawn_app_with(AppOptions {
        content_dir: Some(content.path().to_path_buf()),
        embedding_toml: Some(format!(
            "[embedding]\nprovider = \"local\"\nmodel_dir = \"{}\"\nallow_bm25_fallback = false\n",
            model_dir.display()
        )),
        ..Default::default()
    })
    .await;
    let token = app.learner_token("mia");
    let mut ws = app.connect(&token).await;
    ws.ready().await;
    // No word of the while-loops page's vocabulary beyond "program".
    let frames = ws
        .ask(
            "p-1",
            "my program keeps going round and round forever and never finishes",
        )
        .await;
    let sources = of_type(&frames, "sources")[0]["sources"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        sources[0]["url"].as_str().unwrap().contains("while-loops"),
        "{sources:?}"
    );
    assert_eq!(frames.last().unwrap()["offline"], true);
}
