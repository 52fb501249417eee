//! The mentor's review over the real API: the authorization matrix on every endpoint, flags for
//! each rule, the digest, search, annotations, export, deletion, retention, feedback frames.
use std::time::Duration;

use companion::auth::Role;
use companion::config::ModerationSettings;
use companion::http::ws::protocol::{ClientFrame, ErrorCode, ServerFrame};
use companion::review::Rating;
use serde_json::{Value, json};

use crate::helpers::{
    Asked, FakeLlm, FakeScript, TestApp, spawn_app, spawn_app_with, today, use_fake_llm,
};

fn count_kind(flags: &[Value], kind: &str) -> usize {
    flags.iter().filter(|f| f["kind"] == kind).count()
}

/// Ada (mentor Grace) with one conversation that raised a flag; Bob (mentor Linus).
struct World {
    app: TestApp,
    ada: Vec<Asked>,
    flag_id: String,
}

async fn world() -> World {
    let app = spawn_app().await;
    app.put_learner("ada", "grace").await;
    app.put_learner("bob", "linus").await;
    let ada = app
        .ask(
            "ada",
            &[
                "Why does my while loop never stop?",
                "Can I talk to my mentor about loops?",
            ],
        )
        .await;
    app.ask("bob", &["What is a while loop for?"]).await;
    let flags = app
        .wait_flags("ada", |f| count_kind(f, "human_requested") > 0)
        .await;
    let flag_id = flags
        .iter()
        .find(|f| f["kind"] == "human_requested")
        .expect("a human_requested flag")["id"]
        .as_str()
        .unwrap()
        .to_string();
    World { app, ada, flag_id }
}

