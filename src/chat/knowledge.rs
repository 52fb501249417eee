//! What the companion knows for a turn: the learner's profile, latest mentor session and project
//! brief, the one fused search over the course and the learner's project, and the history the
//! prompt carries.
use super::*;

pub(super) const HISTORY_TURNS: usize = 12;
pub(super) const SNIPPET_CHARS: usize = 240;

/// What the companion knows about the learner for one turn; each part is optional, and a
/// failure to read one is logged and answered without it.
#[derive(Debug, Default)]
pub(super) struct Knowledge {
    /// The course the turn is about: the page's, the token's, else the profile's.
    pub(super) course: Option<String>,
    pub(super) locale: String,
    pub(super) facts: Option<LearnerFacts>,
    pub(super) plan: Option<MentorPlan>,
    pub(super) brief: Option<Brief>,
    /// The learner's current project, whose policy applies.
    pub(super) project: Option<String>,
}

pub(super) async fn knowledge(deps: &ChatDeps, turn: &Turn) -> Knowledge {
    let learner = &turn.learner.id;
    // Two independent reads, made at once.
    let (profile, sessions) = tokio::join!(
        deps.learners.learner(learner),
        deps.learners.mentor_sessions(learner)
    );
    let profile = profile.unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot read the learner profile; answering without it");
        None
    });
    let plan = match sessions {
        Ok(sessions) => sessions.into_iter().next().map(|s| MentorPlan {
            held_on: s.held_on,
            goals: s.goals,
            notes: s.notes,
        }),
        Err(error) => {
            tracing::warn!(%error, "cannot read mentor sessions; answering without them");
            None
        }
    };
    let course = turn
        .course
        .clone()
        .or_else(|| profile.as_ref().and_then(|p| p.course.clone()));
    let Some(profile) = profile else {
        return Knowledge {
            course,
            locale: "en".into(),
            plan,
            ..Default::default()
        };
    };
    let brief = match (&course, &profile.project) {
        (Some(course), Some(project)) => deps.projects.brief(course, project).map(|b| Brief {
            project: b.project,
            title: b.title,
            sections: b
                .sections
                .into_iter()
                .map(|s| (s.heading, s.text))
                .collect(),
        }),
        _ => None,
    };
    let mut lines = vec![
        (
            "name".to_string(),
            profile
                .name
                .clone()
                .unwrap_or_else(|| turn.learner.name.clone()),
        ),
        ("language".to_string(), profile.locale.clone()),
    ];
    let optional = [
        ("program", profile.program.clone()),
        ("current course", profile.course.clone()),
        ("current chapter", profile.chapter.clone()),
        ("current project", profile.project.clone()),
    ];
    lines.extend(
        optional
            .into_iter()
            .filter_map(|(label, value)| Some((label.to_string(), value?))),
    );
    if !profile.chapters_completed.is_empty() {
        lines.push((
            "chapters completed".to_string(),
            profile.chapters_completed.join(", "),
        ));
    }
    Knowledge {
        course,
        locale: profile.locale.clone(),
        facts: Some(LearnerFacts { lines }),
        plan,
        brief,
        project: profile.project.clone(),
    }
}

/// One fused search over the course material and the learner's own files: course passages
/// (renumbered for citation) and the learner's snippets, each within its own count. An index
/// that fails or is too slow leaves both empty, and says so: the answer goes on without them.
pub(super) async fn retrieve(
    deps: &ChatDeps,
    turn: &Turn,
    knowledge: &Knowledge,
) -> (Vec<Passage>, Vec<Snippet>, RetrievalStatus) {
    let learner = turn.learner.id.as_str();
    let scope = Scope {
        course: knowledge.course.clone(),
        learner: Some(learner.to_string()),
    };
    let project_k = deps.projects.settings().top_k;
    let search = deps
        .retriever
        .search(&turn.text, &scope, deps.top_k + project_k);
    let found = match tokio::time::timeout(deps.retrieval_timeout, search).await {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => {
            tracing::warn!(%error, "retrieval failed; answering without passages");
            return (Vec::new(), Vec::new(), RetrievalStatus::Unavailable);
        }
        Err(_) => {
            let timeout_ms = deps.retrieval_timeout.as_millis() as u64;
            tracing::warn!(
                timeout_ms,
                "retrieval timed out; answering without passages"
            );
            return (Vec::new(), Vec::new(), RetrievalStatus::Unavailable);
        }
    };
    let mut passages = Vec::new();
    let mut snippets = Vec::new();
    for passage in found {
        let owner = passage.learner.clone();
        match owner.as_deref() {
            None if passages.len() < deps.top_k => passages.push(Passage {
                n: passages.len() + 1,
                ..passage
            }),
            Some(owner) if owner == learner && snippets.len() < project_k => {
                snippets.push(Snippet {
                    lines: crate::project::chunk_lines(&passage.chunk),
                    project: passage.chunk.chapter,
                    path: passage.chunk.title,
                    text: passage.chunk.text,
                })
            }
            // Anyone else's file never reaches the prompt, whatever the index returns.
            _ => {}
        }
    }
    (passages, snippets, RetrievalStatus::Ok)
}

/// Past exchanges of the conversation, oldest first, without the current question: from its
/// newest `history_messages` only (however long the conversation), each question paired with
/// its first answer that has text, in one pass.
pub(super) async fn history(
    deps: &ChatDeps,
    conversation_id: &str,
    current_question: &str,
) -> Result<Vec<HistoryTurn>, ChatError> {
    let messages = deps
        .store
        .recent_messages(conversation_id, deps.history_messages)
        .await?;
    Ok(pair_turns(&messages, current_question, HISTORY_TURNS))
}

/// The last `keep` question/answer pairs of `messages` (in the order written), without
/// `current_question`; a question with no answer that has text is left out.
pub(super) fn pair_turns(
    messages: &[StoredMessage],
    current_question: &str,
    keep: usize,
) -> Vec<HistoryTurn> {
    let mut answers: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for m in messages {
        if let Some(question) = m.reply_to.as_deref()
            && !m.text.is_empty()
        {
            answers.entry(question).or_insert(m.text.as_str());
        }
    }
    let mut turns: Vec<HistoryTurn> = messages
        .iter()
        .filter(|m| m.role == "learner" && m.id != current_question)
        .filter_map(|question| {
            answers.get(question.id.as_str()).map(|answer| HistoryTurn {
                question: question.text.clone(),
                answer: answer.to_string(),
            })
        })
        .collect();
    let skip = turns.len().saturating_sub(keep);
    turns.split_off(skip)
}

pub(super) fn source_ref(passage: &Passage) -> SourceRef {
    SourceRef {
        n: passage.n,
        title: passage.chunk.title.clone(),
        section: passage.chunk.section_label(),
        url: passage.chunk.url.clone(),
        snippet: snippet(&passage.chunk.text),
    }
}

pub(super) fn snippet(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= SNIPPET_CHARS {
        return text.to_string();
    }
    let cut: String = text.chars().take(SNIPPET_CHARS).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{cut}…")
}
