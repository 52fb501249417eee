//! One answer's LLM call, bounded. Before the first token, a failed attempt (429, 5xx, a
//! refused or dropped connection, silence past the first-token timeout) is tried again after an
//! exponential backoff with jitter, or the endpoint's `Retry-After`, while the attempts and the
//! retry deadline allow: nothing has reached the learner yet, so nothing is repeated. Once text
//! has flowed, a failure ends the answer (a new attempt would send its text twice). The whole
//! answer stays within a wall-clock deadline and a token cap, so an endpoint that ignores
//! `max_tokens` or never ends cannot stream forever.
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{ChatRequest, Llm, LlmError, LlmEvent, LlmStream};
use crate::config::LlmSettings;

/// The bounds of one answer's call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// An attempt that has produced no text after this long is abandoned (and retried).
    pub first_token_timeout: Duration,
    /// No new attempt starts later than this after the call began.
    pub retry_deadline: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff; it doubles with each failure, up to 32 times this.
    pub backoff: Duration,
    /// The whole answer, retries included, ends by then.
    pub answer_deadline: Duration,
    /// The answer is cut when it passes this many tokens.
    pub token_cap: usize,
}

impl Policy {
    pub fn from_settings(settings: &LlmSettings) -> Self {
        Self {
            first_token_timeout: settings.first_token_timeout,
            retry_deadline: settings.retry_deadline,
            max_attempts: settings.max_attempts,
            backoff: settings.retry_backoff,
            answer_deadline: settings.answer_deadline,
            token_cap: token_cap(settings.max_answer_tokens),
        }
    }
}

/// The cap on an answer's tokens: the `max_tokens` the endpoint is asked for, and a quarter
/// more, since the endpoint's tokenizer may count differently from ours.
pub fn token_cap(max_answer_tokens: usize) -> usize {
    max_answer_tokens + max_answer_tokens / 4
}

/// Counts the tokens of a text (the service passes its tokenizer's count).
pub type CountTokens = fn(&str) -> usize;

/// An [`Llm`] whose calls keep to a [`Policy`].
pub struct Resilient {
    inner: Arc<dyn Llm>,
    policy: Policy,
    count_tokens: CountTokens,
}

impl Resilient {
    pub fn new(inner: Arc<dyn Llm>, policy: Policy, count_tokens: CountTokens) -> Self {
        Self {
            inner,
            policy,
            count_tokens,
        }
    }
}

/// The wait after `failures` failed attempts: the endpoint's `Retry-After` when it gave one,
/// plus up to one backoff of jitter (learners refused together do not all come back at the same
/// instant); else `backoff · 2^(failures-1)` (at most 32 backoffs), of which a random half
/// ("equal jitter"). `random` is uniform in [0, 1).
pub fn backoff(
    policy: &Policy,
    failures: u32,
    retry_after: Option<Duration>,
    random: f64,
) -> Duration {
    let random = random.clamp(0.0, 1.0);
    match retry_after {
        Some(wait) => wait + policy.backoff.mul_f64(random),
        None => {
            let full = policy
                .backoff
                .saturating_mul(1 << failures.saturating_sub(1).min(5));
            full / 2 + (full / 2).mul_f64(random)
        }
    }
}

#[async_trait]
impl Llm for Resilient {
    fn model(&self) -> &str {
        self.inner.model()
    }

    /// Returns at once; the attempts run in a task that ends when the answer does, or as soon
    /// as the stream is dropped (the learner cancelled, the server is going down).
    async fn stream(&self, request: ChatRequest) -> Result<LlmStream, LlmError> {
        let (events, rx) = mpsc::channel(64);
        tokio::spawn(drive(
            self.inner.clone(),
            request,
            self.policy,
            self.count_tokens,
            events,
        ));
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }
}

type Events = mpsc::Sender<Result<LlmEvent, LlmError>>;

async fn drive(
    inner: Arc<dyn Llm>,
    request: ChatRequest,
    policy: Policy,
    count_tokens: CountTokens,
    events: Events,
) {
    let deadline = tokio::time::Instant::now() + policy.answer_deadline;
    let call = relay(inner.as_ref(), request, &policy, count_tokens, &events);
    let ended = tokio::select! {
        ended = call => ended,
        _ = tokio::time::sleep_until(deadline) => Err(LlmError::Deadline(policy.answer_deadline)),
        _ = events.closed() => return,
    };
    if let Err(error) = ended {
        let _ = events.send(Err(error)).await;
    }
}

