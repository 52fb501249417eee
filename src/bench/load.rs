//! `companion bench load` and `companion bench idle`: simulated learners over real WebSockets
//! (tokio-tungstenite) against running `companion serve` nodes whose model is
//! `companion bench fake-llm`, so that the model's own time is known.
//!
//! `load`: each learner connects, asks a question from the set (numbered, so that every ask's
//! text is new to the service), reads the answer to `done`,
//! waits the think time, asks again, until the run's time is up; then it prints questions per
//! second, what the service added before the first token (measured by the client, less the
//! model's delay, and by each server in its `/metrics` histogram, where the client's own cost is
//! out of it) at p50/p99/p999, the inter-delta jitter added at p99, each server's CPU seconds per
//! 1,000 questions and RSS, and how the questions split between servers.
//!
//! `idle`: opens authenticated sockets that ask nothing, and prints how many were held and the
//! server's RSS per socket.
//!
//! Clients bind to several loopback addresses in turn (`--sources`), so that more sockets than
//! one address's ephemeral ports can be opened. Frames are JSON as `docs/protocol.md` gives them:
//! the benchmark is a client like any other.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

use super::fake_llm::FakeModel;
use crate::eval::percentile;

/// Gives a learner's token (the caller holds the keys).
pub type Mint = Arc<dyn Fn(&str) -> String + Send + Sync>;

pub struct LoadOptions {
    /// The nodes' base URLs (`http://127.0.0.1:8080`); learners are spread over them in turn.
    pub servers: Vec<String>,
    /// Each node's process id, for its CPU time and RSS (same order as `servers`), if known.
    pub server_pids: Vec<u32>,
    pub learners: usize,
    /// A learner's wait between an answer's end and its next question.
    pub think: Duration,
    /// How long learners keep asking.
    pub duration: Duration,
    /// Learners connect and ask their first question spread over this long.
    pub ramp: Duration,
    pub questions: Vec<String>,
    /// Local addresses the clients bind to, in turn.
    pub sources: Vec<IpAddr>,
    /// What the fake model does (its delay is taken out of the client's figures).
    pub model: FakeModel,
    pub mint: Mint,
}

pub struct IdleOptions {
    pub server: String,
    pub server_pid: Option<u32>,
    pub connections: usize,
    pub sources: Vec<IpAddr>,
    /// Sockets opened at once.
    pub concurrency: usize,
    pub mint: Mint,
}

/// One answer as a learner saw it.
#[derive(Debug, Default, Clone)]
struct Seen {
    server: usize,
    ack_ms: Option<f64>,
    first_delta_ms: Option<f64>,
    /// Gaps between deltas, ms.
    gaps_ms: Vec<f64>,
    status: Option<String>,
    error: Option<String>,
}

#[derive(Default)]
struct Tally {
    answers: Vec<Seen>,
    connect_failures: BTreeMap<String, usize>,
}

/// A server's process figures: CPU seconds used so far and resident memory.
#[derive(Debug, Clone, Copy, Default)]
struct Process {
    cpu_secs: f64,
    rss_bytes: u64,
}

fn process(pid: u32) -> anyhow::Result<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = fields
        .get(11..13)
        .context("short /proc stat")?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // Linux reports CPU times in USER_HZ, 100 a second on every architecture it runs on.
    Ok(Process {
        cpu_secs: ticks / 100.0,
        rss_bytes: rss_kb * 1024,
    })
}

/// A histogram read from a node's `/metrics`: cumulative counts per upper bound (seconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// The histogram `name` (its `_bucket` lines, with no label but `le`) in `text`.
    pub fn parse(text: &str, name: &str) -> Self {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(&prefix)?;
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self { buckets }
    }

    /// What was observed between `earlier` and `self`.
    pub fn since(&self, earlier: &Histogram) -> Self {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, count)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(l, _)| *l == le)
                    .map_or(0.0, |b| b.1);
                (le, count - before)
            })
            .collect();
        Self { buckets }
    }

    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |b| b.1)
    }

    /// The `q` quantile in seconds, interpolated inside its bucket (as Prometheus'
    /// `histogram_quantile` does); `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, count) in &self.buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let share = if count > lower.1 {
                    (rank - lower.1) / (count - lower.1)
                } else {
                    0.0
                };
                return Some(lower.0 + (le - lower.0) * share);
            }
            lower = (le, count);
        }
        Some(lower.0)
    }
}

