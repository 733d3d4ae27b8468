//! Prometheus metrics (`prometheus-client`) and the small HTTP endpoint that serves
//! `/metrics`, `/healthz` and `/readyz` on `metricsPort`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// A label set such as `[("topic", "Orders")]`.
pub type Labels = Vec<(String, String)>;

/// The broker's metrics.
#[derive(Debug)]
pub struct BrokerMetrics {
    registry: Registry,
    /// Messages stored, per topic.
    pub messages_in: Family<Labels, Counter>,
    /// Body bytes stored, per topic.
    pub bytes_in: Family<Labels, Counter>,
    /// Messages returned by pulls, per topic.
    pub messages_out: Family<Labels, Counter>,
    /// Record bytes returned by pulls, per topic.
    pub bytes_out: Family<Labels, Counter>,
    /// Send request latency.
    pub send_latency: Histogram,
    /// Pull request latency (including long-poll waits).
    pub pull_latency: Histogram,
    /// CommitLog max offset.
    pub store_max_offset: Gauge,
    /// CommitLog min offset.
    pub store_min_offset: Gauge,
    /// CommitLog flushes and the time they took.
    pub store_flushes: Gauge,
    /// Seconds spent flushing the CommitLog (as a gauge of the running total, in µs).
    pub store_flush_micros: Gauge,
    /// Suspended pulls.
    pub long_polling_waiters: Gauge,
    /// Open client connections.
    pub connections: Gauge,
    /// CommitLog flush (msync) latency.
    pub flush_latency: Histogram,
    /// Consumer lag per group and topic.
    pub consumer_lag: Family<Labels, Gauge>,
    /// Bytes the best slave is behind (masters).
    pub ha_slave_lag: Gauge,
    /// Connected slaves (masters).
    pub ha_slaves: Gauge,
    /// Role epoch.
    pub role_epoch: Gauge,
    /// 1 while this broker is a master.
    pub is_master: Gauge,
    /// Control-plane requests refused (unsigned, badly signed, epoch jumps).
    pub control_refused: Counter,
    /// Requests the ACL refused (`aclEnable`).
    pub acl_refused: Counter,
    /// 1 while the store refuses writes after a failed CommitLog flush.
    pub store_read_only: Gauge,
    /// Times each connection limit acted since start (`limit`: connections, idle,
    /// frame_deadline, in_flight).
    pub server_limits: Family<Vec<(String, String)>, Gauge>,
    /// Answer bytes queued on every client connection, not yet written.
    pub server_pending_response_bytes: Gauge,
    /// 1 while dispatch to the ConsumeQueues fails (sends refused meanwhile).
    pub store_dispatch_blocked: Gauge,
    /// Retried metadata flushes (ConsumeQueue, index, checkpoint) that failed.
    pub store_transient_failures: Gauge,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferrocket");
        let m = BrokerMetrics {
            messages_in: Family::default(),
            bytes_in: Family::default(),
            messages_out: Family::default(),
            bytes_out: Family::default(),
            send_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            pull_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 20)),
            store_max_offset: Gauge::default(),
            store_min_offset: Gauge::default(),
            store_flushes: Gauge::default(),
            store_flush_micros: Gauge::default(),
            long_polling_waiters: Gauge::default(),
            connections: Gauge::default(),
            flush_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            consumer_lag: Family::default(),
            ha_slave_lag: Gauge::default(),
            ha_slaves: Gauge::default(),
            role_epoch: Gauge::default(),
            is_master: Gauge::default(),
            control_refused: Counter::default(),
            acl_refused: Counter::default(),
            store_read_only: Gauge::default(),
            server_limits: Family::default(),
            server_pending_response_bytes: Gauge::default(),
            store_dispatch_blocked: Gauge::default(),
            store_transient_failures: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ha_slave_lag_bytes",
            "Bytes the most advanced slave is behind the master's CommitLog",
            m.ha_slave_lag.clone(),
        );
        registry.register("ha_slaves", "Connected slaves", m.ha_slaves.clone());
        registry.register("role_epoch", "Role epoch", m.role_epoch.clone());
        registry.register(
            "is_master",
            "1 while this broker takes writes",
            m.is_master.clone(),
        );
        registry.register(
            "control_refused",
            "Role and permission changes refused (unsigned, badly signed, or jumping epochs)",
            m.control_refused.clone(),
        );
        registry.register(
            "acl_refused",
            "Requests the ACL refused (NO_PERMISSION: unsigned, unknown account, bad signature, missing permission)",
            m.acl_refused.clone(),
        );
        registry.register(
            "store_read_only",
            "1 while the store refuses writes after a failed CommitLog flush",
            m.store_read_only.clone(),
        );
        registry.register(
            "server_limit_hits",
            "Times a connection limit acted since start: connections refused, idle or slow-frame connections closed, requests answered SYSTEM_BUSY",
            m.server_limits.clone(),
        );
        registry.register(
            "server_pending_response_bytes",
            "Answer bytes queued on all client connections and not yet written (bounded by serverMaxTotalPendingResponseBytes)",
            m.server_pending_response_bytes.clone(),
        );
        registry.register(
            "store_dispatch_blocked",
            "1 while records cannot be dispatched to their ConsumeQueues; sends are refused meanwhile",
            m.store_dispatch_blocked.clone(),
        );
        registry.register(
            "store_transient_failures",
            "Failed metadata flushes (ConsumeQueue, index, checkpoint) since start; retried",
            m.store_transient_failures.clone(),
        );
        registry.register("messages_in", "Messages stored", m.messages_in.clone());
        registry.register("bytes_in", "Message body bytes stored", m.bytes_in.clone());
        registry.register(
            "messages_out",
            "Messages returned by pulls",
            m.messages_out.clone(),
        );
        registry.register(
            "bytes_out",
            "Stored record bytes returned by pulls",
            m.bytes_out.clone(),
        );
        registry.register(
            "send_latency_seconds",
            "Send request latency",
            m.send_latency.clone(),
        );
        registry.register(
            "pull_latency_seconds",
            "Pull request latency, long-poll waits included",
            m.pull_latency.clone(),
        );
        registry.register(
            "store_max_offset_bytes",
            "CommitLog max physical offset",
            m.store_max_offset.clone(),
        );
        registry.register(
            "store_min_offset_bytes",
            "CommitLog min physical offset",
            m.store_min_offset.clone(),
        );
        registry.register(
            "store_flushes",
            "CommitLog flushes so far",
            m.store_flushes.clone(),
        );
        registry.register(
            "store_flush_microseconds",
            "Time spent in CommitLog flushes so far",
            m.store_flush_micros.clone(),
        );
        registry.register(
            "long_polling_waiters",
            "Pulls suspended by long polling",
            m.long_polling_waiters.clone(),
        );
        registry.register(
            "consumer_lag_messages",
            "Messages not yet committed by a group, per topic",
            m.consumer_lag.clone(),
        );
        registry.register(
            "connections",
            "Open client connections",
            m.connections.clone(),
        );
        registry.register(
            "flush_latency_seconds",
            "CommitLog flush (msync) latency",
            m.flush_latency.clone(),
        );
        BrokerMetrics { registry, ..m }
    }
}

