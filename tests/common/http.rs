//! A small HTTP/1.1 client for the admin listener's API: one request per
//! connection, answers read up to their `Content-Length`, and JSON helpers.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::ws::read_response;

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (the test fails if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "{} answered a body that is not JSON ({error}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `code` of a JSON error body.
    pub fn error_code(&self) -> Option<u64> {
        self.json()["error"]["code"].as_u64()
    }
}

/// The API of one broker's admin listener, with a key (or none).
#[derive(Debug, Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub key: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr, key: &str) -> Api {
        Api {
            addr,
            key: Some(key.to_owned()),
        }
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.send(
            "POST",
            path,
            "application/json",
            body.to_string().as_bytes(),
        )
        .await
    }

    /// `GET path` (with its query).
    pub async fn get(&self, path: &str) -> Response {
        self.send("GET", path, "", b"").await
    }

    /// Any request; an empty `content_type` sends no such header.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Response {
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(key) = &self.key {
            head.push_str(&format!("X-API-Key: {key}\r\n"));
        }
        if !content_type.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        raw(self.addr, &request).await
    }
}

/// Sends raw request bytes and parses the answer.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("the admin listener accepts");
    stream
        .write_all(request)
        .await
        .expect("the request is written");
    let (bytes, complete) = read_response(&mut stream, Duration::from_secs(15)).await;
    assert!(
        complete,
        "a whole answer: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> Response {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: bytes[end + 4..].to_vec(),
    }
}
