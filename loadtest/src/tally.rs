//! What the connections count, and how one delivery is accounted for:
//! offsets checked for gaps and duplicates, the send timestamp placed in or
//! out of the measured window, its latency recorded.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::conn::END_MARKER;

/// The run's time line, in nanoseconds of [`crate::measure::now_ns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Times {
    /// Publishing starts (warm-up begins).
    pub(crate) start: u64,
    /// The measured window opens.
    pub(crate) t0: u64,
    /// The measured window closes; publishers stop.
    pub(crate) t1: u64,
}

impl Times {
    pub(crate) fn in_window(&self, ns: u64) -> bool {
        ns >= self.t0 && ns < self.t1
    }
}

/// Latencies up to an hour, in nanoseconds, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// What subscribers saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DeliveryTally {
    /// Deliveries of the subscribed room, at any time (end markers too).
    pub(crate) received: u64,
    /// Deliveries that arrived inside the measured window (throughput).
    pub(crate) arrived_in_window: u64,
    /// Deliveries of publications sent inside the window, whenever they
    /// arrived before the drain ended (compared with what was expected).
    pub(crate) of_window: u64,
    /// When the last of those arrived.
    pub(crate) last_of_window_arrival: u64,
    /// Deliveries whose offset skipped ahead of last + 1.
    pub(crate) gaps: u64,
    /// Offsets skipped over by those gaps.
    pub(crate) missing_offsets: u64,
    /// Deliveries whose offset was not above the last one: duplicates or
    /// out of order.
    pub(crate) duplicates: u64,
    /// Deliveries of a room this connection did not subscribe to.
    pub(crate) foreign: u64,
    /// Deliveries whose data was too short to hold a timestamp.
    pub(crate) unstamped: u64,
    /// Envelopes that did not decode.
    pub(crate) malformed: u64,
    /// Error replies received.
    pub(crate) error_replies: u64,
    /// WebSocket frames roomcast should never send.
    pub(crate) protocol_faults: u64,
    /// Subscribers that saw every publisher's end marker.
    pub(crate) finished: u64,
    /// Subscribers still waiting for end markers when the drain timed out.
    pub(crate) unfinished: u64,
    /// Subscribers whose connection ended without a close frame.
    pub(crate) dropped: u64,
    /// Close frames from the server, by code.
    pub(crate) closes: BTreeMap<u16, u64>,
}

/// What one delivery was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Counted,
    EndMarker,
}

impl DeliveryTally {
    /// Accounts for one delivery of the subscribed room that arrived at
    /// `arrival`; `last` is the subscriber's last offset of that room.
    pub(crate) fn on_delivery(
        &mut self,
        offset: u64,
        data: &[u8],
        arrival: u64,
        times: &Times,
        last: &mut u64,
        latency: &mut Histogram<u64>,
    ) -> Delivery {
        self.received += 1;
        let next = *last + 1;
        if offset == next {
            *last = offset;
        } else if offset > next {
            self.gaps += 1;
            self.missing_offsets += offset - next;
            *last = offset;
        } else {
            self.duplicates += 1;
        }
        let Some(stamp) = crate::conn::read_stamp(data) else {
            self.unstamped += 1;
            return Delivery::Counted;
        };
        if stamp == END_MARKER {
            return Delivery::EndMarker;
        }
        if times.in_window(arrival) {
            self.arrived_in_window += 1;
        }
        if times.in_window(stamp) {
            self.of_window += 1;
            self.last_of_window_arrival = self.last_of_window_arrival.max(arrival);
            latency.saturating_record(arrival.saturating_sub(stamp).max(1));
        }
        Delivery::Counted
    }

