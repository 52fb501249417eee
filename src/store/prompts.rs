//! The prompt studio's SQL (migration 0011): immutable prompt versions in one line per course
//! and template, labels and their moves (so a rollback puts a label back), A/B experiments and
//! their per-arm counts, and the generation counter every change bumps in its own transaction,
//! which each node compares with the one it loaded before a turn.
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};
use crate::prompt::TemplateName;
use crate::prompt::experiment::{Arm, ArmCounts, Experiment};
use crate::prompt::versions::{Label, NewVersion, PromptVersion};
use crate::transcript::now_ms;

/// The outcome of saving a version.
#[derive(Debug)]
pub enum Saved {
    Saved(PromptVersion),
    /// The editor's parent is not the newest version any more: nothing was written.
    Stale {
        head: Option<String>,
    },
}

/// Where a label points after a rollback; `None`: nowhere (the shipped default serves).
#[derive(Debug, Clone, PartialEq)]
pub struct RolledBack {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A production label or running experiment with the texts it needs: what turns use.
#[derive(Debug, Clone, Default)]
pub struct LivePromptRows {
    pub generation: i64,
    /// (course, template, version id, stored text: `None` for a shipped default's id)
    pub production: Vec<(String, TemplateName, String, Option<String>)>,
    pub experiments: Vec<(Experiment, ArmTexts)>,
}

/// Each arm's version id and its stored text (`None` for a shipped default's id).
pub type ArmTexts = Vec<(String, Option<String>)>;

/// The most versions a listing returns, newest first.
const LIST_LIMIT: i64 = 200;

const VERSION_COLUMNS: &str =
    "id, course_id, template, text, author, message, parent_key, created_at";
const EXPERIMENT_COLUMNS: &str =
    "id, course_id, template, arms, status, created_by, started_at, stopped_at";

fn template(row: &AnyRow) -> Result<TemplateName, StoreError> {
    let value: String = row.try_get("template")?;
    value.parse().map_err(|_| StoreError::Decode {
        column: "template",
        value,
    })
}

fn version(row: &AnyRow) -> Result<PromptVersion, StoreError> {
    let parent: String = row.try_get("parent_key")?;
    Ok(PromptVersion {
        id: row.try_get("id")?,
        course: row.try_get("course_id")?,
        template: template(row)?,
        text: row.try_get("text")?,
        author: row.try_get("author")?,
        message: row.try_get("message")?,
        parent: (!parent.is_empty()).then_some(parent),
        created_at: row.try_get("created_at")?,
    })
}

fn experiment(row: &AnyRow) -> Result<Experiment, StoreError> {
    let arms: String = row.try_get("arms")?;
    let status: String = row.try_get("status")?;
    Ok(Experiment {
        id: row.try_get("id")?,
        course: row.try_get("course_id")?,
        template: template(row)?,
        arms: serde_json::from_str(&arms).map_err(|source| StoreError::Json {
            column: "arms",
            source,
        })?,
        running: match status.as_str() {
            "running" => true,
            "stopped" => false,
            _ => {
                return Err(StoreError::Decode {
                    column: "status",
                    value: status,
                });
            }
        },
        created_by: row.try_get("created_by")?,
        started_at: row.try_get("started_at")?,
        stopped_at: row.try_get("stopped_at")?,
    })
}

const BUMP_GENERATION: &str = "UPDATE prompt_generation SET n = n + 1 WHERE id = 1";

impl Store {
    /// The course's versions of `template` (every template when `None`), newest first.
    pub async fn prompt_versions(
        &self,
        course: &str,
        template: Option<TemplateName>,
    ) -> Result<Vec<PromptVersion>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM prompt_versions WHERE course_id = $1 \
             AND ($2 = '' OR template = $2) ORDER BY created_at DESC, id DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(course)
            .bind(template.map_or("", TemplateName::as_str))
            .bind(LIST_LIMIT)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(version).collect()
    }

