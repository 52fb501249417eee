//! The honest reply when no model is configured (`offline` mode): what retrieval found, the
//! learner's matching files and the mentor's goals, rendered through the offline template.
use super::*;

/// The honest reply when no model is configured: the course passages retrieval found, the
/// learner's own files that match the question, and what the mentor asked at the last session.
pub(super) async fn offline_answer<F, Fut>(
    material: Material<'_>,
    record: &mut AnswerRecord,
    send: &F,
) -> Result<Ending, ChatError>
where
    F: Fn(TurnEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let passages: Vec<OfflinePassage> = material
        .passages
        .iter()
        .map(|p| OfflinePassage {
            n: p.n,
            section: p.chunk.section_label(),
            url: p.chunk.url.clone(),
            snippet: snippet(&p.chunk.text).replace('\n', " "),
        })
        .collect();
    let mut files: Vec<OfflineFile> = Vec::new();
    for s in material.snippets {
        let file = OfflineFile {
            path: s.path.clone(),
            lines: s.lines.map(|(from, to)| format!("{from}–{to}")),
        };
        if !files.contains(&file) {
            files.push(file);
        }
    }
    let goals = material
        .knowledge
        .plan
        .as_ref()
        .map(|plan| plan.goals.clone())
        .unwrap_or_default();
    let reply = material.prompts.render_offline(&OfflineReply {
        passages,
        files,
        goals,
    })?;
    let text = format!("{}{reply}", material.notice.unwrap_or_default());
    send(TurnEvent::Sources(record.sources.clone())).await;
    // Sent paragraph by paragraph so clients exercise the same streaming path.
    let mut end = 0;
    for (seq, part) in text.split_inclusive("\n\n").enumerate() {
        end += part.len();
        record.delta_ends.push(end);
        send(TurnEvent::Delta {
            seq: seq as u64,
            text: part.to_string(),
        })
        .await;
    }
    record.tokens_out = Some(crate::retrieval::chunk::count_tokens(&text) as i64);
    record.tokens_in = Some(0);
    record.text = text;
    record.offline = true;
    record.model = Some("offline".to_string());
    record.first_token_ms = record.retrieval_ms;
    Ok((MessageStatus::Complete, None, None))
}
