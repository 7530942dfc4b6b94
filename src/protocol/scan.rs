//! Finds where one RESP2/RESP3 reply ends, without decoding it.
//!
//! The proxy forwards most replies as the exact bytes the server sent, so it
//! only needs frame boundaries. [`FrameScanner`] is resumable: a reply that
//! arrives in many reads (a 10 MB bulk string, a `KEYS` answer with a million
//! elements) is scanned once in total, not once per read. It allocates only
//! for nesting depth (a reused stack).

/// The kind of the first byte of a reply, which is all routing needs to know
/// (errors may be redirections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// `-` or `!`: an error.
    Error,
    /// Anything else.
    Value,
    /// `>`: a RESP3 push message (out of band).
    Push,
}

/// Kind of a complete frame that starts with `first`.
pub fn reply_kind(first: u8) -> ReplyKind {
    match first {
        b'-' | b'!' => ReplyKind::Error,
        b'>' => ReplyKind::Push,
        _ => ReplyKind::Value,
    }
}

/// A malformed reply from a server (the connection to it must be dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply from server at byte {0}")]
pub struct ScanError(pub usize);

/// Resumable frame-boundary scanner.
#[derive(Debug, Default)]
pub struct FrameScanner {
    pos: usize,
    /// Elements still expected at each open aggregate level.
    stack: Vec<u64>,
}

