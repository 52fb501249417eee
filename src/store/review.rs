//! The mentor's review: feedback, flags, annotations, a learner's conversations and pages of
//! messages, search over `messages.search_text`, retention and a learner's review rows.
use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::Row;

use super::rows::{
    self, ANNOTATION_COLUMNS, FEEDBACK_COLUMNS, FLAG_COLUMNS, MESSAGE_COLUMNS, SESSION_COLUMNS,
};
use super::{Store, StoreError, search_text};
use crate::learner::MentorSession;
use crate::review::{
    Activity, Annotation, ConversationSummary, Cursor, Feedback, Flag, FlagCounts, FlagKind,
    LearnerActivity, MessagePage, PromptCitations, Severity,
};
use crate::transcript::{StoredMessage, now_ms};

/// `text` as a LIKE pattern matching it anywhere, with `\` as the escape character.
pub(crate) fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Learners per statement of the batched reads: within every backend's limit on bound values.
const LEARNERS_PER_QUERY: usize = 500;

/// Conversations the retention purge may remove: untouched since `$1`, and without an open
/// urgent flag (on the conversation or one of its messages), which the mentor still needs.
const PURGEABLE: &str = "SELECT c.id FROM conversations c WHERE c.updated_at < $1 \
     AND NOT EXISTS (SELECT 1 FROM flags f WHERE f.resolved_at IS NULL \
     AND f.severity = 'urgent' AND (f.conversation_id = c.id \
     OR f.message_id IN (SELECT m.id FROM messages m WHERE m.conversation_id = c.id)))";

