use std::process::Command;

use crate::helpers::*;

#[test]
fn the_token_command_prints_a_token_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_companion"))
        .args(["token", "--role", "learner", "--id", "ada", "--name", "Ada", "--ttl", "60"])
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
