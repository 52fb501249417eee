//! The prompt studio (issue 13): a course team saves a system prompt, labels it production,
//! the next answer's request to the model carries it and the stored answer names it; a
//! rollback restores the old text; two nodes on one PostgreSQL both switch; bad versions,
//! labels and splits are refused with nothing changed (coaching notes and digests too); an A/B
//! experiment keeps each learner on one arm and counts each arm's answers.
use std::time::{Duration, Instant};

use companion::http::ws::protocol::ClientFrame;
use companion::prompt::TemplateName;
use companion::prompt::experiment::{Arm, assign};
use companion::review::Rating;
use serde_json::{Value, json};

use crate::helpers::{FakeLlm, FakeScript, TestApp, spawn_app_with_llm};
use crate::pg;

const COURSE: &str = "python-foundations";
const MARKER: &str = "STUDIO-MARKER-7";

/// A system prompt a course team might write, using only documented variables.
fn new_system_prompt() -> String {
    format!(
        "You are the {MARKER} tutor of {{{{ learner_name }}}} on {{{{ course }}}}.\n\
         Answer in {{{{ language }}}}. Cite the passages like [1].\n\
         {{% if answer_policy %}}Policy: {{{{ answer_policy }}}}{{% endif %}}\n"
    )
}

/// The arms of a split: each version with its percent.
fn split(arms: &[(&str, u32)]) -> Vec<Arm> {
    arms.iter()
        .map(|&(version, percent)| Arm {
            version: version.to_string(),
            percent,
        })
        .collect()
}

fn prompts_path(rest: &str) -> String {
    format!("/api/v1/courses/{COURSE}/prompts{rest}")
}

/// Asks one question as `learner`; the system message the model got and the stored answer's
/// prompt version.
async fn ask(app: &TestApp, llm: &FakeLlm, learner: &str) -> (String, String) {
    let before = llm.requests().len();
    let asked = app.ask(learner, &["How do I stop a while loop?"]).await;
    let requests = llm.requests();
    assert_eq!(requests.len(), before + 1, "one request to the model");
    let system = requests[before]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    (
        system,
        stored_version(app, learner, &asked[0].conversation_id, &asked[0].answer_id).await,
    )
}

async fn stored_version(app: &TestApp, learner: &str, conversation: &str, answer: &str) -> String {
    let (status, body) = app
        .conversation(&app.learner_token(learner), conversation)
        .await;
    assert_eq!(status, 200, "{body}");
    let message = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == answer)
        .unwrap_or_else(|| panic!("answer {answer} in {body}"));
    message["prompt_version"].as_str().unwrap().to_string()
}

/// Saves `text` as a new version of `template`, on `parent` if given; the status and the reply.
async fn save(
    app: &TestApp,
    token: &str,
    template: &str,
    text: &str,
    parent: Option<&str>,
) -> (u16, Value) {
    let mut body = json!({"text": text, "message": "a sharper voice"});
    if let Some(parent) = parent {
        body["parent"] = json!(parent);
    }
    app.post(&prompts_path(&format!("/{template}/versions")), token, body)
        .await
}

#[tokio::test]
async fn a_course_team_promotes_a_new_system_prompt_and_a_rollback_restores_the_old_one() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = spawn_app_with_llm(&llm, None).await;
    app.put_learner("ada", "grace").await;
    let token = app.course_team(COURSE);
    let default_id = TemplateName::System.default_version_id();

    let (system, version) = ask(&app, &llm, "ada").await;
    assert!(system.starts_with("You are Companion"), "{system}");
    assert_eq!(version, default_id);

    let (status, saved) = save(&app, &token, "system", &new_system_prompt(), None).await;
    assert_eq!(status, 201, "{saved}");
    let new_id = saved["id"].as_str().unwrap().to_string();
    assert_eq!(saved["author"], "course-team");
    // Saved is not live: the label decides.
    let (system, version) = ask(&app, &llm, "ada").await;
    assert!(!system.contains(MARKER), "{system}");
    assert_eq!(version, default_id);

    let (status, moved) = app
        .label_prompt(&token, COURSE, "system", "production", &new_id)
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["from"], Value::Null);
    assert_eq!(moved["to"], new_id.as_str());

    let (system, version) = ask(&app, &llm, "ada").await;
    assert!(system.contains(MARKER), "{system}");
    assert!(system.contains("ada name"), "{system}");
    assert!(!system.contains("You are Companion"), "{system}");
    assert_eq!(version, new_id);

    let (status, back) = app.rollback_prompt(&token, COURSE, "system").await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["from"], new_id.as_str());
    assert_eq!(back["to"], Value::Null);

    let (system, version) = ask(&app, &llm, "ada").await;
    assert!(system.starts_with("You are Companion"), "{system}");
    assert!(!system.contains(MARKER), "{system}");
    assert_eq!(version, default_id);

    // Nothing left to roll back: a clear 409, the label untouched.
    let (status, body) = app
        .post(
            &prompts_path("/system/labels/production/rollback"),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, overview) = app.get(&prompts_path(""), &token).await;
    assert_eq!(status, 200, "{overview}");
    let system = &overview["templates"][0];
    assert_eq!(system["template"], "system");
    assert_eq!(system["head"], new_id.as_str());
    assert_eq!(system["labels"], json!([]));
    assert_eq!(system["default_version"], default_id.as_str());
}