async fn scrape(client: &reqwest::Client, server: &str) -> anyhow::Result<String> {
    let url = format!("{}/metrics", server.trim_end_matches('/'));
    Ok(client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot read {url}"))?
        .error_for_status()?
        .text()
        .await?)
}

fn ws_url(server: &str, token: &str) -> anyhow::Result<(String, SocketAddr)> {
    let url = url::Url::parse(server).with_context(|| format!("bad server URL {server:?}"))?;
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => bail!("{server}: the benchmark speaks plain ws:// to a node, not TLS"),
        other => bail!("{server}: unknown scheme {other}"),
    };
    let addr = url
        .socket_addrs(|| Some(80))?
        .into_iter()
        .next()
        .with_context(|| format!("{server} resolves to nothing"))?;
    Ok((format!("{scheme}://{addr}/ws?token={token}"), addr))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A socket from `source` to `server`, upgraded and past its `ready` frame.
async fn open(server: &str, source: IpAddr, token: &str) -> anyhow::Result<Socket> {
    let (url, addr) = ws_url(server, token)?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text)?;
                if frame["type"] == "ready" {
                    return Ok(ws);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
            None => bail!("closed before ready"),
        }
    }
}

/// One learner's run: ask, read to `done`, think, again, until `until`.
async fn learner(n: usize, options: Arc<LoadOptions>, until: Instant, tally: Arc<Mutex<Tally>>) {
    let server = n % options.servers.len();
    let source = options.sources[n % options.sources.len()];
    // Spread the first questions over the ramp.
    let offset = options
        .ramp
        .mul_f64(n as f64 / options.learners.max(1) as f64);
    tokio::time::sleep(offset).await;
    let token = (options.mint)(&format!("bench-{n}"));
    let mut ws = match open(&options.servers[server], source, &token).await {
        Ok(ws) => ws,
        Err(error) => {
            let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
            *tally.connect_failures.entry(error.to_string()).or_default() += 1;
            return;
        }
    };
    let mut asked = 0usize;
    while Instant::now() < until {
        // Each ask's text is its own (the set's question, numbered by learner and ask), as
        // real learners' questions are: no cache in the service (the question's embedding is
        // remembered) answers for work a new question needs.
        let question = format!(
            "{} ({n}.{asked})",
            options.questions[(n + asked) % options.questions.len()]
        );
        let id = format!("b{n}-{asked}");
        asked += 1;
        let ask = json!({"type": "ask", "id": id, "text": question});
        let sent = Instant::now();
        if ws.send(Message::text(ask.to_string())).await.is_err() {
            break;
        }
        let mut seen = Seen {
            server,
            ..Default::default()
        };
        let mut last_delta: Option<Instant> = None;
        loop {
            let frame = match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    serde_json::from_str::<Value>(&text).unwrap_or_default()
                }
                Some(Ok(_)) => continue,
                _ => {
                    seen.error = Some("socket closed".into());
                    break;
                }
            };
            let now = Instant::now();
            let ms = |since: Instant| now.duration_since(since).as_secs_f64() * 1000.0;
            match frame["type"].as_str() {
                Some("ack") => seen.ack_ms = Some(ms(sent)),
                Some("delta") => {
                    match last_delta {
                        None => seen.first_delta_ms = Some(ms(sent)),
                        Some(previous) => seen.gaps_ms.push(ms(previous)),
                    }
                    last_delta = Some(now);
                }
                Some("done") => {
                    seen.status = frame["status"].as_str().map(str::to_string);
                    break;
                }
                Some("error") => {
                    seen.error = frame["code"].as_str().map(str::to_string);
                    // A refused ask ends here; a failed answer still sends `done`.
                    if seen.ack_ms.is_none() {
                        break;
                    }
                }
                _ => {}
            }
        }
        let closed = seen.error.as_deref() == Some("socket closed");
        tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answers
            .push(seen);
        if closed {
            break;
        }
        tokio::time::sleep(options.think).await;
    }
    let _ = ws.close(None).await;
}

/// What a load run measured, printed by [`render_load`].
pub struct LoadReport {
    pub lines: Vec<String>,
}

