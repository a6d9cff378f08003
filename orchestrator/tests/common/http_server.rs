//! A real HTTP server on 127.0.0.1: a payment service that is warming up (it answers
//! `503` a given number of times, then `200`), and that notes the `Idempotency-Key` of
//! every request it receives.
//!
//! It runs in the test's own tokio runtime and dies with it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use keel_effects::http::{HttpConfig, HttpHandler};
use serde_json::json;
use tokio::net::TcpListener;

/// The server and what it has seen.
#[derive(Debug)]
pub(crate) struct PaymentServer {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

#[derive(Debug)]
struct Seen {
    /// How many requests fail with 503 before the first success.
    failures: usize,
    /// The `Idempotency-Key` of each request to `/charges`, in order (`None`: absent).
    keys: Mutex<Vec<Option<String>>>,
}

impl PaymentServer {
    /// Starts the server on a free port of 127.0.0.1; its first `failures` requests to
    /// `/charges` are answered `503`.
    pub(crate) async fn start(failures: usize) -> Self {
        let seen = Arc::new(Seen {
            failures,
            keys: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/charges", post(charge))
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
                .expect("the test server runs");
        });
        Self { addr, seen }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `Idempotency-Key` of every request to `/charges`, in order.
    pub(crate) fn keys(&self) -> Vec<Option<String>> {
        self.seen
            .keys
            .lock()
            .expect("no request panicked holding the lock")
            .clone()
    }

    /// An HTTP handler allowed to call this server (loopback is refused by default).
    pub(crate) fn handler(&self) -> HttpHandler {
        HttpHandler::new(HttpConfig {
            allow_hosts: vec![self.addr.to_string()],
            ..HttpConfig::default()
        })
        .expect("a valid HTTP configuration")
    }
}

/// `503` for the first `failures` requests, then `201` with the charge.
async fn charge(State(seen): State<Arc<Seen>>, headers: HeaderMap) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let attempt = {
        let mut keys = seen
            .keys
            .lock()
            .expect("no request panicked holding the lock");
        keys.push(key.clone());
        keys.len()
    };
    if attempt <= seen.failures {
        return (StatusCode::SERVICE_UNAVAILABLE, "warming up").into_response();
    }
    (
        StatusCode::CREATED,
        axum::Json(json!({ "charge": "ch_42", "key": key, "attempt": attempt })),
    )
        .into_response()
}
