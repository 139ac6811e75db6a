//! Prometheus metrics: a few counters and one latency histogram, kept in atomics (no lock, no
//! allocation per request) and written in the text exposition format by `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The process's counters.
#[derive(Default)]
pub struct Metrics {
    requests: [AtomicU64; 5],
    duration_buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_micros: AtomicU64,
    completions_complete: AtomicU64,
    completions_incomplete: AtomicU64,
    /// Tool calls by kind (`ToolKind`) and outcome (ok, error).
    tool_calls: [[AtomicU64; 2]; 4],
}

/// Who ran a tool call, for the counters.
#[derive(Debug, Clone, Copy)]
pub enum ToolKind {
    /// The caller's app (counted when the model calls it).
    Client = 0,
    Memory = 1,
    Mcp = 2,
    /// A name the agent has no tool for (a model's mistake, answered with an error).
    Unknown = 3,
}

const TOOL_KINDS: [&str; 4] = ["client", "memory", "mcp", "unknown"];

/// How a completion's reply ended, for the counters.
#[derive(Debug, Clone, Copy)]
pub enum ReplyEnd {
    Complete,
    Incomplete,
}

impl Metrics {
    /// Counts one finished request.
    pub fn observe_request(&self, status: u16, elapsed: Duration) {
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn observe_reply(&self, end: ReplyEnd) {
        match end {
            ReplyEnd::Complete => &self.completions_complete,
            ReplyEnd::Incomplete => &self.completions_incomplete,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one tool call (`failed`: the result the model read was an error).
    pub fn observe_tool_call(&self, kind: ToolKind, failed: bool) {
        self.tool_calls[kind as usize][usize::from(failed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition, with the database pool's state, its reads answered and writes run
    /// together (`Db::combined_reads`, `Db::combined_writes`) and the provider lanes' (`lanes`
    /// made, provider calls `running`) given by the caller.
    pub fn render(
        &self,
        (pool, combined_reads, combined_writes): (&[(&str, u64)], u64, u64),
        (lanes, running): (usize, usize),
    ) -> String {
        let mut out = String::with_capacity(2048);
        let _ = writeln!(
            out,
            "# HELP confidant_http_requests_total HTTP requests answered, by status class."
        );
        let _ = writeln!(out, "# TYPE confidant_http_requests_total counter");
        for (class, counter) in STATUS_CLASSES.iter().zip(&self.requests) {
            let _ = writeln!(
                out,
                "confidant_http_requests_total{{status=\"{class}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP confidant_http_request_duration_seconds Time to the response head (streams keep going after it)."
        );
        let _ = writeln!(out, "# TYPE confidant_http_request_duration_seconds histogram");
        let mut cumulative = 0;
        for (bound, counter) in BUCKETS.iter().zip(&self.duration_buckets) {
            cumulative += counter.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "confidant_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "confidant_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.duration_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "confidant_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "confidant_http_request_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP confidant_completion_replies_total Assistant replies stored, by status."
        );
        let _ = writeln!(out, "# TYPE confidant_completion_replies_total counter");
        let _ = writeln!(
            out,
            "confidant_completion_replies_total{{status=\"complete\"}} {}",
            self.completions_complete.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "confidant_completion_replies_total{{status=\"incomplete\"}} {}",
            self.completions_incomplete.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP confidant_tool_calls_total Tool calls the models made, by who runs them and outcome."
        );
        let _ = writeln!(out, "# TYPE confidant_tool_calls_total counter");
        for (kind, counts) in TOOL_KINDS.iter().zip(&self.tool_calls) {
            for (outcome, count) in ["ok", "error"].iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "confidant_tool_calls_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {}",
                    count.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP confidant_db_connections Database connections, by pool and state."
        );
        let _ = writeln!(out, "# TYPE confidant_db_connections gauge");
        for (labels, value) in pool {
            let _ = writeln!(out, "confidant_db_connections{{{labels}}} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP confidant_db_combined_reads_total Reads answered by one statement with others of their kind waiting at the same moment (PostgreSQL)."
        );
        let _ = writeln!(out, "# TYPE confidant_db_combined_reads_total counter");
        let _ = writeln!(out, "confidant_db_combined_reads_total {combined_reads}");
        let _ = writeln!(
            out,
            "# HELP confidant_db_combined_writes_total Writes run in one statement (one commit) with others waiting at the same moment (PostgreSQL)."
        );
        let _ = writeln!(out, "# TYPE confidant_db_combined_writes_total counter");
        let _ = writeln!(out, "confidant_db_combined_writes_total {combined_writes}");
        let _ = writeln!(
            out,
            "# HELP confidant_provider_calls_running Model provider calls streaming now."
        );
        let _ = writeln!(out, "# TYPE confidant_provider_calls_running gauge");
        let _ = writeln!(out, "confidant_provider_calls_running {running}");
        let _ = writeln!(
            out,
            "# HELP confidant_provider_lanes Provider clients made, each with its own connections (one per CONFIDANT_PROVIDER_STREAMS_PER_CONNECTION calls at once)."
        );
        let _ = writeln!(out, "# TYPE confidant_provider_lanes gauge");
        let _ = writeln!(out, "confidant_provider_lanes {lanes}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_their_class_and_bucket() {
        let metrics = Metrics::default();
        metrics.observe_request(200, Duration::from_micros(300));
        metrics.observe_request(404, Duration::from_millis(20));
        metrics.observe_reply(ReplyEnd::Incomplete);
        metrics.observe_tool_call(ToolKind::Mcp, true);
        let text = metrics.render((&[("pool=\"read\",state=\"idle\"", 3)], 41, 17), (2, 70));
        assert!(text.contains("confidant_http_requests_total{status=\"2xx\"} 1"));
        assert!(text.contains("confidant_http_requests_total{status=\"4xx\"} 1"));
        assert!(text.contains("confidant_http_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("confidant_http_request_duration_seconds_bucket{le=\"0.025\"} 2"));
        assert!(text.contains("confidant_http_request_duration_seconds_count 2"));
        assert!(text.contains("confidant_completion_replies_total{status=\"incomplete\"} 1"));
        assert!(text.contains("confidant_db_connections{pool=\"read\",state=\"idle\"} 3"));
        assert!(text.contains("confidant_db_combined_reads_total 41\n"));
        assert!(text.contains("confidant_db_combined_writes_total 17\n"));
        assert!(text.contains("confidant_provider_calls_running 70\n"));
        assert!(text.contains("confidant_provider_lanes 2\n"));
        assert!(text.contains("confidant_tool_calls_total{kind=\"mcp\",outcome=\"error\"} 1"));
        assert!(text.contains("confidant_tool_calls_total{kind=\"client\",outcome=\"ok\"} 0"));
    }
}
