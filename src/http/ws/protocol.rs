//! The WebSocket wire protocol, version 1: one typed enum per direction (see docs/protocol.md).
use serde::{Deserialize, Serialize};

use crate::review::Rating;
use crate::transcript::{RetrievalStatus, SourceRef};

pub const PROTOCOL_VERSION: u32 = 1;
pub const SUBPROTOCOL: &str = "companion.v1";

// `Serialize` too, so clients written in Rust (the tests) send exactly what the server reads;
// optional fields left out rather than sent as null.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Ask {
        id: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page: Option<PageInfo>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        course: Option<String>,
    },
    Cancel {
        id: String,
    },
    /// The stream of an answer was lost (the socket dropped): send the deltas after
    /// `last_seq` (all of them without it), then the rest as it is written, then `done`. `id`
    /// is the ask's client id, `message_id` the question's id from its `ack`.
    Resume {
        id: String,
        conversation: String,
        message_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seq: Option<u64>,
    },
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// Thumbs up or down on an answer (its `message_id` from `done`), with an optional comment.
    Feedback {
        message_id: String,
        rating: Rating,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// The widget's "ask my mentor" button, with an optional message for the mentor.
    RequestMentor {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// A file (`name` + `content`) or a pasted snippet (`content` only) for the next question.
    /// A named file is also stored in the learner's project (`project`, else their current one).
    Attach {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        content: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PageInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LearnerInfo {
    pub id: String,
    pub name: String,
    /// The learner's profile locale (`en`, `fr`, …), when the platform set one: the widget
    /// speaks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    pub tokens_in: i64,
    pub tokens_out: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Timings {
    pub retrieval_ms: i64,
    pub first_token_ms: Option<i64>,
    pub total_ms: i64,
}

/// What the output guard did to an answer, as the learner may know it: the rules that withheld a
/// block (never the block), the citations removed, and whether the answer cited nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct GuardSummary {
    pub withheld: Vec<crate::guard::Rule>,
    pub citations_removed: Vec<u32>,
    pub uncited: bool,
}

impl From<&crate::guard::GuardReport> for GuardSummary {
    fn from(report: &crate::guard::GuardReport) -> Self {
        Self {
            withheld: report.withheld.iter().map(|w| w.rule).collect(),
            citations_removed: report.citations_removed.clone(),
            uncited: report.uncited,
        }
    }
}

// `Deserialize` too, so clients written in Rust (the tests) read the frames typed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Ready {
        protocol: u32,
        conversation_id: String,
        learner: LearnerInfo,
    },
    Ack {
        id: String,
        message_id: String,
        duplicate: bool,
    },
    Sources {
        id: String,
        sources: Vec<SourceRef>,
    },
    Delta {
        id: String,
        seq: u64,
        text: String,
    },
    Done {
        id: String,
        message_id: String,
        status: String,
        offline: bool,
        replayed: bool,
        model: String,
        usage: Usage,
        timings: Timings,
        /// Present when the output guard changed the answer or found it uncited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guard: Option<GuardSummary>,
        /// `unavailable` when the course could not be searched and the answer was written
        /// without passages; `ok` otherwise.
        #[serde(default)]
        retrieval: RetrievalStatus,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// The rating was stored.
    FeedbackSaved {
        message_id: String,
        rating: Rating,
    },
    /// The mentor will see the request (a flag on their page).
    MentorRequested {
        flag_id: String,
    },
    /// The attachment was checked and goes with the next `ask`; `stored` says whether it was
    /// also saved in a project (`project`, `path`).
    Attached {
        id: Option<String>,
        name: Option<String>,
        bytes: usize,
        stored: bool,
        project: Option<String>,
        path: Option<String>,
    },
    Error {
        id: Option<String>,
        code: ErrorCode,
        message: String,
        /// Seconds to wait before trying again, when waiting helps (rates and quotas).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
}

/// Stable machine codes of `error` frames.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    MissingField,
    InvalidField,
    EmptyQuestion,
    QuestionTooLong,
    NotReady,
    Busy,
    UnknownAsk,
    UnknownMessage,
    RateLimited,
    /// The model failed (after retries): a `done` with `status: "failed"` follows.
    LlmUnavailable,
    /// The model stayed silent or ran past the answer's deadline: `done` (`failed`) follows.
    LlmTimeout,
    /// The model's answer passed the token cap and was cut: `done` (`failed`) follows.
    AnswerTooLong,
    /// The question could not be stored (the database is down); it was not acknowledged.
    StoreUnavailable,
    DuplicateInFlight,
    ShuttingDown,
    AttachmentRefused,
    /// An assessment window has turned the companion off for this course; the message says
    /// until when.
    CompanionPaused,
    Internal,
    /// A daily quota (tokens) or a learner's answers streaming at once.
    QuotaExceeded,
    /// The socket was quiet for `sockets.idle_timeout_secs`; it closes.
    IdleTimeout,
    /// The token expired after the socket opened; it closes. Reconnect with a fresh one.
    TokenExpired,
    /// The learner was erased; the socket closes.
    LearnerErased,
}

impl ServerFrame {
    pub fn error(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            id,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// An `error` frame for a rate or quota, with the seconds to wait.
    pub fn refused(
        id: Option<String>,
        code: ErrorCode,
        message: impl Into<String>,
        retry_after: Option<u64>,
    ) -> Self {
        Self::Error {
            id,
            code,
            message: message.into(),
            retry_after,
        }
    }
}

/// Reads a text frame, mapping every failure to the error frame the client gets.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, Box<ServerFrame>> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        refused(
            None,
            ErrorCode::BadJson,
            format!("frame is not valid JSON: {e}"),
        )
    })?;
    let id = value.get("id").and_then(|v| v.as_str()).map(str::to_string);
    let Some(kind) = value.get("type") else {
        return Err(refused(
            id,
            ErrorCode::MissingField,
            "frame has no `type` field",
        ));
    };
    let Some(kind) = kind.as_str() else {
        return Err(refused(
            id,
            ErrorCode::InvalidField,
            "`type` must be a string",
        ));
    };
    let kind = kind.to_string();
    if !matches!(
        kind.as_str(),
        "ask" | "cancel" | "resume" | "ping" | "feedback" | "request_mentor" | "attach"
    ) {
        return Err(refused(
            id,
            ErrorCode::UnknownType,
            format!(
                "unknown frame type {kind:?}; expected ask, cancel, resume, ping, feedback, request_mentor or attach"
            ),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        let message = e.to_string();
        let code = if message.starts_with("missing field") {
            ErrorCode::MissingField
        } else {
            ErrorCode::InvalidField
        };
        refused(id, code, format!("{kind} frame: {message}"))
    })
}

