//! The model's answer: the prompt assembled within its budget, streamed through the output
//! guard, checkpointed while it streams, with the policy and coaching notes the guard uses.
use super::*;

/// How often a streaming answer is saved: at most this much text is at risk in a crash.
/// What the prompt is built from besides the turn and the history.
pub(super) struct Material<'a> {
    /// The versions of the templates this turn uses.
    pub(super) prompts: &'a Prompts,
    pub(super) knowledge: &'a Knowledge,
    pub(super) passages: &'a [Passage],
    pub(super) snippets: &'a [Snippet],
    pub(super) policy: &'a Effective,
    /// Said before the answer (an assessment window limiting it).
    pub(super) notice: Option<&'a str>,
}

pub(super) struct StreamCtx<'a> {
    pub(super) answer_id: &'a str,
    pub(super) started: Instant,
    pub(super) stops: &'a Stops,
    pub(super) record: &'a mut AnswerRecord,
    pub(super) clock: &'a mut StageClock,
}

pub(super) async fn stream_answer<F, Fut>(
    deps: &ChatDeps,
    llm: &dyn Llm,
    turn: &Turn,
    history: &[HistoryTurn],
    material: Material<'_>,
    ctx: StreamCtx<'_>,
    send: &F,
) -> Result<Ending, ChatError>
where
    F: Fn(TurnEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let knowledge = material.knowledge;
    let policy_words = answer_policy(material.policy, material.notice.is_some());
    let system_context = SystemContext {
        learner_name: &turn.learner.name,
        course: knowledge.course.as_deref().unwrap_or("your course"),
        page_title: turn.page.title.as_deref(),
        locale: &knowledge.locale,
        answer_policy: Some(&policy_words),
    };
    let system = material.prompts.render_system(&system_context)?;
    let prompt = crate::prompt::assemble(
        deps.budget,
        &Context {
            system: &system,
            profile: knowledge.facts.as_ref(),
            mentor: knowledge.plan.as_ref(),
            brief: knowledge.brief.as_ref(),
            attachments: &turn.attachments,
            snippets: material.snippets,
            passages: material.passages,
            history,
            question: &turn.text,
            retrieval_unavailable: ctx.record.retrieval == Some(RetrievalStatus::Unavailable),
        },
    );
    tracing::debug!(tokens = prompt.tokens, parts = ?prompt.parts, "prompt assembled");
    let record = ctx.record;
    // Kept with the answer for the inspector and replays: what the model receives. Counted
    // and serialised once the model has been asked, never before its first token.
    let keep_prompt = |record: &mut AnswerRecord| {
        let mut kept = PromptRecord::new(
            &deps.budget,
            &prompt,
            knowledge.course.clone(),
            SystemValues::from(&system_context),
        );
        kept.project = knowledge.project.clone();
        record.prompt = serde_json::to_value(&kept).ok();
    };
    record.model = Some(llm.model().to_string());
    // Citations refer to the passages the model actually saw.
    record.sources.truncate(prompt.passages_used);
    send(TurnEvent::Sources(record.sources.clone())).await;
    let mut seq = 0u64;
    if let Some(notice) = material.notice {
        record.text.push_str(notice);
        record.delta_ends.push(record.text.len());
        send(TurnEvent::Delta {
            seq,
            text: notice.to_string(),
        })
        .await;
        seq += 1;
    }
    let coaching = coaching_notes(
        &material.prompts.coaching(),
        &knowledge.locale,
        material.policy.max_code_lines,
    );
    let mut guard = OutputGuard::new(TurnRules {
        references: material.policy.references.clone(),
        max_code_lines: material.policy.max_code_lines,
        forbidden: material.policy.forbidden.clone(),
        n_passages: prompt.passages_used,
        locale: knowledge.locale.clone(),
        shown_before: history
            .iter()
            .flat_map(|turn| crate::guard::code_blocks(&turn.answer))
            .collect(),
        course_code: material.policy.course_code.clone(),
        pass_unfenced: material.policy.unfenced_code == crate::guard::policy::UnfencedCode::Pass,
        learner_text: std::iter::once(turn.text.clone())
            .chain(turn.attachments.iter().map(|a| a.text.clone()))
            .chain(material.snippets.iter().map(|s| s.text.clone()))
            .collect(),
    })
    .with_coaching(coaching);
    let request = ChatRequest {
        messages: prompt.messages.clone(),
        max_tokens: deps.budget.reserved_answer,
        temperature: deps.temperature,
    };
    ctx.clock.stages.assemble = Some(ctx.clock.lap());
    let stream = tokio::select! {
        result = llm.stream(request) => result,
        _ = ctx.stops.cancel.cancelled() => {
            keep_prompt(record);
            return Ok((MessageStatus::Cancelled, None, None));
        }
        _ = ctx.stops.shutdown.cancelled() => {
            keep_prompt(record);
            return Ok((MessageStatus::Interrupted, None, None));
        }
    };
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "llm request failed");
            keep_prompt(record);
            return Ok((MessageStatus::Failed, Some(error), None));
        }
    };
    let mut usage: Option<(u32, u32)> = None;
    let mut last_checkpoint = Instant::now();
    let mut checkpointed_len = 0;
    // While the model is silent no checkpoint is due, but the row must not look orphaned.
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + deps.owner.heartbeat_every,
        deps.owner.heartbeat_every,
    );
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ending = loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = heartbeat.tick() => {
                if let Err(error) = deps.store.heartbeat_answer(ctx.answer_id).await {
                    tracing::warn!(
                        error = ?error,
                        answer_id = ctx.answer_id,
                        "writing the answer's heartbeat failed; trying again at the next one"
                    );
                }
                continue;
            }
            _ = ctx.stops.cancel.cancelled() => break (MessageStatus::Cancelled, None),
            _ = ctx.stops.shutdown.cancelled() => break (MessageStatus::Interrupted, None),
        };
        match next {
            None => break (MessageStatus::Complete, None),
            Some(Ok(LlmEvent::Delta(text))) => {
                if record.first_token_ms.is_none() {
                    record.first_token_ms = Some(ctx.started.elapsed().as_millis() as i64);
                    ctx.clock.stages.llm_first_token = Some(ctx.clock.lap());
                    ctx.clock.stages.first_token_after = Some(ctx.clock.since_start());
                }
                // What the learner may see now: prose at once, a code block once closed
                // and checked.
                let shown = guard.push(&text);
                if !shown.is_empty() {
                    ctx.clock.delta_sent();
                    record.text.push_str(&shown);
                    // Where each delta ends is stored with the text: `resume` cuts it there.
                    record.delta_ends.push(record.text.len());
                    send(TurnEvent::Delta { seq, text: shown }).await;
                    seq += 1;
                }
            }
            Some(Ok(LlmEvent::Usage {
                tokens_in,
                tokens_out,
            })) => usage = Some((tokens_in, tokens_out)),
            Some(Err(error)) => {
                tracing::warn!(%error, "llm stream failed");
                break (MessageStatus::Failed, Some(error));
            }
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY && record.text.len() != checkpointed_len {
            // A failed checkpoint only puts more text at risk: the answer goes on, and the
            // next checkpoint (a second later) tries again with all the text so far.
            match deps
                .store
                .checkpoint_answer(ctx.answer_id, &record.text, &record.delta_ends)
                .await
            {
                Ok(()) => {
                    checkpointed_len = record.text.len();
                    heartbeat.reset();
                }
                Err(error) => tracing::warn!(
                    error = ?error,
                    answer_id = ctx.answer_id,
                    "checkpoint failed; trying again at the next one"
                ),
            }
            last_checkpoint = Instant::now();
        }
    };
    if ctx.clock.stages.llm_first_token.is_some() {
        ctx.clock.stages.stream = Some(ctx.clock.lap());
    }
    // Whatever the ending, a held block is checked before it is shown or stored.
    let rest = guard.finish();
    if !rest.is_empty() {
        ctx.clock.delta_sent();
        record.text.push_str(&rest);
        record.delta_ends.push(record.text.len());
        send(TurnEvent::Delta { seq, text: rest }).await;
    }
    let report = guard.report();
    let ending = (
        ending.0,
        ending.1,
        (report.changed_answer() || report.uncited).then_some(report),
    );
    let (tokens_in, tokens_out) = usage.map_or_else(
        || {
            (
                prompt.tokens as i64,
                crate::retrieval::chunk::count_tokens(&record.text) as i64,
            )
        },
        |(i, o)| (i64::from(i), i64::from(o)),
    );
    record.tokens_in = Some(tokens_in);
    record.tokens_out = Some(tokens_out);
    keep_prompt(record);
    Ok(ending)
}

