//! A real HTTP server on 127.0.0.1 for the HTTP handler's tests, plus a raw TCP server
//! for the answers axum will not give (a body that never ends, a body that stalls).
//!
//! Both run in the test's own tokio runtime and die with it.
#![allow(dead_code)] // each test file uses some of the routes

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use keel_core::{Cause, HttpRequest, Intent};
use keel_effects::http::{HttpConfig, HttpHandler};
use keel_effects::{Call, InstanceId, Metrics};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long `/slow` takes to answer: far beyond the tests' timeouts.
pub(crate) const SLOW_MS: u64 = 5_000;

/// The `Retry-After` that `/throttled` sends, in seconds (the header's unit).
pub(crate) const THROTTLED_RETRY_AFTER_S: u64 = 2;

/// One request as the server saw it arrive.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    /// The request's path.
    pub(crate) path: String,
    /// Its `Idempotency-Key` header, if it had one.
    pub(crate) idempotency_key: Option<String>,
    /// When it arrived, on tokio's clock.
    pub(crate) at: tokio::time::Instant,
}

/// The axum server and what it has seen.
#[derive(Debug)]
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    seen: Arc<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Requests by path.
    hits: Mutex<HashMap<String, usize>>,
    /// Every request, in arrival order.
    arrivals: Mutex<Vec<Arrival>>,
    /// `/flaky` attempts by idempotency key.
    attempts: Mutex<HashMap<String, u32>>,
}

impl TestServer {
    /// Starts the server on a free port of 127.0.0.1.
    pub(crate) async fn start() -> Self {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/echo", any(echo))
            .route("/flaky/{failures}", any(flaky))
            .route("/throttled", any(throttled))
            .route("/status/{code}", any(status))
            .route("/slow", any(slow))
            .route("/sized/{bytes}", get(sized))
            .route("/redirect", any(redirect))
            .route("/echoing/{code}/{pad}", any(echoing))
            .route("/json", get(json_document))
            .route("/text", get(|| async { "hello" }))
            .route("/binary", get(binary))
            .layer(from_fn_with_state(Arc::clone(&seen), count))
            .with_state(Arc::clone(&seen));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the test server runs")
        });
        Self { addr, seen }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received, on every path.
    pub(crate) fn hits(&self) -> usize {
        self.seen
            .hits
            .lock()
            .expect("no handler panicked holding the lock")
            .values()
            .sum()
    }

    /// Requests received on `path`.
    pub(crate) fn hits_on(&self, path: &str) -> usize {
        self.seen
            .hits
            .lock()
            .expect("no handler panicked holding the lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The requests received on `path`, in arrival order.
    pub(crate) fn arrivals_on(&self, path: &str) -> Vec<Arrival> {
        self.seen
            .arrivals
            .lock()
            .expect("no handler panicked holding the lock")
            .iter()
            .filter(|arrival| arrival.path == path)
            .cloned()
            .collect()
    }
}

async fn count(State(seen): State<Arc<Seen>>, request: Request, next: Next) -> Response {
    let idempotency_key = request
        .headers()
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    seen.arrivals
        .lock()
        .expect("no handler panicked holding the lock")
        .push(Arrival {
            path: request.uri().path().to_owned(),
            idempotency_key,
            at: tokio::time::Instant::now(),
        });
    *seen
        .hits
        .lock()
        .expect("no handler panicked holding the lock")
        .entry(request.uri().path().to_owned())
        .or_default() += 1;
    next.run(request).await
}

/// Answers with what it received: method, headers (lowercase names) and body as text.
async fn echo(request: Request) -> axum::Json<Value> {
    let method = request.method().to_string();
    let headers: serde_json::Map<String, Value> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), Value::String(value))
        })
        .collect();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .expect("echoed bodies are small");
    axum::Json(json!({
        "method": method,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

/// Fails `failures` times per idempotency key with 503, then answers 200.
async fn flaky(
    State(seen): State<Arc<Seen>>,
    Path(failures): Path<u32>,
    headers: HeaderMap,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let attempt = {
        let mut attempts = seen
            .attempts
            .lock()
            .expect("no handler panicked holding the lock");
        let attempt = attempts.entry(key.clone()).or_default();
        *attempt += 1;
        *attempt
    };
    if attempt <= failures {
        (StatusCode::SERVICE_UNAVAILABLE, "warming up").into_response()
    } else {
        axum::Json(json!({ "key": key, "attempts": attempt })).into_response()
    }
}

/// Always 429, asking to come back in [`THROTTLED_RETRY_AFTER_S`].
async fn throttled() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, THROTTLED_RETRY_AFTER_S.to_string())],
        "slow down",
    )
        .into_response()
}

