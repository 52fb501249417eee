//! Importing a project from a git repository: `git clone --depth 1` of one branch through the
//! git command line, stopped when it runs past the time limit or grows past the size cap on
//! disk; then the checkout's text files (never `.git`, never links) within the project limits.
//! Binary files of a repository (images, for instance) are skipped and reported.
//! Which remote may be reached is `project::remote`'s job: the clone is pinned to the address it
//! checked and follows no redirect. A failed clone tells the learner little (git's own words
//! would turn the import into a port scanner); the detail goes to the log.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::{IncomingFile, ProjectError, normalise_path, remote, text_of};
use crate::config::ProjectSettings;

/// How often the clone's size on disk is measured.
const WATCH_EVERY: Duration = Duration::from_millis(150);
const MAX_URL_CHARS: usize = 2000;

/// What a clone gave.
#[derive(Debug, Default)]
pub struct Cloned {
    pub files: Vec<IncomingFile>,
    /// (path, reason) of files left out: binaries.
    pub skipped: Vec<(String, String)>,
}

/// The URL git is given: http(s) and git URLs; local paths and `file://` only when allowed
/// (local paths become `file://` URLs so that `--depth` applies).
pub fn check_url(url: &str, allow_local: bool) -> Result<String, ProjectError> {
    let refuse = |reason| {
        Err(ProjectError::GitUrl {
            url: url.chars().take(200).collect(),
            reason,
        })
    };
    let url = url.trim();
    if url.is_empty() {
        return refuse("it is empty");
    }
    if url.chars().count() > MAX_URL_CHARS {
        return refuse("it is longer than 2000 characters");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return refuse("it contains spaces or control characters");
    }
    if url.starts_with('-') {
        return refuse("it starts with '-'");
    }
    let lower = url.to_ascii_lowercase();
    if ["https://", "http://", "git://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
    {
        return Ok(url.to_string());
    }
    let local = lower.starts_with("file://") || url.starts_with('/');
    if local && !allow_local {
        return refuse("local repositories are not accepted on this server; use an https:// URL");
    }
    if lower.starts_with("file://") {
        return Ok(url.to_string());
    }
    if url.starts_with('/') {
        return Ok(format!("file://{url}"));
    }
    refuse("use an https:// URL")
}

fn check_branch(branch: &str) -> Result<(), ProjectError> {
    let ok = !branch.is_empty()
        && branch.len() <= 200
        && !branch.starts_with('-')
        && !branch.contains("..")
        && branch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(ProjectError::GitUrl {
            url: branch.chars().take(200).collect(),
            reason: "the branch name is not valid",
        })
    }
}

