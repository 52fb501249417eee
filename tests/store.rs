//! The store suite, run against SQLite and against PostgreSQL (127.0.0.1:5432, database
//! `test`, or `COMPANION_TEST_DATABASE_URL`); each PostgreSQL run gets its own schema.
use companion::store::{Store, StoreError};
use companion::transcript::{
    AnswerRecord, MessageStatus, NewQuestion, QuestionInsert, RetrievalStatus, SourceRef,
    TranscriptStore,
};

#[path = "common/pg.rs"]
mod pg;

async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    (Store::connect(&url, 4).await.unwrap(), dir)
}

/// A store in a fresh schema, or `None` (with a message) when no PostgreSQL is reachable.
async fn postgres_store() -> Option<Store> {
    let url = pg::fresh_schema_url("t", "PostgreSQL store tests").await?;
    Some(Store::connect(&url, 4).await.unwrap())
}

fn question(id: &str, client_id: &str, conversation: &str, learner: &str) -> NewQuestion {
    NewQuestion {
        id: id.into(),
        conversation_id: conversation.into(),
        learner_id: learner.into(),
        course_id: Some("python-foundations".into()),
        client_id: client_id.into(),
        text: format!("question {client_id}"),
        page_url: Some("/course/x".into()),
    }
}

async fn a_question_and_its_answer_round_trip_with_metadata(store: &Store) {
    let q = question("m1", "c1", "conv1", "ada");
    assert!(matches!(
        store.insert_question(&q).await.unwrap(),
        QuestionInsert::Inserted
    ));
    store
        .start_answer("m2", "m1", "conv1", "ada", "node-a")
        .await
        .unwrap();
    store
        .checkpoint_answer("m2", "partial", &[7])
        .await
        .unwrap();
    let record = AnswerRecord {
        text: "full answer".into(),
        sources: vec![SourceRef {
            n: 1,
            title: "While loops".into(),
            section: "Control flow › While loops".into(),
            url: "/course/w#x".into(),
            snippet: "A while loop…".into(),
        }],
        prompt_version: Some("system-v1".into()),
        prompt_experiment: None,
        model: Some("m".into()),
        offline: true,
        tokens_in: Some(10),
        tokens_out: Some(5),
        retrieval_ms: Some(3),
        first_token_ms: Some(7),
        total_ms: Some(9),
        guard: Some(serde_json::json!({"withheld": [{"rule": "solution", "original": "x = 1"}]})),
        retrieval: Some(RetrievalStatus::Unavailable),
        failure: Some("llm_timeout".into()),
        delta_ends: vec![5, 11],
        prompt: None,
    };
    store
        .finish_answer("m2", MessageStatus::Complete, &record)
        .await
        .unwrap();
    let conversation = store.conversation("conv1").await.unwrap().unwrap();
    assert_eq!(conversation.learner_id, "ada");
    let messages = store.messages("conv1").await.unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].text, "question c1");
    assert_eq!(messages[0].client_id.as_deref(), Some("c1"));
    let answer = &messages[1];
    assert_eq!(answer.text, "full answer");
    assert_eq!(answer.status, MessageStatus::Complete);
    assert_eq!(answer.sources, record.sources);
    assert_eq!(answer.prompt_version.as_deref(), Some("system-v1"));
    assert!(answer.offline);
    assert_eq!((answer.tokens_in, answer.tokens_out), (Some(10), Some(5)));
    assert_eq!(answer.total_ms, Some(9));
    assert_eq!(answer.guard, record.guard);
    assert_eq!(messages[0].guard, None);
    assert_eq!(answer.retrieval, Some(RetrievalStatus::Unavailable));
    assert_eq!(answer.failure.as_deref(), Some("llm_timeout"));
    assert_eq!(answer.delta_ends, [5, 11]);
    assert_eq!(
        (messages[0].retrieval, messages[0].failure.as_deref()),
        (None, None)
    );
    assert_eq!(store.answer_to("m1").await.unwrap().unwrap().id, "m2");
}

