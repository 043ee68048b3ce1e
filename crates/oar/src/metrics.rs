//! Prometheus metrics with GitLab Runner's family names and labels.
//!
//! The classic text exposition format (0.0.4) is used on purpose: GitLab
//! Runner exposes a gauge `gitlab_runner_jobs` next to a counter
//! `gitlab_runner_jobs_total`, which OpenMetrics naming rules forbid, and
//! Oar must be a drop-in for dashboards and alerts built on those names.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Buckets of `gitlab_runner_job_duration_seconds` (GitLab Runner's).
const JOB_DURATION_BUCKETS: [f64; 10] = [
    30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 10800.0, 18000.0, 36000.0,
];

/// Buckets of `gitlab_runner_job_stage_duration_seconds` (an Oar addition).
const STAGE_DURATION_BUCKETS: [f64; 11] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Value of the `state` label of `gitlab_runner_jobs` for running jobs.
const STATE_RUNNING: &str = "running";

/// Label of `gitlab_runner_api_request_statuses_total` when no answer came.
const STATUS_NO_ANSWER: &str = "error";

/// The metrics of one Oar process. Cheap to clone: every clone shares the
/// same registry and families.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    concurrent: IntGauge,
    limit: IntGaugeVec,
    request_concurrency: IntGaugeVec,
    jobs: IntGaugeVec,
    jobs_total: IntCounterVec,
    failed_jobs_total: IntCounterVec,
    job_duration_seconds: HistogramVec,
    api_request_statuses_total: IntCounterVec,
    errors_total: IntCounterVec,
    job_stage_duration_seconds: HistogramVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Registers `collector` in `registry` and hands it back.
fn register<C>(registry: &Registry, collector: C) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    // Names are constants and the registry is fresh: a clash is a bug here.
    registry
        .register(Box::new(collector.clone()))
        .expect("metric families have unique names");
    collector
}

fn int_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge options");
    register(registry, vec)
}

fn int_counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter options");
    register(registry, vec)
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let vec = HistogramVec::new(opts, labels).expect("valid histogram options");
    register(registry, vec)
}

