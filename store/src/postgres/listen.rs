//! Head notifications: moves the store's head watch when any process commits.
//!
//! Each append transaction calls `pg_notify(channel, new head)`; PostgreSQL delivers
//! it at commit, in commit order, to every session listening on the channel. This task
//! keeps one dedicated connection that `LISTEN`s and moves the head watch on each
//! notification. tokio-postgres hands notifications out through the connection
//! future, so a small driver task polls it with [`Connection::poll_message`].
//!
//! Notifications are not durable: one sent while this connection is down is lost. So
//! the task also reads the head every [`POLL_INTERVAL`] (and right after each
//! reconnect), which bounds how late a missed commit is seen. The watch only moves
//! forward.
//!
//! [`Connection::poll_message`]: tokio_postgres::Connection::poll_message

use std::convert::Infallible;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{CONNECT_TIMEOUT, advance_head, from_i64, storage, unavailable};
use crate::error::Error;

/// How often the head is read in case a notification was missed.
pub(super) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The first wait before reconnecting after the listening connection failed.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);

/// The longest wait before reconnecting after the listening connection failed.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);

/// Starts the listener; it runs until aborted.
pub(super) fn spawn(
    config: tokio_postgres::Config,
    channel: String,
    head_sql: String,
    head: Arc<watch::Sender<u64>>,
) -> AbortHandle {
    tokio::spawn(async move {
        let mut delay = RECONNECT_DELAY_MIN;
        loop {
            let started = tokio::time::Instant::now();
            let Err(error) = session(&config, &channel, &head_sql, &head).await;
            tracing::warn!(%error, channel, "head listener lost its connection; reconnecting");
            // A session that lived a while was healthy: start backing off afresh.
            if started.elapsed() > RECONNECT_DELAY_MAX {
                delay = RECONNECT_DELAY_MIN;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_DELAY_MAX);
        }
    })
    .abort_handle()
}

/// One connection's life: listen, then poll the head until something fails.
async fn session(
    config: &tokio_postgres::Config,
    channel: &str,
    head_sql: &str,
    head: &Arc<watch::Sender<u64>>,
) -> Result<Infallible, Error> {
    let connecting = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls));
    let (client, mut connection) = connecting
        .await
        .map_err(|_| unavailable("the head listener could not connect in time".to_owned()))?
        .map_err(storage("connect the head listener"))?;
    let notified = Arc::clone(head);
    // Ends by itself when `client` is dropped (this session ends or is aborted) or the
    // server closes the connection.
    tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if let Ok(position) = notification.payload().parse::<u64>() {
                        advance_head(&notified, position);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "head listener connection ended");
                    return;
                }
            }
        }
    });
    // The channel name is built from a validated schema name: safe to quote.
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await
        .map_err(storage("listen for new heads"))?;
    let read_head = client
        .prepare(head_sql)
        .await
        .map_err(storage("prepare the head query"))?;
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The first tick is immediate: it catches up on commits made while no
        // connection was listening.
        interval.tick().await;
        let row = client
            .query_one(&read_head, &[])
            .await
            .map_err(storage("read the head"))?;
        advance_head(head, from_i64(row.get(0), "head position")?);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use keel_core::{ExpectedVersion, StreamId};

    use super::super::PostgresStore;
    use super::super::schema::SchemaName;
    use super::super::testing::{event, fresh_store, raw_client};
    use super::*;
    use crate::EventStore;
    use crate::subscription::Subscription;

    #[tokio::test]
    async fn a_notification_moves_the_head_without_waiting_for_the_poll() {
        let Some((store, url, config)) = fresh_store().await else {
            return;
        };
        let channel = SchemaName::parse(&config.schema).unwrap().channel();
        let client = raw_client(&url).await;
        let mut head = store.watch_head();
        // No commit behind this head: only the notification can carry it, so seeing it
        // proves the LISTEN. Sent until the listener (connecting in the background)
        // hears one; each wait is shorter than the polling fallback's interval.
        let mut heard = false;
        for _ in 0..50 {
            client
                .execute("SELECT pg_notify($1, '4242')", &[&channel])
                .await
                .unwrap();
            let wait =
                tokio::time::timeout(Duration::from_millis(200), head.wait_for(|h| *h == 4242));
            if wait.await.is_ok() {
                heard = true;
                break;
            }
        }
        assert!(heard, "no notification reached the store");
        store.drop_schema().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscription_receives_an_append_made_by_another_store() {
        let Some((store, url, config)) = fresh_store().await else {
            return;
        };
        let a = StreamId::from("a");
        store
            .append(&a, ExpectedVersion::NoStream, &[event(1)])
            .await
            .unwrap();
        let mut subscription = Subscription::new(Arc::new(store.clone()), 2);
        assert!(subscription.try_next().await.unwrap().is_none());
        let waiting = tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(10), subscription.next()).await
        });
        // Another process, as far as the first store can tell: its own pool, writer
        // and listener, sharing only the database.
        let other = PostgresStore::connect(&url, config).await.unwrap();
        other
            .append(&a, ExpectedVersion::Exact(1), &[event(2)])
            .await
            .unwrap();
        let received = waiting.await.unwrap().unwrap().unwrap();
        assert_eq!((received.position, received.envelope.id), (2, event(2).id));
        assert_eq!(*store.watch_head().borrow(), 2);
        store.drop_schema().await.unwrap();
    }
}
