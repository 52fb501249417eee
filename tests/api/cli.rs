use std::process::Command;

use crate::helpers::*;

#[test]
fn the_token_command_prints_a_token_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_companion"))
        .args([
            "token", "--role", "learner", "--id", "ada", "--name", "Ada", "--ttl", "60",
        ])
        .env("COMPANION__AUTH__SECRET", SECRET)
        .env("COMPANION__SERVER__DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let claims = keys().verify(token.trim()).unwrap();
    assert_eq!(claims.sub, "ada");
    assert_eq!(claims.name.as_deref(), Some("Ada"));
}

#[test]
fn a_bad_configuration_value_stops_start_up_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_companion"))
        .args(["serve"])
        .env("COMPANION__SERVER__LISTEN", "not-an-address")
        .env("COMPANION__SERVER__DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.listen"), "{stderr}");
}

#[test]
fn an_unknown_configuration_key_stops_start_up_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[llm]\nmodle = \"x\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_companion"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("COMPANION__SERVER__DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("modle"), "{stderr}");
}

/// Runs `companion` with a fresh data dir and the given env; returns (success, stdout, stderr).
fn companion(
    args: &[&str],
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_companion"));
    command
        .args(args)
        .env("COMPANION__AUTH__SECRET", SECRET)
        .env("COMPANION__SERVER__DATA_DIR", data_dir)
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn ingest_names_and_skips_bad_files_and_indexes_the_rest() {
    let data = tempfile::tempdir().unwrap();
    let content = tempfile::tempdir().unwrap();
    let dir = content.path();
    std::fs::write(
        dir.join("good.md"),
        "---\ncourse: demo\ntitle: Loops\n---\n# Loops\n\nA while loop repeats until its condition is false.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("plain.txt"),
        "Plain text notes about dictionaries and keys.\n",
    )
    .unwrap();
    std::fs::write(dir.join("latin1.md"), b"# Caf\xe9\n\nNot UTF-8 at all.\n").unwrap();
    std::fs::write(dir.join("empty.md"), "").unwrap();
    std::fs::write(
        dir.join("binary.md"),
        [0u8, 159, 146, 150, 0, 1, 2, 3, 0, 0],
    )
    .unwrap();
    std::fs::write(
        dir.join("broken.md"),
        "---\ntitle: never closed\n\n# Heading\n\nBody.\n",
    )
    .unwrap();
    std::fs::write(dir.join("huge.md"), "word ".repeat(3_000_000)).unwrap();
    let content_arg = dir.to_str().unwrap();
    let (ok, stdout, stderr) = companion(
        &["ingest", "--content", content_arg],
        data.path(),
        &[("COMPANION__EMBEDDING__PROVIDER", "none")],
    );
    assert!(ok, "ingest failed:\n{stdout}\n{stderr}");
    for name in ["latin1.md", "empty.md", "binary.md", "broken.md", "huge.md"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("skipped") && l.contains(name)),
            "{name} not reported as skipped:\n{stderr}"
        );
    }
    assert!(stdout.contains("indexed 2 files"), "{stdout}");
    assert!(stdout.contains("5 skipped"), "{stdout}");

    // A second run skips the unchanged files by hash.
    let (ok, stdout, _) = companion(
        &["ingest", "--content", content_arg],
        data.path(),
        &[("COMPANION__EMBEDDING__PROVIDER", "none")],
    );
    assert!(ok);
    assert!(
        stdout.contains("indexed 0 files") && stdout.contains("2 unchanged"),
        "{stdout}"
    );
}