#[tokio::test]
async fn every_mentor_endpoint_follows_the_authorization_matrix() {
    let World { app, ada, flag_id } = world().await;
    let learner = app.token(Role::Learner, "ada");
    let other_learner = app.token(Role::Learner, "bob");
    let mentor = app.token(Role::Mentor, "grace");
    let other_mentor = app.token(Role::Mentor, "linus");
    let course_team = app.token(Role::CourseTeam, "ct");
    let admin = app.token(Role::Admin, "root");
    let conversation = &ada[0].conversation_id;
    let answer = &ada[0].answer_id;

    // Per-learner reads: the mentor and admins; everyone else gets the 404 of a missing learner.
    let (_, missing) = app
        .get("/api/v1/mentor/learners/nobody/digest", &mentor)
        .await;
    assert_eq!(missing["error"]["code"], "not_found");
    for path in [
        "/api/v1/mentor/learners/ada/conversations",
        "/api/v1/mentor/learners/ada/digest",
        "/api/v1/mentor/learners/ada/flags",
    ] {
        for (who, token, expected) in [
            ("own mentor", &mentor, 200),
            ("admin", &admin, 200),
            ("other mentor", &other_mentor, 404),
            ("course team", &course_team, 404),
            ("the learner", &learner, 404),
        ] {
            let (status, body) = app.get(path, token).await;
            assert_eq!(status, expected, "{who} GET {path}: {body}");
            if expected == 404 {
                assert_eq!(
                    body, missing,
                    "{who} GET {path} must look like a missing learner"
                );
            }
        }
        let (status, _) = app.call("GET", path, None, None).await;
        assert_eq!(status, 401, "no token on {path}");
    }

    // Export: also the learner themself (their data), never another learner.
    for (who, token, expected) in [
        ("the learner", &learner, 200),
        ("own mentor", &mentor, 200),
        ("admin", &admin, 200),
        ("another learner", &other_learner, 404),
        ("other mentor", &other_mentor, 404),
        ("course team", &course_team, 404),
    ] {
        for path in [
            "/api/v1/learners/ada/export",
            "/api/v1/mentor/learners/ada/export?format=md",
        ] {
            let (status, _) = app.call_text("GET", path, Some(token), None).await;
            assert_eq!(status, expected, "{who} GET {path}");
        }
    }

    // A conversation, a message to annotate, a flag to resolve: the same rule, by their owner.
    let conversation_path = format!("/api/v1/mentor/conversations/{conversation}");
    let (_, missing_conversation) = app
        .get(
            "/api/v1/mentor/conversations/0190aaaa-0000-7000-8000-000000000000",
            &admin,
        )
        .await;
    let annotate_path = format!("/api/v1/mentor/messages/{answer}/annotations");
    let resolve_path = format!("/api/v1/mentor/flags/{flag_id}/resolve");
    for (who, token) in [
        ("other mentor", &other_mentor),
        ("course team", &course_team),
        ("the learner", &learner),
    ] {
        let (status, body) = app.get(&conversation_path, token).await;
        assert_eq!(
            (status, &body),
            (404, &missing_conversation),
            "{who} reads the conversation"
        );
        let (status, _) = app
            .post(
                &annotate_path,
                token,
                json!({"kind": "comment", "text": "hi"}),
            )
            .await;
        assert_eq!(status, 404, "{who} annotates");
        let (status, _) = app.post(&resolve_path, token, json!({})).await;
        assert_eq!(status, 404, "{who} resolves");
    }
    for token in [&mentor, &admin] {
        let (status, body) = app.get(&conversation_path, token).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = app
            .post(
                &annotate_path,
                token,
                json!({"kind": "comment", "text": "Good question."}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = app.post(&resolve_path, &mentor, json!({})).await;
    assert_eq!(status, 200, "{body}");

    // Collections: mentors see their own learners, admins everyone, other roles are refused.
    let ids = |body: &Value| -> Vec<String> {
        body["learners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, body) = app.get("/api/v1/mentor/learners", &mentor).await;
    assert_eq!(ids(&body), vec!["ada"]);
    let (_, body) = app.get("/api/v1/mentor/learners", &other_mentor).await;
    assert_eq!(ids(&body), vec!["bob"]);
    let (_, body) = app.get("/api/v1/mentor/learners", &admin).await;
    let mut all = ids(&body);
    all.sort();
    assert_eq!(all, vec!["ada", "bob"]);
    for token in [&learner, &course_team] {
        for path in ["/api/v1/mentor/learners", "/api/v1/mentor/search?q=loop"] {
            let (status, _) = app.get(path, token).await;
            assert_eq!(status, 403, "{path}");
        }
    }
    let learners_of = |body: &Value| -> Vec<String> {
        let mut ids: Vec<String> = body["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["learner_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let (_, body) = app.get("/api/v1/mentor/search?q=loop", &mentor).await;
    assert_eq!(learners_of(&body), vec!["ada"]);
    let (_, body) = app.get("/api/v1/mentor/search?q=loop", &other_mentor).await;
    assert_eq!(learners_of(&body), vec!["bob"]);
    let (_, body) = app.get("/api/v1/mentor/search?q=loop", &admin).await;
    assert_eq!(learners_of(&body), vec!["ada", "bob"]);

    // Deleting a learner: admins and the platform only; a refusal looks like a missing learner.
    for token in [&mentor, &learner, &course_team, &other_mentor] {
        let (status, _) = app
            .call("DELETE", "/api/v1/learners/ada", Some(token), None)
            .await;
        assert_eq!(status, 404);
    }
}

#[tokio::test]
async fn each_flag_rule_raises_its_flag_and_ordinary_questions_raise_none() {
    let app = spawn_app_with(|s| s.limits.asks_per_minute = 0).await;
    app.put_learner("cleo", "grace").await;

    app.ask("cleo", &["What does the range function return?"])
        .await;
    app.ask("cleo", &["Je voudrais parler à un humain, s'il vous plaît"])
        .await;
    app.ask("cleo", &["I feel hopeless and I want to die"])
        .await;
    let repeated = app
        .ask(
            "cleo",
            &[
                "How do I stop an infinite while loop?",
                "how do i stop an infinite while loop",
                "How do I stop my infinite while loop??",
            ],
        )
        .await;
    let flags = app
        .wait_flags("cleo", |f| {
            count_kind(f, "human_requested") >= 1
                && count_kind(f, "distress") >= 1
                && count_kind(f, "stuck") >= 1
        })
        .await;
    assert_eq!(count_kind(&flags, "human_requested"), 1, "{flags:?}");
    assert_eq!(count_kind(&flags, "distress"), 1, "{flags:?}");
    assert_eq!(count_kind(&flags, "stuck"), 1, "{flags:?}");
    let distress = flags.iter().find(|f| f["kind"] == "distress").unwrap();
    assert_eq!(distress["severity"], "urgent");
    let stuck = flags.iter().find(|f| f["kind"] == "stuck").unwrap();
    assert_eq!(stuck["message_id"], repeated[2].question_id.as_str());
    assert!(
        stuck["reason"].as_str().unwrap().contains("3 times"),
        "{stuck}"
    );
    let human = flags
        .iter()
        .find(|f| f["kind"] == "human_requested")
        .unwrap();
    assert!(
        human["reason"].as_str().unwrap().contains("humain"),
        "{human}"
    );
    // The ordinary question and the repeats (but the third) raised nothing.
    assert_eq!(flags.len(), 3, "{flags:?}");

    // Several thumbs-down, and the "ask my mentor" button.
    let answers = app
        .ask(
            "cleo",
            &["What is a tuple?", "What is a set?", "What is a list?"],
        )
        .await;
    let mut ws = app.connect(&app.learner_token("cleo")).await;
    ws.ready().await;
    for a in &answers {
        ws.send(ClientFrame::Feedback {
            message_id: a.answer_id.clone(),
            rating: Rating::Down,
            comment: Some("not clear".into()),
        })
        .await;
        let frame = ws.next_frame().await;
        assert!(
            matches!(frame, ServerFrame::FeedbackSaved { .. }),
            "{frame:?}"
        );
    }
    ws.send(ClientFrame::RequestMentor {
        text: Some("Can we go over sets next time?".into()),
    })
    .await;
    let frame = ws.next_frame().await;
    let ServerFrame::MentorRequested {
        flag_id: button_flag,
    } = frame
    else {
        panic!("expected mentor_requested, got {frame:?}")
    };
    ws.close().await;
    let flags = app
        .wait_flags("cleo", |f| count_kind(f, "stuck") >= 2)
        .await;
    let downs = flags
        .iter()
        .find(|f| f["kind"] == "stuck" && f["reason"].as_str().unwrap().contains("thumbs-down"))
        .expect("a thumbs-down flag");
    assert!(
        downs["reason"].as_str().unwrap().contains("3 answers"),
        "{downs}"
    );
    let button = flags
        .iter()
        .find(|f| f["id"] == button_flag.as_str())
        .unwrap();
    assert_eq!(button["kind"], "human_requested");
    assert!(
        button["reason"].as_str().unwrap().contains("go over sets"),
        "{button}"
    );
}

#[tokio::test]
async fn a_configured_moderation_endpoint_flags_what_it_flags() {
    let moderation = fake_moderation().await;
    let app = spawn_app_with(|s| {
        s.moderation = Some(ModerationSettings {
            base_url: moderation,
            api_key: "k".to_string().into(),
            model: "omni-moderation-latest".into(),
            timeout: Duration::from_secs(30),
        })
    })
    .await;
    app.put_learner("dora", "grace").await;
    app.ask("dora", &["What is a variable?", "FLAGME how do loops work"])
        .await;
    let flags = app
        .wait_flags("dora", |f| count_kind(f, "moderation") >= 1)
        .await;
    assert_eq!(count_kind(&flags, "moderation"), 1, "{flags:?}");
    let flag = flags.iter().find(|f| f["kind"] == "moderation").unwrap();
    assert_eq!(flag["severity"], "urgent");
    assert!(
        flag["reason"].as_str().unwrap().contains("violence"),
        "{flag}"
    );
}

/// An OpenAI-compatible `/v1/moderations` that flags inputs containing "FLAGME" as violence.
async fn fake_moderation() -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/moderations",
        post(|axum::Json(body): axum::Json<Value>| async move {
            let flagged = body["input"].as_str().unwrap_or_default().contains("FLAGME");
            axum::Json(json!({
                "id": "modr-1", "model": "omni-moderation-latest",
                "results": [{"flagged": flagged,
                             "categories": {"violence": flagged, "hate": false},
                             "category_scores": {"violence": if flagged { 0.9 } else { 0.01 }, "hate": 0.0}}]
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn the_digest_groups_questions_since_the_session_and_tracks_goals() {
    let app = spawn_app().await;
    app.put_learner("eve", "grace").await;
    app.ask("eve", &["What is a dictionary comprehension?"])
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.add_session(
        "grace",
        "eve",
        &today(),
        "Talked about loops.",
        &[
            "Fix the infinite while loop in the guessing game",
            "Read the chapter about recursion",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.upload_project_file(
        "eve",
        "quiz-game",
        "guessing_game.py",
        "import random\nsecret = random.randint(1, 9)\n",
    )
    .await;
    let asked = app
        .ask(
            "eve",
            &[
                "Why does my while loop never stop?",
                "I would like to talk to my mentor about the while condition",
            ],
        )
        .await;
    app.wait_flags("eve", |f| count_kind(f, "human_requested") > 0)
        .await;
    let mentor = app.token(Role::Mentor, "grace");
    let (status, digest) = app.get("/api/v1/mentor/learners/eve/digest", &mentor).await;
    assert_eq!(status, 200, "{digest}");
    // Only what came after the session.
    assert_eq!(digest["n_questions"], 2, "{digest}");
    assert_eq!(digest["written_by"], "extractive");
    let chapters: Vec<&str> = digest["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["chapter"].as_str().unwrap())
        .collect();
    assert!(chapters.contains(&"Control flow"), "{chapters:?}");
    let all_questions = digest["chapters"].to_string();
    assert!(all_questions.contains(asked[0].question_id.as_str()));
    assert!(!all_questions.contains("dictionary comprehension"));
    let goals = digest["goals"].as_array().unwrap();
    assert_eq!(goals.len(), 2);
    assert_eq!(goals[0]["touched"], true, "{goals:?}");
    assert!(goals[0]["evidence"].to_string().contains("never stop"));
    assert_eq!(goals[1]["touched"], false, "{goals:?}");
    assert!(
        goals[0]["evidence"]
            .to_string()
            .contains("file: guessing_game.py"),
        "{goals:?}"
    );
    assert_eq!(digest["open_flags"].as_array().unwrap().len(), 1);
    let changed = digest["project"]["files_changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{digest}");
    assert_eq!(changed[0]["path"], "guessing_game.py");
    let summary = digest["summary"].as_str().unwrap();
    for wanted in [
        "## Questions by topic",
        "Control flow",
        "Why does my while loop never stop?",
        "## Open flags",
        "human_requested",
        "## Goals from the last session",
        "- [x] Fix the infinite while loop",
        "- [ ] Read the chapter about recursion",
        "## Project progress",
        "`guessing_game.py`",
    ] {
        assert!(
            summary.contains(wanted),
            "{wanted:?} missing from:\n{summary}"
        );
    }
}

#[tokio::test]
async fn with_an_llm_the_digest_is_written_from_the_template_and_the_facts() {
    let llm = FakeLlm::start(FakeScript {
        chunks: vec![
            "## Questions by topic\n".into(),
            "Eve asked about loops.".into(),
        ],
        ..Default::default()
    })
    .await;
    let app = spawn_app_with(|s| use_fake_llm(s, &llm)).await;
    app.put_learner("fay", "grace").await;
    // Fay's school is French: the digest is asked for in French.
    let (status, body) = app
        .call(
            "PUT",
            "/api/v1/learners/fay",
            Some(&app.token(Role::Service, "platform")),
            Some(json!({"locale": "fr"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.add_session(
        "grace",
        "fay",
        &today(),
        "Talked about loops.",
        &["Practise for loops with range"],
    )
    .await;
    app.ask("fay", &["How does range work in a for loop?"])
        .await;
    let (status, digest) = app
        .get(
            "/api/v1/mentor/learners/fay/digest",
            &app.token(Role::Admin, "root"),
        )
        .await;
    assert_eq!(status, 200, "{digest}");
    assert_eq!(digest["written_by"], "llm", "{digest}");
    assert_eq!(
        digest["summary"],
        "## Questions by topic\nEve asked about loops."
    );
    assert_eq!(digest["n_questions"], 1);
    let requests = llm.requests();
    let prompt = requests.last().unwrap()["messages"].to_string();
    assert!(prompt.contains("digest-data"), "{prompt}");
    assert!(prompt.contains("How does range work in a for loop?"));
    assert!(prompt.contains("Practise for loops with range"));
    assert!(prompt.contains("Write in French"), "{prompt}");
    assert_eq!(digest["locale"], "fr", "{digest}");
}

#[tokio::test]
async fn a_course_teams_digest_version_writes_the_digest_of_its_learners_until_rolled_back() {
    const MARKER: &str = "DIGEST-MARKER-3";
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = spawn_app_with(|s| use_fake_llm(s, &llm)).await;
    app.put_learner("fay", "grace").await;
    app.put_profile(
        "gus",
        json!({"name": "Gus", "locale": "en", "mentor_id": "grace", "course": "web-basics"}),
    )
    .await;
    app.ask("fay", &["How does range work in a for loop?"])
        .await;
    let team = app.course_team("python-foundations");
    let text = format!(
        "{MARKER}: for the mentor of {{{{ learner }}}}, in {{{{ language }}}}, since \
         {{{{ since }}}}, three bullet points.\n<facts>\n{{{{ data }}}}\n</facts>\n"
    );
    let version = app
        .promote_prompt(&team, "python-foundations", "digest", &text)
        .await;

    let admin = app.token(Role::Admin, "root");
    let digest_of = |learner: &'static str| {
        let (app, admin, llm) = (&app, admin.clone(), &llm);
        async move {
            let (status, digest) = app
                .get(&format!("/api/v1/mentor/learners/{learner}/digest"), &admin)
                .await;
            assert_eq!(status, 200, "{digest}");
            assert_eq!(digest["written_by"], "llm", "{digest}");
            let request = llm.requests().last().unwrap()["messages"].to_string();
            (digest, request)
        }
    };
    let (digest, request) = digest_of("fay").await;
    assert!(request.contains(MARKER), "{request}");
    assert!(request.contains("three bullet points"), "{request}");
    assert!(
        request.contains("How does range work in a for loop?"),
        "{request}"
    );
    assert!(!request.contains("digest-data"), "{request}");
    assert_eq!(digest["prompt_version"], version.as_str(), "{digest}");
    assert_eq!(digest["course"], "python-foundations", "{digest}");
    let shipped = companion::prompt::TemplateName::Digest.default_version_id();

    // A learner of another course keeps the shipped template.
    let (digest, request) = digest_of("gus").await;
    assert!(!request.contains(MARKER), "{request}");
    assert!(request.contains("digest-data"), "{request}");
    assert_eq!(digest["prompt_version"], shipped.as_str(), "{digest}");

    let (status, back) = app
        .rollback_prompt(&team, "python-foundations", "digest")
        .await;
    assert_eq!(status, 200, "{back}");
    let (digest, request) = digest_of("fay").await;
    assert!(!request.contains(MARKER), "{request}");
    assert!(request.contains("digest-data"), "{request}");
    assert_eq!(digest["prompt_version"], shipped.as_str(), "{digest}");
}

#[tokio::test]
async fn a_question_whose_case_folding_changes_lengths_is_found_not_a_crash() {
    // Seen against the running service: this question, then a search for `loop`, panicked
    // the worker (offsets in the case-folded text were used to slice the original).
    let app = spawn_app().await;
    app.put_learner("ines", "grace").await;
    let question = "\u{212A}€loop İİ why does my loop never stop?";
    app.ask("ines", &[question]).await;
    let mentor = app.token(Role::Mentor, "grace");
    let (status, body) = app.get("/api/v1/mentor/search?q=loop", &mentor).await;
    assert_eq!(status, 200, "{body}");
    let snippets = body["hits"].to_string();
    assert!(snippets.contains("€loop İİ"), "{body}");
}

#[tokio::test]
async fn search_finds_phrases_literally_and_refuses_malformed_queries() {
    let app = spawn_app().await;
    app.put_learner("gus", "grace").await;
    app.ask(
        "gus",
        &[
            "Is 100% test coverage needed?",
            "Is 1000 coverage needed for the project?",
        ],
    )
    .await;
    let mentor = app.token(Role::Mentor, "grace");
    let search = |q: &str| {
        let path = format!("/api/v1/mentor/search?q={}", urlencode(q));
        let app = &app;
        let mentor = mentor.clone();
        async move { app.get(&path, &mentor).await }
    };
    let (status, body) = search("100%").await;
    assert_eq!(status, 200, "{body}");
    let learner_hits: Vec<&Value> = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == "learner")
        .collect();
    assert_eq!(learner_hits.len(), 1, "% is not a wildcard: {body}");
    assert!(
        learner_hits[0]["snippet"]
            .as_str()
            .unwrap()
            .contains("100%")
    );
    let (_, body) = search("\"coverage needed for\"").await;
    let texts = body["hits"].to_string();
    assert!(
        texts.contains("1000 coverage") && !texts.contains("100% test"),
        "{body}"
    );
    let (_, body) = search("COVERAGE project").await;
    assert_eq!(
        body["hits"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["role"] == "learner")
            .count(),
        1
    );
    for (q, wanted) in [
        ("", "empty"),
        ("\"unclosed phrase", "quote"),
        ("a b", "2 characters"),
        (&"x".repeat(201), "limit"),
    ] {
        let (status, body) = search(q).await;
        assert_eq!(status, 400, "{q:?}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(wanted),
            "{body}"
        );
    }
    let (status, _) = app
        .get("/api/v1/mentor/search?q=loop&limit=0", &mentor)
        .await;
    assert_eq!(status, 400);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn annotations_show_in_the_conversation_and_bad_ones_are_refused() {
    let app = spawn_app().await;
    app.put_learner("hal", "grace").await;
    let asked = app
        .ask("hal", &["How do I write a for loop over a list?"])
        .await;
    let mentor = app.token(Role::Mentor, "grace");
    let path = format!("/api/v1/mentor/messages/{}/annotations", asked[0].answer_id);
    let (status, body) = app
        .post(
            &path,
            &mentor,
            json!({"kind": "correction", "text": "Use enumerate when you need the index."}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["annotation"]["author_id"], "grace");
    let view = app.mentor_view(&mentor, &asked[0].conversation_id).await;
    let annotations = view["annotations"].as_array().unwrap();
    assert_eq!(annotations.len(), 1);
    assert_eq!(annotations[0]["kind"], "correction");
    assert_eq!(annotations[0]["message_id"], asked[0].answer_id.as_str());
    let answer = view["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == asked[0].answer_id.as_str())
        .unwrap();
    assert!(
        !answer["sources"].as_array().unwrap().is_empty(),
        "{answer}"
    );
    // An offline answer: written from the shipped offline template.
    assert_eq!(
        answer["prompt_version"],
        companion::prompt::TemplateName::Offline.default_version_id()
    );

    for (body, wanted) in [
        (json!({"kind": "praise", "text": "x"}), "annotation body"),
        (json!({"kind": "comment", "text": "   "}), "1 to 4000"),
        (json!({"kind": "comment"}), "annotation body"),
        (
            json!({"kind": "comment", "text": "y".repeat(4001)}),
            "1 to 4000",
        ),
    ] {
        let (status, response) = app.post(&path, &mentor, body).await;
        assert_eq!(status, 400, "{response}");
        assert!(
            response["error"]["message"]
                .as_str()
                .unwrap()
                .contains(wanted),
            "{response}"
        );
    }
    let (status, _) = app
        .post(
            "/api/v1/mentor/messages/no-such-message/annotations",
            &mentor,
            json!({"kind": "comment", "text": "hi"}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_export_is_complete_paginated_and_bounded() {
    let app = spawn_app_with(|s| s.limits.asks_per_minute = 0).await;
    app.put_learner("ivy", "grace").await;
    let asked = app
        .ask(
            "ivy",
            &[
                "What is a string?",
                "What is an integer?",
                "Help me talk to my mentor",
            ],
        )
        .await;
    let learner = app.learner_token("ivy");
    let (status, body) = app.get("/api/v1/learners/ivy/export", &learner).await;
    assert_eq!(status, 200, "{body}");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 6);
    assert!(body["next_cursor"].is_null());
    assert_eq!(body["profile"]["mentor_id"], "grace");
    assert!(messages.iter().any(|m| m["role"] == "assistant"
        && m["prompt_version"] == companion::prompt::TemplateName::Offline.default_version_id()));

    // Page by page, one message at a time: every message once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/learners/ivy/export?limit=1&cursor={c}"),
            None => "/api/v1/learners/ivy/export?limit=1".to_string(),
        };
        let (status, page) = app.get(&path, &learner).await;
        assert_eq!(status, 200, "{page}");
        let page_messages = page["messages"].as_array().unwrap();
        assert!(page_messages.len() <= 1);
        seen.extend(
            page_messages
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let all: Vec<String> = messages
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, all);
    let response = app
        .request(
            "GET",
            "/api/v1/learners/ivy/export?limit=2&format=md",
            Some(&learner),
        )
        .send()
        .await
        .unwrap();
    assert!(
        response.headers().contains_key("x-next-cursor"),
        "{response:?}"
    );

    let (status, markdown) = app
        .call_text(
            "GET",
            "/api/v1/mentor/learners/ivy/export?format=md",
            Some(&app.token(Role::Mentor, "grace")),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        markdown.starts_with("# Companion history of ivy name"),
        "{markdown}"
    );
    assert!(markdown.contains("What is a string?"));
    assert!(markdown.contains(&asked[0].conversation_id));

    for (query, wanted) in [
        ("limit=5000", "limit"),
        ("limit=abc", "limit"),
        ("cursor=garbage", "cursor"),
        ("format=pdf", "format"),
    ] {
        let (status, body) = app
            .get(&format!("/api/v1/learners/ivy/export?{query}"), &learner)
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(wanted),
            "{body}"
        );
    }
}

const ZANZIBAR: &str = "def zanzibar_checksum(values):\n    \"\"\"The zanzibar checksum of the quiz answers.\"\"\"\n    return sum(values) % 97\n";
const ZANZIBAR_QUESTION: &str = "What does zanzibar_checksum return in my project?";

/// What the LLM was sent for one question of `learner`, as JSON text.
async fn prompt_for(app: &TestApp, llm: &FakeLlm, learner: &str, question: &str) -> String {
    let mut ws = app.connect(&app.learner_token(learner)).await;
    ws.ready().await;
    ws.ask(&uuid::Uuid::new_v4().simple().to_string(), question)
        .await;
    ws.close().await;
    llm.requests().last().expect("a request")["messages"].to_string()
}

#[tokio::test]
async fn deleting_a_learner_removes_everything_about_them() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = spawn_app_with(|s| use_fake_llm(s, &llm)).await;
    app.put_learner("kim", "grace").await;
    app.put_learner("lou", "grace").await;
    let asked = app
        .ask("kim", &["Can I talk to my mentor about recursion?"])
        .await;
    app.upload_project_file("kim", "quiz-game", "main.py", ZANZIBAR)
        .await;
    app.ask("lou", &["What is recursion?"]).await;
    // The file is indexed for kim: her question retrieves it into the prompt.
    let prompt = prompt_for(&app, &llm, "kim", ZANZIBAR_QUESTION).await;
    assert!(
        prompt.contains("% 97"),
        "the file is not retrieved before the deletion: {prompt}"
    );
    app.wait_flags("kim", |f| !f.is_empty()).await;
    let admin = app.token(Role::Admin, "root");
    let (status, body) = app
        .call("DELETE", "/api/v1/learners/kim", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["rows_removed"].as_u64().unwrap() >= 3, "{body}");

    let (status, _) = app.conversation(&admin, &asked[0].conversation_id).await;
    assert_eq!(status, 404);
    for path in [
        "/api/v1/learners/kim/export",
        "/api/v1/mentor/learners/kim/flags",
        "/api/v1/mentor/learners/kim/digest",
    ] {
        let (status, _) = app.get(path, &admin).await;
        assert_eq!(status, 404, "{path}");
    }
    let (_, body) = app.get("/api/v1/mentor/search?q=recursion", &admin).await;
    let hits = body["hits"].as_array().unwrap();
    assert!(
        !hits.is_empty() && hits.iter().all(|h| h["learner_id"] == "lou"),
        "{body}"
    );
    let (_, body) = app.get("/api/v1/mentor/learners", &admin).await;
    assert!(!body.to_string().contains("\"kim\""), "{body}");
    let (status, _) = app
        .call("DELETE", "/api/v1/learners/kim", Some(&admin), None)
        .await;
    assert_eq!(status, 404, "a second delete finds nothing");
    // Back as a new learner: nothing of the old one remains, project files included.
    app.put_learner("kim", "grace").await;
    let (status, export) = app.get("/api/v1/learners/kim/export", &admin).await;
    assert_eq!(status, 200, "{export}");
    assert!(
        export["messages"].as_array().unwrap().is_empty(),
        "{export}"
    );
    assert!(
        export["project_files"].as_array().unwrap().is_empty(),
        "{export}"
    );
    assert!(export["flags"].as_array().unwrap().is_empty(), "{export}");
    // Its vectors went too: the same question no longer retrieves the old file.
    let prompt = prompt_for(&app, &llm, "kim", ZANZIBAR_QUESTION).await;
    assert!(!prompt.contains("% 97"), "{prompt}");
    let service = app.token(Role::Service, "platform");
    let (status, _) = app
        .call("DELETE", "/api/v1/learners/lou", Some(&service), None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn retention_purges_old_conversations_at_start_and_keeps_recent_ones() {
    let app = spawn_app().await;
    let old = app.ask("max", &["What is an old question?"]).await;
    let recent = app.ask("max", &["What is a recent question?"]).await;
    // Stopped (gracefully: only the data matters here), aged, started again with retention.
    let (settings, temp) = app.stop().await;
    let dir = settings.data_dir.clone();
    // Age the first conversation by 40 days, as if it had been asked then.
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.join("transcripts.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let forty_days = 40 * 86_400_000i64;
        sqlx::query("UPDATE conversations SET updated_at = updated_at - ?1 WHERE id = ?2")
            .bind(forty_days)
            .bind(&old[0].conversation_id)
            .execute(&mut db)
            .await
            .unwrap();
        db.close().await.unwrap();
    }
    let mut settings = settings;
    settings.retention.keep_for = Some(Duration::from_secs(30 * 86_400));
    let app = TestApp::start(settings, temp).await;
    let token = app.learner_token("max");
    let mut purged = false;
    for _ in 0..50 {
        let (status, _) = app.conversation(&token, &old[0].conversation_id).await;
        if status == 404 {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(purged, "the 40-day-old conversation was not purged");
    let (status, body) = app.conversation(&token, &recent[0].conversation_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn feedback_frames_are_checked_against_the_learners_own_answers() {
    let app = spawn_app().await;
    let mine = app.ask("nia", &["What is a list?"]).await;
    let theirs = app.ask("oto", &["What is a set?"]).await;
    let mut ws = app.connect(&app.learner_token("nia")).await;
    ws.ready().await;
    // Raw JSON: some of these hold values the typed frames cannot.
    for (frame, code) in [
        (
            json!({"type": "feedback", "message_id": theirs[0].answer_id, "rating": "up"}),
            ErrorCode::UnknownMessage,
        ),
        (
            json!({"type": "feedback", "message_id": mine[0].question_id, "rating": "up"}),
            ErrorCode::UnknownMessage,
        ),
        (
            json!({"type": "feedback", "message_id": "nope", "rating": "down"}),
            ErrorCode::UnknownMessage,
        ),
        (
            json!({"type": "feedback", "message_id": mine[0].answer_id, "rating": "great"}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type": "feedback", "message_id": mine[0].answer_id, "rating": "up",
                "comment": "z".repeat(2001)}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type": "request_mentor", "text": "q".repeat(4001)}),
            ErrorCode::InvalidField,
        ),
    ] {
        ws.send_json(frame.clone()).await;
        let (_, got, message) = ws.next_error().await;
        assert_eq!(got, code, "{frame} -> {message}");
    }
    let feedback = |rating, comment: Option<&str>| ClientFrame::Feedback {
        message_id: mine[0].answer_id.clone(),
        rating,
        comment: comment.map(str::to_string),
    };
    ws.send(feedback(Rating::Up, None)).await;
    let reply = ws.next_frame().await;
    assert!(
        matches!(reply, ServerFrame::FeedbackSaved { .. }),
        "{reply:?}"
    );
    // A second rating replaces the first.
    ws.send(feedback(Rating::Down, Some("too long"))).await;
    assert!(matches!(
        ws.next_frame().await,
        ServerFrame::FeedbackSaved { .. }
    ));
    ws.close().await;
    let view = app
        .mentor_view(&app.token(Role::Admin, "root"), &mine[0].conversation_id)
        .await;
    let feedback = view["feedback"].as_array().unwrap();
    assert_eq!(feedback.len(), 1, "{view}");
    assert_eq!(feedback[0]["rating"], "down");
    assert_eq!(feedback[0]["comment"], "too long");
}

#[tokio::test]
async fn the_mentor_page_and_its_assets_are_served_without_any_token_inside() {
    let app = spawn_app().await;
    let (status, html) = app.call_text("GET", "/mentor", None, None).await;
    assert_eq!(status, 200);
    assert!(html.contains("/mentor/mentor.js") && html.contains("token-input"));
    // The page's files: what it shares with the prompt studio, then its own.
    assert!(html.contains("/static/staff.js") && html.contains("/static/staff.css"));
    let mut js = String::new();
    for path in ["/static/staff.js", "/mentor/mentor.js"] {
        let (status, body) = app.call_text("GET", path, None, None).await;
        assert_eq!(status, 200, "{path}");
        js.push_str(&body);
    }
    assert!(js.contains("Authorization") && !js.contains("demo/token"));
    for path in ["/static/staff.css", "/mentor/mentor.css"] {
        let (status, _) = app.call_text("GET", path, None, None).await;
        assert_eq!(status, 200, "{path}");
    }
}
