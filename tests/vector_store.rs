//! The vector store suite, run against the embedded qdrant-edge store and, when
//! `COMPANION_TEST_QDRANT_URL` is set (the gRPC URL, e.g. http://localhost:6334, with the API
//! key in `COMPANION_TEST_QDRANT_API_KEY` if needed), against a Qdrant server in a collection of
//! its own that is dropped afterwards.
use std::panic::AssertUnwindSafe;

use companion::config::CollectionLayout;
use companion::retrieval::chunk::Chunk;
use companion::retrieval::edge_store::EdgeStore;
use companion::retrieval::embed::Bm25;
use companion::retrieval::qdrant_store::QdrantStore;
use companion::retrieval::store::{
    Hit, IndexSchema, IndexedPoint, SearchQuery, VectorStore, point_id,
};
use futures::FutureExt;

#[path = "common/qdrant.rs"]
mod qdrant;
use qdrant::{QdrantCluster, QdrantServer};

const DIM: usize = 4;
const SCHEMA: IndexSchema = IndexSchema {
    dense_dim: Some(DIM),
};

fn chunk(course: &str, source: &str, chunk_idx: usize, text: &str) -> Chunk {
    Chunk {
        source: source.into(),
        course: course.into(),
        chapter: "02-control-flow".into(),
        chapter_title: "Control flow".into(),
        title: "Loops".into(),
        heading_path: vec!["Loops".into()],
        url: format!("/course/{course}/{source}#part-{chunk_idx}"),
        kind: "markdown".into(),
        chunk_idx,
        text: text.into(),
    }
}

fn point(chunk: Chunk, learner: Option<&str>, dense: Option<Vec<f32>>) -> IndexedPoint {
    IndexedPoint {
        id: point_id(&chunk.source, learner, chunk.chunk_idx),
        sparse: Bm25::new().embed_document(&chunk.embedding_text()),
        learner: learner.map(str::to_string),
        dense,
        chunk,
    }
}

/// Points with no dense vector, one per `(course, source, chunk_idx, text, learner)`.
fn sparse_points(rows: &[(&str, &str, usize, &str, Option<&str>)]) -> Vec<IndexedPoint> {
    rows.iter()
        .map(|&(course, source, chunk_idx, text, learner)| {
            point(chunk(course, source, chunk_idx, text), learner, None)
        })
        .collect()
}

/// Upserts `points` and commits them.
async fn write(store: &dyn VectorStore, points: Vec<IndexedPoint>) {
    store.upsert(points).await.unwrap();
    store.commit().await.unwrap();
}

/// A fresh, empty index of [`SCHEMA`] with `points` in it.
async fn fill(store: &dyn VectorStore, points: Vec<IndexedPoint>) {
    store.prepare(SCHEMA, true).await.unwrap();
    assert_eq!(
        store.count().await.unwrap(),
        0,
        "prepare with reset empties"
    );
    write(store, points).await;
}

async fn bm25_search(
    store: &dyn VectorStore,
    text: &str,
    course: Option<&str>,
    learner: Option<&str>,
) -> Vec<Hit> {
    store
        .search(SearchQuery {
            dense: None,
            sparse: Some(Bm25::new().embed_query(text)),
            course: course.map(str::to_string),
            learner: learner.map(str::to_string),
            candidates: 20,
            limit: 10,
        })
        .await
        .unwrap()
}

fn texts(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.chunk.text.as_str()).collect()
}

async fn prepare_upsert_and_count(store: &dyn VectorStore) {
    let points = sparse_points(&[
        ("py", "loops.md", 0, "While loops repeat a block.", None),
        ("py", "loops.md", 1, "For loops walk a sequence.", None),
        ("py", "lists.md", 0, "Lists hold items in order.", None),
    ]);
    fill(store, points.clone()).await;
    assert_eq!(store.count().await.unwrap(), 3);

    // Upserting the same ids again replaces, never duplicates.
    write(store, points).await;
    assert_eq!(store.count().await.unwrap(), 3);

    // Preparing again with the same schema and no reset keeps the points.
    store.prepare(SCHEMA, false).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 3);
}