/// `text` with the credentials of any URL in it (`https://user:token@host/...`) replaced by
/// `***`: what a learner pasted, or git's stderr, may go to the log but their secrets may not.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme_end + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// Clones `url` (one branch, depth 1) into a temporary folder and reads its files.
#[tracing::instrument(skip(url, settings), fields(url = %redact_url(url)))]
pub async fn clone_files(
    url: &str,
    branch: Option<&str>,
    settings: &ProjectSettings,
) -> Result<Cloned, ProjectError> {
    let url = check_url(url, settings.git_allow_local)?;
    if let Some(branch) = branch {
        check_branch(branch)?;
    }
    let pin = if url.to_ascii_lowercase().starts_with("file://") {
        None
    } else {
        remote::check(&url, settings).await?.pin
    };
    let failed = |reason: String| ProjectError::GitFailed {
        url: url.clone(),
        reason,
    };
    let temp = tempfile::tempdir().map_err(|e| failed(format!("no temporary folder: {e}")))?;
    let dest = temp.path().join("checkout");
    let mut protocols = settings.git_schemes.join(":");
    if settings.git_allow_local {
        protocols.push_str(":file");
    }
    let mut command = Command::new("git");
    command.args([
        "-c",
        "core.symlinks=false",
        "-c",
        "protocol.ext.allow=never",
        "-c",
        "http.followRedirects=false",
    ]);
    if let Some(pin) = &pin {
        command.arg("-c").arg(format!("http.curloptResolve={pin}"));
    }
    command.args([
        "clone",
        "--depth",
        "1",
        "--single-branch",
        "--no-tags",
        "--quiet",
    ]);
    if let Some(branch) = branch {
        command.args(["--branch", branch]);
    }
    command
        .arg("--")
        .arg(&url)
        .arg(&dest)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", protocols)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_LFS_SKIP_SMUDGE", "1")
        .env("HOME", temp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            failed("git is not installed on the server".into())
        } else {
            failed(format!("cannot run git: {e}"))
        }
    })?;
    let mut stderr = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = stderr.take(16 * 1024).read_to_string(&mut text).await;
        }
        text
    });
    let deadline = Instant::now() + settings.git_timeout;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| failed(e.to_string()))?,
            _ = tokio::time::sleep(WATCH_EVERY) => {
                if Instant::now() >= deadline {
                    let _ = child.kill().await;
                    return Err(ProjectError::GitTimeout {
                        url,
                        secs: settings.git_timeout.as_secs(),
                    });
                }
                if size_on_disk(temp.path().to_path_buf()).await > settings.git_max_bytes {
                    let _ = child.kill().await;
                    return Err(ProjectError::GitTooLarge { url, limit: settings.git_max_bytes });
                }
            }
        }
    };
    let stderr = stderr_task.await.unwrap_or_default();
    if !status.success() {
        let detail = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("git clone failed");
        tracing::warn!(
            url = %redact_url(&url),
            detail = %redact_url(detail),
            "git import failed"
        );
        return Err(failed(
            "the repository could not be cloned; check the URL and the branch, and that the \
             repository is public"
                .into(),
        ));
    }
    if size_on_disk(temp.path().to_path_buf()).await > settings.git_max_bytes {
        return Err(ProjectError::GitTooLarge {
            url,
            limit: settings.git_max_bytes,
        });
    }
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || read_checkout(&dest, &settings))
        .await
        .map_err(|e| ProjectError::GitFailed {
            url: url.clone(),
            reason: e.to_string(),
        })?
}

