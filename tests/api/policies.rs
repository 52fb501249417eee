//! Course policies edited through the API (issue 12): a course's team writes its course's or a
//! project's policy, checked by the rules of a policy file (a refused text changes nothing);
//! the override stands instead of the file from the next answer, on every node of one
//! database, goes back to the file when deleted, and every change is kept with who and when.
//! Another course's team, a learner and a mentor are refused.
use std::time::{Duration, Instant};

use companion::auth::Role;
use companion::guard::Rule;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::pg;

const COURSE: &str = "python-foundations";

/// Three lines of generic code, one word of which an override keeps out of answers.
const REPLY: &str = "Here is a small example:\n\n```python\ngrocery = 0\nfor n in [1, 2]:\n    grocery += n\n```\n\nWhat does it print?";

fn model() -> FakeScript {
    FakeScript {
        chunks: vec![REPLY.to_string()],
        delay: Duration::from_millis(1),
        ..FakeScript::default()
    }
}

fn team(app: &TestApp, course: &str) -> String {
    app.token_with_course(Role::CourseTeam, "team-1", course)
}

fn path(rest: &str) -> String {
    format!("/api/v1/courses/{COURSE}{rest}")
}

async fn put(app: &TestApp, token: &str, rest: &str, text: &str) -> (u16, Value) {
    app.call(
        "PUT",
        &path(rest),
        Some(token),
        Some(json!({ "text": text })),
    )
    .await
}

/// A learner of the course, on no project: the course's own policy holds for them.
async fn course_learner(app: &TestApp, id: &str) {
    app.put_profile(
        id,
        json!({"name": "Ada", "locale": "en", "mentor_id": "mia", "course": COURSE}),
    )
    .await;
}

/// The rules that withheld a block of one answer to `learner`.
async fn withheld(app: &TestApp, learner: &str, client_id: &str) -> Vec<Rule> {
    let mut ws = app.connect(&app.learner_token(learner)).await;
    ws.ready().await;
    let answer = ws.ask(client_id, "show me a small loop").await;
    ws.close().await;
    answer.done().guard.map(|g| g.withheld).unwrap_or_default()
}

const FORBID: &str = "answer = \"hints\"\nforbidden = [\"grocery\"]\n";

#[tokio::test]
async fn a_course_team_edits_its_course_policy_and_answers_are_held_to_it_until_it_is_deleted() {
    let llm = FakeLlm::start(model()).await;
    let app = spawn_app_with_llm(&llm, None).await;
    course_learner(&app, "ada").await;
    let token = team(&app, COURSE);
    assert_eq!(withheld(&app, "ada", "q-1").await, vec![]);

    let (status, body) = put(&app, &token, "/policy", FORBID).await;
    assert_eq!(status, 200, "{body}");
    let source = &body["policy"]["source"];
    assert_eq!(
        (&source["kind"], &source["version"], &source["by"]),
        (&json!("override"), &json!(1), &json!("team-1")),
        "{body}"
    );
    assert_eq!(withheld(&app, "ada", "q-2").await, vec![Rule::Forbidden]);

    // The course's policy in force is the override; the project's is still its file.
    let (status, view) = app.get(&path("/policy"), &token).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["policy"]["source"]["kind"], "override", "{view}");
    assert_eq!(view["policy"]["forbidden"], json!(["grocery"]));
    assert_eq!(view["policy"]["text"], FORBID);
    assert_eq!(view["projects"]["budget-tracker"]["source"]["kind"], "file");

    let (status, body) = app
        .call("DELETE", &path("/policy"), Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], true);
    assert_eq!(body["policy"]["source"]["kind"], "file", "{body}");
    assert_eq!(withheld(&app, "ada", "q-3").await, vec![]);

    let (status, history) = app.get(&path("/policy/history"), &token).await;
    assert_eq!(status, 200, "{history}");
    let changes = history["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{history}");
    assert_eq!(changes[0]["version"], 2);
    assert!(changes[0]["text"].is_null(), "the delete: {history}");
    assert_eq!(changes[1]["version"], 1);
    assert_eq!(changes[1]["text"], FORBID);
    assert_eq!(changes[1]["by"], "team-1");
    assert!(changes[1]["project"].is_null());
    assert!(changes[1]["at"].as_i64().unwrap() > 1_700_000_000_000);
}

