//! Policies written through the API (migration 0016): the override in force per course and
//! project, every change for the history, and the generation counter each change bumps in its
//! own transaction, which each node compares with the one it loaded before a turn.
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};
use crate::guard::policy::{PolicyChange, PolicyOverride};
use crate::transcript::now_ms;

/// The outcome of writing or deleting an override.
#[derive(Debug)]
pub enum PolicyWrite {
    Stored(PolicyChange),
    /// Another change of the same policy took this version first: nothing was written.
    Conflict,
    /// A delete found no override: the file already holds.
    NoOverride,
}

/// The most changes a history returns, newest first.
const HISTORY_LIMIT: i64 = 200;

const BUMP_GENERATION: &str = "UPDATE policy_generation SET n = n + 1 WHERE id = 1";

/// A project as a row keeps it: '' for the course's own policy.
fn project_key(project: Option<&str>) -> &str {
    project.unwrap_or("")
}

fn project_of(row: &AnyRow) -> Result<Option<String>, StoreError> {
    let project: String = row.try_get("project")?;
    Ok((!project.is_empty()).then_some(project))
}

impl Store {
    /// The counter every change of an override bumps.
    pub async fn policy_generation(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT n FROM policy_generation WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("n")).transpose()?.unwrap_or(0))
    }

    /// Every override in force, and the generation they were read at (read first: a change
    /// after it is seen next time).
    pub async fn policy_overrides(&self) -> Result<(i64, Vec<PolicyOverride>), StoreError> {
        let generation = self.policy_generation().await?;
        let rows = sqlx::query(
            "SELECT course_id, project, text, version, updated_by, updated_at \
             FROM policy_overrides ORDER BY course_id, project",
        )
        .fetch_all(&self.pool)
        .await?;
        let overrides = rows
            .iter()
            .map(|row| {
                Ok(PolicyOverride {
                    course: row.try_get("course_id")?,
                    project: project_of(row)?,
                    text: row.try_get("text")?,
                    version: row.try_get("version")?,
                    by: row.try_get("updated_by")?,
                    at: row.try_get("updated_at")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((generation, overrides))
    }

    /// Writes `text` (already checked) as the policy of `course` (of its `project`), or with
    /// `None` deletes the override, recording the change; one transaction, which bumps the
    /// generation.
    pub async fn write_policy_override(
        &self,
        course: &str,
        project: Option<&str>,
        text: Option<&str>,
        by: &str,
    ) -> Result<PolicyWrite, StoreError> {
        let project = project_key(project);
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) AS n FROM policy_override_changes \
             WHERE course_id = $1 AND project = $2",
        )
        .bind(course)
        .bind(project)
        .fetch_one(&mut *tx)
        .await?;
        let version: i64 = row.try_get::<i64, _>("n")? + 1;
        let at = now_ms();
        let touched = match text {
            Some(text) => sqlx::query(
                "INSERT INTO policy_overrides (course_id, project, text, version, updated_by, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (course_id, project) \
                 DO UPDATE SET text = excluded.text, version = excluded.version, \
                 updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            )
            .bind(course)
            .bind(project)
            .bind(text)
            .bind(version)
            .bind(by)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            None => {
                sqlx::query("DELETE FROM policy_overrides WHERE course_id = $1 AND project = $2")
                    .bind(course)
                    .bind(project)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            }
        };
        if touched == 0 {
            return Ok(PolicyWrite::NoOverride);
        }
        let recorded = sqlx::query(
            "INSERT INTO policy_override_changes (course_id, project, version, text, changed_by, \
             changed_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (course_id, project, version) DO NOTHING",
        )
        .bind(course)
        .bind(project)
        .bind(version)
        .bind(text)
        .bind(by)
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if recorded == 0 {
            return Ok(PolicyWrite::Conflict);
        }
        sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(PolicyWrite::Stored(PolicyChange {
            course: course.to_string(),
            project: (!project.is_empty()).then(|| project.to_string()),
            version,
            text: text.map(str::to_string),
            by: by.to_string(),
            at,
        }))
    }

    /// The changes of a course's policies (its own and its projects'), newest first.
    pub async fn policy_changes(&self, course: &str) -> Result<Vec<PolicyChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT course_id, project, version, text, changed_by, changed_at \
             FROM policy_override_changes WHERE course_id = $1 \
             ORDER BY changed_at DESC, project, version DESC LIMIT $2",
        )
        .bind(course)
        .bind(HISTORY_LIMIT)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PolicyChange {
                    course: row.try_get("course_id")?,
                    project: project_of(row)?,
                    version: row.try_get("version")?,
                    text: row.try_get("text")?,
                    by: row.try_get("changed_by")?,
                    at: row.try_get("changed_at")?,
                })
            })
            .collect()
    }
}
