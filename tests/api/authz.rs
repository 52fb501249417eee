//! The authorization matrix: every caller (the learner, another learner, the learner's mentor,
//! another mentor, an admin, the platform's service token, the course team, a demo visitor, no
//! token, an expired token, a token signed with another secret) against every REST route of
//! `api_routes()` (a route without a row fails the test) and the WebSocket actions on someone's
//! data, each cell the status the caller must get.
//!
//! A cell's status shows how far the caller got: 401 (who are you?), 403 (your role may not),
//! 404 (nothing the caller may see; a learner they may not read looks missing), or the
//! handler's own answer once access is granted (200, 201, 204; 400 where the request is
//! refused for its content after the access check).
use companion::auth::{Role, TokenKeys, claims_for};
use companion::http::ws::protocol::{ClientFrame, ServerFrame};
use companion::prompt::TemplateName;
use companion::review::Rating;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::*;

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// The learner whose data it is.
    Learner,
    OtherLearner,
    /// The mentor named in the learner's profile.
    MentorOf,
    MentorNotOf,
    Admin,
    Service,
    CourseTeam,
    /// An anonymous visitor with a token from `POST /api/v1/demo/token`.
    Demo,
    NoToken,
    /// The learner's own token, expired.
    Expired,
    /// The learner's claims signed with another secret.
    BadSignature,
}

use Caller::*;

/// The columns of the matrix, in this order.
const CALLERS: [Caller; 11] = [
    Learner,
    OtherLearner,
    MentorOf,
    MentorNotOf,
    Admin,
    Service,
    CourseTeam,
    Demo,
    NoToken,
    Expired,
    BadSignature,
];

/// One row: a route as `api_routes()` names it and the status of each caller, in the order of
/// [`CALLERS`].
struct Row {
    method: &'static str,
    path: &'static str,
    expect: [u16; 11],
}

const fn row(method: &'static str, path: &'static str, expect: [u16; 11]) -> Row {
    Row {
        method,
        path,
        expect,
    }
}

//                     learner other mentor other  admin service course demo  none  expired bad
//                             lrnr  of     mentor               team
/// Who may read the learner: themself, their mentor, an admin, the platform.
const READERS: [u16; 11] = [200, 404, 200, 404, 200, 200, 404, 404, 401, 401, 401];
/// Who may review the learner: their mentor and an admin.
const REVIEWERS: [u16; 11] = [404, 404, 200, 404, 200, 404, 404, 404, 401, 401, 401];
/// The mentor API's collections: mentors (their own learners) and admins.
const MENTOR_API: [u16; 11] = [403, 403, 200, 200, 200, 403, 403, 403, 401, 401, 401];
/// Who may write the learner's project files: themself (not a demo visitor), the platform, an
/// admin; `ok` is the handler's answer once allowed.
const fn writers(ok: u16) -> [u16; 11] {
    [ok, 403, 403, 403, ok, ok, 403, 403, 401, 401, 401]
}
const PUBLIC: [u16; 11] = [200; 11];
/// The widget's `/api/v1/me/...`: whoever may chat, each about themself only.
const CHATTERS: [u16; 11] = [200, 200, 403, 403, 200, 403, 403, 200, 401, 401, 401];
/// A course's answer policies, read and written: that course's team and admins.
const COURSE_TEAM: [u16; 11] = [403, 403, 403, 403, 200, 403, 200, 403, 401, 401, 401];

/// A course's prompt versions, written: that course's team and admins.
const PROMPT_WRITERS_201: [u16; 11] = [403, 403, 403, 403, 201, 403, 201, 403, 401, 401, 401];
const NO_SUCH_EXPERIMENT: [u16; 11] = [403, 403, 403, 403, 404, 403, 404, 403, 401, 401, 401];

/// The course of the fixtures, and of the course team's token.
const COURSE: &str = "python-foundations";

