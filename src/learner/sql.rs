//! [`LearnerStore`] over the same SQL pool as the transcripts.
use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{LearnerProfile, LearnerStore, MentorSession, ProjectFile};
use crate::transcript::sql::SqlStore;
use crate::transcript::{TranscriptError, now_ms};

const LEARNER_COLUMNS: &str = "id, name, locale, program, course_id, chapter, project, \
    chapters_completed, mentor_id, updated_at";

fn json_list(text: &str) -> Result<Vec<String>, TranscriptError> {
    serde_json::from_str(text).map_err(|e| TranscriptError::Corrupt(e.to_string()))
}

fn learner_from_row(row: &AnyRow) -> Result<LearnerProfile, TranscriptError> {
    let completed: String = row.try_get("chapters_completed")?;
    Ok(LearnerProfile {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        locale: row.try_get("locale")?,
        program: row.try_get("program")?,
        course: row.try_get("course_id")?,
        chapter: row.try_get("chapter")?,
        project: row.try_get("project")?,
        chapters_completed: json_list(&completed)?,
        mentor_id: row.try_get("mentor_id")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn session_from_row(row: &AnyRow) -> Result<MentorSession, TranscriptError> {
    let goals: String = row.try_get("goals")?;
    Ok(MentorSession {
        id: row.try_get("id")?,
        learner_id: row.try_get("learner_id")?,
        mentor_id: row.try_get("mentor_id")?,
        held_on: row.try_get("held_on")?,
        notes: row.try_get("notes")?,
        goals: json_list(&goals)?,
        created_at: row.try_get("created_at")?,
    })
}

fn file_from_row(row: &AnyRow) -> Result<ProjectFile, TranscriptError> {
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

#[async_trait]
impl LearnerStore for SqlStore {
    async fn learner(&self, id: &str) -> Result<Option<LearnerProfile>, TranscriptError> {
        let sql = format!("SELECT {LEARNER_COLUMNS} FROM learners WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(learner_from_row).transpose()
    }

    async fn put_learner(&self, p: &LearnerProfile) -> Result<(), TranscriptError> {
        let now = now_ms();
        let completed =
            serde_json::to_string(&p.chapters_completed).unwrap_or_else(|_| "[]".to_string());
        sqlx::query(
            "INSERT INTO learners (id, name, locale, program, course_id, chapter, project, \
             chapters_completed, mentor_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, locale = excluded.locale, \
             program = excluded.program, course_id = excluded.course_id, \
             chapter = excluded.chapter, project = excluded.project, \
             chapters_completed = excluded.chapters_completed, mentor_id = excluded.mentor_id, \
             updated_at = excluded.updated_at",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.locale)
        .bind(&p.program)
        .bind(&p.course)
        .bind(&p.chapter)
        .bind(&p.project)
        .bind(completed)
        .bind(&p.mentor_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn learners(
        &self,
        mentor_id: Option<&str>,
    ) -> Result<Vec<LearnerProfile>, TranscriptError> {
        let rows = match mentor_id {
            Some(mentor) => {
                let sql = format!(
                    "SELECT {LEARNER_COLUMNS} FROM learners WHERE mentor_id = $1 ORDER BY id"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(mentor)
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                let sql = format!("SELECT {LEARNER_COLUMNS} FROM learners ORDER BY id");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.iter().map(learner_from_row).collect()
    }

    async fn add_mentor_session(&self, s: &MentorSession) -> Result<(), TranscriptError> {
        let goals = serde_json::to_string(&s.goals).unwrap_or_else(|_| "[]".to_string());
        sqlx::query(
            "INSERT INTO mentor_sessions (id, learner_id, mentor_id, held_on, notes, goals, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.id)
        .bind(&s.learner_id)
        .bind(&s.mentor_id)
        .bind(&s.held_on)
        .bind(&s.notes)
        .bind(goals)
        .bind(s.created_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn mentor_sessions(
        &self,
        learner_id: &str,
    ) -> Result<Vec<MentorSession>, TranscriptError> {
        let rows = sqlx::query(
            "SELECT id, learner_id, mentor_id, held_on, notes, goals, created_at \
             FROM mentor_sessions WHERE learner_id = $1 ORDER BY held_on DESC, created_at DESC",
        )
        .bind(learner_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    async fn put_project_files(
        &self,
        learner_id: &str,
        project: &str,
        files: &[ProjectFile],
        replace_all: bool,
    ) -> Result<(), TranscriptError> {
        let mut tx = self.begin_write().await?;
        if replace_all {
            sqlx::query("DELETE FROM project_files WHERE learner_id = $1 AND project = $2")
                .bind(learner_id)
                .bind(project)
                .execute(&mut *tx)
                .await?;
        }
        for f in files {
            sqlx::query(
                "INSERT INTO project_files (learner_id, project, path, content, sha256, bytes, \
                 origin, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (learner_id, project, path) DO UPDATE SET content = excluded.content, \
                 sha256 = excluded.sha256, bytes = excluded.bytes, origin = excluded.origin, \
                 updated_at = excluded.updated_at",
            )
            .bind(learner_id)
            .bind(project)
            .bind(&f.path)
            .bind(&f.content)
            .bind(&f.sha256)
            .bind(f.bytes)
            .bind(&f.origin)
            .bind(f.updated_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn project_files(
        &self,
        learner_id: &str,
        project: Option<&str>,
    ) -> Result<Vec<ProjectFile>, TranscriptError> {
        const COLUMNS: &str =
            "learner_id, project, path, content, sha256, bytes, origin, updated_at";
        let rows = match project {
            Some(project) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM project_files WHERE learner_id = $1 AND project = $2 ORDER BY path"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(learner_id)
                    .bind(project)
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM project_files WHERE learner_id = $1 ORDER BY project, path"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(learner_id)
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.iter().map(file_from_row).collect()
    }

    async fn delete_project_file(
        &self,
        learner_id: &str,
        project: &str,
        path: &str,
    ) -> Result<bool, TranscriptError> {
        let done = sqlx::query(
            "DELETE FROM project_files WHERE learner_id = $1 AND project = $2 AND path = $3",
        )
        .bind(learner_id)
        .bind(project)
        .bind(path)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_learner(&self, learner_id: &str) -> Result<u64, TranscriptError> {
        // Messages first (the review tables hang off them), then conversations and the rest.
        let statements = [
            "DELETE FROM messages WHERE learner_id = $1",
            "DELETE FROM conversations WHERE learner_id = $1",
            "DELETE FROM project_files WHERE learner_id = $1",
            "DELETE FROM mentor_sessions WHERE learner_id = $1",
            "DELETE FROM learners WHERE id = $1",
        ];
        Ok(self.execute_all(&statements, learner_id).await?)
    }
}
