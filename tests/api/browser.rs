//! The pages in headless Chromium (Playwright, `tests/browser/*.spec.mjs`): the mentor page
//! (a flagged learner's badges and digest render; `target/screenshots/mentor.png`) and the demo
//! page's chat (an answer with sources, thumbs-down and "ask my mentor" reach the mentor's API;
//! `target/screenshots/chat.png`), and the `<companion-chat>` widget on a plain host page of
//! another origin (`widget.spec.mjs`: Markdown, code and math while streaming, hostile HTML
//! inert, rating, cancel, history, transparency, axe-core, French, 360 px;
//! `target/screenshots/widget-1280.png`, `widget-360.png`), and the prompt studio
//! (`studio.spec.mjs`: an inline syntax error, a diff, an eval, a replay side by side, a
//! preview, promote and roll back, an experiment, the coaching note's template without them;
//! `target/screenshots/studio.png`, `studio-replay.png`; copies are kept in `docs/screenshots`).
//! Needs node, `npm install` in tests/browser and Chromium
//! (scripts/test.sh installs them); without them the tests say they skip, unless
//! `COMPANION_REQUIRE_BROWSER=1` (set by scripts/test.sh) makes that a failure.
use std::path::{Path, PathBuf};

use companion::auth::Role;
use serde_json::Value;

use crate::helpers::{Behaviour, FakeLlm, FakeScript, SpawnedApp, TestApp, test_settings};
use crate::helpers::{repo_root, spawn_app, spawn_app_with, today, use_fake_llm};

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

/// The `RESULT {json}` line a spec prints last.
fn result_of(stdout: &str) -> Value {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).expect("RESULT is JSON"))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"))
}

