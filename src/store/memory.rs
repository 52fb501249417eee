//! An in-memory stand-in for [`super::Store`] in unit tests, behind the seams a turn and the
//! digest read and write through. It keeps the rules callers rely on: a client id is used once
//! per learner, a checkpoint changes only an answer still `streaming`, pages come in
//! (created_at, id) order, sessions latest first, files by path.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::StoreError;
use std::collections::HashMap;

use crate::learner::{LearnerProfile, LearnerStore, MentorSession, ProjectFile};
use crate::review::{Activity, Cursor, Feedback, Flag, LearnerActivity, MessagePage};
use crate::transcript::{
    AnswerRecord, Conversation, MessageStatus, NewQuestion, QuestionInsert, StoredMessage,
    TranscriptStore, now_ms,
};

#[derive(Default)]
pub(crate) struct Memory {
    tables: Mutex<Tables>,
    /// Faults to inject, and what was read: for the tests of what a turn survives and costs.
    pub(crate) faults: Faults,
    /// Message rows returned by the transcript reads, in all.
    rows_read: AtomicUsize,
    /// Calls made through the seams, in all (each one a query of the real store).
    calls: AtomicUsize,
}

/// Writes that fail on purpose, as a database that is down or failing over would fail them.
#[derive(Default)]
pub(crate) struct Faults {
    /// This many of the next checkpoints fail.
    pub(crate) checkpoints: AtomicUsize,
    /// This many of the next final writes of an answer fail.
    pub(crate) finishes: AtomicUsize,
    /// Checkpoints attempted, failed or not.
    pub(crate) checkpoint_attempts: AtomicUsize,
}

/// Takes one from `counter` if it is positive: true when this call should fail.
fn take_fault(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn injected() -> StoreError {
    StoreError::Database(sqlx::Error::PoolTimedOut)
}

#[derive(Default)]
struct Tables {
    conversations: Vec<Conversation>,
    /// In the order they were written.
    messages: Vec<StoredMessage>,
    learners: Vec<LearnerProfile>,
    sessions: Vec<MentorSession>,
    files: Vec<ProjectFile>,
    feedback: Vec<Feedback>,
    flags: Vec<Flag>,
    /// Answer id → when its node last said it was writing it.
    heartbeats: HashMap<String, i64>,
}

impl Memory {
    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Message rows the transcript reads have returned so far.
    pub(crate) fn rows_read(&self) -> usize {
        self.rows_read.load(Ordering::SeqCst)
    }

    /// Calls made through the seams so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn count_rows(&self, n: usize) {
        self.rows_read.fetch_add(n, Ordering::SeqCst);
    }

    /// Every message, in the order written.
    pub(crate) fn all_messages(&self) -> Vec<StoredMessage> {
        self.tables().messages.clone()
    }

    /// Writes a message as it is (its times included), as an earlier run would have left it.
    pub(crate) fn put_message(&self, message: StoredMessage) {
        self.tables().messages.push(message);
    }

    pub(crate) fn put_feedback(&self, feedback: Feedback) {
        self.tables().feedback.push(feedback);
    }

    pub(crate) fn add_flag(&self, flag: Flag) {
        self.tables().flags.push(flag);
    }
}

fn learner_message(q: &NewQuestion, now: i64) -> StoredMessage {
    StoredMessage {
        client_id: Some(q.client_id.clone()),
        page_url: q.page_url.clone(),
        ..StoredMessage::new(
            &q.id,
            &q.conversation_id,
            &q.learner_id,
            "learner",
            &q.text,
            now,
        )
    }
}