const ROWS: &[Row] = &[
    row("GET", "/api/openapi.json", PUBLIC),
    row("POST", "/api/v1/demo/token", PUBLIC),
    row("GET", "/api/v1/conversations/{id}", READERS),
    row("GET", "/api/v1/me/conversations", CHATTERS),
    row("GET", "/api/v1/me/transparency", CHATTERS),
    row("GET", "/api/v1/learners/{id}", READERS),
    row(
        "PUT",
        "/api/v1/learners/{id}",
        [403, 403, 403, 403, 200, 200, 403, 403, 401, 401, 401],
    ),
    row(
        "DELETE",
        "/api/v1/learners/{id}",
        [404, 404, 404, 404, 200, 200, 404, 404, 401, 401, 401],
    ),
    row("GET", "/api/v1/learners/{id}/sessions", READERS),
    row(
        "POST",
        "/api/v1/learners/{id}/sessions",
        [404, 404, 201, 404, 201, 404, 404, 404, 401, 401, 401],
    ),
    row("GET", "/api/v1/learners/{id}/export", READERS),
    row(
        "GET",
        "/api/v1/learners/{id}/projects/{project}/files",
        READERS,
    ),
    row(
        "GET",
        "/api/v1/learners/{id}/projects/{project}/files/{*path}",
        READERS,
    ),
    row(
        "PUT",
        "/api/v1/learners/{id}/projects/{project}/files/{*path}",
        writers(200),
    ),
    row(
        "DELETE",
        "/api/v1/learners/{id}/projects/{project}/files/{*path}",
        writers(204),
    ),
    // Not an archive: refused for its content (400) once access is granted.
    row(
        "POST",
        "/api/v1/learners/{id}/projects/{project}/archive",
        writers(400),
    ),
    // A loopback URL: refused for its address (400) once access is granted.
    row(
        "POST",
        "/api/v1/learners/{id}/projects/{project}/git",
        writers(400),
    ),
    row("GET", "/api/v1/mentor/learners", MENTOR_API),
    row(
        "GET",
        "/api/v1/mentor/learners/{id}/conversations",
        REVIEWERS,
    ),
    row("GET", "/api/v1/mentor/learners/{id}/digest", REVIEWERS),
    row("GET", "/api/v1/mentor/learners/{id}/flags", REVIEWERS),
    row("GET", "/api/v1/mentor/learners/{id}/export", READERS),
    row("GET", "/api/v1/mentor/conversations/{id}", REVIEWERS),
    row(
        "POST",
        "/api/v1/mentor/messages/{id}/annotations",
        [404, 404, 201, 404, 201, 404, 404, 404, 401, 401, 401],
    ),
    row("POST", "/api/v1/mentor/flags/{id}/resolve", REVIEWERS),
    row("GET", "/api/v1/mentor/search", MENTOR_API),
    row("GET", "/api/v1/courses/{course}/policy", COURSE_TEAM),
    row("PUT", "/api/v1/courses/{course}/policy", COURSE_TEAM),
    // Back to the file; a delete that finds no override is a 200 too (nothing changed).
    row("DELETE", "/api/v1/courses/{course}/policy", COURSE_TEAM),
    row(
        "GET",
        "/api/v1/courses/{course}/policy/history",
        COURSE_TEAM,
    ),
    row(
        "PUT",
        "/api/v1/courses/{course}/projects/{project}/policy",
        COURSE_TEAM,
    ),
    row(
        "DELETE",
        "/api/v1/courses/{course}/projects/{project}/policy",
        COURSE_TEAM,
    ),
    row("GET", "/api/v1/courses/{course}/citations", COURSE_TEAM),
    row("GET", "/api/v1/courses/{course}/prompts", COURSE_TEAM),
    row(
        "POST",
        "/api/v1/courses/{course}/prompts/{template}/versions",
        PROMPT_WRITERS_201,
    ),
    // The shipped default's id: every course may read it.
    row(
        "GET",
        "/api/v1/courses/{course}/prompts/{template}/versions/{version}",
        COURSE_TEAM,
    ),
    row(
        "PUT",
        "/api/v1/courses/{course}/prompts/{template}/labels/{label}",
        COURSE_TEAM,
    ),
    // Back to a named version (the shipped default).
    row(
        "POST",
        "/api/v1/courses/{course}/prompts/{template}/labels/{label}/rollback",
        COURSE_TEAM,
    ),
    row("GET", "/api/v1/courses/{course}/experiments", COURSE_TEAM),
    // A split of 60 + 30: refused for its content (422) once access is granted.
    row(
        "POST",
        "/api/v1/courses/{course}/experiments",
        [403, 403, 403, 403, 422, 403, 422, 403, 401, 401, 401],
    ),
    // No such experiment (the learner's id stands for one): 404 once access is granted.
    row(
        "POST",
        "/api/v1/courses/{course}/experiments/{id}/stop",
        NO_SUCH_EXPERIMENT,
    ),
    row(
        "POST",
        "/api/v1/courses/{course}/experiments/{id}/promote",
        NO_SUCH_EXPERIMENT,
    ),
    // The fixture's answer is an offline reply (no model here): no prompt was sent, so those
    // the role allows get 404; learners (the demo visitor too) and the platform get 403. Who
    // may read a model answer's prompt: `inspector.rs`.
    row(
        "GET",
        "/api/v1/messages/{id}/prompt",
        [403, 403, 404, 404, 404, 403, 404, 403, 401, 401, 401],
    ),
    row(
        "POST",
        "/api/v1/courses/{course}/prompts/{template}/validate",
        COURSE_TEAM,
    ),
    // The learner of the fixtures, who is of the course.
    row(
        "POST",
        "/api/v1/courses/{course}/prompts/{template}/preview",
        COURSE_TEAM,
    ),
    // Neither a text nor a version: refused for its content (400) once access is granted.
    row(
        "POST",
        "/api/v1/courses/{course}/prompts/{template}/eval",
        [403, 403, 403, 403, 400, 403, 400, 403, 401, 401, 401],
    ),
    row("GET", "/api/v1/courses/{course}/replays", COURSE_TEAM),
    // No answer of the course with a kept prompt (offline replies): 422 once access is granted.
    row(
        "POST",
        "/api/v1/courses/{course}/replays",
        [403, 403, 403, 403, 422, 403, 422, 403, 401, 401, 401],
    ),
    // No such replay (the learner's id stands for one): 404 once access is granted.
    row(
        "GET",
        "/api/v1/courses/{course}/replays/{id}",
        NO_SUCH_EXPERIMENT,
    ),
    row(
        "POST",
        "/api/v1/courses/{course}/replays/{id}/cancel",
        NO_SUCH_EXPERIMENT,
    ),
];

