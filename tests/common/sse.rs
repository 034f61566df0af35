//! A Server-Sent Events reader over a raw TCP connection: the request is a
//! plain string, the chunked body is taken apart here, and the event
//! stream is parsed as the HTML standard says a browser parses it (fields,
//! comments, a blank line ending each event), so a test sees exactly what
//! went over the wire.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for the next thing before failing.
const WAIT: Duration = Duration::from_secs(10);

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The `id:` field, if the event had one.
    pub id: Option<String>,
    pub event: String,
    /// The `data:` field, parsed as the JSON it always is.
    pub data: Value,
}

/// What the stream sent: an event or a comment line (`: ...`).
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Event(Event),
    Comment(String),
}

/// An answer other than a stream.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// A `GET` of `target` (path and query) with extra header lines.
pub fn request(target: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n{extra}\r\n")
}

/// An open stream.
pub struct SseStream {
    stream: TcpStream,
    /// The response head, lowercased.
    pub head: String,
    /// Bytes read and not yet taken out of their chunks.
    raw: Vec<u8>,
    /// The body, de-chunked, not yet parsed.
    body: Vec<u8>,
    /// The last chunk (size 0) arrived, or the connection ended.
    ended: bool,
}

impl SseStream {
    /// Opens `target` on `addr`; panics on anything but a 200 stream.
    pub async fn open(addr: SocketAddr, target: &str, extra: &str) -> SseStream {
        match SseStream::try_open(addr, target, extra).await {
            Ok(stream) => stream,
            Err(refused) => panic!("stream refused: {refused:?}"),
        }
    }

    /// Opens `target` on `addr`: the stream, or the answer that refused it.
    pub async fn try_open(
        addr: SocketAddr,
        target: &str,
        extra: &str,
    ) -> Result<SseStream, Refused> {
        let stream = TcpStream::connect(addr).await.expect("connects");
        SseStream::send(stream, &request(target, extra)).await
    }

    /// Sends `request` on `stream` and reads the response head.
    pub async fn send(mut stream: TcpStream, request: &str) -> Result<SseStream, Refused> {
        stream
            .write_all(request.as_bytes())
            .await
            .expect("request written");
        let mut raw = Vec::new();
        let end = loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("a response head")
                .expect("read");
            assert!(n > 0, "connection closed before a response head");
            raw.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let raw = raw[end + 4..].to_vec();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        let mut sse = SseStream {
            stream,
            head,
            raw,
            body: Vec::new(),
            ended: false,
        };
        if status == 200 {
            assert!(
                sse.header("transfer-encoding") == Some("chunked"),
                "{}",
                sse.head
            );
            return Ok(sse);
        }
        let length: usize = sse
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        while sse.raw.len() < length {
            sse.fill().await;
            assert!(!sse.ended, "connection closed inside a refusal's body");
        }
        Err(Refused {
            status,
            body: String::from_utf8_lossy(&sse.raw[..length]).into_owned(),
            head: sse.head,
        })
    }

    /// A response header's value (names and values lowercased).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim())
        })
    }

    /// Reads more from the socket into `raw` (marks the end on EOF).
    async fn fill(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("the stream sent nothing for 10 s")
            .unwrap_or(0);
        if n == 0 {
            self.ended = true;
        }
        self.raw.extend_from_slice(&chunk[..n]);
    }

    /// Moves every whole chunk of `raw` into `body`.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = std::str::from_utf8(&self.raw[..line_end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .expect("a chunk size line");
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            assert_eq!(
                &self.raw[start + size..start + size + 2],
                b"\r\n",
                "chunk ends with CRLF"
            );
            self.body.extend_from_slice(&self.raw[start..start + size]);
            self.raw.drain(..start + size + 2);
            if size == 0 {
                self.ended = true;
                return;
            }
        }
    }

    /// The next event or comment; `None` once the stream has ended.
    pub async fn next_item(&mut self) -> Option<Item> {
        loop {
            self.dechunk();
            if let Some(item) = self.parse_one() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            self.fill().await;
        }
    }

    /// The next event, skipping comments; panics if the stream ends.
    pub async fn next_event(&mut self) -> Event {
        loop {
            match self.next_item().await {
                Some(Item::Event(event)) => return event,
                Some(Item::Comment(_)) => {}
                None => panic!("the stream ended"),
            }
        }
    }

    /// Whether the stream ends (the last chunk, or EOF) before another event.
    pub async fn ends(&mut self) -> bool {
        loop {
            match self.next_item().await {
                None => return true,
                Some(Item::Comment(_)) => {}
                Some(Item::Event(_)) => return false,
            }
        }
    }

    /// Takes one event or comment off the front of `body`, if whole.
    fn parse_one(&mut self) -> Option<Item> {
        // A comment is a line of its own; an event ends with a blank line.
        if self.body.first() == Some(&b':') {
            let end = self.body.iter().position(|&b| b == b'\n')?;
            let comment = String::from_utf8_lossy(&self.body[1..end])
                .trim()
                .to_owned();
            self.body.drain(..=end);
            // The blank line that may follow a comment dispatches nothing.
            if self.body.first() == Some(&b'\n') {
                self.body.remove(0);
            }
            return Some(Item::Comment(comment));
        }
        let end = self.body.windows(2).position(|w| w == b"\n\n")?;
        let text = String::from_utf8(self.body[..end].to_vec()).expect("UTF-8 events");
        self.body.drain(..end + 2);
        let (mut id, mut event, mut data) = (None, "message".to_owned(), None);
        for line in text.lines() {
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "id" => id = Some(value.to_owned()),
                "event" => event = value.to_owned(),
                "data" => {
                    assert!(data.is_none(), "one data line per event: {text}");
                    data = Some(serde_json::from_str(value).expect("JSON data"));
                }
                _ => panic!("unexpected field {field:?} in {text:?}"),
            }
        }
        Some(Item::Event(Event {
            id,
            event,
            data: data.expect("every event has data"),
        }))
    }
}

/// `room=` parameters for `rooms`, percent-encoded where needed.
pub fn rooms_query(rooms: &[&str]) -> String {
    rooms
        .iter()
        .map(|room| format!("room={}", encode(room)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