#[tokio::test]
async fn a_project_policy_edit_is_checked_like_a_file_and_a_refused_one_changes_nothing() {
    let app = spawn_app().await;
    let token = team(&app, COURSE);
    let project = "/projects/budget-tracker/policy";
    let good = "answer = \"hints\"\nforbidden = [\"ledger\"]\nreference_solutions = [\"budget-tracker.solution/budget.py\"]\n";
    let (status, body) = put(&app, &token, project, good).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["project"], "budget-tracker");
    assert_eq!(
        body["policy"]["reference_files"][0]["path"],
        "budget-tracker.solution/budget.py"
    );
    assert!(!body.to_string().contains("def monthly_summary"), "{body}");

    let refused = [
        ("answer = \"hints\"\nanswr = 1\n", "answr"),
        ("answer = \"hint\"\n", "hint"),
        (
            "[[window]]\nstart = \"2031-03-10T12:00:00Z\"\nend = \"2031-03-10T09:00:00Z\"\nmode = \"off\"\n",
            "window[0]",
        ),
        // Only files already in the project's own `.solution/` folder.
        (
            "reference_solutions = [\"budget-tracker.md\"]\n",
            "budget-tracker.md",
        ),
        (
            "protected = [\"budget-tracker.solution/nope.py\"]\n",
            "nope.py",
        ),
        (
            "reference_solutions = [\"budget-tracker.solution/../../policy.toml\"]\n",
            "policy.toml",
        ),
        ("forbidden = [\"two words\"]\n", "forbidden"),
    ];
    for (text, named) in refused {
        let (status, body) = put(&app, &token, project, text).await;
        assert_eq!(status, 422, "{text}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{text}: {message}");
    }
    let (_, body) = put(&app, &token, project, "answr = 1\n").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 1"), "the line is named: {message}");

    // The last good text stays in force, and the history has only it.
    let (_, view) = app.get(&path("/policy"), &token).await;
    let in_force = &view["projects"]["budget-tracker"];
    assert_eq!(in_force["forbidden"], json!(["ledger"]), "{view}");
    assert_eq!(in_force["source"]["version"], 1);
    let (_, history) = app.get(&path("/policy/history"), &token).await;
    assert_eq!(history["changes"].as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history["changes"][0]["project"], "budget-tracker");

    let admin = app.token(Role::Admin, "root");
    let (status, _) = app
        .call(
            "PUT",
            "/api/v1/courses/no-such-course/policy",
            Some(&admin),
            Some(json!({"text": ""})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = put(&app, &token, "/projects/not.a.name/policy", "").await;
    assert_eq!(status, 422);
    let huge = format!("# {}\n", "x".repeat(70_000));
    let (status, _) = put(&app, &token, "/policy", &huge).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn another_courses_team_a_learner_and_a_mentor_cannot_edit_a_course_policy() {
    let app = spawn_app().await;
    let callers = [
        team(&app, "data-science"),
        app.learner_token("ada"),
        app.token(Role::Mentor, "mia"),
    ];
    for token in &callers {
        for (method, rest) in [
            ("PUT", "/policy"),
            ("PUT", "/projects/budget-tracker/policy"),
            ("DELETE", "/policy"),
            ("DELETE", "/projects/budget-tracker/policy"),
            ("GET", "/policy/history"),
        ] {
            let (status, body) = app
                .call(
                    method,
                    &path(rest),
                    Some(token),
                    Some(json!({"text": "answer = \"solutions\"\n"})),
                )
                .await;
            assert_eq!(status, 403, "{method} {rest}: {body}");
        }
    }
    let (_, history) = app.get(&path("/policy/history"), &team(&app, COURSE)).await;
    assert_eq!(history["changes"], json!([]), "nothing was written");
}

#[tokio::test]
async fn an_edit_through_node_a_is_enforced_by_node_b_at_its_next_answer() {
    let Some(url) = pg::fresh_schema_url("policies", "the two-node policy test").await else {
        return;
    };
    let (llm_a, llm_b) = (FakeLlm::start(model()).await, FakeLlm::start(model()).await);
    let node_a = spawn_app_with_llm(&llm_a, Some(&url)).await;
    let node_b = spawn_app_with_llm(&llm_b, Some(&url)).await;
    course_learner(&node_a, "ada").await;
    let token = team(&node_a, COURSE);
    // Node B has answered (and read the policies) before the change.
    assert_eq!(withheld(&node_b, "ada", "q-1").await, vec![]);

    let (status, body) = put(&node_a, &token, "/policy", FORBID).await;
    assert_eq!(status, 200, "{body}");
    let edited = Instant::now();
    assert_eq!(withheld(&node_b, "ada", "q-2").await, vec![Rule::Forbidden]);
    // Sooner than the 5 s the files are read again: the generation, not the file loop.
    assert!(edited.elapsed() < Duration::from_secs(5));
    let (_, view) = node_b.get(&path("/policy"), &token).await;
    assert_eq!(view["policy"]["source"]["kind"], "override", "{view}");

    // Deleted through node B: node A's next answer is held to the file again.
    let (status, body) = node_b
        .call("DELETE", &path("/policy"), Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(withheld(&node_a, "ada", "q-3").await, vec![]);
    let (_, history) = node_a.get(&path("/policy/history"), &token).await;
    assert_eq!(history["changes"].as_array().unwrap().len(), 2, "{history}");
}
