//! Reading the socket's lines with a bound: a peer that never sends a newline must not make
//! the other side buffer without limit (tokio's `Lines` does), and bytes that are not UTF-8
//! are an error, not a panic. Both ends of the launcher socket read through this.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest line either side accepts, newline excluded. A domain's XML is a few KiB; a
/// guest with hundreds of disks stays far below this.
pub const MAX_LINE: usize = 4 << 20;

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("reading the socket")]
    Io(#[from] std::io::Error),
    #[error("line longer than {max} bytes")]
    TooLong { max: usize },
    #[error("line is not UTF-8")]
    NotUtf8,
}

/// Newline-delimited lines of at most `max` bytes from an async reader.
pub struct LineReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_max(inner, MAX_LINE)
    }

    pub fn with_max(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            max,
            buf: Vec::new(),
        }
    }

    /// The next line without its newline (a last line without one counts too); `None` at
    /// the end of the stream. After [`FrameError::TooLong`] the stream is out of step:
    /// close it.
    pub async fn next_line(&mut self) -> Result<Option<String>, FrameError> {
        self.buf.clear();
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                break;
            }
            let (take, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (available.len(), false),
            };
            if self.buf.len() + take > self.max {
                return Err(FrameError::TooLong { max: self.max });
            }
            self.buf.extend_from_slice(&available[..take]);
            self.inner.consume(take + usize::from(done));
            if done {
                break;
            }
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        String::from_utf8(std::mem::take(&mut self.buf))
            .map(Some)
            .map_err(|_| FrameError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Result<Option<String>, String>> {
        let mut reader = LineReader::with_max(tokio::io::BufReader::with_capacity(3, input), max);
        let mut out = Vec::new();
        loop {
            let next = reader.next_line().await.map_err(|e| e.to_string());
            let end = matches!(next, Ok(None) | Err(_));
            out.push(next);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn splits_lines_across_reads_and_keeps_a_last_line_without_newline() {
        assert_eq!(
            lines(b"{\"a\":1}\r\n\nlast", 64).await,
            vec![
                Ok(Some("{\"a\":1}".into())),
                Ok(Some(String::new())),
                Ok(Some("last".into())),
                Ok(None)
            ]
        );
    }

    #[tokio::test]
    async fn refuses_a_line_over_the_bound_and_bytes_that_are_not_utf8() {
        assert_eq!(
            lines(b"12345\n123456\n", 5).await,
            vec![
                Ok(Some("12345".into())),
                Err("line longer than 5 bytes".into())
            ]
        );
        assert_eq!(
            lines(b"\xff\xfe\n", 5).await,
            vec![Err("line is not UTF-8".into())]
        );
    }
}
