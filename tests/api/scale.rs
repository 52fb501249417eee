//! Scale-out (issue 16): several `companion serve` nodes on one PostgreSQL and one Qdrant
//! server share everything a learner or a mentor needs, and index the content once; and the
//! service keeps retrieving from a Qdrant cluster that loses a peer.
use std::time::Duration;

use companion::auth::Role;
use companion::config::{CollectionLayout, IndexSettings, Settings};
use serde_json::Value;

use crate::helpers::{
    FakeLlm, FakeScript, QdrantCluster, QdrantServer, TestApp, WsClient, spawn_app_with,
    use_fake_llm,
};
use crate::pg;

/// A node's settings: the shared database and Qdrant collection, the fake model, a name.
fn shared(
    settings: &mut Settings,
    database: &str,
    qdrant: &str,
    collection: &str,
    layout: CollectionLayout,
    llm: &FakeLlm,
    node: &str,
) {
    use_fake_llm(settings, llm);
    settings.database.url = database.to_string();
    settings.index = IndexSettings::Qdrant {
        url: qdrant.to_string(),
        api_key: None,
        collection: collection.to_string(),
        layout,
    };
    settings.transcripts.node_id = Some(node.to_string());
}

async fn readiness(app: &TestApp) -> Value {
    let (status, body) = app.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn two_nodes_on_one_postgres_and_one_qdrant_index_once_and_serve_the_same_learner() {
    let Some(database) = pg::fresh_schema_url("scale", "the two-node test").await else {
        return;
    };
    let Some(qdrant) = QdrantServer::start("the two-node test").await else {
        return;
    };
    let llm = FakeLlm::start(FakeScript::default()).await;
    let collection = format!("scale_{}", uuid::Uuid::new_v4().simple());
    let node = |name: &'static str| {
        let (database, url, collection, llm) =
            (database.clone(), qdrant.url(), collection.clone(), &llm);
        spawn_app_with(move |s| {
            shared(
                s,
                &database,
                &url,
                &collection,
                Default::default(),
                llm,
                name,
            )
        })
    };
    // Both start at once, each with an empty data dir of its own.
    let (a, b) = tokio::join!(node("node-a"), node("node-b"));

    // The content is indexed once: one node indexed every file, the other found them done.
    let (ready_a, ready_b) = (readiness(&a).await, readiness(&b).await);
    let indexed = |r: &Value| r["index"]["files_indexed"].as_u64().unwrap();
    let unchanged = |r: &Value| r["index"]["files_unchanged"].as_u64().unwrap();
    let (first, second) = if indexed(&ready_a) > 0 {
        (&ready_a, &ready_b)
    } else {
        (&ready_b, &ready_a)
    };
    let files = indexed(first);
    assert!(files > 5, "a: {ready_a}, b: {ready_b}");
    assert_eq!(unchanged(first), 0, "{first}");
    assert_eq!(
        indexed(second),
        0,
        "indexed twice: a: {ready_a}, b: {ready_b}"
    );
    assert_eq!(unchanged(second), files, "{second}");
    assert_eq!(second["index"]["rebuilt"], false, "{second}");

    // A learner asks on node A, with sources from the shared index.
    a.put_learner("ada", "mentor-1").await;
    let token = a.learner_token("ada");
    let mut ws = a.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;
    let first_answer = ws.ask("scale-1", "How do I stop a while loop?").await;
    assert!(
        !first_answer.sources().is_empty(),
        "{:?}",
        first_answer.frames
    );
    ws.close().await;

    // Reconnecting to node B resumes the same conversation: the model sees the first turn.
    let mut ws = WsClient::connect(
        b.addr,
        &format!("token={token}&conversation={conversation}"),
    )
    .await;
    assert_eq!(ws.ready().await.conversation_id, conversation);
    let second_answer = ws.ask("scale-2", "And a for loop?").await;
    assert_eq!(second_answer.done().status, "complete");
    let prompt = llm.requests().last().unwrap()["messages"].to_string();
    assert!(
        prompt.contains("How do I stop a while loop?"),
        "node B's prompt lacks the turn asked on node A: {prompt}"
    );

    // The question asked on node A, resent to node B, is replayed, not answered again.
    let requests = llm.requests().len();
    let replay = ws.ask("scale-1", "How do I stop a while loop?").await;
    assert!(
        replay.ack().1,
        "not recognised as a duplicate: {:?}",
        replay.frames
    );
    assert_eq!(replay.text(), first_answer.text());
    assert_eq!(llm.requests().len(), requests, "the model was asked again");
    ws.close().await;

    // The mentor sees every message on either node.
    let mentor = b.token(Role::Mentor, "mentor-1");
    for node in [&a, &b] {
        let (status, body) = node.conversation(&mentor, &conversation).await;
        assert_eq!(status, 200, "{body}");
        let texts: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(texts.len(), 4, "{body}");
        assert_eq!(texts[0], "How do I stop a while loop?");
        assert_eq!(texts[2], "And a for loop?");
    }

    // A third node started later, on an empty data dir, rebuilds nothing.
    let c = node("node-c").await;
    let ready_c = readiness(&c).await;
    assert_eq!(unchanged(&ready_c), files, "{ready_c}");
    assert_eq!(ready_c["index"]["rebuilt"], false, "{ready_c}");
    let mut ws = c.connect(&c.learner_token("bea")).await;
    ws.ready().await;
    let answer = ws.ask("scale-c", "How do I stop a while loop?").await;
    assert_eq!(
        answer.sources(),
        first_answer.sources(),
        "the shared index lost content"
    );
}

#[tokio::test]
async fn the_service_keeps_retrieving_from_a_qdrant_cluster_that_loses_a_peer() {
    let Some(mut cluster) = QdrantCluster::start(3, "the Qdrant cluster service test").await else {
        return;
    };
    let llm = FakeLlm::start(FakeScript::default()).await;
    let layout = CollectionLayout {
        shards: 3,
        replication_factor: 2,
        write_consistency: 1,
    };
    let url = cluster.peers[0].url();
    let app = spawn_app_with(|s| {
        use_fake_llm(s, &llm);
        s.index = IndexSettings::Qdrant {
            url,
            api_key: None,
            collection: "companion".into(),
            layout,
        };
    })
    .await;
    let mut ws = app.connect(&app.learner_token("ada")).await;
    ws.ready().await;
    let questions = [
        "How do I stop a while loop?",
        "What does a function return?",
        "How do I add an item to a list?",
    ];
    let mut before = Vec::new();
    for (i, question) in questions.iter().enumerate() {
        let answer = ws.ask(&format!("before-{i}"), question).await;
        assert!(!answer.sources().is_empty(), "{question}: no sources");
        before.push(answer.sources().to_vec());
    }

    // The peer the service does not talk to dies; its shards have copies on the others.
    let mut lost = cluster.peers.remove(2);
    lost.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, question) in questions.iter().enumerate() {
        let answer = ws.ask(&format!("after-{i}"), question).await;
        assert_eq!(answer.done().status, "complete");
        assert_eq!(
            answer.sources(),
            before[i].as_slice(),
            "{question}: retrieval changed with a peer lost"
        );
    }
}
