//! Row mapping: each stored row into its domain type. Enum columns are decoded strictly (an
//! unknown word is a [`StoreError::Decode`] naming the column), JSON columns likewise.
use std::str::FromStr;

use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::StoreError;
use crate::learner::{LearnerProfile, MentorSession, ProjectFile};
use crate::review::{Annotation, ConversationSummary, Feedback, Flag};
use crate::transcript::{Conversation, SourceRef, StoredMessage};

pub(super) const MESSAGE_COLUMNS: &str = "id, conversation_id, learner_id, client_id, role, text, \
    status, reply_to, sources, prompt_version, model, offline, tokens_in, tokens_out, \
    retrieval_ms, first_token_ms, total_ms, page_url, created_at, guard, retrieval, failure, \
    delta_ends";
pub(super) const LEARNER_COLUMNS: &str = "id, name, locale, program, course_id, chapter, project, \
    chapters_completed, mentor_id, mentor_name, updated_at";
pub(super) const SESSION_COLUMNS: &str =
    "id, learner_id, mentor_id, held_on, notes, goals, created_at";
pub(super) const FILE_COLUMNS: &str =
    "learner_id, project, path, content, sha256, bytes, origin, updated_at";
/// Read `FROM flags` (unaliased): the signals grouped under a flag are counted.
pub(super) const FLAG_COLUMNS: &str = "id, learner_id, conversation_id, message_id, kind, \
    severity, reason, score, created_at, resolved_at, resolved_by, resolution, \
    (SELECT COUNT(*) FROM flag_signals s WHERE s.flag_id = flags.id) AS signals";
pub(super) const FEEDBACK_COLUMNS: &str = "id, message_id, learner_id, rating, comment, created_at";
pub(super) const ANNOTATION_COLUMNS: &str =
    "id, message_id, learner_id, author_id, kind, text, created_at";

/// As [`enum_column`] for a column that may be NULL.
pub(super) fn optional_enum_column<T: FromStr>(
    row: &AnyRow,
    column: &'static str,
) -> Result<Option<T>, StoreError> {
    let value: Option<String> = row.try_get(column)?;
    value
        .map(|value| {
            value
                .parse()
                .map_err(|_| StoreError::Decode { column, value })
        })
        .transpose()
}

/// The enum stored as a word in `column`.
pub(super) fn enum_column<T: FromStr>(row: &AnyRow, column: &'static str) -> Result<T, StoreError> {
    let value: String = row.try_get(column)?;
    value
        .parse()
        .map_err(|_| StoreError::Decode { column, value })
}

fn json_column<T: DeserializeOwned>(text: &str, column: &'static str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Json { column, source })
}

/// A `COUNT`/`SUM` column as a count: `NULL` (a `SUM` over no rows) is 0.
pub(super) fn count(row: &AnyRow, column: &str) -> Result<u64, StoreError> {
    let value: Option<i64> = row.try_get(column)?;
    Ok(value.unwrap_or(0).max(0) as u64)
}

/// `value` as stored in a JSON column.
pub(super) fn to_json(value: &impl serde::Serialize) -> String {
    // Lists of strings and of plain structs always serialise.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_string())
}

pub(super) fn message(row: &AnyRow) -> Result<StoredMessage, StoreError> {
    let sources: Option<String> = row.try_get("sources")?;
    let sources: Vec<SourceRef> = match sources {
        Some(json) if !json.is_empty() => json_column(&json, "sources")?,
        _ => Vec::new(),
    };
    // An INTEGER column reads as i32 on PostgreSQL and as i64 on SQLite.
    let offline: i64 = row
        .try_get::<i32, _>("offline")
        .map(i64::from)
        .or_else(|_| row.try_get::<i64, _>("offline"))?;
    Ok(StoredMessage {
        id: row.try_get("id")?,
        conversation_id: row.try_get("conversation_id")?,
        learner_id: row.try_get("learner_id")?,
        client_id: row.try_get("client_id")?,
        role: row.try_get("role")?,
        text: row.try_get("text")?,
        status: enum_column(row, "status")?,
        reply_to: row.try_get("reply_to")?,
        sources,
        prompt_version: row.try_get("prompt_version")?,
        model: row.try_get("model")?,
        offline: offline != 0,
        tokens_in: row.try_get("tokens_in")?,
        tokens_out: row.try_get("tokens_out")?,
        retrieval_ms: row.try_get("retrieval_ms")?,
        first_token_ms: row.try_get("first_token_ms")?,
        total_ms: row.try_get("total_ms")?,
        page_url: row.try_get("page_url")?,
        created_at: row.try_get("created_at")?,
        guard: match row.try_get::<Option<String>, _>("guard")? {
            Some(json) if !json.is_empty() => Some(json_column(&json, "guard")?),
            _ => None,
        },
        retrieval: optional_enum_column(row, "retrieval")?,
        failure: row.try_get("failure")?,
        delta_ends: match row.try_get::<Option<String>, _>("delta_ends")? {
            Some(json) if !json.is_empty() => json_column(&json, "delta_ends")?,
            _ => Vec::new(),
        },
    })
}