/// Go's name for the CPU architecture, as GitLab Runner reports it.
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl Metrics {
    /// Creates the registry and every family. `version` and `revision` go to
    /// `gitlab_runner_version_info`, which is set to 1 here.
    pub fn new(version: &str, revision: &str) -> Metrics {
        let registry = Registry::new();

        let version_info = int_gauge_vec(
            &registry,
            "gitlab_runner_version_info",
            "A metric with a constant '1' value labeled by different build stats fields.",
            &[
                "name",
                "version",
                "revision",
                "branch",
                "built_at",
                "go_version",
                "os",
                "architecture",
            ],
        );
        let rust_version = format!("rust{}", env!("CARGO_PKG_RUST_VERSION"));
        version_info
            .with_label_values(&[
                "oar",
                version,
                revision,
                option_env!("OAR_BUILD_BRANCH").unwrap_or(""),
                option_env!("OAR_BUILD_DATE").unwrap_or(""),
                option_env!("OAR_RUSTC_VERSION").unwrap_or(&rust_version),
                std::env::consts::OS,
                go_arch(std::env::consts::ARCH),
            ])
            .set(1);

        let concurrent = register(
            &registry,
            IntGauge::new(
                "gitlab_runner_concurrent",
                "The current value of concurrent setting",
            )
            .expect("valid gauge options"),
        );
        let runner = ["runner", "system_id"];
        let limit = int_gauge_vec(
            &registry,
            "gitlab_runner_limit",
            "The current value of limit setting",
            &runner,
        );
        let request_concurrency = int_gauge_vec(
            &registry,
            "gitlab_runner_request_concurrency",
            "The current number of concurrent requests for a new job",
            &runner,
        );
        let jobs = int_gauge_vec(
            &registry,
            "gitlab_runner_jobs",
            "The current number of running builds.",
            &["runner", "system_id", "state", "executor_stage", "stage"],
        );
        let jobs_total = int_counter_vec(
            &registry,
            "gitlab_runner_jobs_total",
            "Total number of handled jobs",
            &runner,
        );
        let failed_jobs_total = int_counter_vec(
            &registry,
            "gitlab_runner_failed_jobs_total",
            "Total number of failed jobs",
            &["runner", "system_id", "failure_reason"],
        );
        let job_duration_seconds = histogram_vec(
            &registry,
            "gitlab_runner_job_duration_seconds",
            "Histogram of job durations",
            &JOB_DURATION_BUCKETS,
            &runner,
        );
        let api_request_statuses_total = int_counter_vec(
            &registry,
            "gitlab_runner_api_request_statuses_total",
            "The total number of api requests, partitioned by runner, system_id, endpoint and status.",
            &["runner", "system_id", "endpoint", "status"],
        );
        let errors_total = int_counter_vec(
            &registry,
            "gitlab_runner_errors_total",
            "The number of caught errors.",
            &["level"],
        );
        // Present from the start, so alerts on rate() see a zero baseline.
        for level in ["warning", "error"] {
            errors_total.with_label_values(&[level]).reset();
        }
        let job_stage_duration_seconds = histogram_vec(
            &registry,
            "gitlab_runner_job_stage_duration_seconds",
            "Histogram of job stage durations",
            &STAGE_DURATION_BUCKETS,
            &["runner", "stage"],
        );

        #[cfg(target_os = "linux")]
        register(
            &registry,
            ProcessCollectorHandle(Arc::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            )),
        );

        Metrics {
            inner: Arc::new(Inner {
                registry,
                concurrent,
                limit,
                request_concurrency,
                jobs,
                jobs_total,
                failed_jobs_total,
                job_duration_seconds,
                api_request_statuses_total,
                errors_total,
                job_stage_duration_seconds,
            }),
        }
    }

    /// Sets `gitlab_runner_concurrent`.
    pub fn set_concurrent(&self, n: u32) {
        self.inner.concurrent.set(i64::from(n));
    }

    /// Sets `gitlab_runner_limit` of one runner.
    pub fn set_limit(&self, runner: &str, system_id: &str, n: u32) {
        self.inner
            .limit
            .with_label_values(&[runner, system_id])
            .set(i64::from(n));
    }

    /// Sets `gitlab_runner_request_concurrency` of one runner.
    pub fn set_request_concurrency(&self, runner: &str, system_id: &str, n: u32) {
        self.inner
            .request_concurrency
            .with_label_values(&[runner, system_id])
            .set(i64::from(n));
    }

    fn running(&self, runner: &str, system_id: &str) -> IntGauge {
        self.inner
            .jobs
            .with_label_values(&[runner, system_id, STATE_RUNNING, "", ""])
    }

    /// A job was received and starts: `gitlab_runner_jobs` goes up by one and
    /// `gitlab_runner_jobs_total` counts it (GitLab Runner counts handled
    /// jobs when they are taken, not when they end).
    pub fn job_started(&self, runner: &str, system_id: &str) {
        self.running(runner, system_id).inc();
        self.inner
            .jobs_total
            .with_label_values(&[runner, system_id])
            .inc();
    }

    /// A job ended: `gitlab_runner_jobs` goes down by one, its duration is
    /// observed, and a failure is counted under its reason (GitLab's
    /// `failure_reason`, e.g. `script_failure`, `runner_system_failure`).
    pub fn job_finished(
        &self,
        runner: &str,
        system_id: &str,
        duration: Duration,
        failure_reason: Option<&str>,
    ) {
        self.running(runner, system_id).dec();
        self.inner
            .job_duration_seconds
            .with_label_values(&[runner, system_id])
            .observe(duration.as_secs_f64());
        if let Some(reason) = failure_reason {
            self.inner
                .failed_jobs_total
                .with_label_values(&[runner, system_id, reason])
                .inc();
        }
    }

    /// One stage of a job ended after `duration`.
    pub fn stage_finished(&self, runner: &str, stage: &str, duration: Duration) {
        self.inner
            .job_stage_duration_seconds
            .with_label_values(&[runner, stage])
            .observe(duration.as_secs_f64());
    }

    /// One request to GitLab's API ended with HTTP `status`; 0 means no
    /// answer came (connection error, timeout) and is labelled `error`.
    pub fn api_request(&self, runner: &str, system_id: &str, endpoint: &str, status: u16) {
        let status = if status == 0 {
            STATUS_NO_ANSWER.to_owned()
        } else {
            status.to_string()
        };
        self.inner
            .api_request_statuses_total
            .with_label_values(&[runner, system_id, endpoint, &status])
            .inc();
    }

    /// Counts one logged problem at `level` (`warning` or `error`). The
    /// [`ErrorCounter`] layer calls this for every WARN/ERROR event, so code
    /// that logs through `tracing` must not call it as well.
    #[allow(dead_code)] // used by tests and kept as API
    pub fn error(&self, level: &str) {
        self.inner.errors_total.with_label_values(&[level]).inc();
    }

    /// Sum of `gitlab_runner_jobs` over all label sets.
    #[allow(dead_code)] // used by tests and kept as API
    pub fn running_jobs(&self) -> i64 {
        use prometheus::core::Collector;
        self.inner
            .jobs
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_gauge().get_value() as i64)
            .sum()
    }

    /// Every family in the Prometheus text format 0.0.4.
    pub fn encode(&self) -> String {
        let families = self.inner.registry.gather();
        let mut buf = Vec::new();
        match TextEncoder::new().encode(&families, &mut buf) {
            Ok(()) => String::from_utf8(buf).unwrap_or_default(),
            Err(err) => {
                tracing::debug!(error = %err, "encoding metrics failed");
                String::new()
            }
        }
    }
}

