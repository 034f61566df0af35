//! `limit`: the ceiling of one core for roomcast's fan-out scenario.
//!
//! It accepts the same WebSocket connections as roomcast (`/ws`,
//! `roomcast.v1.msgpack` echoed), answers subscribe / unsubscribe / publish
//! with the same envelopes, and on each publish builds ONE delivery frame
//! (WebSocket header + MessagePack envelope, with the room's next offset)
//! and queues that same `Bytes` to every subscriber of the room. Queues are
//! written with vectored writes (`writev`, up to 64 frames per call), inline
//! at the end of each read batch; a socket that would block is finished by
//! its writer task when it becomes writable.
//!
//! What it does NOT do: validate room names, report errors (a request it
//! cannot read closes the connection), reassemble fragmented messages,
//! heartbeats, timeouts, graceful shutdown, the protobuf encoding, more than
//! one thread. It decodes only what it needs to find the op, id, room and data.
//!
//! Slow consumers: the closest thing to roomcast's default (`close`, 256 KiB,
//! 4096 frames): a frame that would take a queue over either bound discards
//! the queue, sends close 1013 and ends the connection.
//!
//! Runs on a current-thread runtime: one core, to compare with one roomcast
//! worker. `PORT` (default 9204) and `HOST` (default 127.0.0.1) pick the address.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const SUBPROTOCOL: &str = "roomcast.v1.msgpack";
const OUTBOUND_MAX_BYTES: usize = 256 * 1024;
const OUTBOUND_MAX_MESSAGES: usize = 4096;
const MAX_MESSAGE: usize = 64 * 1024;
const MAX_HEAD: usize = 8192;
const IOV: usize = 64;

struct Conn {
    stream: TcpStream,
    out: RefCell<VecDeque<Bytes>>,
    /// Bytes of `out[0]` already written.
    head_off: Cell<usize>,
    /// Bytes in `out`, minus `head_off`.
    queued: Cell<usize>,
    dirty: Cell<bool>,
    /// No more frames are accepted; the writer ends the connection once `out` is empty.
    closing: Cell<bool>,
    dead: Cell<bool>,
    notify: Notify,
    /// The writer is done: the reader stops and the socket is dropped.
    done: Notify,
    rooms: RefCell<Vec<Vec<u8>>>,
}

struct Room {
    offset: u64,
    subs: Vec<Rc<Conn>>,
}

#[derive(Default)]
struct State {
    rooms: HashMap<Vec<u8>, Room>,
    dirty: Vec<Rc<Conn>>,
    connections_open: u64,
    connections_accepted: u64,
    publishes: u64,
    deliveries: u64,
    slow_consumer_closes: u64,
}

type Shared = Rc<RefCell<State>>;

fn main() -> io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9204);
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind((host.as_str(), port)).await?;
        println!("listening on ws://{}/ws", listener.local_addr()?);
        let state: Shared = Rc::default();
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(_) => continue, // e.g. EMFILE: keep serving the others
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::task::spawn_local(async move {
                let _ = serve(state, stream).await;
            });
        }
    })
}

// ------------------------------------------------------------- handshake ---