impl FrameScanner {
    /// A scanner positioned at the start of a frame.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the length of the complete frame at the start of `buf`, or
    /// `None` when more bytes are needed. `buf` must keep its leading bytes
    /// between calls until a length is returned; then the scanner is reset.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ScanError> {
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            let header_start = self.pos;
            match kind {
                b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {
                    let Some(line_end) = find_crlf(buf, header_start + 1) else {
                        return Ok(None);
                    };
                    self.pos = line_end + 2;
                }
                b'$' | b'!' | b'=' => {
                    let Some((len, after_line)) = length_line(buf, header_start)? else {
                        return Ok(None);
                    };
                    if len < 0 {
                        self.pos = after_line;
                    } else {
                        let end = after_line + len as usize + 2;
                        if buf.len() < end {
                            return Ok(None);
                        }
                        self.pos = end;
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let Some((n, after_line)) = length_line(buf, header_start)? else {
                        return Ok(None);
                    };
                    self.pos = after_line;
                    if n > 0 {
                        let n = n as u64;
                        // Saturating: a count this large can never complete anyway.
                        let children = match kind {
                            b'%' => n.saturating_mul(2),
                            // An attribute map is followed by the value it annotates.
                            b'|' => n.saturating_mul(2).saturating_add(1),
                            _ => n,
                        };
                        self.stack.push(children);
                        continue;
                    }
                }
                _ => return Err(ScanError(header_start)),
            }
            // One element finished: close every aggregate it completes.
            loop {
                match self.stack.last_mut() {
                    None => {
                        let len = self.pos;
                        self.pos = 0;
                        return Ok(Some(len));
                    }
                    Some(top) => {
                        *top -= 1;
                        if *top == 0 {
                            self.stack.pop();
                        } else {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// The length in the header line of a bulk or aggregate starting at `at`,
/// and where the line ends; `None` while the line is incomplete.
fn length_line(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, ScanError> {
    let rest = buf.get(at + 1..).unwrap_or_default();
    if let Some((n, used)) = crate::protocol::request::short_decimal_line(rest) {
        return Ok(Some((n, at + 1 + used)));
    }
    if rest.starts_with(b"-1\r\n") {
        // A nil (`$-1`, `*-1`): a cache miss is a common reply.
        return Ok(Some((-1, at + 5)));
    }
    let Some(line_end) = find_crlf(buf, at + 1) else {
        return Ok(None);
    };
    let n = parse_len(&buf[at + 1..line_end]).ok_or(ScanError(at))?;
    Ok(Some((n, line_end + 2)))
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    // Most lines are short (`+OK`, `:1`): a plain loop beats memchr's setup.
    let i = match rest.iter().take(16).position(|&b| b == b'\r') {
        Some(i) => i,
        None if rest.len() <= 16 => return None,
        None => 16 + memchr::memchr(b'\r', &rest[16..])?,
    };
    if from + i + 1 < buf.len() {
        Some(from + i)
    } else {
        None
    }
}

/// The body of a complete bulk-string frame (`$<n>\r\n<body>\r\n`):
/// `None` for a null bulk string or any other frame.
pub fn bulk_body(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.strip_prefix(b"$")?;
    let cr = memchr::memchr(b'\r', rest)?;
    let len = usize::try_from(parse_len(&rest[..cr])?).ok()?;
    let body = rest.get(cr + 2..)?;
    (body.len() == len + 2 && body.ends_with(b"\r\n")).then(|| &body[..len])
}

fn parse_len(header: &[u8]) -> Option<i64> {
    let n = crate::protocol::request::parse_i64(header)?;
    (n >= -1).then_some(n)
}

/// Splits a complete aggregate reply into its header length and the byte
/// ranges of its direct children. Returns `None` if `frame` is not an
/// aggregate (or is a null array).
pub fn children(frame: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    children_into(frame, &mut out)?;
    Some(out)
}

/// [`children`] into `out` (cleared first), so that one vector serves many
/// frames.
pub fn children_into(frame: &[u8], out: &mut Vec<(usize, usize)>) -> Option<()> {
    out.clear();
    let kind = *frame.first()?;
    if !matches!(kind, b'*' | b'~' | b'>' | b'%') {
        return None;
    }
    let line_end = find_crlf(frame, 1)?;
    let n = parse_len(&frame[1..line_end])?;
    if n < 0 {
        return None;
    }
    let n = if kind == b'%' { n.checked_mul(2)? } else { n } as usize;
    out.reserve(n.min(1024));
    let mut pos = line_end + 2;
    for _ in 0..n {
        let mut scanner = FrameScanner::new();
        let len = scanner.scan(frame.get(pos..)?).ok()??;
        out.push((pos, pos + len));
        pos += len;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Option<usize> {
        FrameScanner::new().scan(input).unwrap()
    }

    #[test]
    fn simple_frames() {
        assert_eq!(scan_all(b"+OK\r\n"), Some(5));
        assert_eq!(scan_all(b"-ERR x\r\n+OK\r\n"), Some(8));
        assert_eq!(scan_all(b":12\r\n"), Some(5));
        assert_eq!(scan_all(b"$-1\r\n"), Some(5));
        assert_eq!(scan_all(b"$3\r\nfoo\r\n"), Some(9));
        assert_eq!(scan_all(b"$4\r\na\r\nb\r\n"), Some(10));
        assert_eq!(scan_all(b"*-1\r\n"), Some(5));
        assert_eq!(scan_all(b"*0\r\n"), Some(4));
        assert_eq!(scan_all(b"_\r\n"), Some(3));
        assert_eq!(scan_all(b",1.5\r\n"), Some(6));
        assert_eq!(scan_all(b"#t\r\n"), Some(4));
    }

    #[test]
    fn nested_frames() {
        let f = b"*2\r\n*2\r\n:1\r\n$1\r\na\r\n%1\r\n+k\r\n~1\r\n:2\r\nextra";
        assert_eq!(scan_all(f), Some(f.len() - 5));
        let attr = b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n";
        assert_eq!(scan_all(attr), Some(attr.len()));
    }

    #[test]
    fn resumes_across_reads() {
        let f = b"*3\r\n$5\r\nhello\r\n:7\r\n*1\r\n$0\r\n\r\n";
        let mut s = FrameScanner::new();
        for end in 0..f.len() {
            assert_eq!(s.scan(&f[..end]).unwrap(), None, "at {end}");
        }
        assert_eq!(s.scan(f).unwrap(), Some(f.len()));
        // Reset after a complete frame.
        assert_eq!(s.scan(b"+OK\r\n").unwrap(), Some(5));
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let f = b"%9223372036854775807\r\n$1\r\na\r\n";
        assert_eq!(FrameScanner::new().scan(f).unwrap(), None);
        assert_eq!(children(f), None);
        assert_eq!(
            FrameScanner::new()
                .scan(b"|9223372036854775807\r\n")
                .unwrap(),
            None
        );
    }

    #[test]
    fn malformed() {
        assert!(FrameScanner::new().scan(b"?x\r\n").is_err());
        assert!(FrameScanner::new().scan(b"$x\r\n").is_err());
        assert!(FrameScanner::new().scan(b"*-2\r\n").is_err());
    }

    #[test]
    fn bulk_bodies() {
        assert_eq!(bulk_body(b"$3\r\nabc\r\n"), Some(&b"abc"[..]));
        assert_eq!(bulk_body(b"$4\r\na\r\nb\r\n"), Some(&b"a\r\nb"[..]));
        assert_eq!(bulk_body(b"$0\r\n\r\n"), Some(&b""[..]));
        for other in [
            &b"$-1\r\n"[..],
            b"_\r\n",
            b"+OK\r\n",
            b"$9\r\nshort\r\n",
            b"$",
            b"$3\r\nabcde",
        ] {
            assert_eq!(bulk_body(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn children_of_array() {
        let f = b"*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:1\r\n";
        let c = children(f).unwrap();
        let parts: Vec<&[u8]> = c.iter().map(|&(s, e)| &f[s..e]).collect();
        assert_eq!(
            parts,
            vec![&b"$1\r\na\r\n"[..], b"$-1\r\n", b"*1\r\n:1\r\n"]
        );
        assert_eq!(children(b"+OK\r\n"), None);
    }
}
