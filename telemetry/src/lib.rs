//! Prometheus metrics for Tabadul's node and hub: a small registry of
//! counters, gauges and histograms, rendered in the Prometheus text format
//! (version 0.0.4), and a plain-HTTP `/metrics` endpoint served on an
//! already-bound listener.
//!
//! It holds numbers about the service (requests by decision, latencies,
//! member status, log size, certificate expiry), never statistics or
//! identities beyond member codes and decision words. It does not push
//! anywhere and needs no TLS: bind it to an address only the monitoring
//! network reaches.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Most metrics connections open at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest a metrics connection may live.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone)]
enum Value {
    Number(f64),
    Histogram { counts: Vec<u64>, sum: f64, count: u64 },
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: Kind,
    series: BTreeMap<Vec<(String, String)>, Value>,
}

/// The metrics of one process. Names follow Prometheus conventions
/// (`tabadul_node_queries_total`); each is described once, then updated.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<String, Family>>,
}

fn key(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Registry::default())
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Family>) -> R) -> R {
        f(&mut self.families.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Declares a metric. Updating an undeclared one declares it with no help.
    pub fn describe(&self, name: &str, kind: Kind, help: &str) {
        self.with(|m| {
            m.entry(name.to_owned()).or_insert_with(|| Family { help: help.to_owned(), kind, series: BTreeMap::new() });
        });
    }

    fn family<'a>(m: &'a mut BTreeMap<String, Family>, name: &str, kind: Kind) -> &'a mut Family {
        m.entry(name.to_owned()).or_insert_with(|| Family { help: String::new(), kind, series: BTreeMap::new() })
    }

    /// Adds `by` to a counter.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], by: f64) {
        self.with(|m| {
            let v = Self::family(m, name, Kind::Counter).series.entry(key(labels)).or_insert(Value::Number(0.0));
            if let Value::Number(n) = v {
                *n += by;
            }
        });
    }

    pub fn inc(&self, name: &str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1.0);
    }

    /// Drops every series of a metric (an `_info` gauge whose label changed).
    pub fn clear(&self, name: &str) {
        self.with(|m| {
            if let Some(f) = m.get_mut(name) {
                f.series.clear();
            }
        });
    }

    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.with(|m| {
            Self::family(m, name, Kind::Gauge).series.insert(key(labels), Value::Number(value));
        });
    }

    /// Records a duration in a latency histogram.
    pub fn observe(&self, name: &str, labels: &[(&str, &str)], took: Duration) {
        let secs = took.as_secs_f64();
        self.with(|m| {
            let v = Self::family(m, name, Kind::Histogram).series.entry(key(labels)).or_insert_with(|| Value::Histogram {
                counts: vec![0; LATENCY_BUCKETS.len()],
                sum: 0.0,
                count: 0,
            });
            if let Value::Histogram { counts, sum, count } = v {
                for (c, bound) in counts.iter_mut().zip(LATENCY_BUCKETS) {
                    if secs <= bound {
                        *c += 1;
                    }
                }
                *sum += secs;
                *count += 1;
            }
        });
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.with(|m| {
            for (name, f) in m.iter() {
                if !f.help.is_empty() {
                    out.push_str(&format!("# HELP {name} {}\n", f.help.replace('\\', "\\\\").replace('\n', "\\n")));
                }
                let kind = match f.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Histogram => "histogram",
                };
                out.push_str(&format!("# TYPE {name} {kind}\n"));
                for (labels, v) in &f.series {
                    match v {
                        Value::Number(n) => out.push_str(&format!("{name}{} {}\n", render_labels(labels, None), number(*n))),
                        Value::Histogram { counts, sum, count } => {
                            for (c, bound) in counts.iter().zip(LATENCY_BUCKETS) {
                                out.push_str(&format!("{name}_bucket{} {c}\n", render_labels(labels, Some(&bound.to_string()))));
                            }
                            out.push_str(&format!("{name}_bucket{} {count}\n", render_labels(labels, Some("+Inf"))));
                            out.push_str(&format!("{name}_sum{} {}\n", render_labels(labels, None), number(*sum)));
                            out.push_str(&format!("{name}_count{} {count}\n", render_labels(labels, None)));
                        }
                    }
                }
            }
        });
        out
    }
}

fn number(n: f64) -> String {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { format!("{n}") }
}

fn render_labels(labels: &[(String, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes. `refresh`
/// runs before each scrape, to set gauges that are cheaper to read than to
/// keep current (log size, certificate expiry).
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    refresh: Arc<dyn Fn(&Registry) + Send + Sync>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    // A scraper needs one short connection at a time; these bounds keep a
    // client that opens many, or never finishes its request, harmless.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("metrics: too many open connections; dropping one");
            continue;
        };
        let (registry, refresh) = (registry.clone(), refresh.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (registry, refresh) = (registry.clone(), refresh.clone());
                async move { Ok::<_, Infallible>(respond(&req, &registry, refresh.as_ref())) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
    }
}

fn respond<B>(req: &Request<B>, registry: &Registry, refresh: &(dyn Fn(&Registry) + Send + Sync)) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.method() != hyper::Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".into());
    }
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "metrics are at /metrics\n".into());
    }
    refresh(registry);
    reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", registry.render())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_prometheus_text_format() {
        let r = Registry::new();
        r.describe("tabadul_queries_total", Kind::Counter, "Queries by decision.");
        r.inc("tabadul_queries_total", &[("decision", "allowed")]);
        r.inc("tabadul_queries_total", &[("decision", "allowed")]);
        r.inc("tabadul_queries_total", &[("decision", "refused")]);
        r.set("tabadul_log_entries", &[], 42.0);
        r.observe("tabadul_query_seconds", &[], Duration::from_millis(3));
        r.set("weird", &[("v", "a\"b\\c")], 0.5);
        let text = r.render();
        assert!(text.contains("# HELP tabadul_queries_total Queries by decision.\n# TYPE tabadul_queries_total counter\n"), "{text}");
        assert!(text.contains("tabadul_queries_total{decision=\"allowed\"} 2\n"), "{text}");
        assert!(text.contains("tabadul_queries_total{decision=\"refused\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE tabadul_log_entries gauge\ntabadul_log_entries 42\n"), "{text}");
        assert!(text.contains("tabadul_query_seconds_bucket{le=\"0.0025\"} 0\n"), "{text}");
        assert!(text.contains("tabadul_query_seconds_bucket{le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("tabadul_query_seconds_bucket{le=\"+Inf\"} 1\ntabadul_query_seconds_sum 0.003\ntabadul_query_seconds_count 1\n"), "{text}");
        assert!(text.contains("weird{v=\"a\\\"b\\\\c\"} 0.5\n"), "{text}");
    }
}
