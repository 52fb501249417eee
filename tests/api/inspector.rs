//! The prompt inspector and replays (issue 13): the stored prompt of an answer is exactly what
//! the fake model received, with each part's tokens and what the budget left out, readable by
//! the course's team, the learner's mentor and admins only; a replay of thumbs-down turns with a
//! candidate answers them again from their stored context (the learner's project file deleted
//! since still reaches the candidate: no fresh retrieval), shows old and new side by side,
//! leaves the learner's history as it was, can be cancelled, and refuses bad filters.
use std::time::Duration;

use companion::auth::Role;
use companion::http::ws::protocol::{ClientFrame, ServerFrame};
use companion::review::Rating;
use serde_json::{Value, json};

use crate::helpers::{
    Behaviour, FakeLlm, FakeScript, TestApp, spawn_app_with, spawn_app_with_llm, use_fake_llm,
};

const COURSE: &str = "python-foundations";
const MARKER: &str = "REPLAY-CANDIDATE-3";
const FILE_MARKER: &str = "stop_flag_of_ada";

async fn app_with(llm: &FakeLlm, passage_tokens: usize) -> TestApp {
    spawn_app_with(|settings| {
        use_fake_llm(settings, llm);
        settings.context.passage_tokens = passage_tokens;
    })
    .await
}

/// The stored prompt of `message`, read with `token`; the status and the reply.
async fn prompt_of(app: &TestApp, token: Option<&str>, message: &str) -> (u16, Value) {
    let path = format!("/api/v1/messages/{message}/prompt");
    app.call("GET", &path, token, None).await
}

/// Ada, a learner of the course, and the plan of her last session with Grace, her mentor.
async fn ada_with_a_mentor_plan(app: &TestApp) {
    app.put_learner("ada", "grace").await;
    app.add_session(
        "grace",
        "ada",
        &crate::helpers::today(),
        "Ada mixes up while and for.",
        &["Write a loop that stops on a flag"],
    )
    .await;
}