async fn serve(state: Shared, stream: TcpStream) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(MAX_HEAD);
    let head_len = loop {
        stream.readable().await?;
        match stream.try_read_buf(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() >= MAX_HEAD {
            return write_all(&stream, b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        }
    };
    let head = std::str::from_utf8(&buf[..head_len]).unwrap_or("");
    let mut lines = head.split("\r\n");
    let path = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("");
    let (mut key, mut protocols, mut upgrade) = (None, None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            protocols = Some(value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = value.eq_ignore_ascii_case("websocket");
        }
    }
    if path == "/stats" {
        let body = {
            let s = state.borrow();
            format!(
                "{{\"connections_open\":{},\"connections_accepted\":{},\"publishes\":{},\"deliveries\":{},\"slow_consumer_closes\":{}}}",
                s.connections_open, s.connections_accepted, s.publishes, s.deliveries, s.slow_consumer_closes
            )
        };
        let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}", body.len(), body);
        return write_all(&stream, resp.as_bytes()).await;
    }
    if path != "/ws" {
        return write_all(
            &stream,
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
    }
    let (Some(key), true) = (key, upgrade) else {
        return write_all(&stream, b"HTTP/1.1 426 Upgrade Required\r\nupgrade: websocket\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
    };
    let echo = match protocols {
        None => "",
        Some(p) if p.split(',').any(|t| t.trim() == SUBPROTOCOL) => {
            "sec-websocket-protocol: roomcast.v1.msgpack\r\n"
        }
        Some(_) => {
            let body = "unsupported subprotocol; this server speaks: roomcast.v1.msgpack";
            let resp = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            return write_all(&stream, resp.as_bytes()).await;
        }
    };
    let mut k = Vec::with_capacity(60);
    k.extend_from_slice(key.as_bytes());
    k.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n{}\r\n",
        base64(&sha1(&k)),
        echo
    );
    write_all(&stream, resp.as_bytes()).await?;
    buf.advance(head_len);

    let conn = Rc::new(Conn {
        stream,
        out: RefCell::new(VecDeque::new()),
        head_off: Cell::new(0),
        queued: Cell::new(0),
        dirty: Cell::new(false),
        closing: Cell::new(false),
        dead: Cell::new(false),
        notify: Notify::new(),
        done: Notify::new(),
        rooms: RefCell::new(Vec::new()),
    });
    {
        let mut s = state.borrow_mut();
        s.connections_open += 1;
        s.connections_accepted += 1;
    }
    tokio::task::spawn_local(writer(conn.clone()));
    let r = read_loop(&state, &conn, buf).await;
    drop_conn(&state, &conn);
    r
}

async fn write_all(stream: &TcpStream, mut b: &[u8]) -> io::Result<()> {
    while !b.is_empty() {
        stream.writable().await?;
        match stream.try_write(b) {
            Ok(n) => b = &b[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

// ----------------------------------------------------------------- frames ---

async fn read_loop(state: &Shared, conn: &Rc<Conn>, mut buf: BytesMut) -> io::Result<()> {
    loop {
        // Handle every complete frame in the buffer, then write once per socket.
        let mut stop = false;
        loop {
            match next_frame(&mut buf) {
                Ok(None) => break,
                Ok(Some((opcode, payload))) => {
                    if !on_frame(state, conn, opcode, &payload) {
                        stop = true;
                        break;
                    }
                }
                Err(code) => {
                    close_with(state, conn, code);
                    stop = true;
                    break;
                }
            }
        }
        flush_dirty(state);
        if stop {
            // wait for the close frame to be written, then drop the socket
            if !conn.dead.get() {
                conn.done.notified().await;
            }
            return Ok(());
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        tokio::select! {
            r = conn.stream.readable() => r?,
            _ = conn.done.notified() => return Ok(()), // closed as a slow consumer, or a write failed
        }
        match conn.stream.try_read_buf(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// One complete client frame, unmasked: `Ok(None)` when more bytes are needed,
/// `Err(close code)` when the frame is not one this server takes.
fn next_frame(buf: &mut BytesMut) -> Result<Option<(u8, BytesMut)>, u16> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let opcode = b0 & 0x0f;
    if b0 & 0x70 != 0 || b0 & 0x80 == 0 {
        return Err(1002); // reserved bits, or a fragment: not handled here
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            )
        }
        n => (n as usize, 2),
    };
    if len > MAX_MESSAGE {
        return Err(1009);
    }
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        at += 4;
        Some([buf[at - 4], buf[at - 3], buf[at - 2], buf[at - 1]])
    } else {
        None
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    buf.advance(at);
    let mut payload = buf.split_to(len);
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i & 3];
        }
    }
    Ok(Some((opcode, payload)))
}

/// false: stop reading this connection.
fn on_frame(state: &Shared, conn: &Rc<Conn>, opcode: u8, payload: &[u8]) -> bool {
    match opcode {
        0x2 => {
            let Some(req) = parse_request(payload) else {
                close_with(state, conn, 1007);
                return false;
            };
            on_request(state, conn, req);
            true
        }
        0x8 => {
            // echo the code, then end the connection
            let code = if payload.len() >= 2 {
                u16::from_be_bytes([payload[0], payload[1]])
            } else {
                1000
            };
            close_with(state, conn, code);
            false
        }
        0x9 => {
            let mut f = BytesMut::with_capacity(2 + payload.len());
            f.put_u8(0x8a);
            f.put_u8(payload.len() as u8);
            f.put_slice(payload);
            let mut s = state.borrow_mut();
            enqueue(&mut s.dirty, conn, f.freeze(), false);
            true
        }
        0xa => true,
        0x1 => {
            close_with(state, conn, 1003);
            false
        }
        _ => {
            close_with(state, conn, 1002);
            false
        }
    }
}

enum Op {
    Subscribe,
    Unsubscribe,
    Publish,
}

struct Request<'a> {
    id: u64,
    op: Op,
    room: &'a [u8],
    data: &'a [u8],
}

fn on_request(state: &Shared, conn: &Rc<Conn>, req: Request<'_>) {
    let mut guard = state.borrow_mut();
    let s = &mut *guard;
    match req.op {
        Op::Publish => {
            let room = match s.rooms.get_mut(req.room) {
                Some(r) => r,
                None => s.rooms.entry(req.room.to_vec()).or_insert(Room {
                    offset: 0,
                    subs: Vec::new(),
                }),
            };
            room.offset += 1;
            let offset = room.offset;
            s.publishes += 1;
            if !room.subs.is_empty() {
                let frame = delivery_frame(req.room, offset, req.data);
                for sub in &room.subs {
                    if enqueue(&mut s.dirty, sub, frame.clone(), true) {
                        s.deliveries += 1;
                    } else {
                        s.slow_consumer_closes += 1;
                    }
                }
                // unlink the subscribers that were just closed as slow
                if room.subs.iter().any(|c| c.closing.get()) {
                    let closed: Vec<_> = room
                        .subs
                        .iter()
                        .filter(|c| c.closing.get())
                        .cloned()
                        .collect();
                    for c in closed {
                        leave_all(&mut s.rooms, &c);
                    }
                }
            }
            if req.id != 0 {
                enqueue(&mut s.dirty, conn, ack_frame(req.id, offset), false);
            }
        }
        Op::Subscribe => {
            let room = match s.rooms.get_mut(req.room) {
                Some(r) => r,
                None => s.rooms.entry(req.room.to_vec()).or_insert(Room {
                    offset: 0,
                    subs: Vec::new(),
                }),
            };
            let offset = room.offset;
            if !room.subs.iter().any(|c| Rc::ptr_eq(c, conn)) {
                room.subs.push(conn.clone());
                conn.rooms.borrow_mut().push(req.room.to_vec());
            }
            if req.id != 0 {
                enqueue(&mut s.dirty, conn, ack_frame(req.id, offset), false);
            }
        }
        Op::Unsubscribe => {
            if let Some(room) = s.rooms.get_mut(req.room) {
                room.subs.retain(|c| !Rc::ptr_eq(c, conn));
            }
            conn.rooms.borrow_mut().retain(|r| r.as_slice() != req.room);
            if req.id != 0 {
                enqueue(&mut s.dirty, conn, ack_frame(req.id, 0), false);
            }
        }
    }
}

fn leave_all(rooms: &mut HashMap<Vec<u8>, Room>, conn: &Rc<Conn>) {
    for name in conn.rooms.borrow_mut().drain(..) {
        if let Some(room) = rooms.get_mut(&name) {
            room.subs.retain(|c| !Rc::ptr_eq(c, conn));
        }
    }
}

fn drop_conn(state: &Shared, conn: &Rc<Conn>) {
    let mut s = state.borrow_mut();
    leave_all(&mut s.rooms, conn);
    s.connections_open -= 1;
    if !conn.closing.get() {
        conn.dead.set(true);
    }
    conn.notify.notify_one();
}

fn close_with(state: &Shared, conn: &Rc<Conn>, code: u16) {
    let mut s = state.borrow_mut();
    leave_all(&mut s.rooms, conn);
    let f = close_frame(code);
    enqueue(&mut s.dirty, conn, f, false);
    conn.closing.set(true);
}

// ------------------------------------------------------------------ queues ---

/// Queue a frame; false if the connection is (now) closing. A frame that would
/// take a queue over its bounds (`bounded`: deliveries) closes it with 1013.
fn enqueue(dirty: &mut Vec<Rc<Conn>>, conn: &Rc<Conn>, frame: Bytes, bounded: bool) -> bool {
    if conn.closing.get() || conn.dead.get() {
        return false;
    }
    let mut out = conn.out.borrow_mut();
    if bounded
        && (conn.queued.get() + frame.len() > OUTBOUND_MAX_BYTES
            || out.len() >= OUTBOUND_MAX_MESSAGES)
    {
        // Discard what is queued, except the part of a frame already on the wire.
        let keep = if conn.head_off.get() > 0 {
            out.pop_front()
        } else {
            None
        };
        out.clear();
        let mut q = 0;
        if let Some(f) = keep {
            q = f.len() - conn.head_off.get();
            out.push_back(f);
        } else {
            conn.head_off.set(0);
        }
        let c = close_frame(1013);
        conn.queued.set(q + c.len());
        out.push_back(c);
        conn.closing.set(true);
        mark_dirty(dirty, conn);
        return false;
    }
    conn.queued.set(conn.queued.get() + frame.len());
    out.push_back(frame);
    drop(out);
    mark_dirty(dirty, conn);
    true
}

fn mark_dirty(dirty: &mut Vec<Rc<Conn>>, conn: &Rc<Conn>) {
    if !conn.dirty.replace(true) {
        dirty.push(conn.clone());
    }
}

fn flush_dirty(state: &Shared) {
    let dirty = std::mem::take(&mut state.borrow_mut().dirty);
    for conn in &dirty {
        conn.dirty.set(false);
        if !flush(conn) || conn.closing.get() {
            conn.notify.notify_one(); // the writer finishes the job
        }
    }
    let mut s = state.borrow_mut();
    if s.dirty.is_empty() {
        let mut dirty = dirty;
        dirty.clear();
        s.dirty = dirty; // keep the allocation
    }
}

/// Write as much of the queue as the socket takes now; true when it is empty.
fn flush(conn: &Conn) -> bool {
    let mut out = conn.out.borrow_mut();
    while !out.is_empty() {
        let mut iov: [IoSlice<'_>; IOV] = [IoSlice::new(&[]); IOV];
        let mut n = 0;
        for (i, f) in out.iter().take(IOV).enumerate() {
            iov[i] = IoSlice::new(if i == 0 {
                &f[conn.head_off.get()..]
            } else {
                &f[..]
            });
            n += 1;
        }
        match conn.stream.try_write_vectored(&iov[..n]) {
            Ok(mut w) => {
                conn.queued.set(conn.queued.get() - w);
                while w > 0 {
                    let left = out[0].len() - conn.head_off.get();
                    if w >= left {
                        w -= left;
                        out.pop_front();
                        conn.head_off.set(0);
                    } else {
                        conn.head_off.set(conn.head_off.get() + w);
                        w = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => {
                out.clear();
                conn.queued.set(0);
                conn.head_off.set(0);
                conn.dead.set(true);
                return true;
            }
        }
    }
    true
}

async fn writer(conn: Rc<Conn>) {
    loop {
        conn.notify.notified().await;
        loop {
            if conn.dead.get() {
                conn.done.notify_one();
                return;
            }
            if flush(&conn) {
                if conn.closing.get() {
                    // queue written (close frame included): end the connection;
                    // the reader drops the socket
                    conn.dead.set(true);
                    conn.done.notify_one();
                    return;
                }
                break;
            }
            if conn.stream.writable().await.is_err() {
                conn.dead.set(true);
                conn.done.notify_one();
                return;
            }
        }
    }
}

// ------------------------------------------------------------- envelopes ---

fn ws_header(out: &mut BytesMut, len: usize) {
    out.put_u8(0x82);
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= 0xffff {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

fn uint_len(v: u64) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn put_uint(out: &mut BytesMut, v: u64) {
    match v {
        0..=0x7f => out.put_u8(v as u8),
        0x80..=0xff => {
            out.put_u8(0xcc);
            out.put_u8(v as u8)
        }
        0x100..=0xffff => {
            out.put_u8(0xcd);
            out.put_u16(v as u16)
        }
        0x1_0000..=0xffff_ffff => {
            out.put_u8(0xce);
            out.put_u32(v as u32)
        }
        _ => {
            out.put_u8(0xcf);
            out.put_u64(v)
        }
    }
}

fn str_hdr_len(n: usize) -> usize {
    match n {
        0..=31 => 1,
        32..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

fn put_str(out: &mut BytesMut, s: &[u8]) {
    match s.len() {
        n @ 0..=31 => out.put_u8(0xa0 | n as u8),
        n @ 32..=0xff => {
            out.put_u8(0xd9);
            out.put_u8(n as u8)
        }
        n @ 0x100..=0xffff => {
            out.put_u8(0xda);
            out.put_u16(n as u16)
        }
        n => {
            out.put_u8(0xdb);
            out.put_u32(n as u32)
        }
    }
    out.put_slice(s);
}

fn bin_hdr_len(n: usize) -> usize {
    match n {
        0..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

fn put_bin(out: &mut BytesMut, b: &[u8]) {
    match b.len() {
        n @ 0..=0xff => {
            out.put_u8(0xc4);
            out.put_u8(n as u8)
        }
        n @ 0x100..=0xffff => {
            out.put_u8(0xc5);
            out.put_u16(n as u16)
        }
        n => {
            out.put_u8(0xc6);
            out.put_u32(n as u32)
        }
    }
    out.put_slice(b);
}

/// `{"message": {"room": R, "offset": K, "data": D}}` in one binary frame.
fn delivery_frame(room: &[u8], offset: u64, data: &[u8]) -> Bytes {
    let len = 1
        + 8
        + 1
        + 5
        + str_hdr_len(room.len())
        + room.len()
        + 7
        + uint_len(offset)
        + 5
        + bin_hdr_len(data.len())
        + data.len();
    let mut out = BytesMut::with_capacity(len + 10);
    ws_header(&mut out, len);
    out.put_slice(b"\x81\xa7message\x83\xa4room");
    put_str(&mut out, room);
    out.put_slice(b"\xa6offset");
    put_uint(&mut out, offset);
    out.put_slice(b"\xa4data");
    put_bin(&mut out, data);
    out.freeze()
}

/// `{"reply": {"id": N, "ack": {"offset": K}}}` in one binary frame.
fn ack_frame(id: u64, offset: u64) -> Bytes {
    let len = 1 + 6 + 1 + 3 + uint_len(id) + 4 + 1 + 7 + uint_len(offset);
    let mut out = BytesMut::with_capacity(len + 10);
    ws_header(&mut out, len);
    out.put_slice(b"\x81\xa5reply\x82\xa2id");
    put_uint(&mut out, id);
    out.put_slice(b"\xa3ack\x81\xa6offset");
    put_uint(&mut out, offset);
    out.freeze()
}

fn close_frame(code: u16) -> Bytes {
    let c = code.to_be_bytes();
    Bytes::copy_from_slice(&[0x88, 0x02, c[0], c[1]])
}

// ------------------------------------------------------- request decoding ---

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&x, rest) = self.b.split_first()?;
        self.b = rest;
        Some(x)
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (x, rest) = self.b.split_at(n);
        self.b = rest;
        Some(x)
    }
    fn be(&mut self, n: usize) -> Option<u64> {
        Some(self.take(n)?.iter().fold(0u64, |a, &x| (a << 8) | x as u64))
    }
    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some((m & 0x0f) as usize),
            0xde => Some(self.be(2)? as usize),
            0xdf => Some(self.be(4)? as usize),
            _ => None,
        }
    }
    /// str or bin
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => (m & 0x1f) as usize,
            0xd9 | 0xc4 => self.be(1)? as usize,
            0xda | 0xc5 => self.be(2)? as usize,
            0xdb | 0xc6 => self.be(4)? as usize,
            _ => return None,
        };
        self.take(n)
    }
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(m as u64),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }
    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > 15 {
            return None;
        }
        let m = self.byte()?;
        let (skip, items) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * (m & 0x0f) as usize),
            0x90..=0x9f => (0, (m & 0x0f) as usize),
            0xa0..=0xbf => ((m & 0x1f) as usize, 0),
            0xc4 | 0xd9 => (self.be(1)? as usize, 0),
            0xc5 | 0xda => (self.be(2)? as usize, 0),
            0xc6 | 0xdb => (self.be(4)? as usize, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 | 0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xce | 0xd2 | 0xca => (4, 0),
            0xd6 => (5, 0),
            0xcf | 0xd3 | 0xcb => (8, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xc7 => (self.be(1)? as usize + 1, 0),
            0xc8 => (self.be(2)? as usize + 1, 0),
            0xc9 => (self.be(4)? as usize + 1, 0),
            0xdc => (0, self.be(2)? as usize),
            0xdd => (0, self.be(4)? as usize),
            0xde => (0, 2 * self.be(2)? as usize),
            0xdf => (0, 2 * self.be(4)? as usize),
            _ => return None,
        };
        self.take(skip)?;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Some(())
    }
}

fn parse_request(b: &[u8]) -> Option<Request<'_>> {
    let mut r = Reader { b };
    let mut req = Request {
        id: 0,
        op: Op::Publish,
        room: &[],
        data: &[],
    };
    let mut have_op = false;
    for _ in 0..r.map_len()? {
        let key = r.bytes()?;
        let op = match key {
            b"id" => {
                req.id = r.uint()?;
                continue;
            }
            b"subscribe" => Op::Subscribe,
            b"unsubscribe" => Op::Unsubscribe,
            b"publish" => Op::Publish,
            _ => {
                r.skip(1)?;
                continue;
            }
        };
        if have_op {
            return None;
        }
        have_op = true;
        req.op = op;
        for _ in 0..r.map_len()? {
            match r.bytes()? {
                b"room" => req.room = r.bytes()?,
                b"data" => req.data = r.bytes()?,
                _ => r.skip(2)?,
            }
        }
    }
    if !have_op || req.room.is_empty() {
        return None;
    }
    Some(req)
}

// ------------------------------------------------------ SHA-1 and base64 ---

fn sha1(msg: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut data = msg.to_vec();
    let bit_len = (msg.len() as u64) * 8;
    data.push(0x80);
    while data.len() % 64 != 56 {
        data.push(0);
    }
    data.extend_from_slice(&bit_len.to_be_bytes());
    for block in data.chunks_exact(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(block[4 * i..4 * i + 4].try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_rfc6455_example() {
        let mut k = b"dGhlIHNhbXBsZSBub25jZQ==".to_vec();
        k.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        assert_eq!(base64(&sha1(&k)), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn envelopes_match_protocol_md() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(&delivery_frame(b"chat.lobby", 42, b"hi")),
            "822b81a76d657373616765 83a4726f6f6daa636861742e6c6f626279a66f6666736574 2aa464617461c4026869".replace(' ', "")
        );
        assert_eq!(
            hex(&ack_frame(1, 41)[2..]),
            "81a57265706c7982a2696401a361636b81a66f666673657429"
        );
        let publish = [
            0x82, 0xa2, 0x69, 0x64, 0x03, 0xa7, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x73, 0x68, 0x82,
            0xa4, 0x72, 0x6f, 0x6f, 0x6d, 0xaa, 0x63, 0x68, 0x61, 0x74, 0x2e, 0x6c, 0x6f, 0x62,
            0x62, 0x79, 0xa4, 0x64, 0x61, 0x74, 0x61, 0xc4, 0x02, 0x68, 0x69,
        ];
        let r = parse_request(&publish).unwrap();
        assert!(matches!(r.op, Op::Publish));
        assert_eq!((r.id, r.room, r.data), (3, &b"chat.lobby"[..], &b"hi"[..]));
    }
}