impl BrokerMetrics {
    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            warn!("metrics encoding failed");
        }
        out
    }
}

/// Name server metrics.
#[derive(Debug)]
pub struct NamesrvMetrics {
    registry: Registry,
    /// Registered broker addresses.
    pub registered_brokers: Gauge,
    /// REGISTER_BROKER / UNREGISTER_BROKER refused: the address named is not the
    /// connection's own.
    pub registrations_refused: Counter,
}

impl Default for NamesrvMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferrocket_namesrv");
        let registered_brokers = Gauge::default();
        registry.register(
            "registered_brokers",
            "Broker addresses registered",
            registered_brokers.clone(),
        );
        let registrations_refused = Counter::default();
        registry.register(
            "registrations_refused",
            "Broker (un)registrations refused because they name an address other than the connection's own",
            registrations_refused.clone(),
        );
        NamesrvMetrics {
            registry,
            registered_brokers,
            registrations_refused,
        }
    }
}

impl NamesrvMetrics {
    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// What the HTTP endpoint asks its owner.
pub trait Observable: Send + Sync + 'static {
    /// Metrics text, refreshed for this scrape.
    fn metrics(&self) -> String;
    /// Ready to serve (store recovered, registered with a name server).
    fn ready(&self) -> bool;
    /// Alive: `Err` names what is stuck (`/healthz` answers 503 with it).
    ///
    /// # Errors
    /// A watched loop stalled.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the task is dropped.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve_http(
    addr: SocketAddr,
    target: Arc<dyn Observable>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(serve_http_on(listener, target, std::future::pending()))
}

/// Serves `/metrics`, `/healthz` and `/readyz` on a bound `listener` until `shutdown`
/// resolves; the listener and its connections are closed when the task ends.
pub fn serve_http_on(
    listener: TcpListener,
    target: Arc<dyn Observable>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = listener.accept() => a,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let target = Arc::clone(&target);
            conns.spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let target = Arc::clone(&target);
                    async move {
                        let resp = match req.uri().path() {
                            "/metrics" => reply(
                                StatusCode::OK,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                target.metrics(),
                            ),
                            "/healthz" => match target.health() {
                                Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
                                Err(why) => {
                                    warn!(%why, "unhealthy");
                                    reply(
                                        StatusCode::SERVICE_UNAVAILABLE,
                                        "text/plain",
                                        format!("stuck: {why}\n"),
                                    )
                                }
                            },
                            "/readyz" if target.ready() => {
                                reply(StatusCode::OK, "text/plain", "ready\n".into())
                            }
                            "/readyz" => reply(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "text/plain",
                                "not ready\n".into(),
                            ),
                            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    debug!(error = %e, "metrics connection ended");
                }
            });
        }
        drop(listener);
        conns.shutdown().await;
    })
}