/// `$from, $from+1, ...` for `n` bound values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// One message, whoever it belongs to (callers check access with its `learner_id`).
    pub async fn message(&self, id: &str) -> Result<Option<StoredMessage>, StoreError> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::message).transpose()
    }

    /// Records a rating, replacing the learner's earlier one on the same answer.
    pub async fn put_feedback(&self, f: &Feedback) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO feedback (id, message_id, learner_id, rating, comment, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (message_id, learner_id) DO UPDATE SET rating = excluded.rating, \
             comment = excluded.comment, created_at = excluded.created_at",
        )
        .bind(&f.id)
        .bind(&f.message_id)
        .bind(&f.learner_id)
        .bind(f.rating.as_str())
        .bind(&f.comment)
        .bind(f.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A learner's feedback created at or after `since_ms`, oldest first.
    pub async fn feedback_since(
        &self,
        learner_id: &str,
        since_ms: i64,
    ) -> Result<Vec<Feedback>, StoreError> {
        let sql = format!(
            "SELECT {FEEDBACK_COLUMNS} FROM feedback WHERE learner_id = $1 AND created_at >= $2 \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(learner_id)
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::feedback).collect()
    }

    /// Feedback on the messages of one conversation.
    pub async fn conversation_feedback(
        &self,
        conversation_id: &str,
    ) -> Result<Vec<Feedback>, StoreError> {
        let sql = format!(
            "SELECT {FEEDBACK_COLUMNS} FROM feedback WHERE message_id IN \
             (SELECT id FROM messages WHERE conversation_id = $1) ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(conversation_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::feedback).collect()
    }

    pub async fn add_flag(&self, f: &Flag) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO flags (id, learner_id, conversation_id, message_id, kind, severity, \
             reason, created_at, resolved_at, resolved_by, resolution, score) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&f.id)
        .bind(&f.learner_id)
        .bind(&f.conversation_id)
        .bind(&f.message_id)
        .bind(f.kind.as_str())
        .bind(f.severity.as_str())
        .bind(&f.reason)
        .bind(f.created_at)
        .bind(f.resolved_at)
        .bind(&f.resolved_by)
        .bind(&f.resolution)
        .bind(f.score)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Raises `flag` with its message as its first signal, or, when the learner already has an
    /// open flag of its kind at least as severe, adds the message to that one instead (the
    /// mentor sees one flag with its signals, not a stack). The flag raised, if one was.
    ///
    /// Race-free: the new flag carries its group (`<kind>:<severity>`, migration 0017) and a
    /// learner has at most one open flag per group, so of two messages read at the same moment
    /// one raises the flag and the other, its insert refused, joins it. On SQLite the write
    /// transaction alone serialises them; on PostgreSQL the unique index does.
    pub async fn raise_or_join_flag(
        &self,
        flag: &Flag,
        message_id: Option<&str>,
    ) -> Result<Option<Flag>, StoreError> {
        let group = format!("{}:{}", flag.kind.as_str(), flag.severity.as_str());
        let mut tx = self.begin_write().await?;
        let open_sql = format!(
            "SELECT {FLAG_COLUMNS} FROM flags WHERE learner_id = $1 AND kind = $2 \
             AND resolved_at IS NULL ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        let open = sqlx::query(sqlx::AssertSqlSafe(open_sql))
            .bind(&flag.learner_id)
            .bind(flag.kind.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(rows::flag)
            .transpose()?
            .filter(|open| open.severity >= flag.severity);
        let (target, raised) = match open {
            Some(open) => (open, false),
            None => {
                let inserted = sqlx::query(
                    "INSERT INTO flags (id, learner_id, conversation_id, message_id, kind, \
                     severity, reason, created_at, score, group_key) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
                )
                .bind(&flag.id)
                .bind(&flag.learner_id)
                .bind(&flag.conversation_id)
                .bind(&flag.message_id)
                .bind(flag.kind.as_str())
                .bind(flag.severity.as_str())
                .bind(&flag.reason)
                .bind(flag.created_at)
                .bind(flag.score)
                .bind(&group)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 1 {
                    (flag.clone(), true)
                } else {
                    // Another message of the same moment raised it first: join that one.
                    let sql = format!(
                        "SELECT {FLAG_COLUMNS} FROM flags WHERE learner_id = $1 \
                         AND group_key = $2 AND resolved_at IS NULL"
                    );
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&flag.learner_id)
                        .bind(&group)
                        .fetch_one(&mut *tx)
                        .await?;
                    (rows::flag(&row)?, false)
                }
            }
        };
        sqlx::query(
            "INSERT INTO flag_signals (id, flag_id, learner_id, message_id, kind, score, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&target.id)
        .bind(&target.learner_id)
        .bind(message_id)
        .bind(target.kind.as_str())
        .bind(flag.score)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if !raised && let Some(score) = flag.score {
            sqlx::query(
                "UPDATE flags SET score = $1 WHERE id = $2 AND (score IS NULL OR score < $1)",
            )
            .bind(score)
            .bind(&target.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(raised.then(|| Flag {
            signals: 1,
            ..flag.clone()
        }))
    }

    /// When the learner's signals of `kind` came, since `since_ms`, oldest first (the trend).
    pub async fn flag_signal_times(
        &self,
        learner_id: &str,
        kind: FlagKind,
        since_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT created_at FROM flag_signals WHERE learner_id = $1 AND kind = $2 \
             AND created_at >= $3 ORDER BY created_at",
        )
        .bind(learner_id)
        .bind(kind.as_str())
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get("created_at")?))
            .collect()
    }

    /// Whether an open flag of this kind already exists for the learner (and message, if given).
    pub async fn has_open_flag(
        &self,
        learner_id: &str,
        kind: FlagKind,
        message_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let row = match message_id {
            Some(message_id) => {
                sqlx::query(
                    "SELECT id FROM flags WHERE learner_id = $1 AND kind = $2 \
                     AND message_id = $3 AND resolved_at IS NULL LIMIT 1",
                )
                .bind(learner_id)
                .bind(kind.as_str())
                .bind(message_id)
                .fetch_optional(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT id FROM flags WHERE learner_id = $1 AND kind = $2 \
                     AND resolved_at IS NULL LIMIT 1",
                )
                .bind(learner_id)
                .bind(kind.as_str())
                .fetch_optional(&self.pool)
                .await?
            }
        };
        Ok(row.is_some())
    }

    pub async fn flag(&self, id: &str) -> Result<Option<Flag>, StoreError> {
        let sql = format!("SELECT {FLAG_COLUMNS} FROM flags WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::flag).transpose()
    }

    /// A learner's flags, newest first; only open ones with `open_only`.
    pub async fn flags(&self, learner_id: &str, open_only: bool) -> Result<Vec<Flag>, StoreError> {
        let open = if open_only {
            " AND resolved_at IS NULL"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {FLAG_COLUMNS} FROM flags WHERE learner_id = $1{open} \
             ORDER BY created_at DESC, id DESC"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(learner_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::flag).collect()
    }

    /// Open flags per learner, for those of `learner_ids`.
    pub async fn open_flag_counts(
        &self,
        learner_ids: &[String],
    ) -> Result<HashMap<String, FlagCounts>, StoreError> {
        let mut counts: HashMap<String, FlagCounts> = HashMap::new();
        if learner_ids.is_empty() {
            return Ok(counts);
        }
        let sql = format!(
            "SELECT learner_id, severity, COUNT(*) AS n FROM flags \
             WHERE resolved_at IS NULL AND learner_id IN ({}) GROUP BY learner_id, severity",
            placeholders(1, learner_ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in learner_ids {
            query = query.bind(id);
        }
        for row in query.fetch_all(&self.pool).await? {
            let learner: String = row.try_get("learner_id")?;
            let severity: Severity = rows::enum_column(&row, "severity")?;
            let n: i64 = row.try_get("n")?;
            let entry = counts.entry(learner).or_default();
            entry.open += n as u64;
            if severity == Severity::Urgent {
                entry.urgent += n as u64;
            }
        }
        Ok(counts)
    }

    /// Marks a flag resolved; false when it was already resolved or does not exist.
    pub async fn resolve_flag(
        &self,
        id: &str,
        resolved_by: &str,
        resolution: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE flags SET resolved_at = $1, resolved_by = $2, resolution = $3 \
             WHERE id = $4 AND resolved_at IS NULL",
        )
        .bind(now_ms())
        .bind(resolved_by)
        .bind(resolution)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn add_annotation(&self, a: &Annotation) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO annotations (id, message_id, learner_id, author_id, kind, text, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&a.id)
        .bind(&a.message_id)
        .bind(&a.learner_id)
        .bind(&a.author_id)
        .bind(a.kind.as_str())
        .bind(&a.text)
        .bind(a.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Annotations on the messages of one conversation, oldest first.
    pub async fn conversation_annotations(
        &self,
        conversation_id: &str,
    ) -> Result<Vec<Annotation>, StoreError> {
        let sql = format!(
            "SELECT {ANNOTATION_COLUMNS} FROM annotations WHERE message_id IN \
             (SELECT id FROM messages WHERE conversation_id = $1) ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(conversation_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::annotation).collect()
    }

    /// Annotations on the messages of a learner, oldest first.
    pub async fn learner_annotations(
        &self,
        learner_id: &str,
    ) -> Result<Vec<Annotation>, StoreError> {
        let sql = format!(
            "SELECT {ANNOTATION_COLUMNS} FROM annotations WHERE learner_id = $1 \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(learner_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::annotation).collect()
    }

    /// A page of a learner's conversations, most recently active first, after `after`.
    pub async fn learner_conversations_page(
        &self,
        learner_id: &str,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<(Vec<ConversationSummary>, Option<Cursor>), StoreError> {
        let limit = limit.max(1);
        let fetch = (limit + 1) as i64;
        let columns = "c.id, c.learner_id, c.course_id, c.created_at, c.updated_at, \
             (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n_messages, \
             (SELECT q.text FROM messages q WHERE q.conversation_id = c.id AND q.role = 'learner' \
              ORDER BY q.created_at, q.id LIMIT 1) AS first_question";
        let rows = match after {
            None => {
                let sql = format!(
                    "SELECT {columns} FROM conversations c WHERE c.learner_id = $1 \
                     ORDER BY c.updated_at DESC, c.id LIMIT $2"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(learner_id)
                    .bind(fetch)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(cursor) => {
                let sql = format!(
                    "SELECT {columns} FROM conversations c WHERE c.learner_id = $1 \
                     AND (c.updated_at < $2 OR (c.updated_at = $2 AND c.id > $3)) \
                     ORDER BY c.updated_at DESC, c.id LIMIT $4"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(learner_id)
                    .bind(cursor.created_at)
                    .bind(&cursor.id)
                    .bind(fetch)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut conversations = rows
            .iter()
            .map(rows::conversation_summary)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if conversations.len() > limit {
            conversations.truncate(limit);
            conversations.last().map(|c| Cursor {
                created_at: c.updated_at,
                id: c.id.clone(),
            })
        } else {
            None
        };
        Ok((conversations, next))
    }

    /// The newest `limit` of a learner's messages created at or after `since_ms`, oldest
    /// first.
    pub async fn latest_learner_messages(
        &self,
        learner_id: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE learner_id = $1 AND created_at >= $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(learner_id)
            .bind(since_ms)
            .bind(limit.max(1) as i64)
            .fetch_all(&self.pool)
            .await?;
        let mut messages = rows
            .iter()
            .map(rows::message)
            .collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        Ok(messages)
    }

    /// The latest mentor session of each of `learner_ids` that has one (latest as
    /// `LearnerStore::mentor_sessions` orders them), one query per 500 learners.
    pub async fn latest_sessions(
        &self,
        learner_ids: &[String],
    ) -> Result<HashMap<String, MentorSession>, StoreError> {
        let mut latest = HashMap::new();
        for ids in learner_ids.chunks(LEARNERS_PER_QUERY) {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM (SELECT {SESSION_COLUMNS}, ROW_NUMBER() OVER \
                 (PARTITION BY learner_id ORDER BY held_on DESC, created_at DESC, id DESC) AS rn \
                 FROM mentor_sessions WHERE learner_id IN ({})) ranked WHERE rn = 1",
                placeholders(1, ids.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in ids {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                let session = rows::session(&row)?;
                latest.insert(session.learner_id.clone(), session);
            }
        }
        Ok(latest)
    }

    /// Questions asked and the newest message's time, per learner, each since their own time;
    /// one query per 500 learners.
    pub async fn activity_since(
        &self,
        since: &[(String, i64)],
    ) -> Result<HashMap<String, Activity>, StoreError> {
        let mut activity = HashMap::new();
        for part in since.chunks(LEARNERS_PER_QUERY) {
            let clauses: Vec<String> = (0..part.len())
                .map(|i| {
                    format!(
                        "(learner_id = ${} AND created_at >= ${})",
                        2 * i + 1,
                        2 * i + 2
                    )
                })
                .collect();
            let sql = format!(
                "SELECT learner_id, COUNT(CASE WHEN role = 'learner' THEN 1 END) AS questions, \
                 MAX(created_at) AS last_at FROM messages WHERE {} GROUP BY learner_id",
                clauses.join(" OR ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, since_ms) in part {
                query = query.bind(id).bind(*since_ms);
            }
            for row in query.fetch_all(&self.pool).await? {
                let learner: String = row.try_get("learner_id")?;
                let questions: i64 = row.try_get("questions")?;
                let last_at: Option<i64> = row.try_get("last_at")?;
                activity.insert(
                    learner,
                    Activity {
                        questions: questions.max(0) as u64,
                        last_at,
                    },
                );
            }
        }
        Ok(activity)
    }

    /// A learner's conversations, most recently active first.
    pub async fn learner_conversations(
        &self,
        learner_id: &str,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.id, c.learner_id, c.course_id, c.created_at, c.updated_at, \
             (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n_messages, \
             (SELECT q.text FROM messages q WHERE q.conversation_id = c.id AND q.role = 'learner' \
              ORDER BY q.created_at, q.id LIMIT 1) AS first_question \
             FROM conversations c WHERE c.learner_id = $1 ORDER BY c.updated_at DESC, c.id",
        )
        .bind(learner_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::conversation_summary).collect()
    }

    /// Up to `limit` of a learner's messages created at or after `since_ms`, after `after`.
    pub async fn learner_messages(
        &self,
        learner_id: &str,
        since_ms: i64,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        let limit = limit.max(1);
        // One more than asked tells whether a next page exists.
        let fetch = (limit + 1) as i64;
        let rows = match after {
            None => {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE learner_id = $1 \
                     AND created_at >= $2 ORDER BY created_at, id LIMIT $3"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(learner_id)
                    .bind(since_ms)
                    .bind(fetch)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(cursor) => {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE learner_id = $1 \
                     AND created_at >= $2 AND (created_at > $3 OR (created_at = $3 AND id > $4)) \
                     ORDER BY created_at, id LIMIT $5"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(learner_id)
                    .bind(since_ms)
                    .bind(cursor.created_at)
                    .bind(&cursor.id)
                    .bind(fetch)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let messages = rows
            .iter()
            .map(rows::message)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MessagePage::of(messages, limit))
    }

    /// Messages containing every term (case-insensitive substring), newest first, of the given
    /// learners (all learners with `None`).
    pub async fn search(
        &self,
        learner_ids: Option<&[String]>,
        terms: &[String],
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if terms.is_empty() || learner_ids.is_some_and(|ids| ids.is_empty()) {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<String> = (1..=terms.len())
            .map(|i| format!("COALESCE(search_text, lower(text)) LIKE ${i} ESCAPE '\\'"))
            .collect();
        if let Some(ids) = learner_ids {
            clauses.push(format!(
                "learner_id IN ({})",
                placeholders(terms.len() + 1, ids.len())
            ));
        }
        let n_bound = terms.len() + learner_ids.map_or(0, <[String]>::len);
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE {} ORDER BY created_at DESC, id DESC \
             LIMIT ${}",
            clauses.join(" AND "),
            n_bound + 1
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for term in terms {
            query = query.bind(like_pattern(&search_text(term)));
        }
        for id in learner_ids.unwrap_or_default() {
            query = query.bind(id);
        }
        let rows = query.bind(limit as i64).fetch_all(&self.pool).await?;
        rows.iter().map(rows::message).collect()
    }

    /// Removes conversations (and everything hanging off them) not updated since `cutoff_ms`,
    /// except those with an open urgent flag; returns how many conversations went.
    pub async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let old_messages =
            format!("SELECT id FROM messages WHERE conversation_id IN ({PURGEABLE})");
        let mut tx = self.begin_write().await?;
        for table in ["annotations", "feedback", "flags"] {
            let sql = format!("DELETE FROM {table} WHERE message_id IN ({old_messages})");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await?;
        }
        for table in ["flags", "messages"] {
            let sql = format!("DELETE FROM {table} WHERE conversation_id IN ({PURGEABLE})");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await?;
        }
        let sql = format!("DELETE FROM conversations WHERE id IN ({PURGEABLE})");
        let purged = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(purged)
    }

    /// Removes a learner's feedback, flags and annotations.
    pub async fn delete_learner_review(&self, learner_id: &str) -> Result<u64, StoreError> {
        let statements = [
            "DELETE FROM annotations WHERE learner_id = $1",
            "DELETE FROM feedback WHERE learner_id = $1",
            "DELETE FROM flag_signals WHERE learner_id = $1",
            "DELETE FROM flags WHERE learner_id = $1",
        ];
        self.execute_all(&statements, learner_id).await
    }
}

#[async_trait]
impl LearnerActivity for Store {
    async fn learner_messages(
        &self,
        learner_id: &str,
        since_ms: i64,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        Store::learner_messages(self, learner_id, since_ms, after, limit).await
    }

    async fn feedback_since(
        &self,
        learner_id: &str,
        since_ms: i64,
    ) -> Result<Vec<Feedback>, StoreError> {
        Store::feedback_since(self, learner_id, since_ms).await
    }

    async fn flags(&self, learner_id: &str, open_only: bool) -> Result<Vec<Flag>, StoreError> {
        Store::flags(self, learner_id, open_only).await
    }

    async fn latest_learner_messages(
        &self,
        learner_id: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Store::latest_learner_messages(self, learner_id, since_ms, limit).await
    }

    async fn latest_sessions(
        &self,
        learner_ids: &[String],
    ) -> Result<HashMap<String, MentorSession>, StoreError> {
        Store::latest_sessions(self, learner_ids).await
    }

    async fn activity_since(
        &self,
        since: &[(String, i64)],
    ) -> Result<HashMap<String, Activity>, StoreError> {
        Store::activity_since(self, since).await
    }
}

impl Store {
    /// Per prompt version, how the course's complete model answers written since `since_ms`
    /// cited their passages (the guard's report says `uncited`; an answer without passages has
    /// `sources` `[]`). Newest versions' rows are not favoured: ordered by version id.
    pub async fn prompt_citations(
        &self,
        course: &str,
        since_ms: i64,
    ) -> Result<Vec<PromptCitations>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.prompt_version AS version, CAST(COUNT(*) AS BIGINT) AS answers, \
             CAST(SUM(CASE WHEN m.sources IS NOT NULL AND m.sources <> '[]' THEN 1 ELSE 0 END) \
                 AS BIGINT) AS with_passages, \
             CAST(SUM(CASE WHEN m.guard LIKE '%\"uncited\":true%' THEN 1 ELSE 0 END) AS BIGINT) \
                 AS uncited \
             FROM messages m JOIN conversations c ON c.id = m.conversation_id \
             WHERE c.course_id = $1 AND m.role = 'assistant' AND m.status = 'complete' \
             AND m.offline = 0 AND m.prompt_version IS NOT NULL AND m.created_at >= $2 \
             GROUP BY m.prompt_version ORDER BY m.prompt_version",
        )
        .bind(course)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        let count = super::rows::count;
        rows.iter()
            .map(|row| {
                Ok(PromptCitations {
                    prompt_version: row.try_get("version")?,
                    answers: count(row, "answers")?,
                    with_passages: count(row, "with_passages")?,
                    uncited: count(row, "uncited")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_the_wildcards() {
        assert_eq!(like_pattern("100%_a\\b"), "%100\\%\\_a\\\\b%");
        assert_eq!(placeholders(3, 2), "$3, $4");
    }
}
