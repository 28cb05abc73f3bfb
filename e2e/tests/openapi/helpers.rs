//! Helpers of the test: the clock, a response's cookie, a raw WebSocket handshake and a scheduled queue.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::Answer;

pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The cookie pair (`name=value`) a response set.
pub fn cookie(answer: &Answer, name: &str) -> Option<String> {
    answer.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
        let pair = c.split(';').next()?;
        pair.starts_with(&format!("{name}=")).then(|| pair.to_owned())
    })
}

/// Raw WebSocket handshake: (status, headers and the first frame's payload when 101).
pub async fn websocket(proxy: &str, path: &str, extra: &str) -> (u16, String, Option<String>) {
    let address = proxy.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    if status != 101 {
        let length: usize = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .map_or(0, |(_, v)| v.trim().parse().unwrap());
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the body");
            buf.extend_from_slice(&chunk[..n]);
        }
        return (status, head, Some(String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned()));
    }
    // One unmasked server text frame: FIN+text, then a 7-bit, 16-bit or 64-bit length.
    let mut frame = buf[head_end..].to_vec();
    while frame.len() < 2 || frame.len() < 4 && frame[1] == 126 {
        let n = stream.read(&mut chunk).await.unwrap();
        frame.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(frame[0], 0x81, "first frame is a final text frame");
    let (len, start) = match frame[1] {
        126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
        127 => panic!("unexpectedly long first message"),
        n => (usize::from(n), 2),
    };
    while frame.len() < start + len {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        frame.extend_from_slice(&chunk[..n]);
    }
    (status, head, Some(String::from_utf8_lossy(&frame[start..start + len]).into_owned()))
}

/// A queue whose pre-queue is open for the whole test (its sale opens in an hour).
pub fn scheduled_queue() -> String {
    let now = waiting_room::clock::now_ms();
    format!(
        "\n[[queues]]\nid = \"drop\"\npaths = [\"/drop\"]\nrelease_per_tick = 1\ntick = \"1h\"\nsession = \"10m\"\n\
         prequeue_from = \"{}\"\nopens_at = \"{}\"\n",
        waiting_room::clock::rfc3339_ms(now - 60_000),
        waiting_room::clock::rfc3339_ms(now + 3_600_000)
    )
}
