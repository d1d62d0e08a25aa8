//! The process: listeners, connections, background tasks and shutdown.
//!
//! - The proxy listener serves HTTP/1.1 and h2c (hyper-util's auto builder), or TLS
//!   with ALPN `h2`/`http/1.1`. A connection that sends nothing within
//!   `--header-timeout` (or does not finish its TLS handshake) is closed; an HTTP/1
//!   connection that does not finish a request's headers in that time is closed by
//!   hyper (slowloris). Header count and size are capped by the HTTP layer too (431).
//! - On SIGTERM or SIGINT: `/readyz` turns 503, the listener closes, connections are
//!   asked to finish (HTTP/1 keep-alive ends, HTTP/2 sends GOAWAY), and the process
//!   waits for requests in flight and upgraded tunnels up to `--shutdown-grace`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::audit_log::AuditLog;
use crate::clock::Clock;
use crate::config::{Config, EventsMode};
use crate::engine::{Engine, EngineConfig};
use crate::events::{self, EventRecorder, Sink};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::source::{BundleStore, Reloader, Source};

/// Timeout of one Event write.
const EVENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often idle counters are swept and suppressed audit lines reported.
const HOUSEKEEPING: Duration = Duration::from_secs(10);

/// Runs the sidecar until SIGTERM/SIGINT.
///
/// # Errors
/// A listener that cannot be bound.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let clock = Clock::new();
    let metrics = Arc::new(Metrics::new());
    let audit = Arc::new(AuditLog::new(clock, Arc::clone(&metrics)));
    match (&config.admission.trust, &config.source) {
        (Some(trust), _) => {
            tracing::info!(trusted_keys = %trust.ids().join(","), "bundles must be signed by a trusted key");
        }
        (None, Source::Manifests { .. }) => {}
        (None, _) => tracing::warn!(
            "--insecure-unsigned-bundles: unsigned bundles are accepted; anyone who may write Secrets in this namespace can add keys"
        ),
    }
    let store = Arc::new(BundleStore::with_admission(config.admission.clone()));
    let shutdown = CancellationToken::new();

    // The kube client, when the API source or Events need one.
    let local = matches!(config.source, Source::Manifests { .. });
    let api_source = matches!(config.source, Source::Api { .. });
    let wants_client = api_source
        || config.events == EventsMode::Api
        || (config.events == EventsMode::Auto && !local);
    let client = if wants_client {
        match crate::watch::client().await {
            Ok(c) => Some(c),
            Err(e) if api_source || config.events == EventsMode::Api => {
                return Err(anyhow::Error::new(e)
                    .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)"));
            }
            Err(e) => {
                tracing::info!(error = %e, "no Kubernetes client configuration; Events are written as audit lines");
                None
            }
        }
    } else {
        None
    };

    // The first load happens before serving, so the first requests need not fail.
    // The API source reads its mounted fallback the same way until the API delivers.
    let mounted = match &config.source {
        Source::Api { fallback_dir, .. } => fallback_dir.is_some(),
        _ => true,
    };
    if mounted {
        let mut reloader = Reloader::new(
            config.source.clone(),
            Arc::clone(&store),
            Arc::clone(&metrics),
            Arc::clone(&audit),
        );
        reloader.poll();
        spawn_reloader(reloader, config.reload_interval, shutdown.clone())?;
    }
    if let (
        Source::Api {
            namespace, target, ..
        },
        Some(client),
    ) = (&config.source, &client)
    {
        tokio::spawn(crate::watch::run(
            client.clone(),
            crate::watch::Target {
                namespace: namespace.clone(),
                target: target.clone(),
            },
            Arc::clone(&store),
            Arc::clone(&metrics),
            Arc::clone(&audit),
            shutdown.clone(),
        ));
    }

    // Events: stopped after the requests in flight are drained, then flushed.
    let events_stop = CancellationToken::new();
    let sink = match (config.events, &client) {
        (EventsMode::Off, _) => None,
        (EventsMode::Log, _) | (EventsMode::Auto, None) => Some(Sink::Audit),
        (EventsMode::Auto, Some(_)) if local => Some(Sink::Audit),
        (_, Some(client)) => Some(Sink::Kube(events::kube::KubeWriter::new(
            client.clone(),
            config.pod.clone(),
            EVENT_WRITE_TIMEOUT,
        ))),
        (EventsMode::Api, None) => None,
    };
    let (recorder, events_task) = match sink {
        Some(sink) => {
            let (r, h) = events::spawn(
                sink,
                events::Settings {
                    series_interval: config.event_series_interval,
                },
                clock,
                Arc::clone(&metrics),
                events_stop.clone(),
            );
            (r, Some(h))
        }
        None => (EventRecorder::disabled(Arc::clone(&metrics)), None),
    };

    let engine = Engine::new(EngineConfig {
        cache_ttl_ms: u64::try_from(config.key_cache_ttl.as_millis()).unwrap_or(u64::MAX),
        hygiene: config.hygiene,
        ..EngineConfig::default()
    });
    let tasks = TaskTracker::new();
    let proxy = Arc::new(
        Proxy::new(
            &config,
            engine,
            Arc::clone(&store),
            clock,
            Arc::clone(&metrics),
            Arc::clone(&audit),
            tasks.clone(),
        )
        .with_events(recorder),
    );

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the proxy listener to {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener to {}", config.admin_listen))?;
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(config.listen),
        admin = %admin_listener.local_addr().unwrap_or(config.admin_listen),
        upstream = %config.upstream.authority,
        tls = config.tls.is_some(),
        "turnpike-sidecar serving"
    );

    // Read a token file once now, so the log says at start whether there is a token.
    let admin_token = Arc::new(crate::admin::AdminToken::from_config(&config.admin_token));
    let _ = admin_token.current(clock.now().mono_ms);
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            proxy: Arc::clone(&proxy),
            store: Arc::clone(&store),
            metrics: Arc::clone(&metrics),
            clock,
            token: admin_token,
        },
        config.timeouts.header,
        admin_stop.clone(),
    ));
    tokio::spawn(housekeeping(
        Arc::clone(&proxy),
        Arc::clone(&audit),
        clock,
        shutdown.clone(),
    ));

    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });

    accept_loop(listener, &config, proxy, &tasks, &shutdown, &store).await;

    tracing::info!(
        grace_secs = config.timeouts.shutdown_grace.as_secs(),
        "shutting down: draining requests in flight"
    );
    tasks.close();
    if tokio::time::timeout(config.timeouts.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    } else {
        tracing::info!("drained");
    }
    audit.flush_suppressed();
    events_stop.cancel();
    if let Some(h) = events_task {
        let _ = tokio::time::timeout(Duration::from_secs(6), h).await;
    }
    admin_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    config: &Config,
    proxy: Arc<Proxy>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
    store: &BundleStore,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let hygiene = config.hygiene;
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.timeouts.header)
        .max_headers(hygiene.max_header_count)
        // The read buffer bounds a request head; hyper answers 431 past it. The
        // request line and field syntax add to the names and values counted by
        // `--max-header-bytes`, hence the margin; the proxy checks the exact limit.
        .max_buf_size((hygiene.max_header_bytes + hygiene.max_uri_bytes + 1024).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(hygiene.max_header_bytes + 32 * hygiene.max_header_count)
                .unwrap_or(u32::MAX),
        )
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let first_byte = config.timeouts.header;

    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (proxy, builder, tls, shutdown) = (
            Arc::clone(&proxy),
            Arc::clone(&builder),
            tls.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(first_byte, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve(tls_stream, peer, proxy, &builder, shutdown).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => {
                    let arrived = tokio::select! {
                        arrived = first_bytes_arrive(&stream, first_byte) => arrived,
                        () = shutdown.cancelled() => false,
                    };
                    if arrived {
                        serve(stream, peer, proxy, &builder, shutdown).await;
                    }
                }
            }
        });
    }
    store.set_shutting_down();
}

/// Waits until the client sends something (hyper's version detection would wait
/// forever for a silent client).
async fn first_bytes_arrive(stream: &TcpStream, within: Duration) -> bool {
    let mut probe = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.peek(&mut probe)).await,
        Ok(Ok(n)) if n > 0
    )
}

async fn serve<I>(
    io: I,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    builder: &auto::Builder<TokioExecutor>,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let proxy = Arc::clone(&proxy);
        async move { Ok::<_, Infallible>(proxy.handle(peer, req).await) }
    });
    // HTTP/1 framing is checked on the bytes before hyper parses them (smuggling).
    let io = crate::proxy::framing::Guarded::new(io);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

fn spawn_reloader(
    mut reloader: Reloader,
    every: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("bundle-reload".into())
        .spawn(move || {
            while !shutdown.is_cancelled() {
                std::thread::sleep(every);
                reloader.poll();
            }
        })
        .context("starting the bundle reload thread")?;
    Ok(())
}

async fn housekeeping(
    proxy: Arc<Proxy>,
    audit: Arc<AuditLog>,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                proxy.engine().sweep(clock.now());
                audit.flush_suppressed();
            }
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
