//! The mentor page in headless Chromium (Playwright, `tests/browser/mentor.spec.mjs`): a
//! flagged learner's badges and digest render; a screenshot goes to
//! `target/screenshots/mentor.png`. Needs node, `npm install` in tests/browser and Chromium
//! (scripts/test.sh installs them); without them the test says it skips, unless
//! `COMPANION_REQUIRE_BROWSER=1` (set by scripts/test.sh) makes that a failure.
use std::path::Path;

use companion::auth::Role;

use crate::helpers::{repo_root, spawn_app};
use crate::mentor::{add_session, ask, put_learner, wait_flags};

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

#[tokio::test]
async fn the_mentor_page_shows_flag_badges_and_the_digest_in_chromium() {
    let browser_dir = repo_root().join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if let Some(reason) = missing_tools(&browser_dir, &chromium) {
        assert!(
            std::env::var("COMPANION_REQUIRE_BROWSER").is_err(),
            "browser test required but {reason}"
        );
        eprintln!("SKIPPED: mentor page browser test: {reason}");
        return;
    }
    let app = spawn_app().await;
    put_learner(&app, "ada", "grace").await;
    put_learner(&app, "bob", "grace").await;
    let goal = "Fix the infinite while loop in the guessing game";
    add_session(
        &app,
        "grace",
        "ada",
        &[goal, "Read the chapter about recursion"],
    )
    .await;
    ask(
        &app,
        "ada",
        &[
            "Why does my while loop never stop?",
            "I want to talk to my mentor, I feel hopeless about this project",
        ],
    )
    .await;
    ask(&app, "bob", &["What is a tuple?"]).await;
    wait_flags(&app, "ada", |f| f.len() >= 2).await;

    let png = repo_root().join("target/screenshots/mentor.png");
    let _ = std::fs::remove_file(&png);
    let token = app.token(Role::Mentor, "grace");
    let output = tokio::process::Command::new("node")
        .arg(browser_dir.join("mentor.spec.mjs"))
        .arg(app.url(""))
        .arg(&token)
        .arg("ada")
        .arg(goal)
        .arg(&png)
        .env("CHROMIUM", &chromium)
        .current_dir(&browser_dir)
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser check failed:\n{stdout}\n{stderr}"
    );
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 10_000, "a suspiciously small screenshot");
}