#[tokio::test]
async fn two_nodes_on_one_postgresql_both_switch_and_both_roll_back() {
    let Some(url) = pg::fresh_schema_url("studio", "the two-node prompt studio test").await else {
        return;
    };
    let (llm_a, llm_b) = (
        FakeLlm::start(FakeScript::default()).await,
        FakeLlm::start(FakeScript::default()).await,
    );
    let node_a = spawn_app_with_llm(&llm_a, Some(&url)).await;
    let node_b = spawn_app_with_llm(&llm_b, Some(&url)).await;
    node_a.put_learner("ada", "grace").await;
    let token = node_a.course_team(COURSE);
    // Node B has answered (and read the versions) before the change.
    let (system, _) = ask(&node_b, &llm_b, "ada").await;
    assert!(!system.contains(MARKER));

    let (status, saved) = save(&node_a, &token, "system", &new_system_prompt(), None).await;
    assert_eq!(status, 201, "{saved}");
    let new_id = saved["id"].as_str().unwrap().to_string();
    let (status, body) = node_a
        .label_prompt(&token, COURSE, "system", "production", &new_id)
        .await;
    assert_eq!(status, 200, "{body}");

    for (name, app, llm) in [("A", &node_a, &llm_a), ("B", &node_b, &llm_b)] {
        let (system, version) = ask(app, llm, "ada").await;
        assert!(system.contains(MARKER), "node {name}: {system}");
        assert_eq!(version, new_id, "node {name}");
    }

    // Rolled back through node B: node A's next answer is on the old text again.
    let started = Instant::now();
    let (status, body) = node_b.rollback_prompt(&token, COURSE, "system").await;
    assert_eq!(status, 200, "{body}");
    for (name, app, llm) in [("A", &node_a, &llm_a), ("B", &node_b, &llm_b)] {
        let (system, version) = ask(app, llm, "ada").await;
        assert!(
            system.starts_with("You are Companion"),
            "node {name}: {system}"
        );
        assert_eq!(version, TemplateName::System.default_version_id());
    }
    assert!(started.elapsed() < Duration::from_secs(30));

    // An experiment started through node A splits node B's learners, and its figures are
    // counted in PostgreSQL.
    let default_id = TemplateName::System.default_version_id();
    let arms = split(&[(default_id.as_str(), 30), (new_id.as_str(), 70)]);
    let (status, experiment) = node_a
        .start_experiment(&token, COURSE, "system", json!(arms))
        .await;
    assert_eq!(status, 201, "{experiment}");
    let id = experiment["id"].as_str().unwrap();
    for n in 0..4 {
        let learner = format!("pg-learner-{n}");
        node_a.put_learner(&learner, "grace").await;
        let (_, version) = ask(&node_b, &llm_b, &learner).await;
        assert_eq!(version, assign(id, &learner, &arms).unwrap().version);
    }
    let list = node_a.experiments(&token, COURSE).await;
    let answers: u64 = list[0]["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["answers"].as_u64().unwrap())
        .sum();
    assert_eq!(answers, 4, "{list}");
}

#[tokio::test]
async fn bad_versions_labels_and_splits_are_refused_and_nothing_changes() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = spawn_app_with_llm(&llm, None).await;
    let token = app.course_team(COURSE);
    let long = format!(
        "{{{{ learner_name }}}} {}",
        "Always be kind and precise. ".repeat(3_000)
    );
    for (what, text, says) in [
        // Syntax error: the line is named.
        (
            "syntax error",
            "Hello {{ learner_name }}\n{% if french %}\n",
            "line",
        ),
        (
            "undocumented variable",
            "Hello {{ learner_email }}",
            "learner_email",
        ),
        ("past the token budget", long.as_str(), "tokens"),
    ] {
        let (status, body) = save(&app, &token, "system", text, None).await;
        assert_eq!(status, 422, "{what}: {body}");
        assert_eq!(body["error"]["code"], "unprocessable", "{what}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{what}: {body}"
        );
    }
    // An unknown template, another course, a learner.
    let (status, body) = save(&app, &token, "digest-v9", "x", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/courses/web-basics/prompts/system/versions",
            &token,
            json!({"text": "Hi {{ learner_name }}", "message": "m"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app.get(&prompts_path(""), &app.learner_token("ada")).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app.get("/api/v1/courses/*/prompts", &token).await;
    assert_eq!(
        status, 403,
        "a course team cannot change every course: {body}"
    );

    // Two editors on the same parent: the second is told, nothing is overwritten.
    let (status, first) = save(&app, &token, "system", "First {{ learner_name }}", None).await;
    assert_eq!(status, 201, "{first}");
    let first = first["id"].as_str().unwrap().to_string();
    let (status, second) = save(
        &app,
        &token,
        "system",
        "Second {{ learner_name }}",
        Some(&first),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["parent"], first.as_str());
    let second = second["id"].as_str().unwrap().to_string();
    let (status, body) = save(
        &app,
        &token,
        "system",
        "Third {{ learner_name }}",
        Some(&first),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&second),
        "{body}"
    );
    let (_, overview) = app.get(&prompts_path(""), &token).await;
    let versions = overview["templates"][0]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{overview}");
    assert_eq!(overview["templates"][0]["head"], second.as_str());
    let (status, text) = app
        .get(&prompts_path(&format!("/system/versions/{first}")), &token)
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text["text"], "First {{ learner_name }}");

    // Labels: an unknown version, a bad name; the live version is untouched.
    for (what, template, label, version, expected) in [
        (
            "an unknown version",
            "system",
            "production",
            "no-such-version",
            404,
        ),
        ("a bad name", "system", "Prod%20uction", first.as_str(), 422),
        // An offline version cannot be the system prompt's label.
        (
            "the offline template",
            "offline",
            "production",
            first.as_str(),
            404,
        ),
    ] {
        let (status, body) = app
            .label_prompt(&token, COURSE, template, label, version)
            .await;
        assert_eq!(status, expected, "{what}: {body}");
    }
    // Splits that do not add up to 100.
    for arms in [
        json!([{"version": first, "percent": 50}, {"version": second, "percent": 40}]),
        json!([{"version": first, "percent": 100}]),
        json!([{"version": first, "percent": 50}, {"version": first, "percent": 50}]),
    ] {
        let (status, body) = app
            .start_experiment(&token, COURSE, "system", arms.clone())
            .await;
        assert_eq!(status, 422, "{arms}: {body}");
    }
    let (_, overview) = app.get(&prompts_path(""), &token).await;
    assert_eq!(overview["templates"][0]["labels"], json!([]), "{overview}");
    assert_eq!(app.experiments(&token, COURSE).await, json!([]));
    app.put_learner("ada", "grace").await;
    let (system, version) = ask(&app, &llm, "ada").await;
    assert!(system.starts_with("You are Companion"), "{system}");
    assert_eq!(version, TemplateName::System.default_version_id());
}

#[tokio::test]
async fn an_experiment_keeps_each_learner_on_one_arm_and_counts_each_arm() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = spawn_app_with_llm(&llm, None).await;
    let token = app.course_team(COURSE);
    let default_id = TemplateName::System.default_version_id();
    let (status, saved) = save(&app, &token, "system", &new_system_prompt(), None).await;
    assert_eq!(status, 201, "{saved}");
    let new_id = saved["id"].as_str().unwrap().to_string();
    let arms = split(&[(default_id.as_str(), 50), (new_id.as_str(), 50)]);
    let (status, experiment) = app
        .start_experiment(&token, COURSE, "system", json!(arms))
        .await;
    assert_eq!(status, 201, "{experiment}");
    let id = experiment["id"].as_str().unwrap().to_string();
    assert_eq!(experiment["running"], true);
    // A second one on the same template is refused while this one runs.
    let other = split(&[(default_id.as_str(), 90), (new_id.as_str(), 10)]);
    let (status, body) = app
        .start_experiment(&token, COURSE, "system", json!(other))
        .await;
    assert_eq!(status, 409, "{body}");

    let mut seen = std::collections::HashSet::new();
    let mut first_answer = None;
    for n in 0..6 {
        let learner = format!("learner-{n}");
        app.put_learner(&learner, "grace").await;
        let expected = assign(&id, &learner, &arms).unwrap();
        for _ in 0..2 {
            let (system, version) = ask(&app, &llm, &learner).await;
            assert_eq!(version, expected.version, "{learner}");
            assert_eq!(
                system.contains(MARKER),
                version == new_id,
                "{learner}: {system}"
            );
        }
        seen.insert(expected.version.clone());
        if first_answer.is_none() {
            first_answer = Some(learner);
        }
    }
    // A thumbs up from the first learner on their last answer.
    let learner = first_answer.unwrap();
    let mut ws = app.connect(&app.learner_token(&learner)).await;
    ws.ready().await;
    let answer = ws.ask("rate-me", "And a for loop?").await;
    let answer_id = answer.done().message_id;
    ws.send(ClientFrame::Feedback {
        message_id: answer_id,
        rating: Rating::Up,
        comment: Some("clear".into()),
    })
    .await;
    ws.next_frame().await;
    ws.close().await;

    let list = app.experiments(&token, COURSE).await;
    let stats = list[0]["stats"].as_array().unwrap();
    let answers: u64 = stats.iter().map(|s| s["answers"].as_u64().unwrap()).sum();
    assert_eq!(answers, 13, "{list}");
    let ups: u64 = stats.iter().map(|s| s["thumbs_up"].as_u64().unwrap()).sum();
    assert_eq!(ups, 1, "{list}");
    let rated = stats.iter().find(|s| s["thumbs_up"] == 1).unwrap();
    assert_eq!(rated["comments"], 1);
    assert_eq!(rated["thumbs_up_rate"], 1.0);
    assert!(
        rated["thumbs_up_interval"][0].as_f64().unwrap() < 1.0,
        "{rated}"
    );
    assert!(
        rated["mean_answer_chars"].as_f64().unwrap() > 10.0,
        "{rated}"
    );

    // Promote the new version: the experiment stops and production points at it.
    let (status, promoted) = app
        .post(
            &format!("/api/v1/courses/{COURSE}/experiments/{id}/promote"),
            &token,
            json!({"version": new_id}),
        )
        .await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["running"], false);
    for n in 0..6 {
        let (system, version) = ask(&app, &llm, &format!("learner-{n}")).await;
        assert!(system.contains(MARKER), "{system}");
        assert_eq!(version, new_id);
    }
    assert!(!seen.is_empty());
}

