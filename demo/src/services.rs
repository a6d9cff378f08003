//! The services the example sagas call: a real HTTP server on 127.0.0.1, one route per
//! operation (`POST /payments/charge`), each answering by its ledger.
//!
//! Every request carries the saga's `Idempotency-Key` (keel sends the step's intent id,
//! the same for every attempt). The first request with a key decides: the effect is
//! applied (200), or refused for good (422) with the chance `--fail-rate`, decided by a
//! hash of the seed, the saga and the operation. Either way the answer is recorded
//! before it is sent, and repeats get the recorded answer. Besides, about one request in
//! eight fails with a 429 before deciding anything (when the fail rate is not 0), so
//! retries are exercised too. Compensations (`refund`, `release`, ...) never fail for good.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::behaviour::{Behaviour, unit};
use crate::ledger::{Effect, Entry, Ledger};

/// Operations that undo another: they are retried until they succeed, so the services
/// never refuse them for good.
pub const COMPENSATIONS: [&str; 5] = ["cancel", "refund", "release", "revert", "rollback"];

struct Shared {
    ledger: Ledger,
    behaviour: Behaviour,
    requests: AtomicU64,
}

/// The running services.
#[derive(Debug)]
pub struct Services {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Services {
    /// Starts the server on a free port of 127.0.0.1.
    pub async fn start(ledger: Ledger, behaviour: Behaviour) -> Result<Self, String> {
        let shared = Arc::new(Shared {
            ledger,
            behaviour,
            requests: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/{service}/{operation}", post(operate))
            .with_state(shared);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("the services cannot listen: {e}"))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("the services' address: {e}"))?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("the services stopped: {e}");
            }
        });
        Ok(Self {
            base: format!("http://{address}"),
            task,
        })
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(entry: Entry) -> Response {
    let status = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        entry.body,
    )
        .into_response()
}

fn bad_request(reason: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": reason }).to_string(),
    )
        .into_response()
}

async fn operate(
    State(shared): State<Arc<Shared>>,
    Path((service, operation)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        return bad_request("an Idempotency-Key header is required");
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("the body must be JSON");
    };
    let Some(saga) = body["saga"].as_str() else {
        return bad_request("the body must name its `saga`");
    };
    match shared.ledger.lookup(key).await {
        Ok(Some(entry)) => return answer(entry),
        Ok(None) => {}
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
    let behaviour = shared.behaviour;
    let request = shared.requests.fetch_add(1, Ordering::Relaxed);
    // A passing hiccup: nothing decided, nothing recorded; a retry may succeed. Said with
    // a 429, which tells the caller nothing was done (a 503 would leave it unsure, and a
    // saga unsure of a step that is then refused parks rather than guess).
    let hiccup = (behaviour.fail_rate / 2.0).min(0.125);
    if unit(&[key, &request.to_string()], behaviour.seed) < hiccup {
        return (StatusCode::TOO_MANY_REQUESTS, "busy, try again").into_response();
    }
    let undo = COMPENSATIONS.contains(&operation.as_str());
    let refused =
        !undo && unit(&[saga, &service, &operation], behaviour.seed) < behaviour.fail_rate;
    let entry = if refused {
        Entry {
            status: 422,
            body: json!({ "error": format!("{service} refused to {operation} for {saga}") })
                .to_string(),
        }
    } else {
        let id = format!(
            "{service}-{:08x}",
            (unit(&[key], behaviour.seed) * f64::from(u32::MAX)) as u32
        );
        Entry {
            status: 200,
            body: json!({ "id": id, "saga": saga, "operation": operation }).to_string(),
        }
    };
    let effect = Effect {
        key,
        service: &service,
        operation: &operation,
        saga,
        applied: !refused,
    };
    match shared.ledger.record(effect, entry).await {
        Ok(entry) => answer(entry),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}