#[async_trait]
impl TranscriptStore for Memory {
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        Ok(self
            .tables()
            .conversations
            .iter()
            .find(|c| c.id == id)
            .cloned())
    }

    async fn insert_question(&self, q: &NewQuestion) -> Result<QuestionInsert, StoreError> {
        let now = now_ms();
        let mut tables = self.tables();
        let earlier = tables.messages.iter().find(|m| {
            m.learner_id == q.learner_id && m.client_id.as_deref() == Some(q.client_id.as_str())
        });
        if let Some(earlier) = earlier {
            return Ok(QuestionInsert::Duplicate {
                message_id: earlier.id.clone(),
                conversation_id: earlier.conversation_id.clone(),
            });
        }
        let foreign = tables
            .conversations
            .iter()
            .any(|c| c.id == q.conversation_id && c.learner_id != q.learner_id);
        if foreign {
            return Ok(QuestionInsert::ForeignConversation);
        }
        match tables
            .conversations
            .iter_mut()
            .find(|c| c.id == q.conversation_id)
        {
            Some(conversation) => conversation.updated_at = now,
            None => tables.conversations.push(Conversation {
                id: q.conversation_id.clone(),
                learner_id: q.learner_id.clone(),
                course_id: q.course_id.clone(),
                created_at: now,
                updated_at: now,
            }),
        }
        tables.messages.push(learner_message(q, now));
        Ok(QuestionInsert::Inserted)
    }

    async fn start_answer(
        &self,
        id: &str,
        question_id: &str,
        conversation_id: &str,
        learner_id: &str,
        _owner: &str,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables();
        tables.heartbeats.insert(id.into(), now_ms());
        tables.messages.push(StoredMessage {
            status: MessageStatus::Streaming,
            reply_to: Some(question_id.into()),
            ..StoredMessage::new(id, conversation_id, learner_id, "assistant", "", now_ms())
        });
        Ok(())
    }

    async fn checkpoint_answer(
        &self,
        id: &str,
        text: &str,
        delta_ends: &[usize],
    ) -> Result<(), StoreError> {
        self.faults
            .checkpoint_attempts
            .fetch_add(1, Ordering::SeqCst);
        if take_fault(&self.faults.checkpoints) {
            return Err(injected());
        }
        let mut guard = self.tables();
        let tables = &mut *guard;
        if let Some(m) = tables
            .messages
            .iter_mut()
            .find(|m| m.id == id && m.status == MessageStatus::Streaming)
        {
            m.text = text.to_string();
            m.delta_ends = delta_ends.to_vec();
            tables.heartbeats.insert(id.into(), now_ms());
        }
        Ok(())
    }

    async fn heartbeat_answer(&self, id: &str) -> Result<(), StoreError> {
        let mut tables = self.tables();
        let streaming = tables
            .messages
            .iter()
            .any(|m| m.id == id && m.status == MessageStatus::Streaming);
        if streaming {
            tables.heartbeats.insert(id.into(), now_ms());
        }
        Ok(())
    }

    async fn interrupt_if_stale(&self, id: &str, stale_before_ms: i64) -> Result<bool, StoreError> {
        let mut tables = self.tables();
        let heartbeat = tables.heartbeats.get(id).copied();
        let Some(m) = tables
            .messages
            .iter_mut()
            .find(|m| m.id == id && m.status == MessageStatus::Streaming)
        else {
            return Ok(false);
        };
        if heartbeat.unwrap_or(m.created_at) >= stale_before_ms {
            return Ok(false);
        }
        m.status = MessageStatus::Interrupted;
        Ok(true)
    }

    async fn finish_answer(
        &self,
        id: &str,
        status: MessageStatus,
        r: &AnswerRecord,
    ) -> Result<(), StoreError> {
        if take_fault(&self.faults.finishes) {
            return Err(injected());
        }
        let mut tables = self.tables();
        if let Some(m) = tables.messages.iter_mut().find(|m| m.id == id) {
            m.text = r.text.clone();
            m.status = status;
            m.sources = r.sources.clone();
            m.prompt_version = r.prompt_version.clone();
            m.model = r.model.clone();
            m.offline = r.offline;
            m.tokens_in = r.tokens_in;
            m.tokens_out = r.tokens_out;
            m.retrieval_ms = r.retrieval_ms;
            m.first_token_ms = r.first_token_ms;
            m.total_ms = r.total_ms;
            m.guard = r.guard.clone();
            m.retrieval = r.retrieval;
            m.failure = r.failure.clone();
            m.delta_ends = r.delta_ends.clone();
        }
        Ok(())
    }

    async fn answer_to(&self, question_id: &str) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self
            .tables()
            .messages
            .iter()
            .rev()
            .find(|m| m.reply_to.as_deref() == Some(question_id))
            .cloned())
    }

    async fn messages(&self, conversation_id: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let found: Vec<StoredMessage> = self
            .tables()
            .messages
            .iter()
            .filter(|m| m.conversation_id == conversation_id)
            .cloned()
            .collect();
        self.count_rows(found.len());
        Ok(found)
    }

    async fn recent_messages(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut found: Vec<StoredMessage> = self
            .tables()
            .messages
            .iter()
            .rev()
            .filter(|m| m.conversation_id == conversation_id)
            .take(limit)
            .cloned()
            .collect();
        found.reverse();
        self.count_rows(found.len());
        Ok(found)
    }
}

