//! The demo's stand-in workload: answers every request with JSON saying what it
//! received, including the identity headers the sidecar adds, so the demo shows what the
//! workload sees. `cargo run -p turnpike-sidecar --example demo-upstream -- --listen 127.0.0.1:8080`

use std::{convert::Infallible, net::SocketAddr};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let body = serde_json::json!({
        "upstream": "turnpike demo",
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "x-turnpike-key-id": header("x-turnpike-key-id"),
        "x-turnpike-scopes": header("x-turnpike-scopes"),
        "credential forwarded": req.headers().contains_key("x-api-key") || req.headers().contains_key("authorization"),
    });
    let status = if req.uri().path() == "/healthz" || req.uri().path().starts_with("/orders") {
        200
    } else {
        404
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!("{body}\n"))))
        .unwrap_or_default())
}

const USAGE: &str = "Usage: demo-upstream [--listen ADDR]   (default 127.0.0.1:8080)\n\
The demo's stand-in workload: answers every request with JSON saying what it received.";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:8080".parse()?;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    let listener = TcpListener::bind(listen).await?;
    eprintln!("demo upstream listening on http://{listen}");
    // As the first process of a container it must end on SIGTERM itself: the kernel
    // ignores signals without a handler for PID 1.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
