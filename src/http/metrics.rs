//! `/metrics`: the node's own figures in the Prometheus text format (OpenMetrics), written by
//! prometheus-client: each stage of a turn as a histogram, what the service added before the
//! model's first token, `error` frames counted by code, and gauges of the sockets open and the
//! answers streaming.
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;
use super::ws::protocol::ErrorCode;
use crate::chat::stages::Stages;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

/// The node's metrics; one per process, shared by every socket.
pub struct Metrics {
    registry: Registry,
    stages: Family<StageLabel, Histogram>,
    added: Histogram,
    errors: Family<CodeLabel, Counter>,
    sockets: Gauge,
    /// Kept by [`Streaming`] guards.
    streaming: Gauge,
}

/// Seconds from 0.1 ms to about 100 s, a quarter apart: fine enough for a p99 read off them.
fn buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 1.25, 62)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("companion");
        let stages =
            Family::<StageLabel, Histogram>::new_with_constructor(|| Histogram::new(buckets()));
        registry.register(
            "turn_stage_seconds",
            "Time of each stage of a turn: store_question, retrieve, prepare (prompt versions, \
             answer row, history), assemble (prompt, guard), llm_first_token (the model's own delay), stream, store_answer",
            stages.clone(),
        );
        let added = Histogram::new(buckets());
        registry.register(
            "added_first_token_seconds",
            "What the service added before the learner's first delta: from the ask frame's \
             arrival to the first delta sent (past the output guard), less the model's own \
             delay to its first token",
            added.clone(),
        );
        let errors = Family::<CodeLabel, Counter>::default();
        registry.register("error_frames", "Error frames sent, by code", errors.clone());
        let sockets = Gauge::default();
        registry.register(
            "sockets_open",
            "WebSockets open on this node",
            sockets.clone(),
        );
        let streaming = Gauge::default();
        registry.register(
            "answers_streaming",
            "Answers being written on this node",
            streaming.clone(),
        );
        Self {
            registry,
            stages,
            added,
            errors,
            sockets,
            streaming,
        }
    }
}

/// Counts one answer streaming until dropped.
pub struct Streaming<'a>(&'a Metrics);

impl Drop for Streaming<'_> {
    fn drop(&mut self) {
        self.0.streaming.dec();
    }
}

impl Metrics {
    /// A turn's stages, and what the service added before the first token given that the ask
    /// waited `admission` (its checks and quotas) before the turn began.
    pub fn observe_turn(&self, stages: &Stages, admission: Duration) {
        let named = [
            ("store_question", stages.store_question),
            ("retrieve", stages.retrieve),
            ("prepare", stages.prepare),
            ("assemble", stages.assemble),
            ("llm_first_token", stages.llm_first_token),
            ("stream", stages.stream),
            ("store_answer", stages.store_answer),
        ];
        for (stage, took) in named {
            if let Some(took) = took {
                self.stages
                    .get_or_create(&StageLabel { stage })
                    .observe(took.as_secs_f64());
            }
        }
        if let Some(added) = stages.added_before_first_delta() {
            self.added.observe((added + admission).as_secs_f64());
        }
    }

    /// One `error` frame sent.
    pub fn error_frame(&self, code: ErrorCode) {
        let code = serde_json::to_value(code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{code:?}"));
        self.errors.get_or_create(&CodeLabel { code }).inc();
    }

    /// An answer streaming from now until the guard is dropped.
    pub fn streaming(&self) -> Streaming<'_> {
        self.streaming.inc();
        Streaming(self)
    }

    /// The text format, with the gauges read now (`sockets` open on this node).
    pub fn encode(&self, sockets: usize) -> String {
        self.sockets.set(i64::try_from(sockets).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.metrics.encode(state.sockets.open());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_shows_as_stage_histograms_and_the_added_time_and_errors_by_code() {
        let metrics = Metrics::default();
        let stages = Stages {
            store_question: Some(Duration::from_millis(2)),
            retrieve: Some(Duration::from_millis(4)),
            llm_first_token: Some(Duration::from_millis(300)),
            first_token_after: Some(Duration::from_millis(309)),
            first_delta_after: Some(Duration::from_millis(309)),
            ..Default::default()
        };
        metrics.observe_turn(&stages, Duration::from_millis(1));
        metrics.error_frame(ErrorCode::RateLimited);
        metrics.error_frame(ErrorCode::RateLimited);
        let streaming = metrics.streaming();
        let text = metrics.encode(7);
        drop(streaming);
        for line in [
            "companion_turn_stage_seconds_count{stage=\"store_question\"} 1",
            "companion_turn_stage_seconds_sum{stage=\"retrieve\"} 0.004",
            "companion_turn_stage_seconds_count{stage=\"llm_first_token\"} 1",
            "companion_added_first_token_seconds_sum 0.01",
            "companion_error_frames_total{code=\"rate_limited\"} 2",
            "companion_sockets_open 7",
            "companion_answers_streaming 1",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("stage=\"stream\""), "{text}");
        assert!(metrics.encode(0).contains("companion_answers_streaming 0"));
    }
}