/// Runs the load and measures it.
pub async fn load(options: LoadOptions) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(!options.servers.is_empty(), "no --server");
    anyhow::ensure!(!options.questions.is_empty(), "no questions");
    anyhow::ensure!(!options.sources.is_empty(), "no --sources");
    let client = reqwest::Client::new();
    let metric = "companion_added_first_token_seconds";
    let mut before = Vec::new();
    for server in &options.servers {
        before.push(Histogram::parse(&scrape(&client, server).await?, metric));
    }
    let cpu_before: Vec<Option<Process>> = options
        .server_pids
        .iter()
        .map(|&pid| process(pid).ok())
        .collect();
    let options = Arc::new(options);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let until = started + options.ramp + options.duration;
    let tasks: Vec<_> = (0..options.learners)
        .map(|n| tokio::spawn(learner(n, options.clone(), until, tally.clone())))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let wall = started.elapsed();
    let cpu_after: Vec<Option<Process>> = options
        .server_pids
        .iter()
        .map(|&pid| process(pid).ok())
        .collect();
    let mut after = Vec::new();
    for server in &options.servers {
        after.push(Histogram::parse(&scrape(&client, server).await?, metric));
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(LoadReport {
        lines: report_lines(
            &options,
            &tally,
            wall,
            &before,
            &after,
            &cpu_before,
            &cpu_after,
        ),
    })
}

fn report_lines(
    options: &LoadOptions,
    tally: &Tally,
    wall: Duration,
    before: &[Histogram],
    after: &[Histogram],
    cpu_before: &[Option<Process>],
    cpu_after: &[Option<Process>],
) -> Vec<String> {
    let mut lines = Vec::new();
    let model = options.model;
    let answers = &tally.answers;
    let acked = answers.iter().filter(|a| a.ack_ms.is_some()).count();
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for a in answers {
        *statuses
            .entry(a.status.as_deref().unwrap_or("none"))
            .or_default() += 1;
        if let Some(e) = &a.error {
            *errors.entry(e).or_default() += 1;
        }
    }
    lines.push(format!(
        "load: {} learners on {} server(s), think {:.1} s, {:.0} s of asking after a {:.0} s ramp; \
         fake model: first token {} ms, {} tokens at {}/s",
        options.learners,
        options.servers.len(),
        options.think.as_secs_f64(),
        options.duration.as_secs_f64(),
        options.ramp.as_secs_f64(),
        model.first_token.as_millis(),
        model.answer_tokens,
        model.tokens_per_sec
    ));
    lines.push(format!(
        "questions: {} sent, {} acknowledged, {:.1}/s over {:.1} s; answers by status {:?}; errors {:?}; \
         connections refused {:?}",
        answers.len(),
        acked,
        answers.len() as f64 / wall.as_secs_f64().max(0.001),
        wall.as_secs_f64(),
        statuses,
        errors,
        tally.connect_failures
    ));
    let mut ack: Vec<f64> = answers.iter().filter_map(|a| a.ack_ms).collect();
    let first_token_ms = model.first_token.as_secs_f64() * 1000.0;
    let mut added: Vec<f64> = answers
        .iter()
        .filter_map(|a| a.first_delta_ms)
        .map(|ms| ms - first_token_ms)
        .collect();
    let gap_ms = 1000.0 / model.tokens_per_sec.max(0.001);
    let mut jitter: Vec<f64> = answers
        .iter()
        .flat_map(|a| a.gaps_ms.iter().map(|g| g - gap_ms))
        .collect();
    let q = |values: &mut Vec<f64>, p: f64| percentile(values, p);
    lines.push(format!(
        "client side: ack p50 {:.2} / p99 {:.2} ms; first token added p50 {:.2} / p99 {:.2} / p999 {:.2} ms \
         (first delta less the model's {first_token_ms:.0} ms; includes the client's own cost); \
         inter-delta jitter added p99 {:.2} ms (gaps less {gap_ms:.1} ms, over {} gaps)",
        q(&mut ack, 0.5),
        q(&mut ack, 0.99),
        q(&mut added, 0.5),
        q(&mut added, 0.99),
        q(&mut added, 0.999),
        q(&mut jitter, 0.99),
        jitter.len()
    ));
    let mut all = Histogram::default();
    for (n, server) in options.servers.iter().enumerate() {
        let window = after[n].since(&before[n]);
        let served = answers.iter().filter(|a| a.server == n).count();
        let ms = |q: f64| window.quantile(q).map_or(f64::NAN, |s| s * 1000.0);
        let mut line = format!(
            "server {server}: {served} questions ({:.0}%); added before the first delta, server side: \
             p50 {:.2} / p99 {:.2} / p999 {:.2} ms over {} answers",
            100.0 * served as f64 / answers.len().max(1) as f64,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            window.count()
        );
        if let (Some(Some(b)), Some(Some(a))) = (cpu_before.get(n), cpu_after.get(n)) {
            let cpu = a.cpu_secs - b.cpu_secs;
            line.push_str(&format!(
                "; CPU {:.1} s, {:.2} s per 1,000 questions; RSS {:.1} MiB",
                cpu,
                cpu * 1000.0 / served.max(1) as f64,
                a.rss_bytes as f64 / 1048576.0
            ));
        }
        lines.push(line);
        if all.buckets.is_empty() {
            all = window;
        } else {
            for (bucket, more) in all.buckets.iter_mut().zip(window.buckets) {
                bucket.1 += more.1;
            }
        }
    }
    if options.servers.len() > 1 {
        let ms = |q: f64| all.quantile(q).map_or(f64::NAN, |s| s * 1000.0);
        lines.push(format!(
            "all servers: added before the first delta p50 {:.2} / p99 {:.2} / p999 {:.2} ms",
            ms(0.5),
            ms(0.99),
            ms(0.999)
        ));
    }
    lines
}

