//! What the chat does besides answering: a learner's token fills their profile on first use
//! ([`ensure_profile`]), and a file or snippet attached in the chat is checked, stored in the
//! learner's project when named, and goes with the next question ([`attach`]).
use super::ChatDeps;
use crate::auth::{Claims, Role};
use crate::learner::validate::check_learner_id;
use crate::learner::{LearnerProfile, LearnerStore};
use crate::project::{IncomingFile, Origin, ProjectError, normalise_path};
use crate::prompt::Attachment;
use crate::store::StoreError;

/// A learner's own token fills their profile the first time it is seen: name and course from
/// the claims (and later fills those two if they are still empty). Other roles get the stored
/// profile, if any.
pub async fn ensure_profile(
    learners: &dyn LearnerStore,
    claims: &Claims,
) -> Result<Option<LearnerProfile>, StoreError> {
    let stored = learners.learner(&claims.sub).await?;
    if claims.role != Role::Learner || check_learner_id(&claims.sub).is_err() {
        return Ok(stored);
    }
    let mut profile = stored
        .clone()
        .unwrap_or_else(|| LearnerProfile::new(&claims.sub));
    if profile.name.is_none() {
        profile.name = claims.name.clone();
    }
    if profile.course.is_none() {
        profile.course = claims.course.clone();
    }
    if stored.as_ref() != Some(&profile) {
        learners.put_learner(&profile).await?;
        tracing::info!(learner = %claims.sub, "learner profile filled from the token");
    }
    Ok(Some(profile))
}

/// What [`attach`] did.
#[derive(Debug, Clone)]
pub struct Attached {
    /// Goes with the learner's next question on that connection.
    pub attachment: Attachment,
    /// Where the file was stored, when it was named and a project is known.
    pub stored: Option<(String, String)>,
    pub bytes: usize,
}

/// The chat's `attach`: a named file is stored in the learner's project (the one given, else
/// their current one) and indexed; a pasted snippet (no name) only goes with the next question.
/// Either way it is checked like an uploaded file.
pub async fn attach(
    deps: &ChatDeps,
    claims: &Claims,
    name: Option<String>,
    content: String,
    project: Option<String>,
) -> Result<Attached, ProjectError> {
    let settings = deps.projects.settings();
    let label = name.clone().unwrap_or_else(|| "pasted snippet".into());
    if content.trim().is_empty() {
        return Err(ProjectError::NoFiles("the attachment is empty"));
    }
    if content.len() as u64 > settings.max_file_bytes {
        return Err(ProjectError::FileTooLarge {
            path: label,
            bytes: content.len() as u64,
            limit: settings.max_file_bytes,
        });
    }
    let text = crate::project::text_of(&label, content.into_bytes())?;
    let bytes = text.len();
    let Some(name) = name else {
        return Ok(Attached {
            attachment: Attachment { name: None, text },
            stored: None,
            bytes,
        });
    };
    let path = normalise_path(&name)?;
    // A demo visitor's file goes with the question but is never stored.
    if claims.is_demo() {
        return Ok(Attached {
            attachment: Attachment {
                name: Some(path),
                text,
            },
            stored: None,
            bytes,
        });
    }
    // A database failure here stays one (`ProjectError::Store`, with its cause).
    let profile = ensure_profile(deps.learners.as_ref(), claims).await?;
    let course = profile
        .as_ref()
        .and_then(|p| p.course.clone())
        .unwrap_or_default();
    let project = project.or_else(|| profile.and_then(|p| p.project));
    let stored = match project {
        Some(project) => {
            let file = IncomingFile {
                path: path.clone(),
                bytes: text.clone().into_bytes(),
            };
            deps.projects
                .write(
                    &claims.sub,
                    &course,
                    &project,
                    vec![file],
                    Origin::Chat,
                    false,
                )
                .await?;
            Some((project, path.clone()))
        }
        None => None,
    };
    Ok(Attached {
        attachment: Attachment {
            name: Some(path),
            text,
        },
        stored,
        bytes,
    })
}