/// What a learner has: a profile with a mentor, a project file, a conversation with an
/// answer, and an open flag.
struct Fixture {
    learner: String,
    conversation: String,
    answer: String,
    flag: String,
}

const MENTOR: &str = "grace";

impl Fixture {
    async fn create(app: &TestApp, learner: &str) -> Fixture {
        app.put_learner(learner, MENTOR).await;
        app.upload_project_file(learner, "budget", "main.py", "total = 0\n")
            .await;
        let mut ws = app.connect(&app.learner_token(learner)).await;
        let conversation = ws.ready().await.conversation_id;
        let answer = ws
            .ask("q-1", "how do I stop a while loop?")
            .await
            .done()
            .message_id;
        ws.send(ClientFrame::RequestMentor {
            text: Some("help please".into()),
        })
        .await;
        let flag = match ws.next_frame().await {
            ServerFrame::MentorRequested { flag_id } => flag_id,
            other => panic!("expected mentor_requested, got {other:?}"),
        };
        ws.close().await;
        Fixture {
            learner: learner.to_string(),
            conversation,
            answer,
            flag,
        }
    }

    /// `path` of `api_routes()` with this fixture's ids.
    fn concrete(&self, path: &str) -> String {
        let id = if path.starts_with("/api/v1/conversations/")
            || path.starts_with("/api/v1/mentor/conversations/")
        {
            &self.conversation
        } else if path.starts_with("/api/v1/mentor/messages/")
            || path.starts_with("/api/v1/messages/")
        {
            &self.answer
        } else if path.starts_with("/api/v1/mentor/flags/") {
            &self.flag
        } else {
            &self.learner
        };
        let mut concrete = path
            .replace("{id}", id)
            .replace("{project}", "budget")
            .replace("{course}", COURSE)
            .replace("{*path}", "main.py")
            .replace("{template}", "system")
            .replace("{label}", "candidate")
            .replace("{version}", &TemplateName::System.default_version_id());
        if path == "/api/v1/mentor/search" {
            concrete.push_str("?q=loop");
        }
        concrete
    }
}

