//! The guard refuses loopback and other private addresses, by literal or by name, before
//! any request reaches them, unless `allow_hosts` lists the host.

use crate::common::http_server;

use http_server::{TestServer, call, handler, loopback_handler};
use keel_core::HttpRequest;
use keel_effects::http::HttpConfig;
use keel_effects::{FailureKind, Handler};

#[tokio::test]
async fn a_loopback_literal_is_refused_without_reaching_the_server() {
    let server = TestServer::start().await;
    let failure = handler(HttpConfig::default())
        .call(call(HttpRequest::post(server.url("/echo"))))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Permanent);
    assert_eq!(
        failure.reason,
        "refused: 127.0.0.1 is a loopback address; add it to allow_hosts to call it"
    );
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_without_reaching_the_server() {
    let server = TestServer::start().await;
    let url = format!("http://localhost:{}/echo", server.addr.port());
    for config in [
        HttpConfig::default(),
        // Listing the address does not list the name.
        HttpConfig {
            allow_hosts: vec!["127.0.0.1".into()],
            ..HttpConfig::default()
        },
    ] {
        let failure = handler(config)
            .call(call(HttpRequest::get(url.clone())))
            .await
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::Permanent);
        assert!(
            failure
                .reason
                .starts_with("refused: localhost resolves only to addresses the guard refuses"),
            "{}",
            failure.reason
        );
        assert!(
            failure.reason.contains("add localhost to allow_hosts"),
            "{}",
            failure.reason
        );
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn other_spellings_of_loopback_are_refused_too() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let handler = handler(HttpConfig::default());
    for url in [
        format!("http://2130706433:{port}/echo"),
        format!("http://0x7f.0.0.1:{port}/echo"),
        format!("http://[::ffff:127.0.0.1]:{port}/echo"),
        format!("http://[::1]:{port}/echo"),
        format!("http://0.0.0.0:{port}/echo"),
    ] {
        let failure = handler
            .call(call(HttpRequest::get(url.clone())))
            .await
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::Permanent, "{url}");
        assert!(
            failure.reason.starts_with("refused: "),
            "{url}: {}",
            failure.reason
        );
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn listed_hosts_are_called() {
    let server = TestServer::start().await;
    let by_address = loopback_handler()
        .call(call(HttpRequest::get(server.url("/echo"))))
        .await
        .unwrap();
    assert_eq!(by_address["status"], 200);

    let by_name = handler(HttpConfig {
        allow_hosts: vec!["localhost".into()],
        ..HttpConfig::default()
    })
    .call(call(HttpRequest::get(format!(
        "http://localhost:{}/echo",
        server.addr.port()
    ))))
    .await
    .unwrap();
    assert_eq!(by_name["status"], 200);
    assert_eq!(server.hits_on("/echo"), 2);
}

#[tokio::test]
async fn a_host_listed_with_another_port_is_refused() {
    let server = TestServer::start().await;
    let failure = handler(HttpConfig {
        allow_hosts: vec!["127.0.0.1:1".into()],
        ..HttpConfig::default()
    })
    .call(call(HttpRequest::get(server.url("/echo"))))
    .await
    .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Permanent);
    assert!(
        failure.reason.contains("only with port 1"),
        "{}",
        failure.reason
    );
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn allowlist_only_mode_refuses_every_unlisted_host() {
    let server = TestServer::start().await;
    let handler = handler(HttpConfig {
        allow_hosts: vec!["api.example.com".into()],
        only_allowed_hosts: true,
        ..HttpConfig::default()
    });
    for url in [server.url("/echo"), "http://example.invalid/".to_owned()] {
        let failure = handler
            .call(call(HttpRequest::get(url.clone())))
            .await
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::Permanent, "{url}");
        assert!(
            failure.reason.contains("only_allowed_hosts"),
            "{}",
            failure.reason
        );
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn schemes_other_than_http_and_https_are_refused() {
    let handler = loopback_handler();
    for url in ["ftp://127.0.0.1/file", "file:///etc/passwd"] {
        let failure = handler.call(call(HttpRequest::get(url))).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Permanent, "{url}");
        assert!(
            failure.reason.contains("is not http or https"),
            "{}",
            failure.reason
        );
    }
}
