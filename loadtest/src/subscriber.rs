//! A subscriber connection's run: read, parse every whole frame in the
//! buffer, account for each delivery, until every publisher of the room has
//! sent its end marker (or the drain times out).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::conn::Conn;
use crate::envelope::{self, Envelope};
use crate::measure::now_ns;
use crate::progress::Live;
use crate::pubsub::Shared;
use crate::tally::{Delivery, DeliveryTally};
use crate::ws::{self, Frame, Parsed};

/// Bytes a slow subscriber reads at once.
const SLOW_READ_BYTES: usize = 4096;

/// `SO_RCVBUF` of a slow subscriber, so the server's queue fills instead
/// of the kernel's buffers.
pub(crate) const SLOW_RECV_BUFFER: u32 = 4096;

/// One subscriber, ready to run.
pub(crate) struct SubscriberJob {
    pub(crate) conn: Conn,
    /// Index into the plan's rooms.
    pub(crate) room: usize,
    /// The subscribe ack's offset: the first delivery has offset + 1.
    pub(crate) start_offset: u64,
    /// Sleep this long after each read.
    pub(crate) slow: Option<Duration>,
}

/// Runs one subscriber to the end; tells the run it is done.
pub(crate) async fn run(job: SubscriberJob, shared: Rc<Shared>) -> DeliveryTally {
    let tally = receive(job, &shared).await;
    shared.subscribers_done.fetch_add(1, Ordering::Release);
    tally
}

async fn receive(job: SubscriberJob, shared: &Shared) -> DeliveryTally {
    let SubscriberJob {
        mut conn,
        room,
        start_offset,
        slow,
    } = job;
    let mut tally = DeliveryTally::default();
    let times = shared.times;
    let codec = conn.codec;
    let room_name = shared.plan.rooms[room].as_bytes();
    let markers_expected = shared.publishers_per_room[room];
    let read_limit = if slow.is_some() {
        SLOW_READ_BYTES
    } else {
        usize::MAX
    };
    let mut last = start_offset;
    let mut markers = 0u64;
    let mut stop = shared.stop.clone();
    let stopped = stop.wait_for(|stop| *stop);
    tokio::pin!(stopped);
    // Every frame in one read arrived by the time that read returned: one
    // clock reading per read, not per frame.
    let mut arrival = now_ns();
    'conn: loop {
        let mut pong = None;
        let mut delivered = 0;
        let want = {
            let mut latency = shared.latency.borrow_mut();
            loop {
                let (frame, used) = match ws::parse_frame(conn.buffer.data()) {
                    Ok(Parsed::Frame(frame, used)) => (frame, used),
                    Ok(Parsed::Incomplete(need)) => {
                        break need;
                    }
                    Err(_) => {
                        tally.protocol_faults += 1;
                        break 'conn;
                    }
                };
                match frame {
                    Frame::Binary(payload) => match envelope::decode(codec, payload) {
                        Ok(Envelope::Message {
                            room: r,
                            offset,
                            data,
                        }) => {
                            delivered += 1;
                            if r != room_name {
                                tally.foreign += 1;
                            } else if tally.on_delivery(
                                offset,
                                data,
                                arrival,
                                &times,
                                &mut last,
                                &mut latency,
                            ) == Delivery::EndMarker
                            {
                                markers += 1;
                            }
                        }
                        Ok(Envelope::Error { .. }) => tally.error_replies += 1,
                        Ok(Envelope::Ack { .. }) => {}
                        Err(_) => tally.malformed += 1,
                    },
                    Frame::Ping(payload) => pong = Some(conn.pong_frame(payload)),
                    Frame::Close(code) => {
                        *tally.closes.entry(code.unwrap_or(1005)).or_default() += 1;
                        break 'conn;
                    }
                    Frame::Pong => {}
                    Frame::Other(_) => tally.protocol_faults += 1,
                }
                conn.buffer.consume(used);
            }
        };
        Live::add(&shared.live.delivered, delivered);
        if markers >= markers_expected {
            tally.finished += 1;
            break;
        }
        if let Some(pong) = pong {
            if conn.stream.write_all(&pong).await.is_err() {
                tally.dropped += 1;
                break;
            }
        }
        let read = tokio::select! {
            biased;
            read = conn.buffer.fill(&mut conn.stream, want, read_limit) => read,
            _ = &mut stopped => {
                tally.unfinished += 1;
                break;
            }
        };
        match read {
            Ok(0) | Err(_) => {
                tally.dropped += 1;
                break;
            }
            Ok(_) => arrival = now_ns(),
        }
        if let Some(delay) = slow {
            tokio::time::sleep(delay).await;
        }
    }
    // Leave politely; the socket closes when `conn` drops either way.
    let _ = tokio::time::timeout(
        Duration::from_millis(100),
        conn.stream.write_all(&conn.close_frame()),
    )
    .await;
    tally
}