pub(super) fn conversation(row: &AnyRow) -> Result<Conversation, StoreError> {
    Ok(Conversation {
        id: row.try_get("id")?,
        learner_id: row.try_get("learner_id")?,
        course_id: row.try_get("course_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn learner(row: &AnyRow) -> Result<LearnerProfile, StoreError> {
    let completed: String = row.try_get("chapters_completed")?;
    Ok(LearnerProfile {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        locale: row.try_get("locale")?,
        program: row.try_get("program")?,
        course: row.try_get("course_id")?,
        chapter: row.try_get("chapter")?,
        project: row.try_get("project")?,
        chapters_completed: json_column(&completed, "chapters_completed")?,
        mentor_id: row.try_get("mentor_id")?,
        mentor_name: row.try_get("mentor_name")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn session(row: &AnyRow) -> Result<MentorSession, StoreError> {
    let goals: String = row.try_get("goals")?;
    Ok(MentorSession {
        id: row.try_get("id")?,
        learner_id: row.try_get("learner_id")?,
        mentor_id: row.try_get("mentor_id")?,
        held_on: row.try_get("held_on")?,
        notes: row.try_get("notes")?,
        goals: json_column(&goals, "goals")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn file(row: &AnyRow) -> Result<ProjectFile, StoreError> {
    Ok(ProjectFile {
        learner_id: row.try_get("learner_id")?,
        project: row.try_get("project")?,
        path: row.try_get("path")?,
        content: row.try_get("content")?,
        sha256: row.try_get("sha256")?,
        bytes: row.try_get("bytes")?,
        origin: row.try_get("origin")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn flag(row: &AnyRow) -> Result<Flag, StoreError> {
    Ok(Flag {
        id: row.try_get("id")?,
        learner_id: row.try_get("learner_id")?,
        conversation_id: row.try_get("conversation_id")?,
        message_id: row.try_get("message_id")?,
        kind: enum_column(row, "kind")?,
        severity: enum_column(row, "severity")?,
        reason: row.try_get("reason")?,
        score: row.try_get("score")?,
        signals: row.try_get("signals")?,
        created_at: row.try_get("created_at")?,
        resolved_at: row.try_get("resolved_at")?,
        resolved_by: row.try_get("resolved_by")?,
        resolution: row.try_get("resolution")?,
    })
}

pub(super) fn feedback(row: &AnyRow) -> Result<Feedback, StoreError> {
    Ok(Feedback {
        id: row.try_get("id")?,
        message_id: row.try_get("message_id")?,
        learner_id: row.try_get("learner_id")?,
        rating: enum_column(row, "rating")?,
        comment: row.try_get("comment")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn annotation(row: &AnyRow) -> Result<Annotation, StoreError> {
    Ok(Annotation {
        id: row.try_get("id")?,
        message_id: row.try_get("message_id")?,
        learner_id: row.try_get("learner_id")?,
        author_id: row.try_get("author_id")?,
        kind: enum_column(row, "kind")?,
        text: row.try_get("text")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn conversation_summary(row: &AnyRow) -> Result<ConversationSummary, StoreError> {
    Ok(ConversationSummary {
        id: row.try_get("id")?,
        learner_id: row.try_get("learner_id")?,
        course_id: row.try_get("course_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        n_messages: row.try_get("n_messages")?,
        first_question: row.try_get("first_question")?,
    })
}
