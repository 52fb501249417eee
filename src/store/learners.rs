//! Learners' profiles, mentor sessions and project files, and a learner's erasure.
use async_trait::async_trait;

use super::rows::{self, FILE_COLUMNS, LEARNER_COLUMNS, SESSION_COLUMNS};
use super::{Store, StoreError};
use crate::learner::{LearnerProfile, LearnerStore, MentorSession, ProjectFile};
use crate::transcript::now_ms;

#[async_trait]
impl LearnerStore for Store {
    async fn learner(&self, id: &str) -> Result<Option<LearnerProfile>, StoreError> {
        let sql = format!("SELECT {LEARNER_COLUMNS} FROM learners WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::learner).transpose()
    }

    async fn put_learner(&self, p: &LearnerProfile) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO learners (id, name, locale, program, course_id, chapter, project, \
             chapters_completed, mentor_id, mentor_name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, locale = excluded.locale, \
             program = excluded.program, course_id = excluded.course_id, \
             chapter = excluded.chapter, project = excluded.project, \
             chapters_completed = excluded.chapters_completed, mentor_id = excluded.mentor_id, \
             mentor_name = excluded.mentor_name, updated_at = excluded.updated_at",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.locale)
        .bind(&p.program)
        .bind(&p.course)
        .bind(&p.chapter)
        .bind(&p.project)
        .bind(rows::to_json(&p.chapters_completed))
        .bind(&p.mentor_id)
        .bind(&p.mentor_name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn learners(&self, mentor_id: Option<&str>) -> Result<Vec<LearnerProfile>, StoreError> {
        let rows = match mentor_id {
            Some(mentor) => {
                let sql = format!(
                    "SELECT {LEARNER_COLUMNS} FROM learners WHERE mentor_id = $1 ORDER BY id"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(mentor)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!("SELECT {LEARNER_COLUMNS} FROM learners ORDER BY id");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(rows::learner).collect()
    }

    async fn add_mentor_session(&self, s: &MentorSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mentor_sessions (id, learner_id, mentor_id, held_on, notes, goals, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.id)
        .bind(&s.learner_id)
        .bind(&s.mentor_id)
        .bind(&s.held_on)
        .bind(&s.notes)
        .bind(rows::to_json(&s.goals))
        .bind(s.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mentor_sessions(&self, learner_id: &str) -> Result<Vec<MentorSession>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM mentor_sessions WHERE learner_id = $1 \
             ORDER BY held_on DESC, created_at DESC"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(learner_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::session).collect()
    }

    async fn put_project_files(
        &self,
        learner_id: &str,
        project: &str,
        files: &[ProjectFile],
        replace_all: bool,
    ) -> Result<(), StoreError> {
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
    ) -> Result<Vec<ProjectFile>, StoreError> {
        let rows = match project {
            Some(project) => {
                let sql = format!(
                    "SELECT {FILE_COLUMNS} FROM project_files WHERE learner_id = $1 AND project = $2 ORDER BY path"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(learner_id)
                    .bind(project)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!(
                    "SELECT {FILE_COLUMNS} FROM project_files WHERE learner_id = $1 ORDER BY project, path"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(learner_id)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(rows::file).collect()
    }

    async fn delete_project_file(
        &self,
        learner_id: &str,
        project: &str,
        path: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM project_files WHERE learner_id = $1 AND project = $2 AND path = $3",
        )
        .bind(learner_id)
        .bind(project)
        .bind(path)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn project_names(&self, learner_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT project FROM project_files WHERE learner_id = $1 ORDER BY project",
        )
        .bind(learner_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(sqlx::Row::try_get::<String, _>(row, "project")?))
            .collect()
    }

    async fn delete_learner(&self, learner_id: &str) -> Result<u64, StoreError> {
        // Messages first (the review tables hang off them), then conversations and the rest.
        let statements = [
            "DELETE FROM messages WHERE learner_id = $1",
            "DELETE FROM conversations WHERE learner_id = $1",
            "DELETE FROM project_files WHERE learner_id = $1",
            "DELETE FROM mentor_sessions WHERE learner_id = $1",
            "DELETE FROM learners WHERE id = $1",
        ];
        self.execute_all(&statements, learner_id).await
    }
}
