//! Every port a broker listens on — the client port, the VIP channel (`listenPort − 2`),
//! the HA port and the metrics port — bound in one place before the broker starts, and
//! owned by [`Broker::run`](super::Broker::run), which serves them all until one shutdown
//! signal and closes them all before it returns.

use tokio::net::TcpListener;

use super::BrokerConfig;

/// The broker's bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// `listenPort`.
    pub client: TcpListener,
    /// The VIP ("fast") channel at `listenPort − 2`, for Java clients that still default
    /// to it; absent when the port is taken or `listenPort` was 0.
    pub vip: Option<TcpListener>,
    /// `haListenPort`.
    pub ha: TcpListener,
    /// `metricsPort` (`/metrics`, `/healthz`, `/readyz`), when set.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds every port of `config` and writes the ports the OS picked back into it
    /// (`listenPort=0`: a free client port, and a free HA port unless one was set).
    ///
    /// # Errors
    /// The client, HA or metrics port cannot be bound (the message names it). A VIP port
    /// that cannot be bound is only logged, as RocketMQ does.
    pub async fn bind(config: &mut BrokerConfig) -> Result<Listeners, std::io::Error> {
        let named = |what: &str, port: u16, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("cannot listen on {what} {port}: {e}"))
        };
        let at = config.bind_address;
        let client = TcpListener::bind((at, config.listen_port))
            .await
            .map_err(|e| named("listenPort", config.listen_port, e))?;
        // A port picked by the OS gets no VIP channel: `port − 2` would be arbitrary.
        let vip_port = match config.listen_port {
            0 => None,
            p => p.checked_sub(2).filter(|v| *v > 0),
        };
        let ha_port = if config.listen_port == 0 && config.ha_listen_port <= 1 {
            0
        } else {
            config.ha_listen_port
        };
        if config.listen_port == 0 {
            config.listen_port = client.local_addr()?.port();
        }
        let ha = TcpListener::bind((config.ha_bind_address.unwrap_or(at), ha_port))
            .await
            .map_err(|e| named("haListenPort", ha_port, e))?;
        config.ha_listen_port = ha.local_addr()?.port();
        let vip = match vip_port {
            Some(p) => match TcpListener::bind((at, p)).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(port = p, error = %e, "VIP channel (listenPort - 2) not available");
                    None
                }
            },
            None => None,
        };
        let metrics = match config.metrics_port {
            0 => None,
            p => Some(
                TcpListener::bind((config.metrics_bind_address.unwrap_or(at), p))
                    .await
                    .map_err(|e| named("metricsPort", p, e))?,
            ),
        };
        Ok(Listeners {
            client,
            vip,
            ha,
            metrics,
        })
    }
}