/// Makes the process collector `Clone` so [`register`] can take it.
#[cfg(target_os = "linux")]
#[derive(Clone)]
struct ProcessCollectorHandle(Arc<prometheus::process_collector::ProcessCollector>);

#[cfg(target_os = "linux")]
impl prometheus::core::Collector for ProcessCollectorHandle {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

/// A `tracing_subscriber` layer that counts every WARN and ERROR event in
/// `gitlab_runner_errors_total{level="warning"|"error"}`, so logs and
/// metrics come from the same events.
#[derive(Clone)]
pub struct ErrorCounter {
    warning: IntCounter,
    error: IntCounter,
}

impl ErrorCounter {
    /// A layer counting into `metrics`.
    pub fn new(metrics: &Metrics) -> ErrorCounter {
        ErrorCounter {
            warning: metrics.inner.errors_total.with_label_values(&["warning"]),
            error: metrics.inner.errors_total.with_label_values(&["error"]),
        }
    }
}

impl std::fmt::Debug for ErrorCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorCounter").finish_non_exhaustive()
    }
}

impl<S: Subscriber> Layer<S> for ErrorCounter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level == Level::ERROR {
            self.error.inc();
        } else if level == Level::WARN {
            self.warning.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// The value of the sample line `series` (name with labels) in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
    }

    #[test]
    fn encoding_has_every_family_with_its_type() {
        let m = Metrics::new("1.2.3", "abcdef");
        m.set_concurrent(4);
        m.set_limit("r1", "s_1", 2);
        m.set_request_concurrency("r1", "s_1", 1);
        m.job_started("r1", "s_1");
        m.job_started("r1", "s_1");
        m.job_finished("r1", "s_1", Duration::from_secs(45), Some("script_failure"));
        m.stage_finished("r1", "step_script", Duration::from_millis(700));
        m.api_request("r1", "s_1", "request_job", 201);
        m.api_request("r1", "s_1", "request_job", 0);
        let text = m.encode();

        for (family, kind) in [
            ("gitlab_runner_version_info", "gauge"),
            ("gitlab_runner_concurrent", "gauge"),
            ("gitlab_runner_limit", "gauge"),
            ("gitlab_runner_request_concurrency", "gauge"),
            ("gitlab_runner_jobs", "gauge"),
            ("gitlab_runner_jobs_total", "counter"),
            ("gitlab_runner_failed_jobs_total", "counter"),
            ("gitlab_runner_job_duration_seconds", "histogram"),
            ("gitlab_runner_api_request_statuses_total", "counter"),
            ("gitlab_runner_errors_total", "counter"),
            ("gitlab_runner_job_stage_duration_seconds", "histogram"),
        ] {
            let line = format!("# TYPE {family} {kind}\n");
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "no HELP for {family}"
            );
        }

        assert_eq!(sample(&text, "gitlab_runner_concurrent"), Some(4.0));
        assert_eq!(
            sample(&text, r#"gitlab_runner_limit{runner="r1",system_id="s_1"}"#),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"gitlab_runner_request_concurrency{runner="r1",system_id="s_1"}"#
            ),
            Some(1.0)
        );
        let arch = go_arch(std::env::consts::ARCH);
        let os = std::env::consts::OS;
        let rust = format!("rust{}", env!("CARGO_PKG_RUST_VERSION"));
        let version_info = format!(
            r#"gitlab_runner_version_info{{architecture="{arch}",branch="",built_at="",go_version="{rust}",name="oar",os="{os}",revision="abcdef",version="1.2.3"}}"#
        );
        if option_env!("OAR_BUILD_BRANCH").is_none()
            && option_env!("OAR_BUILD_DATE").is_none()
            && option_env!("OAR_RUSTC_VERSION").is_none()
        {
            assert_eq!(sample(&text, &version_info), Some(1.0), "{text}");
        }
        assert_eq!(
            sample(
                &text,
                r#"gitlab_runner_api_request_statuses_total{endpoint="request_job",runner="r1",status="201",system_id="s_1"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"gitlab_runner_api_request_statuses_total{endpoint="request_job",runner="r1",status="error",system_id="s_1"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"gitlab_runner_job_duration_seconds_bucket{runner="r1",system_id="s_1",le="60"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"gitlab_runner_job_duration_seconds_bucket{runner="r1",system_id="s_1",le="30"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"gitlab_runner_job_stage_duration_seconds_bucket{runner="r1",stage="step_script",le="1"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"gitlab_runner_job_stage_duration_seconds_bucket{runner="r1",stage="step_script",le="0.5"}"#
            ),
            Some(0.0)
        );
        // The error levels are there before anything is logged.
        assert_eq!(
            sample(&text, r#"gitlab_runner_errors_total{level="warning"}"#),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, r#"gitlab_runner_errors_total{level="error"}"#),
            Some(0.0)
        );
        #[cfg(target_os = "linux")]
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
    }

    #[test]
    fn jobs_move_gauge_and_counters() {
        let m = Metrics::new("1", "r");
        let running = r#"gitlab_runner_jobs{executor_stage="",runner="r1",stage="",state="running",system_id="s"}"#;
        let total = r#"gitlab_runner_jobs_total{runner="r1",system_id="s"}"#;
        assert_eq!(m.running_jobs(), 0);

        m.job_started("r1", "s");
        m.job_started("r1", "s");
        m.job_started("r2", "s");
        assert_eq!(m.running_jobs(), 3);
        let text = m.encode();
        assert_eq!(sample(&text, running), Some(2.0), "{text}");
        assert_eq!(sample(&text, total), Some(2.0));

        m.job_finished("r1", "s", Duration::from_secs(1), None);
        m.job_finished("r2", "s", Duration::from_secs(1), None);
        assert_eq!(m.running_jobs(), 1);
        let text = m.encode();
        assert_eq!(sample(&text, running), Some(1.0));
        assert_eq!(sample(&text, total), Some(2.0));
        assert_eq!(
            sample(
                &text,
                r#"gitlab_runner_job_duration_seconds_count{runner="r1",system_id="s"}"#
            ),
            Some(1.0)
        );
        assert!(!text.contains("gitlab_runner_failed_jobs_total{"));
    }

    #[test]
    fn failed_jobs_are_counted_by_reason() {
        let m = Metrics::new("1", "r");
        for reason in [
            Some("script_failure"),
            Some("script_failure"),
            Some("job_execution_timeout"),
            None,
        ] {
            m.job_started("r1", "s");
            m.job_finished("r1", "s", Duration::from_secs(90), reason);
        }
        let text = m.encode();
        let failed = |reason: &str| {
            sample(
                &text,
                &format!(
                    r#"gitlab_runner_failed_jobs_total{{failure_reason="{reason}",runner="r1",system_id="s"}}"#
                ),
            )
        };
        assert_eq!(failed("script_failure"), Some(2.0));
        assert_eq!(failed("job_execution_timeout"), Some(1.0));
        assert_eq!(failed("runner_system_failure"), None);
        assert_eq!(m.running_jobs(), 0);
        assert_eq!(
            sample(
                &text,
                r#"gitlab_runner_jobs_total{runner="r1",system_id="s"}"#
            ),
            Some(4.0)
        );
    }

    #[test]
    fn error_counter_counts_warn_and_error_events() {
        let m = Metrics::new("1", "r");
        let subscriber = tracing_subscriber::registry().with(ErrorCounter::new(&m));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not counted");
            tracing::warn!("first");
            tracing::warn!(attempt = 2, "second");
            tracing::error!("broken");
            tracing::debug!("not counted either");
        });
        m.error("error");
        let text = m.encode();
        assert_eq!(
            sample(&text, r#"gitlab_runner_errors_total{level="warning"}"#),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, r#"gitlab_runner_errors_total{level="error"}"#),
            Some(2.0)
        );
    }

    #[test]
    fn clones_share_the_registry() {
        let m = Metrics::new("1", "r");
        let other = m.clone();
        other.job_started("r1", "s");
        assert_eq!(m.running_jobs(), 1);
    }
}