async fn status(Path(code): Path<u16>) -> Response {
    let Ok(code) = StatusCode::from_u16(code) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    (code, format!("status {}", code.as_u16())).into_response()
}

/// Answers status `code` with a body that echoes the request's headers after `pad`
/// bytes of `x` (at most 64 KiB), `authorization` first, as a careless server's error
/// page does.
async fn echoing(Path((code, pad)): Path<(u16, usize)>, headers: HeaderMap) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    let mut body = "x".repeat(pad.min(1 << 16));
    let (first, rest): (Vec<_>, Vec<_>) = headers
        .iter()
        .partition(|(name, _)| *name == header::AUTHORIZATION);
    for (name, value) in first.into_iter().chain(rest) {
        let value = String::from_utf8_lossy(value.as_bytes());
        body.push_str(&format!(" {name}: {value};"));
    }
    (code, body).into_response()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(SLOW_MS)).await;
    "finally"
}

/// `bytes` bytes of `x`, with a Content-Length.
async fn sized(Path(bytes): Path<usize>) -> Vec<u8> {
    vec![b'x'; bytes]
}

async fn redirect() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, "/echo")]).into_response()
}

async fn json_document() -> Response {
    (
        [
            (header::SET_COOKIE, "session=secret"),
            (header::HeaderName::from_static("x-request-id"), "req-7"),
        ],
        axum::Json(json!({ "charge": "ch_42", "cents": 4200 })),
    )
        .into_response()
}

async fn binary() -> Response {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        vec![0xff_u8, 0x00, 0x7f],
    )
        .into_response()
}

/// What the raw server answers to every request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Raw {
    /// `200` with a chunked body (no Content-Length) of this many bytes, or endless.
    Chunked { total_bytes: Option<usize> },
    /// `200` announcing 100 bytes, sending 3, then nothing for a long while.
    Stall,
}

/// A hand-written HTTP/1.1 server.
#[derive(Debug)]
pub(crate) struct RawServer {
    pub(crate) addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl RawServer {
    /// Starts the server on a free port of 127.0.0.1.
    pub(crate) async fn start(behaviour: Raw) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer(stream, behaviour));
            }
        });
        Self { addr, connections }
    }

    /// `http://127.0.0.1:<port>/`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn answer(mut stream: TcpStream, behaviour: Raw) {
    // Read the request head (bounded); the tests send no bodies here.
    let mut head = Vec::new();
    let mut buf = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    match behaviour {
        Raw::Chunked { total_bytes } => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            loop {
                let len = total_bytes.map_or(chunk.len(), |t| chunk.len().min(t - sent));
                if len == 0 {
                    let _ = stream.write_all(b"0\r\n\r\n").await;
                    return;
                }
                let frame = [format!("{len:x}\r\n").as_bytes(), &chunk[..len], b"\r\n"].concat();
                // The client hanging up ends the stream.
                if stream.write_all(&frame).await.is_err() {
                    return;
                }
                sent += len;
            }
        }
        Raw::Stall => {
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\nabc";
            if stream.write_all(head.as_bytes()).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(SLOW_MS)).await;
            }
        }
    }
}

/// A handler that may call 127.0.0.1, as the test servers live there.
pub(crate) fn loopback_handler() -> HttpHandler {
    handler(HttpConfig {
        allow_hosts: vec!["127.0.0.1".into()],
        ..HttpConfig::default()
    })
}

/// A handler with `config`.
pub(crate) fn handler(config: HttpConfig) -> HttpHandler {
    HttpHandler::new(config).expect("the test configuration is valid")
}

/// A first attempt at `request`, as intent 0 of the root step of workflow 1.
pub(crate) fn call(request: HttpRequest) -> Call {
    call_in_workflow(1, request)
}

/// A first attempt at `request`, as intent 0 of the root step of `workflow`.
pub(crate) fn call_in_workflow(workflow: u128, request: HttpRequest) -> Call {
    let intent = Intent {
        id: Cause::root(workflow).intent_id(0),
        kind: request.into(),
    };
    Call::new(intent, InstanceId::from("test"), Metrics::default())
}
