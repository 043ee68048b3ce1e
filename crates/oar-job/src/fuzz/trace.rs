//! `trace`: the trace sender's final phase (`Reporter::finish`, `Reporter::append_and_finish`)
//! against a model of GitLab's trace endpoint, over real HTTP on the loopback.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use oar_gitlab::{Client, ClientConfig, Token, VersionInfo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::outcome::JobOutcome;
use crate::report::{Reporter, ReporterConfig, StreamState};
use crate::tracelog::{TraceLog, TraceLogOptions};

/// GitLab's side: the trace it holds and how it misbehaves next.
#[derive(Default)]
struct Model {
    /// The bytes GitLab holds.
    trace: Vec<u8>,
    /// One byte per request, choosing GitLab's answer; truthful once used up.
    script: Vec<u8>,
    /// Faults answered so far (each can cost the reporter one of its final attempts).
    faults: u32,
    /// Requests served, to stop a reporter that never ends.
    requests: u32,
    /// A final PUT was answered 200.
    done: bool,
    /// A protocol violation the server saw (its task can't fail the input itself).
    violation: Option<String>,
}

impl Model {
    fn next(&mut self) -> u8 {
        self.requests += 1;
        assert!(self.requests < 10_000, "the reporter does not stop");
        if self.script.is_empty() {
            0
        } else {
            self.script.remove(0)
        }
    }

    /// `PATCH /jobs/:id/trace` with `Content-Range: range`.
    fn patch(&mut self, range: &str, body: &[u8]) -> (u16, Vec<String>) {
        let (start, end) = range
            .split_once('-')
            .and_then(|(s, e)| Some((s.parse::<u64>().ok()?, e.parse::<u64>().ok()?)))
            .unwrap_or_else(|| panic!("malformed Content-Range {range:?}"));
        assert!(!body.is_empty(), "an empty PATCH");
        assert_eq!(
            end + 1 - start,
            body.len() as u64,
            "Content-Range {range} for {} bytes",
            body.len()
        );
        let action = self.next();
        match action % 8 {
            // 500 before anything is stored.
            1 => {
                self.faults += 1;
                return (500, vec![]);
            }
            // Stored, but the answer is lost.
            // (It costs the reporter up to two attempts: the 502, then the 416.)
            2 => {
                self.faults += 2;
                if start == self.trace.len() as u64 {
                    self.trace.extend_from_slice(body);
                }
                return (502, vec![]);
            }
            // GitLab lost the tail of its trace.
            3 => {
                self.faults += 1;
                let keep = usize::from(action / 8) % (self.trace.len() + 1);
                self.trace.truncate(keep);
            }
            _ => {}
        }
        let len = self.trace.len() as u64;
        if start != len {
            return (416, vec![format!("Range: 0-{len}")]);
        }
        self.trace.extend_from_slice(body);
        (202, vec![format!("Range: 0-{}", self.trace.len())])
    }

    /// `PUT /jobs/:id` with a JSON body.
    fn put(&mut self, body: &[u8]) -> u16 {
        let req: serde_json::Value = serde_json::from_slice(body).expect("a JSON update");
        let checksum = req["checksum"].as_str().unwrap_or_default().to_owned();
        let output = &req["output"];
        let action = self.next();
        match action % 8 {
            1 => return 202,
            2 => {
                self.faults += 1;
                return 500;
            }
            // GitLab lost the tail of its trace: the checksum below no longer matches.
            3 => {
                let keep = usize::from(action / 8) % (self.trace.len() + 1);
                self.trace.truncate(keep);
            }
            _ => {}
        }
        if !checksum.is_empty() {
            assert_eq!(output["checksum"].as_str(), Some(checksum.as_str()));
            let ours = format!("crc32:{:08x}", crc32fast::hash(&self.trace));
            if checksum != ours || output["bytesize"].as_u64() != Some(self.trace.len() as u64) {
                // GitLab Runner's trace validation: resend the whole trace.
                self.faults += 2;
                return 412;
            }
        }
        self.done = true;
        200
    }
}

/// A model GitLab on the loopback and a client for it; built once, reused for every input.
pub struct TraceHarness {
    client: Client,
    model: Arc<Mutex<Model>>,
}