/// A body that passes validation, so that a refusal is about the caller, and whether it is
/// JSON.
fn body(method: &str, path: &str) -> Option<(Vec<u8>, bool)> {
    let json = |v: Value| Some((v.to_string().into_bytes(), true));
    match (method, path) {
        ("PUT", "/api/v1/learners/{id}") => json(json!({"name": "Renamed"})),
        ("POST", "/api/v1/learners/{id}/sessions") => {
            json(json!({"held_on": today(), "notes": "went well", "goals": ["tests"]}))
        }
        ("PUT", p) if p.ends_with("/files/{*path}") => Some((b"total = 1\n".to_vec(), false)),
        ("POST", p) if p.ends_with("/archive") => Some((b"not an archive".to_vec(), false)),
        ("POST", p) if p.ends_with("/git") => {
            json(json!({"url": "https://127.0.0.1/learner/budget.git"}))
        }
        ("POST", "/api/v1/mentor/messages/{id}/annotations") => {
            json(json!({"kind": "comment", "text": "good question"}))
        }
        ("POST", "/api/v1/mentor/flags/{id}/resolve") => json(json!({"note": "talked"})),
        ("PUT", "/api/v1/courses/{course}/policy")
        | ("PUT", "/api/v1/courses/{course}/projects/{project}/policy") => {
            json(json!({"text": "answer = \"hints\"\n"}))
        }
        ("POST", "/api/v1/courses/{course}/prompts/{template}/versions") => {
            json(json!({"text": "You help {{ learner_name }}.", "message": "shorter"}))
        }
        ("PUT", "/api/v1/courses/{course}/prompts/{template}/labels/{label}")
        | ("POST", "/api/v1/courses/{course}/prompts/{template}/labels/{label}/rollback")
        | ("POST", "/api/v1/courses/{course}/experiments/{id}/promote") => {
            json(json!({"version": TemplateName::System.default_version_id()}))
        }
        ("POST", "/api/v1/courses/{course}/prompts/{template}/validate") => {
            json(json!({"text": "You help {{ learner_name }}."}))
        }
        ("POST", "/api/v1/courses/{course}/prompts/{template}/preview") => json(json!({
            "version": TemplateName::System.default_version_id(),
            "learner": "ada",
        })),
        ("POST", "/api/v1/courses/{course}/prompts/{template}/eval") => json(json!({})),
        ("POST", "/api/v1/courses/{course}/replays") => json(json!({
            "candidate": TemplateName::System.default_version_id(),
            "filter": {"thumbs_down": true},
        })),
        ("POST", "/api/v1/courses/{course}/experiments") => json(json!({
            "template": "system",
            "arms": [
                {"version": TemplateName::System.default_version_id(), "percent": 60},
                {"version": "another", "percent": 30},
            ],
        })),
        _ => None,
    }
}

/// The token each caller presents for `learner`'s data (`None`: no token).
async fn token(app: &TestApp, caller: Caller, learner: &str) -> Option<String> {
    let mint = |role, id: &str| app.token(role, id);
    Some(match caller {
        Learner => mint(Role::Learner, learner),
        OtherLearner => mint(Role::Learner, "bob"),
        MentorOf => mint(Role::Mentor, MENTOR),
        MentorNotOf => mint(Role::Mentor, "linus"),
        Admin => mint(Role::Admin, "root"),
        Service => mint(Role::Service, "platform"),
        CourseTeam => app.token_with_course(Role::CourseTeam, "course-team", COURSE),
        Demo => {
            let (status, body) = app.call("POST", "/api/v1/demo/token", None, None).await;
            assert_eq!(status, 200, "{body}");
            body["token"].as_str().unwrap().to_string()
        }
        NoToken => return None,
        Expired => {
            let mut claims = claims_for(Role::Learner, learner, None, None, 60);
            claims.iat -= 7200;
            claims.exp -= 3600;
            keys().mint(&claims).unwrap()
        }
        BadSignature => {
            let other = SecretString::from("another-secret-of-at-least-32-bytes!".to_string());
            TokenKeys::new(&other, 0)
                .mint(&claims_for(Role::Learner, learner, None, None, 600))
                .unwrap()
        }
    })
}