#[async_trait]
impl LearnerStore for Memory {
    async fn learner(&self, id: &str) -> Result<Option<LearnerProfile>, StoreError> {
        Ok(self.tables().learners.iter().find(|p| p.id == id).cloned())
    }

    async fn put_learner(&self, profile: &LearnerProfile) -> Result<(), StoreError> {
        let mut tables = self.tables();
        tables.learners.retain(|p| p.id != profile.id);
        tables.learners.push(LearnerProfile {
            updated_at: now_ms(),
            ..profile.clone()
        });
        Ok(())
    }

    async fn learners(&self, mentor_id: Option<&str>) -> Result<Vec<LearnerProfile>, StoreError> {
        let mut found: Vec<LearnerProfile> = self
            .tables()
            .learners
            .iter()
            .filter(|p| mentor_id.is_none() || p.mentor_id.as_deref() == mentor_id)
            .cloned()
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    async fn add_mentor_session(&self, session: &MentorSession) -> Result<(), StoreError> {
        self.tables().sessions.push(session.clone());
        Ok(())
    }

    async fn mentor_sessions(&self, learner_id: &str) -> Result<Vec<MentorSession>, StoreError> {
        let mut found: Vec<MentorSession> = self
            .tables()
            .sessions
            .iter()
            .filter(|s| s.learner_id == learner_id)
            .cloned()
            .collect();
        found.sort_by(|a, b| (&b.held_on, b.created_at).cmp(&(&a.held_on, a.created_at)));
        Ok(found)
    }

    async fn put_project_files(
        &self,
        learner_id: &str,
        project: &str,
        files: &[ProjectFile],
        replace_all: bool,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables();
        tables.files.retain(|f| {
            let same_project = f.learner_id == learner_id && f.project == project;
            !(same_project && (replace_all || files.iter().any(|new| new.path == f.path)))
        });
        tables.files.extend(files.iter().map(|f| ProjectFile {
            learner_id: learner_id.into(),
            project: project.into(),
            ..f.clone()
        }));
        Ok(())
    }

    async fn project_files(
        &self,
        learner_id: &str,
        project: Option<&str>,
    ) -> Result<Vec<ProjectFile>, StoreError> {
        let mut found: Vec<ProjectFile> = self
            .tables()
            .files
            .iter()
            .filter(|f| f.learner_id == learner_id && project.is_none_or(|p| f.project == p))
            .cloned()
            .collect();
        found.sort_by(|a, b| (&a.project, &a.path).cmp(&(&b.project, &b.path)));
        Ok(found)
    }

    async fn delete_project_file(
        &self,
        learner_id: &str,
        project: &str,
        path: &str,
    ) -> Result<bool, StoreError> {
        let mut tables = self.tables();
        let before = tables.files.len();
        tables
            .files
            .retain(|f| !(f.learner_id == learner_id && f.project == project && f.path == path));
        Ok(tables.files.len() < before)
    }

    async fn delete_learner(&self, learner_id: &str) -> Result<u64, StoreError> {
        let mut tables = self.tables();
        let before = tables.messages.len()
            + tables.conversations.len()
            + tables.files.len()
            + tables.sessions.len()
            + tables.learners.len();
        tables.messages.retain(|m| m.learner_id != learner_id);
        tables.conversations.retain(|c| c.learner_id != learner_id);
        tables.files.retain(|f| f.learner_id != learner_id);
        tables.sessions.retain(|s| s.learner_id != learner_id);
        tables.learners.retain(|p| p.id != learner_id);
        let after = tables.messages.len()
            + tables.conversations.len()
            + tables.files.len()
            + tables.sessions.len()
            + tables.learners.len();
        Ok((before - after) as u64)
    }
}

#[async_trait]
impl LearnerActivity for Memory {
    async fn learner_messages(
        &self,
        learner_id: &str,
        since_ms: i64,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        let limit = limit.max(1);
        let mut found: Vec<StoredMessage> = self
            .tables()
            .messages
            .iter()
            .filter(|m| m.learner_id == learner_id && m.created_at >= since_ms)
            .filter(|m| after.is_none_or(|c| (m.created_at, &m.id) > (c.created_at, &c.id)))
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        found.truncate(limit + 1);
        Ok(MessagePage::of(found, limit))
    }