/// The error frame for a refused client frame, boxed: it travels in `Err` and is large.
fn refused(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Box<ServerFrame> {
    Box::new(ServerFrame::error(id, code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_frame_parses_with_or_without_its_last_seq() {
        let frame = parse_client_frame(
            r#"{"type":"resume","id":"c1","conversation":"v","message_id":"q","last_seq":4}"#,
        )
        .unwrap();
        assert_eq!(
            frame,
            ClientFrame::Resume {
                id: "c1".into(),
                conversation: "v".into(),
                message_id: "q".into(),
                last_seq: Some(4),
            }
        );
        let first = parse_client_frame(
            r#"{"type":"resume","id":"c1","conversation":"v","message_id":"q"}"#,
        )
        .unwrap();
        assert!(matches!(first, ClientFrame::Resume { last_seq: None, .. }));
    }

    #[test]
    fn an_ask_frame_parses_with_its_optional_page() {
        let frame = parse_client_frame(
            r#"{"type":"ask","id":"c1","text":"hi","page":{"url":"/course/x"}}"#,
        )
        .unwrap();
        assert_eq!(
            frame,
            ClientFrame::Ask {
                id: "c1".into(),
                text: "hi".into(),
                page: Some(PageInfo {
                    url: Some("/course/x".into()),
                    title: None
                }),
                course: None
            }
        );
    }

    fn code_of(text: &str) -> ErrorCode {
        match *parse_client_frame(text).unwrap_err() {
            ServerFrame::Error { code, .. } => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_frames_get_stable_codes() {
        assert_eq!(code_of("{not json"), ErrorCode::BadJson);
        assert_eq!(code_of(r#"{"id":"x"}"#), ErrorCode::MissingField);
        assert_eq!(code_of(r#"{"type":"shout"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code_of(r#"{"type":"ask","id":"x"}"#),
            ErrorCode::MissingField
        );
        assert_eq!(
            code_of(r#"{"type":"ask","id":"x","text":3}"#),
            ErrorCode::InvalidField
        );
    }

    #[test]
    fn feedback_and_mentor_request_frames_parse() {
        assert_eq!(
            parse_client_frame(r#"{"type":"feedback","message_id":"m1","rating":"down"}"#).unwrap(),
            ClientFrame::Feedback {
                message_id: "m1".into(),
                rating: Rating::Down,
                comment: None
            }
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"request_mentor"}"#).unwrap(),
            ClientFrame::RequestMentor { text: None }
        );
        assert_eq!(
            code_of(r#"{"type":"feedback","message_id":"m1","rating":"meh"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code_of(r#"{"type":"feedback","rating":"up"}"#),
            ErrorCode::MissingField
        );
    }

    #[test]
    fn attach_frames_parse_as_named_files_or_pasted_snippets() {
        assert_eq!(
            parse_client_frame(
                r#"{"type":"attach","id":"a1","name":"budget.py","content":"x = 1","project":"budget-tracker"}"#
            )
            .unwrap(),
            ClientFrame::Attach {
                id: Some("a1".into()),
                name: Some("budget.py".into()),
                content: "x = 1".into(),
                project: Some("budget-tracker".into()),
            }
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"attach","content":"print(1)"}"#).unwrap(),
            ClientFrame::Attach {
                id: None,
                name: None,
                content: "print(1)".into(),
                project: None,
            }
        );
        assert_eq!(
            code_of(r#"{"type":"attach","name":"a.py"}"#),
            ErrorCode::MissingField
        );
        assert_eq!(
            code_of(r#"{"type":"attach","content":"x","path":"a.py"}"#),
            ErrorCode::InvalidField
        );
    }

    #[test]
    fn every_server_frame_reads_back_as_it_was_written() {
        let frames = [
            ServerFrame::Ready {
                protocol: PROTOCOL_VERSION,
                conversation_id: "conv".into(),
                learner: LearnerInfo {
                    id: "ada".into(),
                    name: "Ada".into(),
                    locale: Some("fr".into()),
                },
            },
            ServerFrame::Ack {
                id: "c1".into(),
                message_id: "m1".into(),
                duplicate: true,
            },
            ServerFrame::Sources {
                id: "c1".into(),
                sources: vec![SourceRef {
                    n: 1,
                    title: "Loops".into(),
                    section: "While".into(),
                    url: "/course/x".into(),
                    snippet: "a while loop".into(),
                }],
            },
            ServerFrame::Delta {
                id: "c1".into(),
                seq: 3,
                text: "hi".into(),
            },
            ServerFrame::Done {
                id: "c1".into(),
                message_id: "m2".into(),
                status: "complete".into(),
                offline: false,
                replayed: true,
                model: "fake-model".into(),
                usage: Usage {
                    tokens_in: 321,
                    tokens_out: 4,
                },
                timings: Timings {
                    retrieval_ms: 1,
                    first_token_ms: None,
                    total_ms: 9,
                },
                guard: None,
                retrieval: RetrievalStatus::Unavailable,
            },
            ServerFrame::Pong { nonce: None },
            ServerFrame::Pong {
                nonce: Some("n1".into()),
            },
            ServerFrame::FeedbackSaved {
                message_id: "m2".into(),
                rating: Rating::Up,
            },
            ServerFrame::MentorRequested {
                flag_id: "f1".into(),
            },
            ServerFrame::Attached {
                id: Some("a1".into()),
                name: None,
                bytes: 5,
                stored: false,
                project: None,
                path: None,
            },
            ServerFrame::error(Some("c1".into()), ErrorCode::QuestionTooLong, "too long"),
        ];
        for frame in frames {
            let text = serde_json::to_string(&frame).unwrap();
            let back: ServerFrame = serde_json::from_str(&text).unwrap();
            assert_eq!(back, frame, "{text}");
        }
    }

    #[test]
    fn client_frames_written_in_rust_parse_as_the_server_reads_them() {
        let frames = [
            ClientFrame::Ask {
                id: "c1".into(),
                text: "hi".into(),
                page: None,
                course: Some("python-foundations".into()),
            },
            ClientFrame::Cancel { id: "c1".into() },
            ClientFrame::Ping { nonce: None },
            ClientFrame::Feedback {
                message_id: "m1".into(),
                rating: Rating::Down,
                comment: Some("unclear".into()),
            },
            ClientFrame::RequestMentor { text: None },
            ClientFrame::Attach {
                id: None,
                name: Some("a.py".into()),
                content: "x = 1".into(),
                project: None,
            },
        ];
        for frame in frames {
            let text = serde_json::to_string(&frame).unwrap();
            assert!(!text.contains("null"), "{text}");
            assert_eq!(parse_client_frame(&text).unwrap(), frame, "{text}");
        }
    }

    #[test]
    fn server_frames_serialise_with_their_type_tag() {
        let json = serde_json::to_value(ServerFrame::Delta {
            id: "c1".into(),
            seq: 2,
            text: "hi".into(),
        })
        .unwrap();
        assert_eq!(json["type"], "delta");
        assert_eq!(json["seq"], 2);
    }

    /// Whatever a client sends, the decoder answers a frame or a clear error, never a panic.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A refusal: an `error` frame with a message that says what failed, in lower case.
        fn is_clear_error(frame: &ServerFrame) -> bool {
            matches!(frame, ServerFrame::Error { message, .. }
                if !message.is_empty() && !message.starts_with(char::is_uppercase))
        }

        fn json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                "\\PC{0,16}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("type".to_string()),
                            Just("id".to_string()),
                            Just("text".to_string()),
                            Just("page".to_string()),
                            Just("rating".to_string()),
                            Just("message_id".to_string()),
                            Just("content".to_string()),
                            "[a-z_]{1,8}",
                        ],
                        inner,
                        0..6,
                    )
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_text_is_a_frame_or_a_clear_error(text in "\\PC{0,200}") {
                if let Err(error) = parse_client_frame(&text) {
                    prop_assert!(is_clear_error(&error), "{:?}", error);
                }
            }

            #[test]
            fn arbitrary_bytes_read_as_text_are_a_frame_or_a_clear_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                if let Err(error) = parse_client_frame(&String::from_utf8_lossy(&bytes)) {
                    prop_assert!(is_clear_error(&error), "{:?}", error);
                }
            }

            #[test]
            fn arbitrary_json_of_every_frame_type_is_a_frame_or_a_clear_error(
                mut value in json(),
                kind in prop_oneof![
                    Just("ask"), Just("cancel"), Just("ping"), Just("feedback"),
                    Just("request_mentor"), Just("attach"), Just("shout"),
                ],
                tag in any::<bool>(),
            ) {
                if tag && let serde_json::Value::Object(map) = &mut value {
                    map.insert("type".into(), kind.into());
                }
                match parse_client_frame(&value.to_string()) {
                    // What parses is what the client's own serialiser writes back.
                    Ok(frame) => {
                        let again = parse_client_frame(&serde_json::to_string(&frame).unwrap());
                        prop_assert_eq!(again.ok(), Some(frame));
                    }
                    Err(error) => prop_assert!(is_clear_error(&error), "{:?}", error),
                }
            }
        }
    }
}
