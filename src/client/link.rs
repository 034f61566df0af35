//! The driver's link to the server: connected, waiting, dialing or down.
//! One enum, so the driver's loop waits on whichever of them applies.

use std::future::Future;
use std::pin::Pin;

use tokio::time::Sleep;

use super::connection::{Connection, Incoming};
use super::ClientError;

/// The state of the driver's link to the server.
pub(super) enum Link {
    Up(Connection),
    /// Waiting before the next connection attempt.
    Backoff(Pin<Box<Sleep>>),
    Connecting(Pin<Box<dyn Future<Output = Result<Connection, ClientError>> + Send>>),
    /// Closed for good.
    Down,
}

/// What happened on the link.
pub(super) enum LinkEvent {
    Incoming(Incoming),
    CloseTimedOut,
    BackoffOver,
    Connected(Result<Connection, ClientError>),
}

/// The next thing that happens on the link. Reads from the connection only
/// when `read` (the application has taken every event so far).
pub(super) async fn link_event(
    link: &mut Link,
    read: bool,
    close_deadline: &mut Option<Pin<Box<Sleep>>>,
) -> LinkEvent {
    match link {
        Link::Up(connection) => {
            let incoming = async {
                if read {
                    connection.incoming.recv().await
                } else {
                    std::future::pending().await
                }
            };
            let deadline = async {
                match close_deadline {
                    Some(sleep) => sleep.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                incoming = incoming => LinkEvent::Incoming(incoming.unwrap_or_else(|| {
                    Incoming::Lost("the connection's tasks ended".to_owned())
                })),
                () = deadline => LinkEvent::CloseTimedOut,
            }
        }
        Link::Backoff(sleep) => {
            sleep.as_mut().await;
            LinkEvent::BackoffOver
        }
        Link::Connecting(attempt) => LinkEvent::Connected(attempt.await),
        Link::Down => std::future::pending().await,
    }
}