/// The messages of a request the fake model received, as `(role, content)`.
fn request_messages(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_inspector_shows_exactly_what_the_model_received_to_the_team_the_mentor_and_admins() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    // A small passage budget, so that the budget leaves passages out.
    let app = app_with(&llm, 300).await;
    ada_with_a_mentor_plan(&app).await;
    let asked = app.ask("ada", &["How do I stop a while loop?"]).await;
    let requests = llm.requests();
    assert_eq!(requests.len(), 1);
    let sent = request_messages(&requests[0]);

    let team = app.course_team(COURSE);
    let (status, body) = prompt_of(&app, Some(&team), &asked[0].answer_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        request_messages(&body),
        sent,
        "the inspector shows the very messages sent"
    );
    for message in body["messages"].as_array().unwrap() {
        assert!(message["tokens"].as_u64().unwrap() > 0, "{message}");
    }
    assert_eq!(body["course"], COURSE);
    assert_eq!(body["learner_id"], "ada");
    assert!(
        body["prompt_version"]
            .as_str()
            .unwrap()
            .starts_with("default:system@")
    );
    // Each part's tokens add up to the prompt's, within the limit.
    let parts = body["parts"].as_array().unwrap();
    let part = |name: &str| {
        parts
            .iter()
            .find(|p| p["part"] == name)
            .unwrap_or_else(|| panic!("part {name} in {body}"))["tokens"]
            .as_u64()
            .unwrap()
    };
    let sum: u64 = parts.iter().map(|p| p["tokens"].as_u64().unwrap()).sum();
    assert_eq!(sum, body["tokens"].as_u64().unwrap(), "{body}");
    assert!(body["tokens"].as_u64().unwrap() <= body["limit"].as_u64().unwrap());
    for name in [
        "system", "profile", "mentor", "passages", "question", "framing",
    ] {
        assert!(part(name) > 0, "{name}: {body}");
    }
    assert!(part("passages") <= 300, "{body}");
    // What the budget left out: passages beyond the 300 tokens, named; the kept ones are in
    // the user message.
    let dropped = body["dropped"].as_array().unwrap();
    let passages = dropped
        .iter()
        .find(|d| d["part"] == "passages")
        .unwrap_or_else(|| panic!("dropped passages in {body}"));
    let (left_out, of) = (
        passages["dropped"].as_u64().unwrap(),
        passages["of"].as_u64().unwrap(),
    );
    assert!(left_out > 0 && left_out < of, "{passages}");
    assert_eq!(
        passages["detail"].as_array().unwrap().len() as u64,
        left_out,
        "{passages}"
    );
    let user = &sent.last().unwrap().1;
    assert_eq!(
        user.matches("<passage n=").count() as u64,
        of - left_out,
        "{user}"
    );

    // The learner's mentor and an admin may read it too.
    for token in [
        app.token(Role::Mentor, "grace"),
        app.token(Role::Admin, "root"),
    ] {
        let (status, again) = prompt_of(&app, Some(&token), &asked[0].answer_id).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["messages"], body["messages"]);
    }
    // Not the learner, not another course's team; another mentor sees nothing there.
    let refused = [
        (app.learner_token("ada"), 403),
        (
            app.token_with_course(Role::CourseTeam, "web-team", "web-basics"),
            403,
        ),
        (app.token(Role::Service, "platform"), 403),
        (app.token(Role::Mentor, "linus"), 404),
    ];
    for (token, expected) in refused {
        let (status, reply) = prompt_of(&app, Some(&token), &asked[0].answer_id).await;
        assert_eq!(status, expected, "{reply}");
        assert!(reply.get("messages").is_none(), "{reply}");
    }
    // A question has no prompt; nor has an id that is no message.
    for id in [asked[0].question_id.as_str(), "no-such-message"] {
        let (status, reply) = prompt_of(&app, Some(&team), id).await;
        assert_eq!(status, 404, "{reply}");
    }
    let (status, _) = prompt_of(&app, None, &asked[0].answer_id).await;
    assert_eq!(status, 401);

    // An answer the model failed keeps the prompt it was sent, too.
    llm.push([Behaviour::Status {
        status: 400,
        retry_after: None,
        message: "bad request".into(),
    }]);
    let failed = app.ask("ada", &["And a for loop?"]).await;
    let sent = request_messages(llm.requests().last().unwrap());
    let (_, conversation) = app
        .conversation(&app.learner_token("ada"), &failed[0].conversation_id)
        .await;
    let answer = conversation["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == failed[0].answer_id.as_str())
        .unwrap();
    assert_eq!(answer["status"], "failed", "{answer}");
    let (status, body) = prompt_of(&app, Some(&team), &failed[0].answer_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"].as_array().unwrap().len(), sent.len());
    assert_eq!(body["messages"][0]["content"], sent[0].1.as_str());
}

/// Rates `answer` down, as `learner`, with a comment.
pub async fn thumbs_down(app: &TestApp, learner: &str, answer: &str) {
    let mut ws = app.connect(&app.learner_token(learner)).await;
    ws.ready().await;
    ws.send(ClientFrame::Feedback {
        message_id: answer.to_string(),
        rating: Rating::Down,
        comment: Some("too vague".into()),
    })
    .await;
    match ws.next_frame().await {
        ServerFrame::FeedbackSaved { .. } => {}
        other => panic!("expected feedback_saved, got {other:?}"),
    }
    ws.close().await;
}

async fn replay_state(app: &TestApp, id: &str, query: &str) -> Value {
    let (status, body) = app
        .get(
            &format!("/api/v1/courses/{COURSE}/replays/{id}{query}"),
            &app.course_team(COURSE),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_ended(app: &TestApp, id: &str) -> Value {
    for _ in 0..300 {
        let body = replay_state(app, id, "").await;
        if body["status"] != "running" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("replay {id} never ended");
}

async fn start_replay(app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    app.post(&format!("/api/v1/courses/{COURSE}/replays"), token, body)
        .await
}

/// `POST`s `body` to the course's system prompt's `rest` (`/validate`, `/preview`, `/eval`) as
/// `token`; the status and the reply.
async fn post_system(app: &TestApp, token: &str, rest: &str, body: Value) -> (u16, Value) {
    let path = format!("/api/v1/courses/{COURSE}/prompts/system{rest}");
    app.post(&path, token, body).await
}

/// The course's replays, read with `token`; asserts the call worked.
async fn replays(app: &TestApp, token: &str) -> Value {
    let path = format!("/api/v1/courses/{COURSE}/replays");
    let (status, list) = app.get(&path, token).await;
    assert_eq!(status, 200, "{list}");
    list
}

/// Cancels replay `id` with `token`; the status and the reply.
async fn cancel_replay(app: &TestApp, token: &str, id: &str) -> (u16, Value) {
    let path = format!("/api/v1/courses/{COURSE}/replays/{id}/cancel");
    app.call("POST", &path, Some(token), None).await
}

#[tokio::test]
async fn a_replay_answers_thumbs_down_turns_again_from_their_stored_context_beside_the_originals() {
    replay_from_the_stored_context(None).await;
}

#[tokio::test]
async fn a_replay_answers_from_the_stored_context_on_postgresql_too() {
    let Some(url) = crate::pg::fresh_schema_url("replay", "the replay test on PostgreSQL").await
    else {
        return;
    };
    replay_from_the_stored_context(Some(url)).await;
}

async fn replay_from_the_stored_context(database_url: Option<String>) {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = spawn_app_with_llm(&llm, database_url.as_deref()).await;
    let token = app.course_team(COURSE);
    app.put_learner("ada", "grace").await;
    app.upload_project_file(
        "ada",
        "budget",
        "loops.py",
        &format!("{FILE_MARKER} = False\nwhile not {FILE_MARKER}:\n    {FILE_MARKER} = check()\n"),
    )
    .await;
    let asked = app
        .ask(
            "ada",
            &[
                &format!("How do I stop my while loop with {FILE_MARKER}?"),
                "And what is a for loop?",
            ],
        )
        .await;
    let original_requests = llm.requests();
    assert_eq!(original_requests.len(), 2);
    let original = request_messages(&original_requests[0]);
    assert!(
        original.last().unwrap().1.contains("<project_file"),
        "the learner's file is in the original prompt: {original:?}"
    );
    thumbs_down(&app, "ada", &asked[0].answer_id).await;
    let learner = app.learner_token("ada");
    let (_, history_before) = app.conversation(&learner, &asked[0].conversation_id).await;

    // The file is gone: a fresh retrieval could not find it any more.
    let (status, body) = app
        .call(
            "DELETE",
            "/api/v1/learners/ada/projects/budget/files/loops.py",
            Some(&app.service_token()),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");

    let candidate = format!(
        "You are the {MARKER} tutor of {{{{ learner_name }}}} on {{{{ course }}}}. Cite passages."
    );
    let (status, saved) = app
        .post(
            &format!("/api/v1/courses/{COURSE}/prompts/system/versions"),
            &token,
            json!({"text": candidate, "message": "a replay candidate"}),
        )
        .await;
    assert_eq!(status, 201, "{saved}");
    let version = saved["id"].as_str().unwrap().to_string();

    // Every condition of the filter at once: thumbs down, a date range, the original version.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let filter = json!({
        "thumbs_down": true,
        "from_ms": now - 3_600_000,
        "to_ms": now + 3_600_000,
        "prompt_version": companion::prompt::TemplateName::System.default_version_id(),
    });
    let (status, started) = start_replay(
        &app,
        &token,
        json!({"candidate": version, "filter": filter}),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["total_turns"], 1, "{started}");
    assert_eq!(started["offline"], false);
    let id = started["id"].as_str().unwrap().to_string();
    let done = wait_ended(&app, &id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["done_turns"], 1);

    // One request to the model, with the candidate over the very same context.
    let requests = llm.requests();
    assert_eq!(requests.len(), 3, "one model request per replayed turn");
    let replayed = request_messages(&requests[2]);
    assert_eq!(replayed[0].0, "system");
    assert!(replayed[0].1.contains(MARKER), "{}", replayed[0].1);
    assert!(replayed[0].1.contains("ada name"), "{}", replayed[0].1);
    assert_eq!(
        replayed[1..],
        original[1..],
        "the same history, passages, learner context and question"
    );
    assert!(replayed.last().unwrap().1.contains(FILE_MARKER));

    // Side by side.
    let turn = &done["turns"][0];
    assert_eq!(turn["message_id"], asked[0].answer_id.as_str());
    assert_eq!(
        turn["question"],
        format!("How do I stop my while loop with {FILE_MARKER}?")
    );
    let original_text = history_before["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == asked[0].answer_id.as_str())
        .unwrap()["text"]
        .clone();
    assert_eq!(turn["original"], original_text);
    assert_eq!(turn["status"], "done");
    let candidate_text = turn["candidate"].as_str().unwrap();
    assert!(
        candidate_text.contains("A `while` loop stops"),
        "{candidate_text}"
    );

    // Nothing of it reached the learner's conversation.
    let (_, history_after) = app.conversation(&learner, &asked[0].conversation_id).await;
    assert_eq!(history_after["messages"], history_before["messages"]);

    // Listed for the course.
    let list = replays(&app, &token).await;
    assert_eq!(list[0]["id"], id.as_str());

    // Erasing the learner takes the kept prompts and the replayed turns with the answers.
    let admin = app.token(Role::Admin, "root");
    let (status, body) = app
        .call("DELETE", "/api/v1/learners/ada", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = prompt_of(&app, Some(&admin), &asked[0].answer_id).await;
    assert_eq!(status, 404);
    let erased = replay_state(&app, &id, "").await;
    assert_eq!(erased["turns"], json!([]), "{erased}");
}

#[tokio::test]
async fn a_replay_is_paged_cancellable_and_bounded() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = app_with(&llm, 3000).await;
    let token = app.course_team(COURSE);
    app.put_learner("ada", "grace").await;
    app.ask(
        "ada",
        &[
            "What is a while loop?",
            "What is a for loop?",
            "What is a list?",
        ],
    )
    .await;
    let default_id = companion::prompt::TemplateName::System.default_version_id();

    // Bad input: clear refusals, nothing started.
    let refusals = [
        (
            json!({"candidate": default_id, "filter": {"limit": 201}}),
            422,
            "at most 200",
        ),
        (
            json!({"candidate": default_id, "filter": {"limit": 0}}),
            422,
            "at least one",
        ),
        (
            json!({"candidate": default_id, "filter": {"from_ms": 10, "to_ms": 5}}),
            422,
            "date range",
        ),
        (
            json!({"candidate": default_id, "filter": {"prompt_version": "nope"}}),
            422,
            "matches the filter",
        ),
        (json!({"candidate": "no-such-version"}), 404, "not found"),
        (
            json!({"candidate": default_id, "filter": {"colour": 1}}),
            400,
            "",
        ),
    ];
    for (body, expected, says) in refusals {
        let (status, reply) = start_replay(&app, &token, body.clone()).await;
        assert_eq!(status, expected, "{body}: {reply}");
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {reply}"
        );
    }
    let other_team = app.token_with_course(Role::CourseTeam, "web-team", "web-basics");
    for token in [app.learner_token("ada"), other_team] {
        let (status, reply) = start_replay(&app, &token, json!({"candidate": default_id})).await;
        assert_eq!(status, 403, "{reply}");
    }
    let list = replays(&app, &token).await;
    assert_eq!(list, json!([]));

    // Paged: three turns, two a page.
    let (status, started) = start_replay(&app, &token, json!({"candidate": default_id})).await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    wait_ended(&app, &id).await;
    let first = replay_state(&app, &id, "?limit=2").await;
    assert_eq!(first["total_turns"], 3);
    assert_eq!(first["turns"].as_array().unwrap().len(), 2);
    let next = first["next"].as_i64().unwrap();
    let second = replay_state(&app, &id, &format!("?limit=2&after={next}")).await;
    assert_eq!(second["turns"].as_array().unwrap().len(), 1);
    assert_eq!(second["next"], Value::Null);
    let questions: Vec<&str> = first["turns"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["turns"].as_array().unwrap())
        .map(|t| t["question"].as_str().unwrap())
        .collect();
    // Newest first.
    assert_eq!(
        questions,
        [
            "What is a list?",
            "What is a for loop?",
            "What is a while loop?"
        ]
    );

    // Cancelled while the model stalls on its first turn: nothing more is answered.
    llm.push([
        Behaviour::StallBeforeFirstToken(Duration::from_secs(20)),
        Behaviour::StallBeforeFirstToken(Duration::from_secs(20)),
        Behaviour::StallBeforeFirstToken(Duration::from_secs(20)),
    ]);
    let (status, started) = start_replay(&app, &token, json!({"candidate": default_id})).await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let (status, cancelled) = cancel_replay(&app, &token, &id).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = replay_state(&app, &id, "").await;
    assert_eq!(after["status"], "cancelled");
    assert_eq!(after["done_turns"], 0, "{after}");
    for turn in after["turns"].as_array().unwrap() {
        assert_eq!(turn["status"], "cancelled", "{turn}");
        assert_eq!(turn["candidate"], Value::Null, "{turn}");
    }
    let (status, again) = cancel_replay(&app, &token, &id).await;
    assert_eq!(status, 409, "{again}");
    let (status, missing) = app
        .get(
            &format!("/api/v1/courses/web-basics/replays/{id}"),
            &app.token(Role::Admin, "root"),
        )
        .await;
    assert_eq!(
        status, 404,
        "another course's replay looks missing: {missing}"
    );
}

#[tokio::test]
async fn flagged_turns_can_be_chosen_and_without_a_model_the_replay_says_it_is_offline() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = app_with(&llm, 3000).await;
    app.put_learner("ada", "grace").await;
    app.ask(
        "ada",
        &[
            "What is a while loop?",
            "I want to talk to my mentor, I feel hopeless about this project",
        ],
    )
    .await;
    app.wait_flags("ada", |flags| !flags.is_empty()).await;
    // Restarted on the same data without a model.
    let (mut settings, temp) = app.stop().await;
    settings.llm = None;
    let app = TestApp::start(settings, temp).await;
    let token = app.course_team(COURSE);
    let default_id = companion::prompt::TemplateName::System.default_version_id();
    let (status, started) = start_replay(
        &app,
        &token,
        json!({"candidate": default_id, "filter": {"flagged": true}}),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(
        started["total_turns"], 1,
        "only the flagged turn: {started}"
    );
    assert_eq!(started["offline"], true);
    assert_eq!(started["model"], "instructed-fake");
    let done = wait_ended(&app, started["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    let turn = &done["turns"][0];
    assert!(
        turn["question"]
            .as_str()
            .unwrap()
            .contains("talk to my mentor"),
        "{turn}"
    );
    // The deterministic fake's answer, from the stored passages: not the original's.
    let candidate = turn["candidate"].as_str().unwrap();
    assert!(
        candidate.starts_with("The course puts it this way:")
            || candidate.starts_with("The course passages do not cover"),
        "{candidate}"
    );
    assert_ne!(turn["candidate"], turn["original"]);
}

#[tokio::test]
async fn the_studio_validates_previews_for_a_learner_of_the_course_and_runs_the_evals() {
    // No model: the evals use the deterministic fake, which a bad candidate fails.
    let app = crate::helpers::spawn_app().await;
    let token = app.course_team(COURSE);
    ada_with_a_mentor_plan(&app).await;
    app.put_profile(
        "zoe",
        json!({"name": "Zoe", "locale": "en", "course": "web-basics"}),
    )
    .await;

    let broken = json!({"text": "Hello {{ learner_name }}\n{% if french %}\n"});
    let (status, checked) = post_system(&app, &token, "/validate", broken).await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["valid"], false);
    assert_eq!(checked["line"], 2, "{checked}");
    let fine = json!({"text": "Hello {{ learner_name }}"});
    let (_, checked) = post_system(&app, &token, "/validate", fine).await;
    assert_eq!(checked["valid"], true, "{checked}");

    let text = format!("You are the {MARKER} tutor of {{{{ learner_name }}}}.");
    let (status, preview) = post_system(
        &app,
        &token,
        "/preview",
        json!({"text": text, "learner": "ada", "question": "How do I stop a while loop?"}),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    let messages = preview["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(
        messages[0]["content"],
        format!("You are the {MARKER} tutor of ada name.")
    );
    let user = messages.last().unwrap()["content"].as_str().unwrap();
    for wanted in [
        "<learner_profile>",
        "<mentor_plan",
        "Write a loop that stops on a flag",
        "<passage n=\"1\"",
        "How do I stop a while loop?",
    ] {
        assert!(user.contains(wanted), "{wanted} in {user}");
    }
    // Nothing was asked or stored for it.
    let (_, conversations) = app
        .get("/api/v1/me/conversations", &app.learner_token("ada"))
        .await;
    assert_eq!(conversations["conversations"], json!([]), "{conversations}");
    // A learner of another course is not previewed; a broken text is refused.
    let (status, body) = post_system(
        &app,
        &token,
        "/preview",
        json!({"text": text, "learner": "zoe"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post_system(
        &app,
        &token,
        "/preview",
        json!({"text": "{{ learner_email }}", "learner": "ada"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // The shipped cases: the shipped prompt passes, the deliberately bad candidate regresses.
    let bad = std::fs::read_to_string(
        crate::helpers::repo_root().join("prompts/evals/candidates/bad-system.md"),
    )
    .unwrap();
    let (status, report) = post_system(&app, &token, "/eval", json!({"text": bad})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["offline"], true);
    assert_eq!(report["model"], "instructed-fake");
    assert!(!report["cases"].as_array().unwrap().is_empty(), "{report}");
    assert!(
        !report["regressions"].as_array().unwrap().is_empty(),
        "{report}"
    );
    let default_id = companion::prompt::TemplateName::System.default_version_id();
    let (status, report) = post_system(&app, &token, "/eval", json!({"version": default_id})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["regressions"], json!([]), "{report}");
}
