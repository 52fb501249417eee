//! The pages in headless Chromium (Playwright, `tests/browser/*.spec.mjs`): the mentor page
//! (a flagged learner's badges and digest render; `target/screenshots/mentor.png`) and the demo
//! page's chat (an answer with sources, thumbs-down and "ask my mentor" reach the mentor's API;
//! `target/screenshots/chat.png`). Needs node, `npm install` in tests/browser and Chromium
//! (scripts/test.sh installs them); without them the tests say they skip, unless
//! `COMPANION_REQUIRE_BROWSER=1` (set by scripts/test.sh) makes that a failure.
use std::path::{Path, PathBuf};

use companion::auth::Role;
use serde_json::Value;

use crate::helpers::{repo_root, spawn_app, today};

fn missing_tools(browser_dir: &Path, chromium: &str) -> Option<String> {
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("node is not installed".into());
    }
    if !browser_dir.join("node_modules/playwright-core").exists() {
        return Some("run `npm install` in tests/browser".into());
    }
    if !Path::new(chromium).exists() {
        return Some(format!("{chromium} is missing (apt-get install chromium)"));
    }
    None
}

/// Node, Playwright and Chromium, or `None` after saying why the test `name` skips.
struct Browser {
    dir: PathBuf,
    chromium: String,
}

fn browser_or_skip(name: &str) -> Option<Browser> {
    let dir = repo_root().join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if let Some(reason) = missing_tools(&dir, &chromium) {
        assert!(
            std::env::var("COMPANION_REQUIRE_BROWSER").is_err(),
            "browser test required but {reason}"
        );
        eprintln!("SKIPPED: {name} browser test: {reason}");
        return None;
    }
    Some(Browser { dir, chromium })
}

impl Browser {
    /// Runs `node <spec> <args>`; panics with its output unless it succeeds; returns stdout.
    async fn run(&self, spec: &str, args: &[&str]) -> String {
        let output = tokio::process::Command::new("node")
            .arg(self.dir.join(spec))
            .args(args)
            .env("CHROMIUM", &self.chromium)
            .current_dir(&self.dir)
            .output()
            .await
            .expect("run node");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "browser check {spec} failed:\n{stdout}\n{stderr}"
        );
        stdout
    }
}

fn assert_screenshot(png: &Path) {
    let bytes = std::fs::read(png).expect("a screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 10_000, "a suspiciously small screenshot");
}

#[tokio::test]
async fn the_mentor_page_shows_flag_badges_and_the_digest_in_chromium() {
    let Some(browser) = browser_or_skip("mentor page") else {
        return;
    };
    let app = spawn_app().await;
    app.put_learner("ada", "grace").await;
    app.put_learner("bob", "grace").await;
    let goal = "Fix the infinite while loop in the guessing game";
    app.add_session(
        "grace",
        "ada",
        &today(),
        "Talked about loops.",
        &[goal, "Read the chapter about recursion"],
    )
    .await;
    app.ask(
        "ada",
        &[
            "Why does my while loop never stop?",
            "I want to talk to my mentor, I feel hopeless about this project",
        ],
    )
    .await;
    app.ask("bob", &["What is a tuple?"]).await;
    app.wait_flags("ada", |f| f.len() >= 2).await;

    let png = repo_root().join("target/screenshots/mentor.png");
    let _ = std::fs::remove_file(&png);
    let token = app.token(Role::Mentor, "grace");
    let png_arg = png.to_string_lossy();
    browser
        .run(
            "mentor.spec.mjs",
            &[&app.url(""), &token, "ada", goal, &png_arg],
        )
        .await;
    assert_screenshot(&png);
}

#[tokio::test]
async fn the_chat_answers_and_its_thumbs_down_its_comment_and_mentor_request_reach_the_mentor() {
    let Some(browser) = browser_or_skip("chat") else {
        return;
    };
    // Offline mode (no LLM): the answer lists the course passages it found.
    let app = spawn_app().await;
    app.put_learner("lin", "grace").await;
    let png = repo_root().join("target/screenshots/chat.png");
    let _ = std::fs::remove_file(&png);
    let mentor_text = "Can we go over while loops next session?";
    let stdout = browser
        .run(
            "chat.spec.mjs",
            &[
                &app.url(""),
                &app.learner_token("lin"),
                "How do I stop a while loop that never ends?",
                mentor_text,
                &png.to_string_lossy(),
            ],
        )
        .await;
    assert_screenshot(&png);
    let result: Value = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).expect("RESULT is JSON"))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    // `/?token=` survives the redirect to the first page: the chat is Lin's, not the demo's.
    assert_eq!(result["learnerId"], "lin", "{result}");
    let conversation_id = result["conversationId"].as_str().expect("conversation id");
    let answer_id = result["answerId"].as_str().expect("answer id");
    let flag_id = result["flagId"].as_str().expect("flag id");

    let admin = app.token(Role::Admin, "root");
    let (status, view) = app
        .call(
            "GET",
            &format!("/api/v1/mentor/conversations/{conversation_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    let feedback = view["feedback"].as_array().expect("feedback list");
    assert_eq!(feedback.len(), 1, "one rating per answer: {view}");
    assert_eq!(feedback[0]["rating"], "down", "{view}");
    assert_eq!(feedback[0]["message_id"], answer_id, "{view}");
    // The comment typed in the box the thumbs-down opened is stored with the rating.
    let comment = result["comment"].as_str().expect("the widget's comment");
    assert!(comment.contains("while"), "{result}");
    assert_eq!(feedback[0]["comment"], comment, "{view}");

    let flags = app
        .wait_flags("lin", |flags| {
            flags.iter().any(|f| f["kind"] == "human_requested")
        })
        .await;
    let flag = flags
        .iter()
        .find(|f| f["kind"] == "human_requested")
        .unwrap_or_else(|| panic!("no human_requested flag: {flags:?}"));
    assert_eq!(flag["id"], flag_id, "{flag}");
    assert_eq!(flag["conversation_id"], conversation_id, "{flag}");
    let reason = flag["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(mentor_text), "{flag}");
}
