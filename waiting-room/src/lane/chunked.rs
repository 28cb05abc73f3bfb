//! Finding the end of a chunked body (RFC 9112 §7.1) without changing it:
//! the lane streams an upstream's chunked response through as it arrives
//! and must know where it ends to reuse the connection.

/// Finds where a chunked body ends, without changing it.
#[derive(Debug, Default)]
pub(super) struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `digits` so far.
    #[default]
    Start,
    Size {
        size: u64,
        digits: u8,
    },
    /// Chunk extension up to CR.
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

impl Chunked {
    /// Consume bytes of `data` up to the end of the body; returns how many
    /// belong to the body.
    pub(super) fn feed(&mut self, data: &[u8]) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            self.state = match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Start => match hex(b) {
                    Some(d) => ChunkState::Size { size: d, digits: 1 },
                    None => return Err("chunk size expected"),
                },
                ChunkState::Size { size, digits } => match (hex(b), b) {
                    (Some(_), _) if digits >= 15 => return Err("chunk size too large"),
                    (Some(d), _) => ChunkState::Size { size: size * 16 + d, digits: digits + 1 },
                    (None, b'\r') => ChunkState::SizeLf { size },
                    (None, b';' | b' ' | b'\t') => ChunkState::Extension { size },
                    _ => return Err("bad chunk size"),
                },
                ChunkState::Extension { size } => {
                    if b == b'\r' {
                        ChunkState::SizeLf { size }
                    } else {
                        ChunkState::Extension { size }
                    }
                }
                ChunkState::SizeLf { size } => match (b, size) {
                    (b'\n', 0) => ChunkState::TrailerStart,
                    (b'\n', n) => ChunkState::Data(n),
                    _ => return Err("LF expected after chunk size"),
                },
                ChunkState::Data(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len() - i);
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 { ChunkState::DataCr } else { ChunkState::Data(left) };
                    continue;
                }
                ChunkState::DataCr if b == b'\r' => ChunkState::DataLf,
                ChunkState::DataLf if b == b'\n' => ChunkState::Start,
                ChunkState::DataCr | ChunkState::DataLf => return Err("CRLF expected after chunk data"),
                ChunkState::TrailerStart if b == b'\r' => ChunkState::EndLf,
                ChunkState::TrailerStart | ChunkState::TrailerLine => {
                    if b == b'\n' {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::TrailerLine
                    }
                }
                ChunkState::EndLf if b == b'\n' => ChunkState::Done,
                ChunkState::EndLf => return Err("LF expected at the end of the body"),
            };
            i += 1;
        }
        Ok(i)
    }

    pub(super) fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chunk_decoder_finds_the_end_across_any_split() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let mut with_next = body.to_vec();
        with_next.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for split in 0..with_next.len() {
            let mut d = Chunked::default();
            let a = d.feed(&with_next[..split]).unwrap();
            assert_eq!(a, split.min(body.len()));
            let b = d.feed(&with_next[split..]).unwrap();
            assert!(d.done(), "split at {split}");
            assert_eq!(a + b, body.len(), "split at {split}");
        }
    }

    #[test]
    fn the_chunk_decoder_refuses_garbage() {
        assert!(Chunked::default().feed(b"zz\r\n").is_err());
        assert!(Chunked::default().feed(b"3\r\nabcX").is_err());
        assert!(Chunked::default().feed(b"ffffffffffffffffff\r\n").is_err());
        let mut d = Chunked::default();
        assert_eq!(d.feed(b"3\r\nab").unwrap(), 5);
        assert!(!d.done());
    }
}
