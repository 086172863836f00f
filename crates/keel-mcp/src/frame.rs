//! The stdio framing in front of rmcp: one JSON-RPC message a line, each line bounded, and the
//! lines that are no message answered as JSON-RPC 2.0 asks.
//!
//! rmcp drops a line that is not JSON without a word (as the other SDKs do) and drops an
//! oversized line the same way, so a client that sent either would wait forever. Here an
//! unparsable line is answered with a parse error (-32700) and an oversized one with an invalid
//! request (-32600), both with a null id as the protocol says when the id cannot be read; every
//! other line goes to rmcp unchanged.

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader, DuplexStream,
};
use tokio::sync::mpsc;

/// The longest message line read, in bytes: room for a [`crate::FS_WRITE_BYTES_MAX`] file whose
/// every byte is escaped (`\u00XX`, six bytes), and the rest of the message.
pub const MESSAGE_BYTES_MAX: usize = 6 * crate::FS_WRITE_BYTES_MAX + 1024 * 1024;
/// The buffer between the framing and rmcp, each way.
const PIPE_BYTES: usize = 64 * 1024;

/// What one read of a line gave.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A whole line (without its `\n`) is in the buffer.
    Whole,
    /// The line was longer than the limit; it has been skipped to its end.
    Oversized(usize),
    /// The input ended.
    End,
}

/// Reads one `\n`-terminated line into `line` (cleared first), never holding more than `max`
/// bytes of it. A last line without its `\n` counts as whole.
async fn read_line<R: AsyncBufRead + Unpin>(input: &mut R, line: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    line.clear();
    let mut seen = 0_usize;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            return Ok(match seen {
                0 => Line::End,
                n if n > max => Line::Oversized(n),
                _ => Line::Whole,
            });
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let take = newline.map_or(available.len(), |at| at + 1);
        let content = newline.unwrap_or(available.len());
        seen = seen.saturating_add(content);
        if seen <= max {
            line.extend_from_slice(&available[..content]);
        } else {
            line.clear();
        }
        input.consume(take);
        if newline.is_some() {
            return Ok(if seen > max { Line::Oversized(seen) } else { Line::Whole });
        }
    }
}

/// A JSON-RPC error answer with a null id.
fn error_line(code: i64, message: &str) -> Vec<u8> {
    let answer = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    let mut line = answer.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Answers a line that is no JSON-RPC message, or hands it on.
fn judge(line: &[u8]) -> Option<Vec<u8>> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return None;
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(trimmed) {
        Ok(_) => None,
        Err(error) => Some(error_line(-32700, &format!("Parse error: {error}"))),
    }
}

/// The framing's two ends for rmcp, and the task that runs it until `input` ends and rmcp has
/// said everything. Await the task before exiting, so the last answers reach `output`.
pub fn frame<R, W>(input: R, output: W) -> ((DuplexStream, DuplexStream), tokio::task::JoinHandle<std::io::Result<()>>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (mut to_server, server_in) = tokio::io::duplex(PIPE_BYTES);
    let (server_out, from_server) = tokio::io::duplex(PIPE_BYTES);
    let (answers, mut answered) = mpsc::channel::<Vec<u8>>(16);
    let reader = async move {
        let mut input = BufReader::new(input);
        let mut line = Vec::new();
        loop {
            match read_line(&mut input, &mut line, MESSAGE_BYTES_MAX).await? {
                Line::End => break,
                Line::Oversized(bytes) => {
                    let message =
                        format!("Invalid request: a message of {bytes} bytes, over the {MESSAGE_BYTES_MAX} keel reads");
                    if answers.send(error_line(-32600, &message)).await.is_err() {
                        break;
                    }
                }
                Line::Whole => match judge(&line) {
                    Some(answer) => {
                        if answers.send(answer).await.is_err() {
                            break;
                        }
                    }
                    None if line.trim_ascii().is_empty() => {}
                    None => {
                        line.push(b'\n');
                        to_server.write_all(&line).await?;
                    }
                },
            }
        }
        // The client is gone: rmcp sees the end of its input and ends the session.
        to_server.shutdown().await
    };
    let writer = async move {
        let mut output = output;
        let mut from_server = BufReader::new(from_server);
        let mut line = Vec::new();
        let mut server_open = true;
        let mut answers_open = true;
        while server_open || answers_open {
            tokio::select! {
                read = from_server.read_until(b'\n', &mut line), if server_open => {
                    if read? == 0 {
                        server_open = false;
                    } else {
                        output.write_all(&line).await?;
                        output.flush().await?;
                        line.clear();
                    }
                }
                answer = answered.recv(), if answers_open => match answer {
                    Some(answer) => {
                        output.write_all(&answer).await?;
                        output.flush().await?;
                    }
                    None => answers_open = false,
                },
            }
        }
        Ok(())
    };
    let task = tokio::spawn(async move {
        let (read, written) = tokio::join!(reader, writer);
        read.and(written)
    });
    ((server_in, server_out), task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_line_over_the_limit_is_skipped_to_its_end_and_the_next_is_read_whole() {
        let input = b"0123456789\nabc\nlast";
        let mut reader = BufReader::with_capacity(4, &input[..]);
        let mut line = Vec::new();
        assert_eq!(read_line(&mut reader, &mut line, 5).await.unwrap(), Line::Oversized(10));
        assert_eq!(read_line(&mut reader, &mut line, 5).await.unwrap(), Line::Whole);
        assert_eq!(line, b"abc");
        assert_eq!(read_line(&mut reader, &mut line, 5).await.unwrap(), Line::Whole);
        assert_eq!(line, b"last");
        assert_eq!(read_line(&mut reader, &mut line, 5).await.unwrap(), Line::End);
    }

    #[test]
    fn only_text_that_is_not_json_is_answered_with_a_parse_error() {
        assert_eq!(judge(b"{\"jsonrpc\":\"2.0\",\"id\":7}"), None, "well-formed JSON is rmcp's to judge");
        assert_eq!(judge(b"   "), None);
        let answer: serde_json::Value = serde_json::from_slice(&judge(b"not json").expect("answered")).unwrap();
        assert_eq!(answer["error"]["code"], -32700);
        assert_eq!(answer["id"], serde_json::Value::Null);
    }
}