async fn bm25_search_finds_the_right_chunk(store: &dyn VectorStore) {
    let functions = chunk(
        "py",
        "functions.md",
        0,
        "Functions return values to the caller.",
    );
    let mut points = sparse_points(&[
        ("py", "py/loops.md", 0, "While loops repeat a block.", None),
        ("py", "lists.md", 0, "Lists hold items in order.", None),
    ]);
    points.insert(1, point(functions.clone(), None, None));
    fill(store, points).await;
    let hits = bm25_search(store, "how does a function return a value?", None, None).await;
    assert!(!hits.is_empty(), "no hits");
    assert_eq!(hits[0].chunk, functions, "got {:?}", texts(&hits));
    assert_eq!(hits[0].id, point_id("functions.md", None, 0));
    assert!(
        hits.iter().all(|h| h.chunk.source == "functions.md"),
        "only chunks sharing a term match: {:?}",
        texts(&hits)
    );
}

async fn hybrid_search_fuses_both_retrievers(store: &dyn VectorStore) {
    // `dense_only` is the nearest to the query vector but shares no word with the question;
    // `sparse_only` matches the words and points away from the query vector.
    let dense_only = chunk("py", "recursion.md", 0, "Recursion calls itself.");
    let sparse_only = chunk("py", "dicts.md", 0, "Dictionaries map keys to values.");
    fill(
        store,
        vec![
            point(dense_only.clone(), None, Some(vec![1.0, 0.0, 0.0, 0.0])),
            point(sparse_only.clone(), None, Some(vec![-1.0, 0.0, 0.0, 0.0])),
            point(
                chunk("py", "py/loops.md", 0, "While loops repeat a block."),
                None,
                Some(vec![0.0, 0.0, 1.0, 0.0]),
            ),
            point(
                chunk("py", "lists.md", 0, "Lists hold items in order."),
                None,
                Some(vec![0.0, 0.0, 0.0, 1.0]),
            ),
        ],
    )
    .await;
    let query = |dense: Option<Vec<f32>>, sparse: bool| SearchQuery {
        dense,
        sparse: sparse.then(|| Bm25::new().embed_query("dictionary keys")),
        course: Some("py".into()),
        learner: None,
        candidates: 10,
        limit: 2,
    };
    let q = vec![1.0, 0.1, 0.0, 0.0];

    let dense = store.search(query(Some(q.clone()), false)).await.unwrap();
    assert_eq!(dense.len(), 2);
    assert_eq!(dense[0].chunk, dense_only, "dense: {:?}", texts(&dense));
    assert!(
        dense.iter().all(|h| h.chunk != sparse_only),
        "dense: {:?}",
        texts(&dense)
    );

    let sparse = store.search(query(None, true)).await.unwrap();
    assert_eq!(texts(&sparse), vec![sparse_only.text.as_str()]);

    let hybrid = store.search(query(Some(q), true)).await.unwrap();
    assert_eq!(hybrid.len(), 2, "hybrid: {:?}", texts(&hybrid));
    assert!(
        hybrid.iter().any(|h| h.chunk == dense_only),
        "hybrid: {:?}",
        texts(&hybrid)
    );
    assert!(
        hybrid.iter().any(|h| h.chunk == sparse_only),
        "hybrid: {:?}",
        texts(&hybrid)
    );
    // In both lists beats first in one: the word match is also ranked by the dense retriever.
    assert_eq!(hybrid[0].chunk, sparse_only, "hybrid: {:?}", texts(&hybrid));
    assert!(hybrid[0].score >= hybrid[1].score);

    // An empty sparse query (only stop words) falls back to the dense retriever alone.
    let mut stop_words = query(Some(vec![1.0, 0.0, 0.0, 0.0]), false);
    stop_words.sparse = Some(Bm25::new().embed_query("the and of"));
    let fallback = store.search(stop_words).await.unwrap();
    assert_eq!(fallback[0].chunk, dense_only);
}