#[tokio::test]
async fn every_caller_gets_the_expected_status_from_every_route() {
    let app = spawn_app().await;
    // Every route has a row, and every row a route.
    let routes: Vec<(String, &str)> = companion::http::api_routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path))
        .collect();
    let missing: Vec<_> = routes
        .iter()
        .filter(|(m, p)| !ROWS.iter().any(|r| r.method == m && r.path == *p))
        .collect();
    assert!(missing.is_empty(), "routes without a row: {missing:?}");
    for row in ROWS {
        assert!(
            routes
                .iter()
                .any(|(m, p)| m == row.method && *p == row.path),
            "a row for no route: {} {}",
            row.method,
            row.path
        );
    }

    // Reads share one learner; a call that changes a learner's data gets a fresh one per cell.
    let shared = Fixture::create(&app, "ada").await;
    let mut wrong = Vec::new();
    let mut n = 0;
    for row in ROWS {
        for (caller, expected) in CALLERS.iter().zip(row.expect) {
            let fresh;
            // A course's routes change nothing of a learner's: the shared one serves.
            let fixture = if row.method == "GET" || row.path.starts_with("/api/v1/courses/") {
                &shared
            } else {
                n += 1;
                fresh = Fixture::create(&app, &format!("learner-{n}")).await;
                &fresh
            };
            let token = token(&app, *caller, &fixture.learner).await;
            let path = fixture.concrete(row.path);
            let mut request = app.request(row.method, &path, token.as_deref());
            if let Some((bytes, is_json)) = body(row.method, row.path) {
                if is_json {
                    request = request.header("content-type", "application/json");
                }
                request = request.body(bytes);
            }
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let reply = response.text().await.unwrap_or_default();
            if status != expected {
                wrong.push(format!(
                    "{} {} as {caller:?}: {status}, expected {expected} ({reply})",
                    row.method, row.path
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The status of a WebSocket upgrade with `query`: 101 when it opened.
async fn upgrade_status(app: &TestApp, query: &str) -> (u16, Option<WsClient>) {
    let url = format!("ws://{}/ws?{query}", app.addr);
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => (101, Some(WsClient::connect(app.addr, query).await)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            (response.status().as_u16(), None)
        }
        Err(error) => panic!("upgrade failed: {error}"),
    }
}

#[tokio::test]
async fn every_caller_gets_the_expected_answer_from_the_socket_actions_on_a_learners_data() {
    let app = spawn_app().await;
    let fixture = Fixture::create(&app, "ada").await;
    // Resuming the learner's conversation, then rating their answer on that connection:
    // only the learner themself may.
    let resume: [u16; 11] = [101, 404, 403, 403, 404, 403, 403, 404, 401, 401, 401];
    let mut wrong = Vec::new();
    for (caller, expected) in CALLERS.iter().zip(resume) {
        let mut query = format!("conversation={}", fixture.conversation);
        if let Some(token) = token(&app, *caller, &fixture.learner).await {
            query = format!("token={token}&{query}");
        }
        let (status, ws) = upgrade_status(&app, &query).await;
        if status != expected {
            wrong.push(format!(
                "resume as {caller:?}: {status}, expected {expected}"
            ));
        }
        if let Some(mut ws) = ws {
            ws.ready().await;
            ws.close().await;
        }
    }
    // Rating the learner's answer from a connection of one's own: only the learner.
    for (caller, rated) in [
        (Learner, true),
        (OtherLearner, false),
        (Admin, false),
        (Demo, false),
    ] {
        let token = token(&app, caller, &fixture.learner).await.unwrap();
        let mut ws = app.connect(&token).await;
        ws.ready().await;
        ws.send(ClientFrame::Feedback {
            message_id: fixture.answer.clone(),
            rating: Rating::Down,
            comment: None,
        })
        .await;
        let saved = match ws.next_frame().await {
            ServerFrame::FeedbackSaved { .. } => true,
            ServerFrame::Error { .. } => false,
            other => panic!("expected feedback_saved or error, got {other:?}"),
        };
        if saved != rated {
            wrong.push(format!(
                "feedback as {caller:?}: saved {saved}, expected {rated}"
            ));
        }
        ws.close().await;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