async fn a_resent_client_id_is_a_duplicate_not_a_second_question(store: &Store) {
    store
        .insert_question(&question("d1", "same", "conv2", "ben"))
        .await
        .unwrap();
    match store
        .insert_question(&question("d2", "same", "conv2", "ben"))
        .await
        .unwrap()
    {
        QuestionInsert::Duplicate {
            message_id,
            conversation_id,
        } => {
            assert_eq!(message_id, "d1");
            assert_eq!(conversation_id, "conv2");
        }
        other => panic!("{other:?}"),
    }
    // Another learner may use the same client id.
    assert!(matches!(
        store
            .insert_question(&question("d3", "same", "conv3", "cy"))
            .await
            .unwrap(),
        QuestionInsert::Inserted
    ));
    assert_eq!(store.messages("conv2").await.unwrap().len(), 1);
}

async fn streaming_answers_left_by_a_crash_become_interrupted(store: &Store) {
    use companion::transcript::now_ms;

    store
        .insert_question(&question("i1", "ci", "conv4", "dee"))
        .await
        .unwrap();
    store
        .start_answer("i2", "i1", "conv4", "dee", "node-gone")
        .await
        .unwrap();
    store
        .checkpoint_answer("i2", "half an ans", &[5, 11])
        .await
        .unwrap();
    // Another node's answer, alive: its heartbeat comes after the crash.
    store
        .insert_question(&question("i3", "ci3", "conv4b", "eli"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let crash = now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store
        .start_answer("i4", "i3", "conv4b", "eli", "node-live")
        .await
        .unwrap();

    // Only the answer whose heartbeat is older than the cut-off is orphaned.
    assert_eq!(store.interrupt_stale(crash).await.unwrap(), 1);
    let answer = store.answer_to("i1").await.unwrap().unwrap();
    assert_eq!(answer.status, MessageStatus::Interrupted);
    assert_eq!(answer.text, "half an ans");
    let live = store.answer_to("i3").await.unwrap().unwrap();
    assert_eq!(live.status, MessageStatus::Streaming);
    // A checkpoint after the answer ended changes nothing.
    store.checkpoint_answer("i2", "late", &[4]).await.unwrap();
    assert_eq!(
        store.answer_to("i1").await.unwrap().unwrap().text,
        "half an ans"
    );
    // A heartbeat keeps the live one fresh; the one-answer check says so too.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let later = now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store.heartbeat_answer("i4").await.unwrap();
    assert!(!store.interrupt_if_stale("i4", later).await.unwrap());
    assert_eq!(store.interrupt_stale(later).await.unwrap(), 0);
    assert!(store.interrupt_if_stale("i4", now_ms() + 1).await.unwrap());
    assert_eq!(
        store.answer_to("i3").await.unwrap().unwrap().status,
        MessageStatus::Interrupted
    );
    // A node restarting under its stable id takes back what it left streaming.
    store
        .insert_question(&question("i5", "ci5", "conv4c", "fay"))
        .await
        .unwrap();
    store
        .start_answer("i6", "i5", "conv4c", "fay", "node-stable")
        .await
        .unwrap();
    assert_eq!(store.interrupt_node("node-other").await.unwrap(), 0);
    assert_eq!(store.interrupt_node("node-stable").await.unwrap(), 1);
}

async fn unknown_ids_read_as_nothing(store: &Store) {
    assert!(store.conversation("nope").await.unwrap().is_none());
    assert!(store.messages("nope").await.unwrap().is_empty());
    assert!(store.answer_to("nope").await.unwrap().is_none());
}

/// The prompt's history is read as the newest `limit` messages of the conversation, oldest
/// first, whatever its length: the window is cut in SQL, not by loading every message.
async fn the_history_window_is_the_newest_messages_oldest_first(store: &Store) {
    for i in 0..30 {
        let q = question(&format!("h{i:02}"), &format!("hc{i:02}"), "long", "ada");
        store.insert_question(&q).await.unwrap();
    }
    store
        .insert_question(&question("other", "hc-other", "short", "ada"))
        .await
        .unwrap();
    let window = store.recent_messages("long", 5).await.unwrap();
    let ids: Vec<&str> = window.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["h25", "h26", "h27", "h28", "h29"]);
    assert_eq!(window[4].text, "question hc29");
    let all = store.recent_messages("long", 100).await.unwrap();
    assert_eq!(all.len(), 30);
    assert_eq!(all[0].id, "h00");
    assert!(store.recent_messages("long", 0).await.unwrap().is_empty());
    assert!(store.recent_messages("nope", 5).await.unwrap().is_empty());
}

async fn suite(store: &Store) {
    a_question_and_its_answer_round_trip_with_metadata(store).await;
    a_resent_client_id_is_a_duplicate_not_a_second_question(store).await;
    streaming_answers_left_by_a_crash_become_interrupted(store).await;
    unknown_ids_read_as_nothing(store).await;
    the_history_window_is_the_newest_messages_oldest_first(store).await;
}

#[tokio::test]
async fn the_store_suite_passes_on_sqlite() {
    let (store, _dir) = sqlite_store().await;
    suite(&store).await;
}

#[tokio::test]
async fn the_store_suite_passes_on_postgres() {
    if let Some(store) = postgres_store().await {
        suite(&store).await;
    }
}

#[tokio::test]
async fn concurrent_inserts_of_one_client_id_store_one_question() {
    let (store, _dir) = sqlite_store().await;
    let store = std::sync::Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .insert_question(&question(&format!("r{i}"), "race", "conv-race", "eve"))
                .await
                .unwrap()
        }));
    }
    let mut inserted = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), QuestionInsert::Inserted) {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1);
    assert_eq!(store.messages("conv-race").await.unwrap().len(), 1);
}