async fn course_filter_excludes_other_courses(store: &dyn VectorStore) {
    let points = sparse_points(&[
        ("py", "py/loops.md", 0, "While loops repeat a block.", None),
        (
            "js",
            "js/loops.md",
            0,
            "While loops repeat a block in JavaScript.",
            None,
        ),
        (
            "my course",
            "my course/loops.md",
            0,
            "While loops repeat, with spaces.",
            None,
        ),
    ]);
    fill(store, points).await;
    let courses = |hits: Vec<Hit>| {
        let mut c: Vec<String> = hits.into_iter().map(|h| h.chunk.course).collect();
        c.sort();
        c
    };
    assert_eq!(
        courses(bm25_search(store, "while loop", Some("py"), None).await),
        vec!["py"]
    );
    assert_eq!(
        courses(bm25_search(store, "while loop", Some("js"), None).await),
        vec!["js"]
    );
    // A course id with a space is still an exact match, not a full-text one.
    assert_eq!(
        courses(bm25_search(store, "while loop", Some("my course"), None).await),
        vec!["my course"]
    );
    assert!(
        bm25_search(store, "while loop", Some("course"), None)
            .await
            .is_empty()
    );
    assert!(
        bm25_search(store, "while loop", Some("rust"), None)
            .await
            .is_empty()
    );
    assert_eq!(
        courses(bm25_search(store, "while loop", None, None).await),
        vec!["js", "my course", "py"]
    );
}

async fn learner_files_are_private(store: &dyn VectorStore) {
    let points = sparse_points(&[
        ("py", "zoo.md", 0, "A zebra in the course notes.", None),
        ("py", "mine.md", 0, "My own zebra notes.", Some("a")),
    ]);
    fill(store, points).await;
    let owners = |hits: &[Hit]| {
        let mut o: Vec<Option<String>> = hits.iter().map(|h| h.learner.clone()).collect();
        o.sort();
        o
    };
    let for_a = bm25_search(store, "zebra", Some("py"), Some("a")).await;
    assert_eq!(owners(&for_a), vec![None, Some("a".to_string())]);
    let private = for_a.iter().find(|h| h.learner.is_some()).unwrap();
    assert_eq!(private.chunk.source, "mine.md");
    assert_eq!(private.id, point_id("mine.md", Some("a"), 0));

    for scope in [Some("b"), None] {
        let hits = bm25_search(store, "zebra", Some("py"), scope).await;
        assert_eq!(owners(&hits), vec![None], "learner scope {scope:?}");
        let hits = bm25_search(store, "zebra", None, scope).await;
        assert_eq!(
            owners(&hits),
            vec![None],
            "learner scope {scope:?}, any course"
        );
    }
}

async fn delete_source_removes_only_that_source(store: &dyn VectorStore) {
    let points = sparse_points(&[
        ("py", "notes.md", 0, "Course notes, part one.", None),
        ("py", "notes.md", 1, "Course notes, part two.", None),
        ("py", "other.md", 0, "Other course page.", None),
        ("py", "notes.md", 0, "Learner a notes, part one.", Some("a")),
        ("py", "notes.md", 1, "Learner a notes, part two.", Some("a")),
        ("py", "notes.md", 0, "Learner b notes.", Some("b")),
        ("py", "my notes.md", 0, "Learner a, spaced name.", Some("a")),
    ]);
    fill(store, points).await;
    assert_eq!(store.count().await.unwrap(), 7);

    store.delete_source("notes.md", Some("a")).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 5);
    let left = bm25_search(store, "notes", None, Some("a")).await;
    assert!(
        left.iter()
            .all(|h| h.learner.is_none() || h.chunk.source == "my notes.md"),
        "{:?}",
        texts(&left)
    );
    let for_b = bm25_search(store, "notes", None, Some("b")).await;
    assert!(for_b.iter().any(|h| h.learner.as_deref() == Some("b")));

    store.delete_source("notes.md", None).await.unwrap();
    assert_eq!(
        store.count().await.unwrap(),
        3,
        "course notes.md gone, other.md and b's stay"
    );
    let course = bm25_search(store, "course", None, None).await;
    assert_eq!(texts(&course), vec!["Other course page."]);
    assert_eq!(bm25_search(store, "notes", None, Some("b")).await.len(), 1);

    store.delete_source("my notes.md", Some("a")).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 2);
    // Deleting what is not there is not an error.
    store.delete_source("missing.md", Some("a")).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 2);
}

