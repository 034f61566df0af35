//! A publisher connection's run: a writer that stamps and sends publishes
//! (open loop at a rate, or closed loop within a window of unacknowledged
//! ones) and a reader that counts the acks, on one task.

use std::cell::Cell;
use std::rc::Rc;

use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::sleep_until;

use crate::cli::PublishMode;
use crate::conn::{Conn, PublishTemplate, END_MARKER};
use crate::envelope::{self, Envelope};
use crate::measure::{instant_at, now_ns};
use crate::progress::Live;
use crate::pubsub::Shared;
use crate::tally::PublishTally;
use crate::ws::{self, Frame, Parsed};

/// Most publishes written in one `write`.
const MAX_BATCH: u64 = 64;

/// The request id of every windowed publish. Acks are counted, not
/// matched, so one id serves and the frame stays the same bytes.
const PUBLISH_ID: u64 = 1;

/// Runs one publisher to the end of the run.
pub(crate) async fn run(mut conn: Conn, room: usize, shared: Rc<Shared>) -> PublishTally {
    let plan = &shared.plan;
    let times = shared.times;
    let window = match plan.mode {
        PublishMode::Window(window) => Some(window as u64),
        PublishMode::Rate { .. } => None,
    };
    let template = PublishTemplate::new(
        conn.codec,
        &plan.rooms[room],
        plan.payload,
        if window.is_some() { PUBLISH_ID } else { 0 },
        conn.key,
    );
    let codec = conn.codec;
    let Conn { stream, buffer, .. } = &mut conn;
    let (mut reader, mut writer) = stream.split();
    let in_flight = Cell::new(0u64);
    let ended = Cell::new(false);
    let acked = Notify::new();
    let mut tally = PublishTally::new(plan.rooms.len());
    let acks = Cell::new(0u64);
    let errors = Cell::new(0u64);

    let write = async {
        let mut stop = shared.stop.clone();
        let stopped = stop.wait_for(|stop| *stop);
        tokio::pin!(stopped);
        let window_closes = sleep_until(instant_at(times.t1).into());
        tokio::pin!(window_closes);
        let mut out = Vec::with_capacity(template.len() * MAX_BATCH as usize);
        let (mut sent, mut in_window, mut failed) = (0u64, 0u64, false);
        // `stopped` must not be polled again once it has fired (it is an
        // async fn): after a stop, no end marker is written either.
        let mut stop_seen = false;
        loop {
            if ended.get() {
                failed = true;
                break;
            }
            let now = now_ns();
            if now >= times.t1 {
                break;
            }
            let batch = match (window, plan.mode) {
                (Some(window), _) => {
                    let free = window.saturating_sub(in_flight.get());
                    if free == 0 {
                        tokio::select! {
                            () = acked.notified() => {}
                            () = &mut window_closes => {}
                            _ = &mut stopped => {
                                stop_seen = true;
                                break;
                            }
                        }
                        continue;
                    }
                    free.min(MAX_BATCH)
                }
                (None, PublishMode::Rate { per_publisher }) => {
                    // The k-th publish is due at start + k / rate.
                    let interval = 1e9 / per_publisher;
                    let due = ((now - times.start) as f64 / interval) as u64 + 1;
                    if due <= sent {
                        let next = times.start + (sent as f64 * interval) as u64;
                        tokio::select! {
                            () = sleep_until(instant_at(next.min(times.t1)).into()) => {}
                            _ = &mut stopped => {
                                stop_seen = true;
                                break;
                            }
                        }
                        continue;
                    }
                    (due - sent).min(MAX_BATCH)
                }
                (None, PublishMode::Window(_)) => unreachable!("window is set in window mode"),
            };
            out.clear();
            for _ in 0..batch {
                template.write(now, &mut out);
            }
            if window.is_some() {
                in_flight.set(in_flight.get() + batch);
            }
            tokio::select! {
                written = writer.write_all(&out) => if written.is_err() {
                    failed = true;
                    break;
                },
                _ = &mut stopped => {
                                stop_seen = true;
                                break;
                            }
            }
            sent += batch;
            Live::add(&shared.live.published, batch);
            if times.in_window(now) {
                in_window += batch;
            }
        }
        if !failed && !stop_seen {
            out.clear();
            template.write(END_MARKER, &mut out);
            tokio::select! {
                written = writer.write_all(&out) => failed = written.is_err(),
                _ = &mut stopped => {}
            }
        }
        (sent, in_window, failed)
    };

    let read = async {
        let mut stop = shared.stop.clone();
        let stopped = stop.wait_for(|stop| *stop);
        tokio::pin!(stopped);
        let mut close = None;
        'conn: loop {
            let want = loop {
                let (frame, used) = match ws::parse_frame(buffer.data()) {
                    Ok(Parsed::Frame(frame, used)) => (frame, used),
                    Ok(Parsed::Incomplete(need)) => {
                        break need;
                    }
                    Err(_) => break 'conn,
                };
                let mut replied = false;
                match frame {
                    Frame::Binary(payload) => match envelope::decode(codec, payload) {
                        Ok(Envelope::Ack { .. }) => {
                            acks.set(acks.get() + 1);
                            replied = true;
                        }
                        Ok(Envelope::Error { .. }) => {
                            errors.set(errors.get() + 1);
                            replied = true;
                        }
                        Ok(Envelope::Message { .. }) | Err(_) => {}
                    },
                    Frame::Close(code) => {
                        close = Some(code.unwrap_or(1005));
                        break 'conn;
                    }
                    // A publisher sends all the time, and any frame is proof
                    // of life to the server: pings need no answer here.
                    Frame::Ping(_) | Frame::Pong | Frame::Other(_) => {}
                }
                buffer.consume(used);
                if replied && window.is_some() {
                    in_flight.set(in_flight.get().saturating_sub(1));
                    acked.notify_one();
                }
            };
            tokio::select! {
                biased;
                read = buffer.fill(&mut reader, want, usize::MAX) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                _ = &mut stopped => return None,
            }
        }
        ended.set(true);
        acked.notify_one();
        Some(close)
    };

    let ((sent, in_window, write_failed), reader_ended) = tokio::join!(write, read);
    tally.sent = sent;
    tally.in_window_by_room[room] = in_window;
    tally.acks = acks.get();
    tally.errors = errors.get();
    match reader_ended {
        Some(Some(code)) => *tally.closes.entry(code).or_default() += 1,
        Some(None) => tally.dropped += 1,
        None if write_failed => tally.dropped += 1,
        None => {}
    }
    let close = conn.close_frame();
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        conn.stream.write_all(&close),
    )
    .await;
    tally
}