/// The review store (feedback, flags, annotations, search, pages, retention, deletion) on one
/// backend; run on both below.
async fn review_suite(store: &Store) {
    use companion::review::{
        Annotation, AnnotationKind, Feedback, Flag, FlagKind, Rating, Severity,
    };
    use companion::transcript::now_ms;

    store
        .insert_question(&question("rq1", "rc1", "rconv1", "ada"))
        .await
        .unwrap();
    store
        .start_answer("ra1", "rq1", "rconv1", "ada", "node-a")
        .await
        .unwrap();
    let answer = AnswerRecord {
        text: "A while loop stops when its condition is false. Sinon ÇA NE S'ARRÊTE PAS.".into(),
        ..Default::default()
    };
    store
        .finish_answer("ra1", MessageStatus::Complete, &answer)
        .await
        .unwrap();
    let mut q2 = question("rq2", "rc2", "rconv2", "ada");
    q2.text = "Is 100% coverage needed_now?".into();
    store.insert_question(&q2).await.unwrap();
    let mut q3 = question("rq3", "rc3", "rconv3", "bob");
    q3.text = "Is 1000 coverage neededXnow? Élève Øystein".into();
    store.insert_question(&q3).await.unwrap();

    assert_eq!(
        store.message("ra1").await.unwrap().unwrap().learner_id,
        "ada"
    );
    assert!(store.message("nope").await.unwrap().is_none());

    // Feedback: one rating per learner and answer, the latest wins.
    let mut feedback = Feedback {
        id: "f1".into(),
        message_id: "ra1".into(),
        learner_id: "ada".into(),
        rating: Rating::Up,
        comment: None,
        created_at: now_ms(),
    };
    store.put_feedback(&feedback).await.unwrap();
    feedback.id = "f2".into();
    feedback.rating = Rating::Down;
    feedback.comment = Some("unclear".into());
    store.put_feedback(&feedback).await.unwrap();
    let stored = store.conversation_feedback("rconv1").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].rating, stored[0].comment.as_deref()),
        (Rating::Down, Some("unclear"))
    );
    assert_eq!(store.feedback_since("ada", 0).await.unwrap().len(), 1);
    assert!(
        store
            .feedback_since("ada", now_ms() + 60_000)
            .await
            .unwrap()
            .is_empty()
    );

    // Flags: open, counted, resolved once.
    let flag = Flag::new(
        "ada",
        Some("rconv1"),
        Some("rq1"),
        FlagKind::Distress,
        Severity::Urgent,
        "why",
    );
    store.add_flag(&flag).await.unwrap();
    let other = Flag::new(
        "ada",
        Some("rconv2"),
        None,
        FlagKind::HumanRequested,
        Severity::Normal,
        "button",
    );
    store.add_flag(&other).await.unwrap();
    assert!(
        store
            .has_open_flag("ada", FlagKind::Distress, Some("rq1"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .has_open_flag("ada", FlagKind::Stuck, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .has_open_flag("ada", FlagKind::HumanRequested, None)
            .await
            .unwrap()
    );
    let counts = store
        .open_flag_counts(&["ada".to_string(), "bob".to_string()])
        .await
        .unwrap();
    assert_eq!((counts["ada"].open, counts["ada"].urgent), (2, 1));
    assert!(!counts.contains_key("bob"));
    assert_eq!(store.flag(&flag.id).await.unwrap().unwrap(), flag);
    assert!(
        store
            .resolve_flag(&flag.id, "grace", Some("called her"))
            .await
            .unwrap()
    );
    assert!(!store.resolve_flag(&flag.id, "grace", None).await.unwrap());
    assert!(!store.resolve_flag("nope", "grace", None).await.unwrap());
    let resolved = store.flag(&flag.id).await.unwrap().unwrap();
    assert_eq!(resolved.resolved_by.as_deref(), Some("grace"));
    assert_eq!(resolved.resolution.as_deref(), Some("called her"));
    assert_eq!(store.flags("ada", true).await.unwrap(), vec![other.clone()]);
    assert_eq!(store.flags("ada", false).await.unwrap().len(), 2);

    // Annotations.
    let annotation = Annotation {
        id: "n1".into(),
        message_id: "ra1".into(),
        learner_id: "ada".into(),
        author_id: "grace".into(),
        kind: AnnotationKind::Correction,
        text: "Mention break too.".into(),
        created_at: now_ms(),
    };
    store.add_annotation(&annotation).await.unwrap();
    assert_eq!(
        store.conversation_annotations("rconv1").await.unwrap(),
        vec![annotation.clone()]
    );
    assert_eq!(store.learner_annotations("ada").await.unwrap().len(), 1);
    assert!(
        store
            .conversation_annotations("rconv2")
            .await
            .unwrap()
            .is_empty()
    );

    // Conversations and pages of messages.
    let conversations = store.learner_conversations("ada").await.unwrap();
    assert_eq!(conversations.len(), 2);
    let first = conversations.iter().find(|c| c.id == "rconv1").unwrap();
    assert_eq!(first.n_messages, 2);
    assert_eq!(first.first_question.as_deref(), Some("question rc1"));
    let page = store.learner_messages("ada", 0, None, 2).await.unwrap();
    assert_eq!(page.messages.len(), 2);
    let next = page.next.expect("a third message");
    let rest = store
        .learner_messages("ada", 0, Some(&next), 2)
        .await
        .unwrap();
    let ids: Vec<_> = page
        .messages
        .iter()
        .chain(&rest.messages)
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&"rq1") && ids.contains(&"ra1") && ids.contains(&"rq2"));
    assert!(rest.next.is_none());
    assert!(
        store
            .learner_messages("ada", now_ms() + 60_000, None, 10)
            .await
            .unwrap()
            .messages
            .is_empty()
    );

    // Search: every term, case-insensitive, `%` and `_` literal, scoped to learners.
    let search = |scope: Option<Vec<String>>, terms: &[&str]| {
        let terms: Vec<String> = terms.iter().map(|t| t.to_string()).collect();
        async move {
            store
                .search(scope.as_deref(), &terms, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search(None, &["WHILE", "condition"]).await, vec!["ra1"]);
    // Case folding beyond ASCII, both ways round.
    assert_eq!(search(None, &["ça", "arrête"]).await, vec!["ra1"]);
    assert_eq!(search(None, &["élève"]).await, vec!["rq3"]);
    assert_eq!(search(None, &["ÉLÈVE", "øYSTEIN"]).await, vec!["rq3"]);
    assert_eq!(search(None, &["100%"]).await, vec!["rq2"]);
    assert_eq!(search(None, &["needed_now"]).await, vec!["rq2"]);
    assert_eq!(search(None, &["coverage"]).await.len(), 2);
    assert_eq!(
        search(Some(vec!["bob".into()]), &["coverage"]).await,
        vec!["rq3"]
    );
    assert!(search(Some(vec![]), &["coverage"]).await.is_empty());

    // Retention: nothing is older than 0; everything is older than the future.
    assert_eq!(store.purge_before(0).await.unwrap(), 0);
    assert_eq!(store.learner_conversations("ada").await.unwrap().len(), 2);
    assert_eq!(store.purge_before(now_ms() + 60_000).await.unwrap(), 3);
    assert!(store.learner_conversations("ada").await.unwrap().is_empty());
    assert!(store.messages("rconv1").await.unwrap().is_empty());
    assert!(store.learner_annotations("ada").await.unwrap().is_empty());
    assert!(store.feedback_since("ada", 0).await.unwrap().is_empty());
    assert!(store.flags("ada", false).await.unwrap().is_empty());

    // A learner's deletion removes their review rows.
    store
        .add_flag(&Flag::new(
            "cy",
            None,
            None,
            FlagKind::Stuck,
            Severity::Normal,
            "r",
        ))
        .await
        .unwrap();
    assert_eq!(store.delete_learner_review("cy").await.unwrap(), 1);
    assert!(store.flags("cy", false).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_review_suite_passes_on_sqlite() {
    let (store, _dir) = sqlite_store().await;
    review_suite(&store).await;
}

#[tokio::test]
async fn the_review_suite_passes_on_postgres() {
    if let Some(store) = postgres_store().await {
        review_suite(&store).await;
    }
}

#[tokio::test]
async fn messages_written_before_search_text_existed_are_found_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    for i in 0..1203 {
        let mut q = question(&format!("old{i}"), &format!("c{i}"), "conv-old", "ada");
        q.text = format!("Pourquoi mon ÉLÈVE numéro {i} boucle-t-il ?");
        store.insert_question(&q).await.unwrap();
    }
    // As a database from before migration 0004 holds them: no folded text.
    sqlx::query("UPDATE messages SET search_text = NULL")
        .execute(store.pool())
        .await
        .unwrap();
    drop(store);

    let store = Store::connect(&url, 2).await.unwrap();
    let found = store
        .search(None, &["élève".to_string(), "1202".to_string()], 10)
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["old1202"]
    );
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM messages WHERE search_text IS NULL")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// Runs `sql` with `$1` bound to `id`, as another program (or a bad migration) might.
async fn overwrite(store: &Store, sql: &'static str, id: &str) {
    let done = sqlx::query(sql)
        .bind(id)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1, "{sql}");
}

fn assert_decode_error<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    column: &str,
    value: &str,
) {
    match result {
        Err(StoreError::Decode {
            column: got_column,
            value: got_value,
        }) => {
            assert_eq!((got_column, got_value.as_str()), (column, value));
        }
        other => panic!("expected a decode error on {column}, got {other:?}"),
    }
}

/// Every enum column: an unknown stored word is an error naming the column and the word, never
/// a plausible variant.
async fn unknown_stored_words_are_decode_errors(store: &Store) {
    use companion::review::{
        Annotation, AnnotationKind, Feedback, Flag, FlagKind, Rating, Severity,
    };
    use companion::transcript::now_ms;

    store
        .insert_question(&question("uq1", "uc1", "uconv1", "una"))
        .await
        .unwrap();
    overwrite(
        store,
        "UPDATE messages SET status = 'exploded' WHERE id = $1",
        "uq1",
    )
    .await;
    assert_decode_error(store.messages("uconv1").await, "status", "exploded");
    assert_decode_error(store.message("uq1").await, "status", "exploded");

    let flag = Flag::new(
        "una",
        Some("uconv1"),
        None,
        FlagKind::Moderation,
        Severity::Normal,
        "r",
    );
    store.add_flag(&flag).await.unwrap();
    overwrite(
        store,
        "UPDATE flags SET kind = 'abuse' WHERE id = $1",
        &flag.id,
    )
    .await;
    assert_decode_error(store.flags("una", false).await, "kind", "abuse");
    assert_decode_error(store.flag(&flag.id).await, "kind", "abuse");
    overwrite(
        store,
        "UPDATE flags SET kind = 'moderation', severity = 'critical' WHERE id = $1",
        &flag.id,
    )
    .await;
    assert_decode_error(store.flags("una", true).await, "severity", "critical");
    assert_decode_error(
        store.open_flag_counts(&["una".to_string()]).await,
        "severity",
        "critical",
    );

    store
        .put_feedback(&Feedback {
            id: "uf1".into(),
            message_id: "uq1".into(),
            learner_id: "una".into(),
            rating: Rating::Up,
            comment: None,
            created_at: now_ms(),
        })
        .await
        .unwrap();
    overwrite(
        store,
        "UPDATE feedback SET rating = 'meh' WHERE id = $1",
        "uf1",
    )
    .await;
    assert_decode_error(store.feedback_since("una", 0).await, "rating", "meh");

    store
        .add_annotation(&Annotation {
            id: "un1".into(),
            message_id: "uq1".into(),
            learner_id: "una".into(),
            author_id: "grace".into(),
            kind: AnnotationKind::Comment,
            text: "t".into(),
            created_at: now_ms(),
        })
        .await
        .unwrap();
    overwrite(
        store,
        "UPDATE annotations SET kind = 'note' WHERE id = $1",
        "un1",
    )
    .await;
    assert_decode_error(store.learner_annotations("una").await, "kind", "note");
}

#[tokio::test]
async fn unknown_stored_words_are_decode_errors_on_sqlite() {
    let (store, _dir) = sqlite_store().await;
    unknown_stored_words_are_decode_errors(&store).await;
}

#[tokio::test]
async fn unknown_stored_words_are_decode_errors_on_postgres() {
    if let Some(store) = postgres_store().await {
        unknown_stored_words_are_decode_errors(&store).await;
    }
}

async fn retention_keeps_conversations_with_an_open_urgent_flag(store: &Store) {
    use companion::review::{Flag, FlagKind, Severity};
    use companion::transcript::now_ms;

    for (n, learner) in [(1, "urgent-ada"), (2, "normal-ben"), (3, "resolved-cy")] {
        store
            .insert_question(&question(
                &format!("kq{n}"),
                &format!("kc{n}"),
                &format!("kconv{n}"),
                learner,
            ))
            .await
            .unwrap();
    }
    let flag = |n: usize, learner: &str, severity| {
        Flag::new(
            learner,
            Some(&format!("kconv{n}")),
            Some(&format!("kq{n}")),
            FlagKind::Distress,
            severity,
            "distress wording",
        )
    };
    let urgent = flag(1, "urgent-ada", Severity::Urgent);
    store.add_flag(&urgent).await.unwrap();
    store
        .add_flag(&flag(2, "normal-ben", Severity::Normal))
        .await
        .unwrap();
    let resolved = flag(3, "resolved-cy", Severity::Urgent);
    store.add_flag(&resolved).await.unwrap();
    assert!(store.resolve_flag(&resolved.id, "mia", None).await.unwrap());

    let purged = store.purge_before(now_ms() + 60_000).await.unwrap();

    // The open urgent flag, its question and its conversation stay for the mentor.
    let open = store.flags("urgent-ada", true).await.unwrap();
    assert_eq!(open.len(), 1, "retention deleted an open urgent flag");
    assert_eq!(open[0].id, urgent.id);
    assert_eq!(store.messages("kconv1").await.unwrap().len(), 1);
    // The others go as before.
    assert_eq!(purged, 2);
    assert!(store.messages("kconv2").await.unwrap().is_empty());
    assert!(store.flags("normal-ben", false).await.unwrap().is_empty());
    assert!(store.flags("resolved-cy", false).await.unwrap().is_empty());
    // Once resolved, it goes at the next purge.
    assert!(store.resolve_flag(&urgent.id, "mia", None).await.unwrap());
    assert_eq!(store.purge_before(now_ms() + 60_000).await.unwrap(), 1);
    assert!(store.messages("kconv1").await.unwrap().is_empty());
}

#[tokio::test]
async fn retention_keeps_conversations_with_an_open_urgent_flag_on_sqlite() {
    let (store, _dir) = sqlite_store().await;
    retention_keeps_conversations_with_an_open_urgent_flag(&store).await;
}

#[tokio::test]
async fn retention_keeps_conversations_with_an_open_urgent_flag_on_postgres() {
    if let Some(store) = postgres_store().await {
        retention_keeps_conversations_with_an_open_urgent_flag(&store).await;
    }
}

/// Learners racing to be first in one new conversation id: one owns it, the others' questions
/// are refused, none is stored in a conversation that is not theirs.
async fn one_learner_owns_a_raced_conversation_id(store: Store) {
    let store = std::sync::Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let learner = format!("racer-{i}");
            let inserted = store
                .insert_question(&question(
                    &format!("own{i}"),
                    &format!("own-c{i}"),
                    "conv-owned",
                    &learner,
                ))
                .await;
            (learner, inserted)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (learner, inserted) = task.await.unwrap();
        if let Ok(QuestionInsert::Inserted) = inserted {
            winners.push(learner);
        }
    }
    assert_eq!(winners.len(), 1, "owners of one conversation: {winners:?}");
    let owner = store.conversation("conv-owned").await.unwrap().unwrap();
    assert_eq!(owner.learner_id, winners[0]);
    let messages = store.messages("conv-owned").await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].learner_id, winners[0]);
    // Later, too: another learner's question never lands in it.
    let late = store
        .insert_question(&question("own-late", "own-late", "conv-owned", "late-zoe"))
        .await;
    assert!(!matches!(late, Ok(QuestionInsert::Inserted)), "{late:?}");
    assert_eq!(store.messages("conv-owned").await.unwrap().len(), 1);
}