async fn a_different_schema_resets_the_index(store: &dyn VectorStore) {
    let loops = chunk("py", "loops.md", 0, "While loops repeat a block.");
    fill(
        store,
        vec![point(loops.clone(), None, Some(vec![1.0, 0.0, 0.0, 0.0]))],
    )
    .await;
    assert_eq!(store.count().await.unwrap(), 1);

    let wider = IndexSchema { dense_dim: Some(8) };
    store.prepare(wider, false).await.unwrap();
    assert_eq!(
        store.count().await.unwrap(),
        0,
        "a new dense size recreates the collection"
    );
    write(store, vec![point(loops.clone(), None, Some(vec![0.5; 8]))]).await;
    assert_eq!(store.count().await.unwrap(), 1);

    let bm25_only = IndexSchema { dense_dim: None };
    store.prepare(bm25_only, false).await.unwrap();
    assert_eq!(
        store.count().await.unwrap(),
        0,
        "dropping the dense vector recreates it"
    );
    write(store, vec![point(loops.clone(), None, None)]).await;
    store.prepare(bm25_only, false).await.unwrap();
    assert_eq!(
        store.count().await.unwrap(),
        1,
        "the same schema keeps the points"
    );
    let hits = bm25_search(store, "while loops", None, None).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].chunk, loops);
}

async fn the_payload_round_trips_to_the_same_chunk(store: &dyn VectorStore) {
    let original = Chunk {
        source: "chapters/03 functions/intro.md".into(),
        course: "python-foundations".into(),
        chapter: "03-functions".into(),
        chapter_title: "Functions — the basics".into(),
        title: "Defining functions".into(),
        heading_path: vec![
            "Defining functions".into(),
            "Arguments".into(),
            "Default values: \"None\" & friends".into(),
        ],
        url: "/course/python-foundations/03/intro#default-values-none--friends".into(),
        kind: "markdown".into(),
        chunk_idx: 7,
        text: "Default arguments are evaluated once — ünïcödé, tabs\tand\nnewlines stay.".into(),
    };
    let empty_path = Chunk {
        heading_path: Vec::new(),
        chunk_idx: 0,
        text: "Default arguments, a second chunk with no headings.".into(),
        ..original.clone()
    };
    fill(
        store,
        vec![
            point(
                original.clone(),
                Some("learner-1"),
                Some(vec![0.1, 0.2, 0.3, 0.4]),
            ),
            point(empty_path.clone(), None, None),
        ],
    )
    .await;
    let hits = bm25_search(
        store,
        "default arguments",
        Some("python-foundations"),
        Some("learner-1"),
    )
    .await;
    assert_eq!(hits.len(), 2, "{:?}", texts(&hits));
    let private = hits.iter().find(|h| h.learner.is_some()).unwrap();
    assert_eq!(private.chunk, original);
    assert_eq!(private.learner.as_deref(), Some("learner-1"));
    assert_eq!(private.id, point_id(&original.source, Some("learner-1"), 7));
    let shared = hits.iter().find(|h| h.learner.is_none()).unwrap();
    assert_eq!(shared.chunk, empty_path);
    assert_eq!(shared.id, point_id(&empty_path.source, None, 0));
}

async fn delete_learner_removes_only_that_learners_chunks(store: &dyn VectorStore) {
    let points = sparse_points(&[
        ("py", "page.md", 0, "Course page on loops.", None),
        ("py", "game.py", 0, "Learner a game loop.", Some("a")),
        ("py", "util.py", 0, "Learner a helper loop.", Some("a")),
        ("py", "game.py", 0, "Learner b game loop.", Some("b")),
    ]);
    fill(store, points).await;
    store.delete_learner("a").await.unwrap();
    store.commit().await.unwrap();
    assert_eq!(store.count().await.unwrap(), 2);
    let for_a = bm25_search(store, "loop", None, Some("a")).await;
    assert!(
        for_a.iter().all(|h| h.learner.is_none()),
        "{:?}",
        texts(&for_a)
    );
    let for_b = bm25_search(store, "loop", None, Some("b")).await;
    assert!(for_b.iter().any(|h| h.learner.as_deref() == Some("b")));
    // A learner with nothing indexed is not an error.
    store.delete_learner("nobody").await.unwrap();
}