/// `companion eval retrieval` of `questions` on the repository's course, BM25 only.
fn eval_retrieval(
    data_dir: &std::path::Path,
    questions: &std::path::Path,
    extra: &[&str],
) -> (bool, String, String) {
    let content = repo_root().join("course-content");
    let mut args = vec![
        "eval",
        "retrieval",
        "--content",
        content.to_str().unwrap(),
        "--questions",
        questions.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    companion(
        &args,
        data_dir,
        &[("COMPANION__EMBEDDING__PROVIDER", "none")],
    )
}

#[test]
fn eval_retrieval_prints_recall_and_mrr_per_mode() {
    let data = tempfile::tempdir().unwrap();
    let questions = repo_root().join("tests/eval/retrieval-questions.jsonl");
    let (ok, stdout, stderr) = eval_retrieval(data.path(), &questions, &["--json"]);
    assert!(ok, "{stderr}");
    let reports: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let report = &reports[0];
    let modes = report["modes"].as_array().unwrap();
    assert_eq!(modes[0]["mode"], "bm25");
    assert_eq!(modes.last().unwrap()["mode"], "baseline");
    let n = modes[0]["questions"].as_u64().unwrap();
    assert!(n >= 60, "{n} questions");
    let r1 = modes[0]["recall_at_1"].as_f64().unwrap();
    let r5 = modes[0]["recall_at_5"].as_f64().unwrap();
    let r10 = modes[0]["recall_at_10"].as_f64().unwrap();
    assert!(r1 <= r5 && r5 <= r10 && r10 <= 1.0, "{r1} {r5} {r10}");
    // Far better than chance on a course of ~30 files.
    assert!(r5 > 0.4, "bm25 recall@5 {r5}");
    // Without a dense embedder the other modes say why they did not run.
    assert_eq!(
        report["unavailable"].as_array().unwrap().len(),
        2,
        "{stdout}"
    );
}

#[test]
fn eval_retrieval_without_arguments_scores_every_shipped_set() {
    let data = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = companion(
        &["eval", "retrieval", "--json"],
        data.path(),
        &[("COMPANION__EMBEDDING__PROVIDER", "none")],
    );
    assert!(ok, "{stderr}");
    let reports: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let sets: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["set"].as_str().unwrap())
        .collect();
    for set in [
        "sample-course",
        "python-novice",
        "python-novice/pasted",
        "cours-python-fr",
    ] {
        assert!(sets.contains(&set), "{set} missing from {sets:?}");
    }
}

#[test]
fn eval_retrieval_refuses_a_set_folder_without_questions() {
    let data = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = companion(
        &["eval", "retrieval", "--set", data.path().to_str().unwrap()],
        data.path(),
        &[("COMPANION__EMBEDDING__PROVIDER", "none")],
    );
    assert!(!ok);
    assert!(stderr.contains("questions.jsonl is missing"), "{stderr}");
}

#[test]
fn eval_retrieval_refuses_a_malformed_questions_file_naming_the_line() {
    let data = tempfile::tempdir().unwrap();
    let questions = data.path().join("q.jsonl");
    std::fs::write(
        &questions,
        "{\"id\":\"a\",\"question\":\"q\",\"expected_files\":[\"x.md\"]}\n{not json}\n",
    )
    .unwrap();
    let (ok, _, stderr) = eval_retrieval(data.path(), &questions, &[]);
    assert!(!ok);
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[test]
fn bench_retrieval_prints_throughput_and_latency_per_size() {
    let data = tempfile::tempdir().unwrap();
    let content = repo_root().join("course-content");
    let (ok, stdout, stderr) = companion(
        &[
            "bench",
            "retrieval",
            "--content",
            content.to_str().unwrap(),
            "--sizes",
            "200,400",
            "--queries",
            "20",
            "--json",
        ],
        data.path(),
        &[("COMPANION__EMBEDDING__PROVIDER", "none")],
    );
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let sizes = report["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 2);
    assert_eq!(sizes[1]["chunks"], 400);
    assert!(sizes[0]["index_chunks_per_s"].as_f64().unwrap() > 0.0);
    assert!(sizes[0]["modes"][0]["p99_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_missing_model_stops_start_up_with_fetch_instructions_unless_fallback_is_allowed() {
    let data = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = companion(
        &["serve", "--listen", "127.0.0.1:0"],
        data.path(),
        &[
            ("COMPANION__EMBEDDING__PROVIDER", "local"),
            ("COMPANION__EMBEDDING__MODEL_DIR", "/nonexistent/model"),
            ("COMPANION__EMBEDDING__ALLOW_BM25_FALLBACK", "false"),
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("scripts/fetch-model.sh"), "{stderr}");
    assert!(stderr.contains("model.safetensors"), "{stderr}");
}