async fn size_on_disk(dir: PathBuf) -> u64 {
    tokio::task::spawn_blocking(move || {
        walkdir::WalkDir::new(dir)
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
    .await
    .unwrap_or(u64::MAX)
}

/// The checkout's files, without `.git`; links are skipped, binaries reported.
fn read_checkout(dir: &Path, settings: &ProjectSettings) -> Result<Cloned, ProjectError> {
    let mut cloned = Cloned::default();
    let mut entries = 0;
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || e.file_name() != ".git");
    for entry in walker {
        let entry = entry.map_err(|e| ProjectError::BadArchive(e.to_string()))?;
        if entry.depth() == 0 {
            continue;
        }
        entries += 1;
        if entries > settings.max_archive_entries {
            return Err(ProjectError::TooManyEntries {
                what: "repository",
                limit: settings.max_archive_entries,
            });
        }
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let raw = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let path = normalise_path(&raw)?;
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if bytes > settings.max_file_bytes {
            return Err(ProjectError::FileTooLarge {
                path,
                bytes,
                limit: settings.max_file_bytes,
            });
        }
        let content = std::fs::read(entry.path())
            .map_err(|e| ProjectError::BadArchive(format!("{path}: {e}")))?;
        match text_of(&path, content) {
            Ok(text) => cloned.files.push(IncomingFile {
                path,
                bytes: text.into_bytes(),
            }),
            Err(ProjectError::Binary { path, reason }) => cloned.skipped.push((path, reason)),
            Err(other) => return Err(other),
        }
    }
    if cloned.files.is_empty() {
        return Err(ProjectError::NoFiles("the repository holds no text file"));
    }
    Ok(cloned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_never_reach_the_log() {
        assert_eq!(
            redact_url("https://ada:ghp_s3cret@github.com/ada/budget.git"),
            "https://***@github.com/ada/budget.git"
        );
        assert_eq!(
            redact_url("fatal: unable to access 'https://tok@host.example/x/': 403"),
            "fatal: unable to access 'https://***@host.example/x/': 403"
        );
        assert_eq!(
            redact_url("https://github.com/a/b.git?x=y@z"),
            "https://github.com/a/b.git?x=y@z"
        );
        assert_eq!(redact_url("no url here"), "no url here");
    }

    #[test]
    fn only_remote_urls_are_accepted_unless_local_ones_are_allowed() {
        assert!(check_url("https://example.org/a.git", false).is_ok());
        assert!(check_url("git://example.org/a.git", false).is_ok());
        for bad in [
            "/srv/repo",
            "file:///srv/repo",
            "ext::sh -c x",
            "--upload-pack=x",
            "git@host:a.git",
            "",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert_eq!(check_url("/srv/repo", true).unwrap(), "file:///srv/repo");
        assert!(check_url("file:///srv/repo", true).is_ok());
        assert!(check_branch("main").is_ok());
        assert!(check_branch("--upload-pack=x").is_err());
    }

    fn settings(schemes: &[&str], hosts: &[&str]) -> ProjectSettings {
        let mut settings =
            crate::config::Settings::defaults(std::path::Path::new("/nonexistent")).projects;
        settings.git_schemes = schemes.iter().map(|s| s.to_string()).collect();
        settings.git_allowed_hosts = hosts.iter().map(|s| s.to_string()).collect();
        settings.git_timeout = Duration::from_secs(20);
        settings
    }

    /// A loopback HTTP server that counts connections and answers each request with `reply`.
    async fn http_server(reply: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut request = vec![0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        (port, hits)
    }

    fn hits(counter: &std::sync::atomic::AtomicUsize) -> usize {
        counter.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_learner_cannot_make_the_server_fetch_from_loopback() {
        let (port, counter) = http_server("HTTP/1.1 404 Not Found\r\n\r\n".into()).await;
        // Even with every scheme allowed, an internal address is refused before git runs.
        let all_schemes = settings(&["https", "http", "git"], &[]);
        for url in [
            format!("http://127.0.0.1:{port}/x.git"),
            format!("http://localhost:{port}/x.git"),
            format!("https://127.0.0.1:{port}/x.git"),
        ] {
            let error = clone_files(&url, None, &all_schemes).await.unwrap_err();
            assert!(
                matches!(error, ProjectError::GitUrl { .. }),
                "{url}: {error}"
            );
        }
        // By default only https is accepted at all.
        let default = settings(&["https"], &[]);
        let error = clone_files(&format!("http://127.0.0.1:{port}/x.git"), None, &default)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("https:// repository URLs only"),
            "{error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(hits(&counter), 0, "the loopback server was reached");
    }

    #[tokio::test]
    async fn a_clone_follows_no_redirect_and_hides_what_git_said() {
        let (target, target_hits) = http_server("HTTP/1.1 404 Not Found\r\n\r\n".into()).await;
        let redirect = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target}/y.git/info/refs?service=git-upload-pack\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let (port, first_hits) = http_server(redirect).await;
        // The operator allows this host (an internal GitLab, say): the clone is attempted.
        let allowed = settings(&["http"], &["localhost"]);
        let error = clone_files(&format!("http://localhost:{port}/x.git"), None, &allowed)
            .await
            .unwrap_err();
        assert!(hits(&first_hits) >= 1, "the allowed host was not contacted");
        assert_eq!(hits(&target_hits), 0, "git followed the redirect");
        let text = error.to_string();
        assert!(text.contains("could not be cloned"), "{text}");
        for leaked in [
            "302",
            "redirect",
            "unable to access",
            "Couldn't connect",
            "fatal",
        ] {
            assert!(
                !text.contains(leaked),
                "git's words reached the learner: {text}"
            );
        }
    }
}