impl TraceHarness {
    /// Binds the model GitLab and spawns its server on the current runtime, which should be a
    /// current-thread runtime with paused time (the reporter's back-off sleeps then take no
    /// time).
    pub async fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let model = Arc::new(Mutex::new(Model::default()));
        let m = Arc::clone(&model);
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let _ = conn.set_nodelay(true);
                tokio::spawn(serve(conn, Arc::clone(&m)));
            }
        });
        let client = Client::new(&ClientConfig {
            url: format!("http://{addr}/"),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            version: "fuzz".into(),
        })
        .expect("client");
        TraceHarness { client, model }
    }

    /// `trace`: `data` is `[mode, max_patch, held, sent, script_len, script..., output...]`.
    /// The output goes into a finished [`TraceLog`]; GitLab starts out holding its first `held`
    /// bytes (streaming mode, the reporter believing `sent` were sent) or `held` bytes of
    /// someone else's (appending mode), then answers each request as the script says: truthful,
    /// 500 (before or after storing a PATCH, or on the final PUT), 202 on the final PUT, or
    /// losing the tail of its trace (on a PATCH, or before checking the final PUT's checksum,
    /// which then fails with 412).
    /// Checked: every `Content-Range` matches its body; when the reporter says GitLab took the
    /// final state, GitLab holds exactly the log (streaming) or what it held before, or a
    /// prefix of it, followed by the log (appending), and the checksum and size sent were
    /// GitLab's; with fewer faults than the reporter's final attempts, it does succeed.
    pub async fn run(&self, data: &[u8]) {
        let [mode, max_patch, held, sent, script_len, rest @ ..] = data else {
            return;
        };
        let (script, output) = rest.split_at(usize::from(*script_len).min(rest.len()));
        let log = TraceLog::new(TraceLogOptions::default());
        log.write(output);
        log.finish();
        let bytes = log.snapshot();
        let appending = mode & 1 == 1;
        let held = usize::from(*held).min(if appending { 255 } else { bytes.len() });
        let before: Vec<u8> = if appending {
            (0..held).map(|i| b'a' + (i % 26) as u8).collect()
        } else {
            bytes[..held].to_vec()
        };
        *lock(&self.model) = Model {
            trace: before.clone(),
            script: script.to_vec(),
            // A reporter out of step with GitLab loses one attempt to the first 416.
            faults: u32::from(
                !appending && u64::from(*sent).min(bytes.len() as u64) != held as u64,
            ),
            ..Model::default()
        };
        let limit = 10;
        let cfg = ReporterConfig {
            max_patch: usize::from(max_patch % 16) + 1,
            final_retry_limit: limit,
            ..ReporterConfig::default()
        };
        let reporter = Reporter::new(
            self.client.clone(),
            1,
            Token::new("job-token"),
            VersionInfo::default(),
            Vec::new(),
            cfg,
        );
        let ok = if appending {
            reporter
                .append_and_finish(&log, &JobOutcome::success())
                .await
        } else {
            let state = StreamState {
                sent: u64::from(*sent).min(bytes.len() as u64),
                interval: Some(Duration::from_secs(3)),
            };
            reporter.finish(&log, &JobOutcome::success(), state).await
        };
        let model = lock(&self.model);
        if let Some(v) = &model.violation {
            panic!("{v}");
        }
        assert_eq!(
            ok, model.done,
            "the reporter and GitLab disagree on the final state"
        );
        if ok {
            if appending {
                let trace = &model.trace;
                assert!(
                    trace.ends_with(&bytes)
                        && before.starts_with(&trace[..trace.len() - bytes.len()]),
                    "GitLab holds {:?}, expected a prefix of {:?} then {:?}",
                    String::from_utf8_lossy(trace),
                    String::from_utf8_lossy(&before),
                    String::from_utf8_lossy(&bytes)
                );
            } else {
                assert_eq!(
                    String::from_utf8_lossy(&model.trace),
                    String::from_utf8_lossy(&bytes),
                    "GitLab's trace is not the log"
                );
            }
        } else {
            assert!(
                model.faults >= limit,
                "gave up after {} faults (limit {limit})",
                model.faults
            );
        }
    }
}

fn lock(m: &Mutex<Model>) -> std::sync::MutexGuard<'_, Model> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves HTTP/1.1 requests on `conn` from the model until the client closes it.
async fn serve(conn: TcpStream, model: Arc<Mutex<Model>>) {
    let mut conn = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut length = 0usize;
        let mut range = String::new();
        loop {
            let mut h = String::new();
            if conn.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().expect("content-length"),
                    "content-range" => range = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if conn.read_exact(&mut body).await.is_err() {
            return;
        }
        let answer = {
            let mut m = lock(&model);
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                match (method.as_str(), path.split('?').next().unwrap_or_default()) {
                    ("PATCH", "/api/v4/jobs/1/trace") => m.patch(&range, &body),
                    ("PUT", "/api/v4/jobs/1") => (m.put(&body), vec![]),
                    other => panic!("unexpected request {other:?}"),
                }
            }));
            answer.map_err(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                m.violation.get_or_insert(msg);
            })
        };
        let Ok((status, headers)) = answer else {
            return;
        };
        let mut resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n");
        for h in headers {
            resp.push_str(&h);
            resp.push_str("\r\n");
        }
        resp.push_str("\r\n");
        if conn.get_mut().write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}