#[tokio::test]
async fn bad_coaching_and_digest_versions_are_refused_and_nothing_is_stored() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = spawn_app_with_llm(&llm, None).await;
    let token = app.course_team(COURSE);
    let refused: [(&str, &str, &str); 6] = [
        // A syntax error: its line is named.
        (
            "coaching",
            "Let's try.\n{% if french %}Essayons.\n",
            "on line",
        ),
        ("digest", "{{ data }}\nWrite in {{ language }.\n", "on line"),
        // A variable the header does not document.
        (
            "coaching",
            "{{ rule }}: see {{ solution_text }}",
            "solution_text",
        ),
        (
            "digest",
            "{{ data }} for {{ mentor_email }}",
            "mentor_email",
        ),
        // A note that says nothing for one rule; a digest without the facts.
        (
            "coaching",
            "{% if rule == \"solution\" %}Let's build it together.{% endif %}",
            "empty",
        ),
        ("digest", "Write a digest in {{ language }}.", "data"),
    ];
    for (template, text, says) in refused {
        let (status, body) = save(&app, &token, template, text, None).await;
        assert_eq!(status, 422, "{template}: {text:?}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{template}: {message}");
        // The studio's inline check says the same, as data.
        let (status, checked) = app
            .post(
                &prompts_path(&format!("/{template}/validate")),
                &token,
                json!({"text": text}),
            )
            .await;
        assert_eq!(status, 200, "{checked}");
        assert_eq!(checked["valid"], false, "{checked}");
    }
    // Nothing was stored and no label moved.
    let (status, overview) = app.get(&prompts_path(""), &token).await;
    assert_eq!(status, 200, "{overview}");
    for template in ["coaching", "digest"] {
        let view = overview["templates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["template"] == template)
            .unwrap_or_else(|| panic!("{template} in {overview}"));
        assert_eq!(view["versions"], json!([]), "{view}");
        assert_eq!(view["head"], Value::Null, "{view}");
        assert_eq!(view["labels"], json!([]), "{view}");
        assert!(
            view["default_version"]
                .as_str()
                .unwrap()
                .starts_with(&format!("default:{template}@")),
            "{view}"
        );
    }
    // A coaching note is chosen by label, not split by an experiment (whose figures are the
    // answers'): refused, nothing started.
    let note = "Try the first step yourself ({{ rule }}).";
    let (status, saved) = save(&app, &token, "coaching", note, None).await;
    assert_eq!(status, 201, "{saved}");
    let default_id = TemplateName::Coaching.default_version_id();
    let saved_id = saved["id"].as_str().unwrap();
    let arms = split(&[(default_id.as_str(), 50), (saved_id, 50)]);
    let (status, body) = app
        .start_experiment(&token, COURSE, "coaching", json!(arms))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(app.experiments(&token, COURSE).await, json!([]));
}