impl Browser {
    /// Starts `node <spec> <args>` with its stdout piped, to be read while it runs.
    fn spawn(&self, spec: &str, args: &[&str]) -> tokio::process::Child {
        tokio::process::Command::new("node")
            .arg(self.dir.join(spec))
            .args(args)
            .env("CHROMIUM", &self.chromium)
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run node")
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
    let result = result_of(&stdout);
    // `/?token=` survives the redirect to the first page: the chat is Lin's, not the demo's.
    assert_eq!(result["learnerId"], "lin", "{result}");
    let conversation_id = result["conversationId"].as_str().expect("conversation id");
    let answer_id = result["answerId"].as_str().expect("answer id");
    let flag_id = result["flagId"].as_str().expect("flag id");

    let admin = app.token(Role::Admin, "root");
    let view = app.mentor_view(&admin, conversation_id).await;
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

/// A model reply with everything the widget renders, and what it must not run, in small
/// chunks so that the test sees it render while it streams.
const RICH_REPLY: &str = "Here is how to **stop** a `while` loop [1]:\n\n\
- make its condition *false*\n\
- or leave it with `break`\n\n\
| way | when |\n|---|---|\n| condition | the loop is done |\n| `break` | you leave early |\n\n\
```python\ncount = 0\nwhile count < 3:\n    count += 1\n```\n\n\
The value $x^2 + 1$ grows, and\n\n$$\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}$$\n\n\
See [the Python docs](https://docs.python.org/3/). Not this: <img src=x onerror=\"window.__pwned=1\"> \
nor [this](javascript:window.__pwned=2) nor <script>window.__pwned=3</script>.\n\n\
What changes the condition in your loop?";

fn chunks(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

#[tokio::test]
async fn the_widget_on_a_plain_host_page_renders_while_streaming_and_keeps_hostile_html_inert() {
    let Some(browser) = browser_or_skip("widget") else {
        return;
    };
    let llm = FakeLlm::start(FakeScript {
        chunks: chunks(RICH_REPLY, 12),
        delay: std::time::Duration::from_millis(60),
        fail_status: None,
    })
    .await;
    // The first question gets the rich reply, the second one streams until it is stopped.
    llm.push([Behaviour::Script, Behaviour::Endless]);
    let app = spawn_app_with(|settings| {
        use_fake_llm(settings, &llm);
        settings.sockets.allowed_origins = vec!["http://localhost:8123".into()];
    })
    .await;
    app.put_learner("ana", "grace").await;
    // The platform names the mentor: the "who can read this" panel shows the name.
    app.put_profile("ana", serde_json::json!({"mentor_name": "Grace Hopper"}))
        .await;
    app.put_profile(
        "zoe",
        serde_json::json!({"name": "Zoé", "locale": "fr", "mentor_id": "grace",
                           "course": "python-foundations"}),
    )
    .await;
    let dir = repo_root().join("target/screenshots");
    for png in ["widget-1280.png", "widget-360.png"] {
        let _ = std::fs::remove_file(dir.join(png));
    }
    let stdout = browser
        .run(
            "widget.spec.mjs",
            &[
                &app.url(""),
                &app.learner_token("ana"),
                &app.learner_token("zoe"),
                &dir.to_string_lossy(),
            ],
        )
        .await;
    let result = result_of(&stdout);
    let size = stdout
        .lines()
        .find(|line| line.starts_with("WIDGET_GZIP_BYTES"))
        .expect("the spec prints the widget's size");
    println!("{size}");
    let gzip = result["widgetGzipBytes"].as_u64().expect("size");
    assert!(gzip < 40_000, "the widget grew to {gzip} bytes gzipped");
    assert_screenshot(&dir.join("widget-1280.png"));
    assert_screenshot(&dir.join("widget-360.png"));
    assert_eq!(result["learnerId"], "ana", "{result}");
    assert_eq!(
        result["statuses"],
        serde_json::json!(["complete", "cancelled"]),
        "{result}"
    );

    // What the widget showed is what was stored: the rating and its comment, the stopped answer.
    let admin = app.token(Role::Admin, "root");
    let conversation_id = result["conversationId"].as_str().expect("conversation id");
    let view = app.mentor_view(&admin, conversation_id).await;
    let feedback = view["feedback"].as_array().expect("feedback list");
    assert_eq!(feedback.len(), 1, "{view}");
    assert_eq!(feedback[0]["rating"], "down", "{view}");
    assert_eq!(feedback[0]["message_id"], result["answerId"], "{view}");
    assert_eq!(feedback[0]["comment"], result["comment"], "{view}");
    let messages = view["messages"].as_array().expect("messages");
    let cancelled = messages
        .iter()
        .find(|m| m["id"] == result["cancelledId"])
        .unwrap_or_else(|| panic!("no stopped answer in {view}"));
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
}

#[tokio::test]
async fn the_widget_sees_an_answer_complete_exactly_once_after_the_server_is_killed_and_restarted()
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let Some(browser) = browser_or_skip("resume") else {
        return;
    };
    let reply: Vec<String> = (0..40).map(|i| format!("part{i} ")).collect();
    let llm = FakeLlm::start(FakeScript {
        chunks: reply.clone(),
        delay: std::time::Duration::from_millis(60),
        fail_status: None,
    })
    .await;
    // The first answer stops after a dozen chunks (the node is killed while it waits); the
    // one written after the restart streams whole.
    llm.push([
        Behaviour::StallMidStream {
            after: 12,
            stall: std::time::Duration::from_secs(600),
        },
        Behaviour::Script,
    ]);
    let base_url = llm.base_url();
    let env = [
        ("COMPANION__LLM__BASE_URL", base_url.as_str()),
        ("COMPANION__LLM__API_KEY", "test-key"),
        ("COMPANION__LLM__MODEL", "fake-model"),
        ("COMPANION__TRANSCRIPTS__NODE_ID", "node-widget"),
    ];
    let app = SpawnedApp::start(&env).await;
    let addr = app.addr;
    let token = app.learner_token("ada");
    let png = repo_root().join("target/screenshots/widget-resume.png");
    let base = format!("http://{addr}");
    let mut node = browser.spawn("resume.spec.mjs", &[&base, &token, &png.to_string_lossy()]);
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let mut stdout = String::new();
    while let Some(line) = lines.next_line().await.expect("read the spec") {
        stdout.push_str(&line);
        stdout.push('\n');
        if line == "STREAMING" {
            break;
        }
    }
    assert!(
        stdout.contains("STREAMING"),
        "the spec stopped early:\n{stdout}"
    );
    let (dir, temp) = app.kill().await;
    // The same node, on the same port and data: it marks what it left streaming interrupted.
    let mut settings = test_settings(&dir);
    settings.listen = addr;
    settings.use_llm(&base_url, "test-key", "fake-model");
    settings.transcripts.node_id = Some("node-widget".into());
    let app = TestApp::start(settings, Some(temp)).await;
    while let Some(line) = lines.next_line().await.expect("read the spec") {
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let status = node.wait().await.expect("the spec ends");
    let mut stderr = String::new();
    if let Some(mut err) = node.stderr.take() {
        let _ = err.read_to_string(&mut stderr).await;
    }
    assert!(status.success(), "resume spec failed:\n{stdout}\n{stderr}");
    let result = result_of(&stdout);
    let whole: String = reply.concat();
    assert_eq!(result["status"], "complete", "{result}");
    assert_eq!(
        result["text"],
        whole.as_str(),
        "shown once, whole: {result}"
    );
    assert_screenshot(&png);

    // Stored: the question once; the answer its node left, interrupted; the new one, complete.
    let conversation = result["conversationId"].as_str().expect("conversation");
    let (status, view) = app.conversation(&token, conversation).await;
    assert_eq!(status, 200, "{view}");
    let messages = view["messages"].as_array().expect("messages");
    let questions = messages.iter().filter(|m| m["role"] == "learner").count();
    let statuses: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "assistant")
        .filter_map(|m| m["status"].as_str())
        .collect();
    assert_eq!(questions, 1, "{view}");
    assert_eq!(statuses, ["interrupted", "complete"], "{view}");
}

#[tokio::test]
async fn the_studio_shows_an_inline_error_a_diff_an_eval_and_a_replay_in_chromium() {
    let Some(browser) = browser_or_skip("studio") else {
        return;
    };
    let llm = FakeLlm::start(FakeScript::default()).await;
    let app = spawn_app_with(|settings| use_fake_llm(settings, &llm)).await;
    let course = "python-foundations";
    app.put_learner("ada", "grace").await;
    let asked = app
        .ask(
            "ada",
            &["How do I stop a while loop?", "What is a for loop?"],
        )
        .await;
    crate::inspector::thumbs_down(&app, "ada", &asked[0].answer_id).await;
    // Restarted on the same data with a model that writes otherwise, so that the replay's
    // answers differ from the originals.
    let (mut settings, temp) = app.stop().await;
    let other = FakeLlm::start(FakeScript {
        chunks: vec![
            "Give the loop a flag: set `done = True` where it should stop [1]. ".into(),
            "Where in your loop would you set it?".into(),
        ],
        ..FakeScript::default()
    })
    .await;
    use_fake_llm(&mut settings, &other);
    let app = TestApp::start(settings, temp).await;
    let token = app.course_team(course);
    let mut versions = Vec::new();
    for (text, message) in [
        (
            "You are Companion, the tutor of {{ learner_name }} on {{ course }}.\n\
             Answer in {{ language }}.\nCite the passages like [1].\nNever paste a full solution.\n",
            "a first voice",
        ),
        (
            "You are Companion, the tutor of {{ learner_name }} on {{ course }}.\n\
             Answer in {{ language }}. Be brief.\nCite the passages like [1].\n\
             Coach with one hint and one question.\n",
            "briefer, coaching",
        ),
    ] {
        let (status, saved) = app
            .call(
                "POST",
                &format!("/api/v1/courses/{course}/prompts/system/versions"),
                Some(&token),
                Some(serde_json::json!({"text": text, "message": message})),
            )
            .await;
        assert_eq!(status, 201, "{saved}");
        versions.push(saved["id"].as_str().unwrap().to_string());
    }
    let dir = repo_root().join("target/screenshots");
    for png in ["studio.png", "studio-replay.png"] {
        let _ = std::fs::remove_file(dir.join(png));
    }
    let stdout = browser
        .run(
            "studio.spec.mjs",
            &[
                &app.url(""),
                &token,
                &versions[0],
                &versions[1],
                "ada",
                &dir.to_string_lossy(),
            ],
        )
        .await;
    let result = result_of(&stdout);
    assert!(result["diffAdded"].as_u64().unwrap() > 0, "{result}");
    assert!(result["diffRemoved"].as_u64().unwrap() > 0, "{result}");
    assert!(result["evalCases"].as_u64().unwrap() > 0, "{result}");
    assert_eq!(result["replayTurns"], 1, "{result}");
    assert!(
        result["candidate"]
            .as_str()
            .unwrap()
            .contains("Give the loop a flag"),
        "{result}"
    );
    assert!(
        result["original"]
            .as_str()
            .unwrap()
            .contains("A `while` loop stops"),
        "{result}"
    );
    assert!(result["previewMessages"].as_u64().unwrap() >= 2, "{result}");
    assert!(
        result["promoted"].as_str().unwrap().contains("production"),
        "{result}"
    );
    assert!(
        result["experiment"]
            .as_str()
            .unwrap()
            .starts_with("running"),
        "{result}"
    );
    assert_eq!(
        result["templates"],
        serde_json::json!(["system", "offline", "coaching", "digest"]),
        "{result}"
    );
    assert_eq!(
        result["coachingPanels"],
        serde_json::json!(["editor-title", "diff-title"]),
        "{result}"
    );
    assert_screenshot(&dir.join("studio.png"));
    assert_screenshot(&dir.join("studio-replay.png"));
    // What the page did went through the API: production rolled back, one experiment running.
    let experiments = app.experiments(&token, course).await;
    assert_eq!(experiments[0]["running"], true, "{experiments}");
    assert_eq!(experiments[0]["arms"][1]["version"], versions[1].as_str());
}