#[tokio::test]
async fn one_learner_owns_a_raced_conversation_id_on_sqlite() {
    let (store, _dir) = sqlite_store().await;
    one_learner_owns_a_raced_conversation_id(store).await;
}

#[tokio::test]
async fn one_learner_owns_a_raced_conversation_id_on_postgres() {
    if let Some(store) = postgres_store().await {
        one_learner_owns_a_raced_conversation_id(store).await;
    }
}

#[tokio::test]
async fn a_mentor_request_points_at_the_newest_question_of_a_busy_day() {
    use companion::review::flags::Flagger;

    let (store, _dir) = sqlite_store().await;
    for n in 0..600 {
        store
            .insert_question(&question(
                &format!("busy-{n:04}"),
                &format!("busy-c{n}"),
                "conv-busy",
                "busy-ada",
            ))
            .await
            .unwrap();
    }
    let flagger = Flagger::new(store.clone(), None);

    let flag = flagger
        .on_mentor_request("busy-ada", "conv-busy", None)
        .await
        .unwrap();

    assert_eq!(flag.message_id.as_deref(), Some("busy-0599"));
}

/// Eight questions of one learner read at the same moment, each with distress wording: one open
/// distress flag holding eight signals, not several stacked (issue 17's grouping, raced).
async fn questions_read_at_the_same_moment_open_one_flag_of_their_kind(store: Store) {
    use companion::review::FlagKind;
    use companion::review::flags::{Flagger, QuestionRef};

    let texts = [
        "i want to die",
        "honestly i feel hopeless",
        "i am being harassed every day",
        "i had a panic attack before the quiz",
        "je veux mourir",
        "je n'en peux plus de vivre comme ça",
        "je suis harcelée dans ma promo",
        "encore une crise d'angoisse ce matin",
    ];
    let mut refs = Vec::new();
    for (n, text) in texts.iter().enumerate() {
        let id = format!("race-{n}");
        let client = format!("race-c{n}");
        store
            .insert_question(&question(&id, &client, "conv-race", "race-ada"))
            .await
            .unwrap();
        refs.push(QuestionRef {
            learner_id: "race-ada".into(),
            conversation_id: "conv-race".into(),
            message_id: id,
            text: (*text).into(),
        });
    }
    let flagger = Flagger::new(store.clone(), None);

    futures::future::join_all(refs.iter().map(|q| flagger.on_question(q))).await;

    let flags = store.flags("race-ada", true).await.unwrap();
    let distress: Vec<_> = flags
        .iter()
        .filter(|f| f.kind == FlagKind::Distress)
        .collect();
    assert_eq!(distress.len(), 1, "{flags:#?}");
    assert_eq!(distress[0].signals, 8, "{flags:#?}");
}

#[tokio::test]
async fn questions_read_at_the_same_moment_open_one_flag_of_their_kind_on_sqlite() {
    let (store, _dir) = sqlite_store().await;
    questions_read_at_the_same_moment_open_one_flag_of_their_kind(store).await;
}

#[tokio::test]
async fn questions_read_at_the_same_moment_open_one_flag_of_their_kind_on_postgres() {
    if let Some(store) = postgres_store().await {
        questions_read_at_the_same_moment_open_one_flag_of_their_kind(store).await;
    }
}