/// The coaching notes of one answer, one per rule, from the course's coaching template rendered
/// for the learner. A note that fails to render is logged and left out: the guard then shows its
/// own (the shipped template's words) for that rule.
pub fn coaching_notes(
    template: &Template,
    locale: &str,
    max_code_lines: Option<usize>,
) -> CoachingNotes {
    let mut notes = CoachingNotes::default();
    for rule in Rule::ALL {
        let context = CoachingContext {
            rule: rule.as_str(),
            locale,
            max_code_lines,
        };
        match template.render_coaching(&context) {
            Ok(note) => notes.set(rule, note),
            Err(error) => tracing::warn!(
                %error,
                version = template.version(),
                rule = rule.as_str(),
                "the coaching note does not render; the guard's own is used"
            ),
        }
    }
    notes
}

/// The policy as the system prompt states it to the model.
pub(super) fn answer_policy(policy: &Effective, assessment: bool) -> String {
    let lines = policy
        .max_code_lines
        .map(|n| format!(" Code blocks longer than {n} lines are withheld."))
        .unwrap_or_default();
    let mode = match policy.answer {
        AnswerMode::Hints => {
            "hints only: guide with questions and hints, never write the learner's code."
        }
        AnswerMode::Explain => {
            "explain concepts with small generic examples, never the learner's deliverable."
        }
        AnswerMode::Solutions => "worked solutions are allowed for this practice work.",
    };
    let assessment = if assessment {
        " An assessment is under way: explain course concepts only and do not help with the project."
    } else {
        ""
    };
    format!("{mode}{lines}{assessment}")
}