/// Opens idle sockets and measures what each costs the server.
pub async fn idle(options: IdleOptions) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(!options.sources.is_empty(), "no --sources");
    let pid = options.server_pid;
    let rss = || pid.and_then(|p| process(p).ok()).map(|p| p.rss_bytes);
    let before = rss();
    let started = Instant::now();
    let options = Arc::new(options);
    let gate = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let tasks: Vec<_> = (0..options.connections)
        .map(|n| {
            let options = options.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.ok()?;
                let token = (options.mint)(&format!("idle-{n}"));
                let source = options.sources[n % options.sources.len()];
                match open(&options.server, source, &token).await {
                    Ok(ws) => Some(Ok(ws)),
                    Err(error) => Some(Err(error.to_string())),
                }
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        match task.await.ok().flatten() {
            Some(Ok(ws)) => held.push(ws),
            Some(Err(error)) => *failures.entry(error).or_default() += 1,
            None => *failures.entry("task failed".into()).or_default() += 1,
        }
    }
    let opened_in = started.elapsed();
    // Let the server settle (allocations after the upgrade, the first ping) before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss();
    let mut lines = vec![format!(
        "idle: {} of {} sockets held (opened in {:.1} s); refused: {:?}",
        held.len(),
        options.connections,
        opened_in.as_secs_f64(),
        failures
    )];
    match (before, after) {
        (Some(before), Some(after)) => lines.push(format!(
            "server RSS {:.1} MiB before, {:.1} MiB with the sockets: {:.2} KiB per socket",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            (after.saturating_sub(before)) as f64 / 1024.0 / held.len().max(1) as f64
        )),
        _ => lines.push("server RSS: unknown (give --server-pid)".into()),
    }
    for mut ws in held {
        let _ = ws.close(None).await;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE companion_added_first_token_seconds histogram\n\
        companion_added_first_token_seconds_sum 0.3\n\
        companion_added_first_token_seconds_count 10\n\
        companion_added_first_token_seconds_bucket{le=\"0.001\"} 2\n\
        companion_added_first_token_seconds_bucket{le=\"0.002\"} 6\n\
        companion_added_first_token_seconds_bucket{le=\"0.004\"} 9\n\
        companion_added_first_token_seconds_bucket{le=\"+Inf\"} 10\n";

    #[test]
    fn a_histogram_is_read_from_the_metrics_text_and_its_quantiles_interpolated() {
        let h = Histogram::parse(TEXT, "companion_added_first_token_seconds");
        assert_eq!(h.buckets.len(), 4);
        assert_eq!(h.count(), 10.0);
        // The 5th of 10 is the 3rd of the 4 in (1 ms, 2 ms]: 1.75 ms.
        assert!((h.quantile(0.5).unwrap() - 0.00175).abs() < 1e-9);
        // The 9th is the last in (2 ms, 4 ms].
        assert!((h.quantile(0.9).unwrap() - 0.004).abs() < 1e-9);
        // Past the last finite bound: that bound.
        assert_eq!(h.quantile(0.99), Some(0.004));
        let earlier = Histogram::parse(
            &TEXT
                .replace("} 6", "} 2")
                .replace("} 9", "} 2")
                .replace("} 10", "} 2"),
            "companion_added_first_token_seconds",
        );
        let window = h.since(&earlier);
        assert_eq!(window.count(), 8.0);
        assert_eq!(window.buckets[0].1, 0.0);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = process(std::process::id()).unwrap();
        assert!(me.rss_bytes > 1024 * 1024, "{me:?}");
        assert!(me.cpu_secs >= 0.0);
    }
}