/// Finds an attempt that produces text (retrying as the policy allows), then relays its events
/// until it ends, fails or passes the token cap.
async fn relay(
    inner: &dyn Llm,
    request: ChatRequest,
    policy: &Policy,
    count_tokens: CountTokens,
    events: &Events,
) -> Result<(), LlmError> {
    let retry_until = Instant::now() + policy.retry_deadline;
    let mut attempts = 0;
    let (mut stream, mut next) = loop {
        attempts += 1;
        let error = match first_event(inner, request.clone(), policy.first_token_timeout).await {
            Ok(started) => break started,
            Err(error) => error,
        };
        let wait = backoff(policy, attempts, error.retry_after(), rand::random::<f64>());
        if !error.is_retryable()
            || attempts >= policy.max_attempts
            || Instant::now() + wait >= retry_until
        {
            return Err(if attempts > 1 {
                LlmError::GaveUp {
                    attempts,
                    last: Box::new(error),
                }
            } else {
                error
            });
        }
        tracing::warn!(%error, attempts, wait_ms = wait.as_millis() as u64, "llm attempt failed before its first token; trying again");
        tokio::time::sleep(wait).await;
    };
    let mut text = String::new();
    let mut tokens = 0;
    loop {
        let Some(event) = next else {
            return Ok(());
        };
        if let Ok(LlmEvent::Delta(delta)) = &event {
            text.push_str(delta);
            // Deltas counted one by one over-count a little; the exact count settles it.
            tokens += count_tokens(delta);
            if tokens > policy.token_cap {
                tokens = count_tokens(&text);
                if tokens > policy.token_cap {
                    return Err(LlmError::TooLong(policy.token_cap));
                }
            }
        }
        let failed = event.is_err();
        if events.send(event).await.is_err() || failed {
            return Ok(());
        }
        next = stream.next().await;
    }
}

type Started = (LlmStream, Option<Result<LlmEvent, LlmError>>);