async fn run_suite(store: &dyn VectorStore) {
    prepare_upsert_and_count(store).await;
    bm25_search_finds_the_right_chunk(store).await;
    hybrid_search_fuses_both_retrievers(store).await;
    course_filter_excludes_other_courses(store).await;
    learner_files_are_private(store).await;
    delete_source_removes_only_that_source(store).await;
    delete_learner_removes_only_that_learners_chunks(store).await;
    a_different_schema_resets_the_index(store).await;
    the_payload_round_trips_to_the_same_chunk(store).await;
}

#[tokio::test]
async fn edge_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = EdgeStore::new(dir.path().join("index"));
    run_suite(&store).await;
}

/// The suite on a Qdrant server: the one at `COMPANION_TEST_QDRANT_URL` when set, else one
/// started for the test from `../shared/bin/qdrant`.
#[tokio::test]
async fn qdrant_server_store_suite() {
    let started;
    let (url, api_key) = match std::env::var("COMPANION_TEST_QDRANT_URL") {
        Ok(url) => (url, std::env::var("COMPANION_TEST_QDRANT_API_KEY").ok()),
        Err(_) => {
            started = QdrantServer::start("Qdrant server store tests").await;
            let Some(server) = &started else {
                return;
            };
            (server.url(), None)
        }
    };
    let collection = format!("companion_test_{}", uuid::Uuid::new_v4().simple());
    let store = QdrantStore::new(&url, api_key, &collection).unwrap();
    let outcome = AssertUnwindSafe(run_suite(&store)).catch_unwind().await;
    if let Err(e) = store.delete_collection().await {
        eprintln!("could not drop test collection {collection}: {e}");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Three peers in distributed mode, a collection of three shards with two copies each: when
/// one peer is killed, every point is still counted and found through each peer left, and
/// writes go on.
#[tokio::test]
async fn a_qdrant_cluster_keeps_answering_when_a_peer_is_lost() {
    let Some(mut cluster) = QdrantCluster::start(3, "the Qdrant cluster test").await else {
        return;
    };
    let layout = CollectionLayout {
        shards: 3,
        replication_factor: 2,
        write_consistency: 1,
    };
    let store = |peer: &QdrantServer| {
        QdrantStore::new(&peer.url(), None, "companion_cluster")
            .unwrap()
            .with_layout(layout)
    };
    let topics = [
        "loops",
        "lists",
        "dicts",
        "tuples",
        "sets",
        "strings",
        "files",
        "classes",
        "modules",
        "errors",
        "tests",
        "generators",
    ];
    let points: Vec<IndexedPoint> = topics
        .iter()
        .map(|topic| {
            let text = format!("The chapter on {topic} explains {topic} with examples.");
            let mut chunk = chunk("py", &format!("{topic}.md"), 0, &text);
            // Titled by its topic: the suite's fixture titles every chunk "Loops".
            chunk.title = format!("About {topic}");
            chunk.heading_path = vec![chunk.title.clone()];
            point(chunk, None, None)
        })
        .chain((0..40).map(|i| {
            let text = format!("Learner note number {i} about recursion.");
            point(chunk("py", "notes.md", i, &text), Some("ada"), None)
        }))
        .collect();
    let total = points.len();
    fill(&store(&cluster.peers[0]), points).await;

    let lost = cluster.peers.remove(2);
    drop(lost);
    for (n, peer) in cluster.peers.iter().enumerate() {
        let survivor = store(peer);
        assert_eq!(
            survivor.count().await.unwrap(),
            total,
            "peer {n}: points lost with a peer"
        );
        for topic in topics {
            let hits = bm25_search(&survivor, topic, Some("py"), None).await;
            assert_eq!(
                hits.first().map(|h| h.chunk.source.as_str()),
                Some(format!("{topic}.md").as_str()),
                "peer {n}, {topic}: {:?}",
                texts(&hits)
            );
        }
        let notes = bm25_search(&survivor, "recursion", Some("py"), Some("ada")).await;
        assert_eq!(notes.len(), 10, "peer {n}: the learner's notes");
    }
    // Writes go on with a peer down: each shard still has a copy to take them.
    let survivor = store(&cluster.peers[1]);
    let decorators = ("py", "decorators.md", 0, "Decorators wrap functions.", None);
    write(&survivor, sparse_points(&[decorators])).await;
    assert_eq!(survivor.count().await.unwrap(), total + 1);
}