    pub(crate) fn add(&mut self, other: &DeliveryTally) {
        self.received += other.received;
        self.arrived_in_window += other.arrived_in_window;
        self.of_window += other.of_window;
        self.last_of_window_arrival = self
            .last_of_window_arrival
            .max(other.last_of_window_arrival);
        self.gaps += other.gaps;
        self.missing_offsets += other.missing_offsets;
        self.duplicates += other.duplicates;
        self.foreign += other.foreign;
        self.unstamped += other.unstamped;
        self.malformed += other.malformed;
        self.error_replies += other.error_replies;
        self.protocol_faults += other.protocol_faults;
        self.finished += other.finished;
        self.unfinished += other.unfinished;
        self.dropped += other.dropped;
        for (code, n) in &other.closes {
            *self.closes.entry(*code).or_default() += n;
        }
    }
}

/// What publishers did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PublishTally {
    /// Publishes written, warm-up included (end markers not).
    pub(crate) sent: u64,
    /// Publishes stamped inside the measured window, per room.
    pub(crate) in_window_by_room: Vec<u64>,
    /// Acks received.
    pub(crate) acks: u64,
    /// Error replies received.
    pub(crate) errors: u64,
    /// Publishers whose connection failed or closed before the end.
    pub(crate) dropped: u64,
    /// Close frames from the server, by code.
    pub(crate) closes: BTreeMap<u16, u64>,
}

impl PublishTally {
    pub(crate) fn new(rooms: usize) -> PublishTally {
        PublishTally {
            in_window_by_room: vec![0; rooms],
            ..PublishTally::default()
        }
    }

    pub(crate) fn in_window(&self) -> u64 {
        self.in_window_by_room.iter().sum()
    }

    pub(crate) fn add(&mut self, other: &PublishTally) {
        self.sent += other.sent;
        if self.in_window_by_room.len() < other.in_window_by_room.len() {
            self.in_window_by_room
                .resize(other.in_window_by_room.len(), 0);
        }
        for (mine, theirs) in self
            .in_window_by_room
            .iter_mut()
            .zip(&other.in_window_by_room)
        {
            *mine += theirs;
        }
        self.acks += other.acks;
        self.errors += other.errors;
        self.dropped += other.dropped;
        for (code, n) in &other.closes {
            *self.closes.entry(*code).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMES: Times = Times {
        start: 0,
        t0: 100,
        t1: 200,
    };

    fn data(stamp: u64) -> Vec<u8> {
        let mut d = stamp.to_le_bytes().to_vec();
        d.extend_from_slice(b"filler");
        d
    }

    #[test]
    fn gaps_duplicates_and_the_window() {
        let mut tally = DeliveryTally::default();
        let mut hist = new_histogram();
        let mut last = 10;
        let mut deliver = |offset, stamp, arrival| {
            tally.on_delivery(offset, &data(stamp), arrival, &TIMES, &mut last, &mut hist)
        };
        deliver(11, 50, 90); // warm-up
        deliver(12, 150, 160); // in the window
        deliver(15, 160, 170); // gap of 2
        deliver(15, 160, 171); // duplicate
        deliver(16, 199, 230); // sent in the window, arrived after it
        assert_eq!(deliver(17, END_MARKER, 240), Delivery::EndMarker);
        assert_eq!(tally.received, 6);
        assert_eq!(tally.arrived_in_window, 3);
        assert_eq!(tally.of_window, 4);
        assert_eq!(tally.last_of_window_arrival, 230);
        assert_eq!((tally.gaps, tally.missing_offsets), (1, 2));
        assert_eq!(tally.duplicates, 1);
        assert_eq!(last, 17);
        assert_eq!(hist.len(), 4);
        assert_eq!(hist.max(), 31);
    }

    #[test]
    fn tallies_add_up() {
        let mut a = PublishTally::new(2);
        a.in_window_by_room[1] = 5;
        let mut b = PublishTally::new(2);
        b.in_window_by_room[0] = 1;
        b.closes.insert(1013, 1);
        a.add(&b);
        assert_eq!(a.in_window(), 6);
        assert_eq!(a.closes[&1013], 1);
    }
}