    pub async fn prompt_version(&self, id: &str) -> Result<Option<PromptVersion>, StoreError> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM prompt_versions WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(version).transpose()
    }

    /// The newest version of a course's template: the one no other names as its parent.
    async fn prompt_head(
        &self,
        course: &str,
        template: TemplateName,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT v.id FROM prompt_versions v WHERE v.course_id = $1 AND v.template = $2 \
             AND NOT EXISTS (SELECT 1 FROM prompt_versions c WHERE c.course_id = v.course_id \
             AND c.template = v.template AND c.parent_key = v.id)",
        )
        .bind(course)
        .bind(template.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// Stores a validated version on `new.parent` (the newest version when `None`). The unique
    /// parent of migration 0011 refuses a second version on the same parent, so of two editors
    /// racing on one parent exactly one is saved and the other is told the newest.
    pub async fn save_prompt_version(&self, new: &NewVersion) -> Result<Saved, StoreError> {
        let head = self.prompt_head(&new.course, new.template).await?;
        let parent = match &new.parent {
            Some(parent) if Some(parent) != head.as_ref() => {
                return Ok(Saved::Stale { head });
            }
            Some(parent) => Some(parent.clone()),
            None => head,
        };
        let version = PromptVersion {
            id: uuid::Uuid::now_v7().to_string(),
            course: new.course.clone(),
            template: new.template,
            text: new.text.clone(),
            author: new.author.clone(),
            message: new.message.clone(),
            parent,
            created_at: now_ms(),
        };
        let inserted = sqlx::query(
            "INSERT INTO prompt_versions (id, course_id, template, text, author, message, \
             parent_key, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (course_id, template, parent_key) DO NOTHING",
        )
        .bind(&version.id)
        .bind(&version.course)
        .bind(version.template.as_str())
        .bind(&version.text)
        .bind(&version.author)
        .bind(&version.message)
        .bind(version.parent.as_deref().unwrap_or(""))
        .bind(version.created_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            let head = self.prompt_head(&new.course, new.template).await?;
            return Ok(Saved::Stale { head });
        }
        Ok(Saved::Saved(version))
    }

    /// The course's labels, every template.
    pub async fn prompt_labels(&self, course: &str) -> Result<Vec<Label>, StoreError> {
        let rows = sqlx::query(
            "SELECT course_id, template, label, version_id, updated_by, updated_at \
             FROM prompt_labels WHERE course_id = $1 ORDER BY template, label",
        )
        .bind(course)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Label {
                    course: row.try_get("course_id")?,
                    template: template(row)?,
                    label: row.try_get("label")?,
                    version: row.try_get("version_id")?,
                    updated_by: row.try_get("updated_by")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn label_version(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        course: &str,
        template: TemplateName,
        label: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT version_id FROM prompt_labels WHERE course_id = $1 AND template = $2 \
             AND label = $3",
        )
        .bind(course)
        .bind(template.as_str())
        .bind(label)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.map(|r| r.try_get("version_id")).transpose()?)
    }

    /// Points `label` at `to` (`None`: removes it), in the transaction `tx`, and bumps the
    /// generation.
    async fn set_label(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        course: &str,
        template: TemplateName,
        label: &str,
        to: Option<&str>,
        by: &str,
    ) -> Result<(), StoreError> {
        match to {
            Some(version) => {
                sqlx::query(
                    "INSERT INTO prompt_labels (course_id, template, label, version_id, \
                     updated_by, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (course_id, template, label) DO UPDATE SET \
                     version_id = excluded.version_id, updated_by = excluded.updated_by, \
                     updated_at = excluded.updated_at",
                )
                .bind(course)
                .bind(template.as_str())
                .bind(label)
                .bind(version)
                .bind(by)
                .bind(now_ms())
                .execute(&mut **tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "DELETE FROM prompt_labels WHERE course_id = $1 AND template = $2 \
                     AND label = $3",
                )
                .bind(course)
                .bind(template.as_str())
                .bind(label)
                .execute(&mut **tx)
                .await?;
            }
        }
        sqlx::query(BUMP_GENERATION).execute(&mut **tx).await?;
        Ok(())
    }

    /// Moves `label` to `version` (an id the caller checked), remembering where it was.
    pub async fn move_prompt_label(
        &self,
        course: &str,
        template: TemplateName,
        label: &str,
        version: &str,
        by: &str,
    ) -> Result<RolledBack, StoreError> {
        let mut tx = self.begin_write().await?;
        let from = Self::label_version(&mut tx, course, template, label).await?;
        sqlx::query(
            "INSERT INTO prompt_label_moves (id, course_id, template, label, from_version, \
             to_version, moved_by, moved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(course)
        .bind(template.as_str())
        .bind(label)
        .bind(from.as_deref())
        .bind(version)
        .bind(by)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        Self::set_label(&mut tx, course, template, label, Some(version), by).await?;
        tx.commit().await?;
        Ok(RolledBack {
            from,
            to: Some(version.to_string()),
        })
    }

    /// Undoes the newest move of `label` not undone yet: the label points where it pointed
    /// before (or is removed, if it did not exist). `None` when there is nothing to undo.
    pub async fn roll_back_prompt_label(
        &self,
        course: &str,
        template: TemplateName,
        label: &str,
        by: &str,
    ) -> Result<Option<RolledBack>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT id, from_version FROM prompt_label_moves WHERE course_id = $1 \
             AND template = $2 AND label = $3 AND undone_at IS NULL \
             ORDER BY moved_at DESC, id DESC LIMIT 1",
        )
        .bind(course)
        .bind(template.as_str())
        .bind(label)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let move_id: String = row.try_get("id")?;
        let to: Option<String> = row.try_get("from_version")?;
        let from = Self::label_version(&mut tx, course, template, label).await?;
        sqlx::query("UPDATE prompt_label_moves SET undone_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(&move_id)
            .execute(&mut *tx)
            .await?;
        Self::set_label(&mut tx, course, template, label, to.as_deref(), by).await?;
        tx.commit().await?;
        Ok(Some(RolledBack { from, to }))
    }

    /// The counter every change of what turns use bumps.
    pub async fn prompt_generation(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT n FROM prompt_generation WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("n")).transpose()?.unwrap_or(0))
    }

    /// Every production label and running experiment with the texts of their versions, and
    /// the generation they were read at (read first: a change after it is seen next time).
    pub async fn live_prompts(&self) -> Result<LivePromptRows, StoreError> {
        let generation = self.prompt_generation().await?;
        let rows = sqlx::query(
            "SELECT l.course_id, l.template, l.version_id, v.text FROM prompt_labels l \
             LEFT JOIN prompt_versions v ON v.id = l.version_id WHERE l.label = 'production'",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut production = Vec::new();
        for row in &rows {
            production.push((
                row.try_get("course_id")?,
                template(row)?,
                row.try_get("version_id")?,
                row.try_get("text")?,
            ));
        }
        let mut experiments = Vec::new();
        for experiment in self.running_experiments().await? {
            let mut texts = Vec::new();
            for arm in &experiment.arms {
                let text = self.prompt_version(&arm.version).await?.map(|v| v.text);
                texts.push((arm.version.clone(), text));
            }
            experiments.push((experiment, texts));
        }
        Ok(LivePromptRows {
            generation,
            production,
            experiments,
        })
    }

    async fn running_experiments(&self) -> Result<Vec<Experiment>, StoreError> {
        let sql =
            format!("SELECT {EXPERIMENT_COLUMNS} FROM prompt_experiments WHERE status = 'running'");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(experiment).collect()
    }

    /// Starts an experiment unless one is running for the course's template: `Err` names it.
    pub async fn start_experiment(
        &self,
        course: &str,
        template: TemplateName,
        arms: &[Arm],
        by: &str,
    ) -> Result<Result<Experiment, String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let running = sqlx::query(
            "SELECT id FROM prompt_experiments WHERE course_id = $1 AND template = $2 \
             AND status = 'running'",
        )
        .bind(course)
        .bind(template.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = running {
            return Ok(Err(row.try_get("id")?));
        }
        let experiment = Experiment {
            id: uuid::Uuid::now_v7().to_string(),
            course: course.to_string(),
            template,
            arms: arms.to_vec(),
            running: true,
            created_by: by.to_string(),
            started_at: now_ms(),
            stopped_at: None,
        };
        sqlx::query(
            "INSERT INTO prompt_experiments (id, course_id, template, arms, status, created_by, \
             started_at) VALUES ($1, $2, $3, $4, 'running', $5, $6)",
        )
        .bind(&experiment.id)
        .bind(course)
        .bind(template.as_str())
        .bind(super::rows::to_json(&experiment.arms))
        .bind(by)
        .bind(experiment.started_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Ok(experiment))
    }

    /// The course's experiments, newest first.
    pub async fn experiments(&self, course: &str) -> Result<Vec<Experiment>, StoreError> {
        let sql = format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM prompt_experiments WHERE course_id = $1 \
             ORDER BY started_at DESC, id DESC LIMIT 100"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(course)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(experiment).collect()
    }

    pub async fn experiment(
        &self,
        course: &str,
        id: &str,
    ) -> Result<Option<Experiment>, StoreError> {
        let sql = format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM prompt_experiments WHERE course_id = $1 AND id = $2"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(course)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(experiment).transpose()
    }

    /// Stops a running experiment and, when `promote` names one of its arms, points the
    /// course's `production` label at it, in one transaction. `false` when it was not running.
    pub async fn stop_experiment(
        &self,
        experiment: &Experiment,
        promote: Option<&str>,
        by: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let stopped = sqlx::query(
            "UPDATE prompt_experiments SET status = 'stopped', stopped_at = $1 \
             WHERE id = $2 AND status = 'running'",
        )
        .bind(now_ms())
        .bind(&experiment.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if stopped == 0 {
            return Ok(false);
        }
        if let Some(version) = promote {
            let (course, template) = (&experiment.course, experiment.template);
            let from = Self::label_version(&mut tx, course, template, "production").await?;
            sqlx::query(
                "INSERT INTO prompt_label_moves (id, course_id, template, label, from_version, \
                 to_version, moved_by, moved_at) VALUES ($1, $2, $3, 'production', $4, $5, $6, $7)",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(course)
            .bind(template.as_str())
            .bind(from.as_deref())
            .bind(version)
            .bind(by)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            Self::set_label(&mut tx, course, template, "production", Some(version), by).await?;
        } else {
            sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Per arm (version) of `experiment`, the counts over the answers written under it.
    pub async fn experiment_counts(&self, experiment: &str) -> Result<Vec<ArmCounts>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.prompt_version AS version, \
             CAST(COUNT(*) AS BIGINT) AS answers, \
             CAST(SUM(CASE WHEN m.status = 'cancelled' THEN 1 ELSE 0 END) AS BIGINT) AS cancelled, \
             CAST(SUM(LENGTH(m.text)) AS BIGINT) AS chars, \
             CAST(SUM(COALESCE(m.first_token_ms, 0)) AS BIGINT) AS first_token_sum, \
             CAST(SUM(CASE WHEN m.first_token_ms IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS first_token_n, \
             CAST(SUM(CASE WHEN m.guard LIKE '%\"uncited\":true%' THEN 0 ELSE 1 END) AS BIGINT) AS cited, \
             CAST(SUM(CASE WHEN EXISTS (SELECT 1 FROM feedback f WHERE f.message_id = m.id \
                 AND f.rating = 'up') THEN 1 ELSE 0 END) AS BIGINT) AS ups, \
             CAST(SUM(CASE WHEN EXISTS (SELECT 1 FROM feedback f WHERE f.message_id = m.id \
                 AND f.rating = 'down') THEN 1 ELSE 0 END) AS BIGINT) AS downs, \
             CAST(SUM(CASE WHEN EXISTS (SELECT 1 FROM feedback f WHERE f.message_id = m.id \
                 AND f.comment IS NOT NULL AND f.comment <> '') THEN 1 ELSE 0 END) AS BIGINT) AS comments, \
             CAST(SUM(CASE WHEN EXISTS (SELECT 1 FROM flags g WHERE g.message_id = m.id \
                 OR g.message_id = m.reply_to) THEN 1 ELSE 0 END) AS BIGINT) AS flagged \
             FROM messages m WHERE m.prompt_experiment = $1 AND m.role = 'assistant' \
             AND m.prompt_version IS NOT NULL GROUP BY m.prompt_version",
        )
        .bind(experiment)
        .fetch_all(&self.pool)
        .await?;
        let count = super::rows::count;
        rows.iter()
            .map(|row| {
                Ok(ArmCounts {
                    version: row.try_get("version")?,
                    answers: count(row, "answers")?,
                    thumbs_up: count(row, "ups")?,
                    thumbs_down: count(row, "downs")?,
                    comments: count(row, "comments")?,
                    flagged: count(row, "flagged")?,
                    cancelled: count(row, "cancelled")?,
                    cited: count(row, "cited")?,
                    chars: count(row, "chars")?,
                    first_token_ms_sum: count(row, "first_token_sum")?,
                    first_token_n: count(row, "first_token_n")?,
                })
            })
            .collect()
    }
}