/// Starts one attempt and waits for its first event: text, usage or the end (an empty answer);
/// an error or silence past `timeout` fails the attempt.
async fn first_event(
    inner: &dyn Llm,
    request: ChatRequest,
    timeout: Duration,
) -> Result<Started, LlmError> {
    let attempt = async {
        let mut stream = inner.stream(request).await?;
        match stream.next().await {
            Some(Err(error)) => Err(error),
            first => Ok((stream, first)),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| LlmError::FirstTokenTimeout(timeout))?
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// What one attempt of the scripted model does.
    enum Attempt {
        Refuse(LlmError),
        Events(Vec<Result<LlmEvent, LlmError>>),
        Silent,
        Endless,
    }

    struct Scripted {
        attempts: Mutex<VecDeque<Attempt>>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn new(attempts: Vec<Attempt>) -> Arc<Self> {
            Arc::new(Self {
                attempts: Mutex::new(attempts.into()),
                calls: AtomicUsize::new(0),
            })
        }
    }

    #[async_trait]
    impl Llm for Scripted {
        fn model(&self) -> &str {
            "scripted"
        }

        async fn stream(&self, _: ChatRequest) -> Result<LlmStream, LlmError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let attempt = self.attempts.lock().unwrap().pop_front();
            match attempt.unwrap_or(Attempt::Events(vec![delta("ok")])) {
                Attempt::Refuse(error) => Err(error),
                Attempt::Events(events) => Ok(futures::stream::iter(events).boxed()),
                Attempt::Silent => Ok(futures::stream::pending().boxed()),
                Attempt::Endless => Ok(futures::stream::repeat_with(|| delta("word ")).boxed()),
            }
        }
    }

    fn delta(text: &str) -> Result<LlmEvent, LlmError> {
        Ok(LlmEvent::Delta(text.to_string()))
    }

    fn status(status: u16, retry_after: Option<Duration>) -> LlmError {
        LlmError::Status {
            status,
            retry_after,
            detail: "http://10.0.0.7/v1 says no".into(),
        }
    }

    fn policy() -> Policy {
        Policy {
            first_token_timeout: Duration::from_millis(300),
            retry_deadline: Duration::from_secs(5),
            max_attempts: 4,
            backoff: Duration::from_millis(10),
            answer_deadline: Duration::from_secs(10),
            token_cap: 100,
        }
    }

    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    fn request() -> ChatRequest {
        ChatRequest {
            messages: Vec::new(),
            max_tokens: 80,
            temperature: 0.0,
        }
    }

    /// Every event of one call: the texts, and the error that ended it, if any.
    async fn call(inner: Arc<Scripted>, policy: Policy) -> (Vec<String>, Option<LlmError>) {
        let llm = Resilient::new(inner, policy, words);
        let mut stream = llm.stream(request()).await.unwrap();
        let mut texts = Vec::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(LlmEvent::Delta(text)) => texts.push(text),
                Ok(LlmEvent::Usage { .. }) => {}
                Err(error) => return (texts, Some(error)),
            }
        }
        (texts, None)
    }

    #[tokio::test]
    async fn a_429_a_500_and_a_dropped_stream_before_the_first_token_are_retried_and_the_text_comes_once()
     {
        let inner = Scripted::new(vec![
            Attempt::Refuse(status(429, Some(Duration::from_millis(0)))),
            Attempt::Refuse(status(500, None)),
            Attempt::Events(vec![Err(LlmError::Protocol("connection reset".into()))]),
            Attempt::Events(vec![delta("a "), delta("b")]),
        ]);
        let (texts, error) = call(inner.clone(), policy()).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(texts, ["a ", "b"]);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_failure_after_the_first_token_ends_the_answer_and_is_never_retried() {
        let inner = Scripted::new(vec![Attempt::Events(vec![
            delta("half "),
            Err(LlmError::Protocol("connection reset".into())),
        ])]);
        let (texts, error) = call(inner.clone(), policy()).await;
        assert_eq!(texts, ["half "]);
        assert!(matches!(error, Some(LlmError::Protocol(_))), "{error:?}");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_silent_attempt_is_abandoned_at_the_first_token_timeout_and_tried_again() {
        let inner = Scripted::new(vec![Attempt::Silent]);
        let started = Instant::now();
        let (texts, error) = call(inner.clone(), policy()).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(texts, ["ok"]);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_request_the_endpoint_refuses_as_bad_is_not_retried() {
        let inner = Scripted::new(vec![Attempt::Refuse(status(400, None))]);
        let (texts, error) = call(inner.clone(), policy()).await;
        assert!(texts.is_empty());
        assert!(
            matches!(error, Some(LlmError::Status { status: 400, .. })),
            "{error:?}"
        );
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_endpoint_that_keeps_failing_is_given_up_after_the_last_attempt() {
        let inner = Scripted::new(
            (0..10)
                .map(|_| Attempt::Refuse(status(503, None)))
                .collect(),
        );
        let (texts, error) = call(inner.clone(), policy()).await;
        assert!(texts.is_empty());
        match error {
            Some(LlmError::GaveUp { attempts: 4, last }) => {
                assert!(matches!(*last, LlmError::Status { status: 503, .. }))
            }
            other => panic!("expected GaveUp after 4 attempts, got {other:?}"),
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_retry_deadline_is_not_waited_for() {
        let inner = Scripted::new(vec![Attempt::Refuse(status(
            429,
            Some(Duration::from_secs(3600)),
        ))]);
        let started = Instant::now();
        let (_, error) = call(inner.clone(), policy()).await;
        assert!(
            matches!(error, Some(LlmError::Status { status: 429, .. })),
            "{error:?}"
        );
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn an_endless_stream_is_cut_at_the_token_cap() {
        let inner = Scripted::new(vec![Attempt::Endless]);
        let (texts, error) = call(inner, policy()).await;
        assert!(matches!(error, Some(LlmError::TooLong(100))), "{error:?}");
        assert_eq!(texts.len(), 100);
    }

    #[tokio::test]
    async fn a_slow_endless_stream_is_cut_at_the_answer_deadline() {
        struct Slow;
        #[async_trait]
        impl Llm for Slow {
            fn model(&self) -> &str {
                "slow"
            }
            async fn stream(&self, _: ChatRequest) -> Result<LlmStream, LlmError> {
                Ok(futures::stream::unfold((), |()| async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((delta("word "), ()))
                })
                .boxed())
            }
        }
        let policy = Policy {
            answer_deadline: Duration::from_millis(400),
            token_cap: 1_000_000,
            ..policy()
        };
        let llm = Resilient::new(Arc::new(Slow), policy, words);
        let started = Instant::now();
        let mut stream = llm.stream(request()).await.unwrap();
        let mut deltas = 0;
        let error = loop {
            match stream.next().await {
                Some(Ok(_)) => deltas += 1,
                Some(Err(error)) => break error,
                None => panic!("the stream ended without an error"),
            }
        };
        assert!(matches!(error, LlmError::Deadline(_)), "{error:?}");
        assert!(deltas > 0);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn backoff_doubles_with_equal_jitter_and_honours_retry_after() {
        let policy = Policy {
            backoff: Duration::from_millis(100),
            ..policy()
        };
        assert_eq!(backoff(&policy, 1, None, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(&policy, 1, None, 0.999_999).as_millis(), 99);
        assert_eq!(backoff(&policy, 3, None, 0.0), Duration::from_millis(200));
        // Capped at 32 backoffs, however many failures.
        assert_eq!(backoff(&policy, 40, None, 0.0), Duration::from_millis(1600));
        let wait = Some(Duration::from_secs(2));
        assert_eq!(backoff(&policy, 1, wait, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(&policy, 1, wait, 0.5), Duration::from_millis(2050));
    }

    #[test]
    fn the_token_cap_leaves_a_quarter_more_than_the_endpoint_is_asked_for() {
        assert_eq!(token_cap(800), 1000);
    }
}