    async fn feedback_since(
        &self,
        learner_id: &str,
        since_ms: i64,
    ) -> Result<Vec<Feedback>, StoreError> {
        let mut found: Vec<Feedback> = self
            .tables()
            .feedback
            .iter()
            .filter(|f| f.learner_id == learner_id && f.created_at >= since_ms)
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(found)
    }

    async fn flags(&self, learner_id: &str, open_only: bool) -> Result<Vec<Flag>, StoreError> {
        let mut found: Vec<Flag> = self
            .tables()
            .flags
            .iter()
            .filter(|f| f.learner_id == learner_id && (!open_only || f.is_open()))
            .cloned()
            .collect();
        found.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Ok(found)
    }

    async fn latest_learner_messages(
        &self,
        learner_id: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut found: Vec<StoredMessage> = self
            .tables()
            .messages
            .iter()
            .filter(|m| m.learner_id == learner_id && m.created_at >= since_ms)
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let found = found.split_off(found.len().saturating_sub(limit.max(1)));
        self.count_rows(found.len());
        Ok(found)
    }

    async fn latest_sessions(
        &self,
        learner_ids: &[String],
    ) -> Result<HashMap<String, MentorSession>, StoreError> {
        let mut latest: HashMap<String, MentorSession> = HashMap::new();
        for s in &self.tables().sessions {
            if !learner_ids.contains(&s.learner_id) {
                continue;
            }
            let newer = latest.get(&s.learner_id).is_none_or(|l| {
                (&s.held_on, s.created_at, &s.id) > (&l.held_on, l.created_at, &l.id)
            });
            if newer {
                latest.insert(s.learner_id.clone(), s.clone());
            }
        }
        Ok(latest)
    }

    async fn activity_since(
        &self,
        since: &[(String, i64)],
    ) -> Result<HashMap<String, Activity>, StoreError> {
        let since: HashMap<&str, i64> = since.iter().map(|(id, at)| (id.as_str(), *at)).collect();
        let mut activity: HashMap<String, Activity> = HashMap::new();
        for m in &self.tables().messages {
            match since.get(m.learner_id.as_str()) {
                Some(&at) if m.created_at >= at => {
                    let entry = activity.entry(m.learner_id.clone()).or_default();
                    if m.role == "learner" {
                        entry.questions += 1;
                    }
                    entry.last_at = entry.last_at.max(Some(m.created_at));
                }
                _ => {}
            }
        }
        Ok(activity)
    }
}
