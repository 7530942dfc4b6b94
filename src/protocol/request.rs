//! Incremental parser for client requests (RESP arrays of bulk strings and
//! inline commands).
//!
//! Clients only ever send arrays of bulk strings (RESP2 and RESP3 alike) or
//! inline commands, so this parser is specialised for that shape: it records
//! the byte range of every argument in a reused vector (no allocation per
//! command), resumes where it stopped when a command arrives in pieces (a
//! 1,000,000-argument `MSET` is scanned once, not once per read), and checks
//! every length against the configured limits before anything is buffered.
//! Replies from servers, which can be any RESP type, go through
//! [`crate::protocol::scan`] and the `redis-protocol` crate instead.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest inline command or `*`/`$` header line Redis accepts (64 KiB).
const MAX_INLINE: usize = 64 * 1024;

/// Limits applied while parsing.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest accepted bulk string (Redis `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Largest accepted number of arguments in one command.
    pub max_args: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
        }
    }
}

/// A protocol violation; the text follows Redis's own
/// (`-ERR Protocol error: ...`), after which the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*` header is not a number or too large.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$` header is not a number, negative or too large.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// An array element is not a bulk string.
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A header line without CRLF within 64 KiB.
    #[error("too big mbulk count string")]
    TooBigCount,
    /// A bulk header line without CRLF within 64 KiB.
    #[error("too big bulk count string")]
    TooBigBulkCount,
    /// An inline command without a newline within 64 KiB.
    #[error("too big inline request")]
    TooBigInline,
    /// An inline command with an unterminated quote.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// The bytes after a bulk string are not CRLF.
    #[error("invalid bulk terminator")]
    BadTerminator,
}

/// What one call to [`RequestParser::parse`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete command occupies the first `len` bytes of the buffer; its
    /// argument ranges are in [`RequestParser::args`].
    Command(usize),
    /// The first `len` bytes are an empty command (`*0`, `*-1`, blank inline
    /// line) that Redis silently skips.
    Skip(usize),
    /// An inline command of `len` bytes, re-encoded as a RESP array into
    /// [`RequestParser::take_inline`].
    Inline(usize),
    /// More bytes are needed.
    Incomplete,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Nothing parsed of the current command yet.
    Start,
    /// Inside an array: `remaining` arguments to go, next header at `pos`.
    Args { remaining: usize, pos: usize },
}

/// Resumable request parser; one per client connection.
#[derive(Debug)]
pub struct RequestParser {
    limits: RequestLimits,
    state: State,
    args: Vec<(usize, usize)>,
    inline: BytesMut,
}

impl RequestParser {
    /// Creates a parser with the given limits.
    pub fn new(limits: RequestLimits) -> Self {
        RequestParser {
            limits,
            state: State::Start,
            args: Vec::new(),
            inline: BytesMut::new(),
        }
    }

    /// Gives back the memory kept between commands (called when the
    /// client goes quiet); the next command allocates it again.
    pub fn release_memory(&mut self) {
        if matches!(self.state, State::Start) {
            self.args = Vec::new();
            self.inline = BytesMut::new();
        }
    }

    /// Argument byte ranges of the last complete command, relative to the
    /// start of the command (index 0 is the command name).
    pub fn args(&self) -> &[(usize, usize)] {
        &self.args
    }

    /// The RESP encoding of the last inline command.
    pub fn take_inline(&mut self) -> Bytes {
        self.inline.split().freeze()
    }

    /// Parses the command at the start of `buf`. The buffer must hold the
    /// same leading bytes as on the previous call until a result other than
    /// [`Parsed::Incomplete`] is returned.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Parsed, ProtocolError> {
        if let State::Start = self.state {
            let Some(&first) = buf.first() else {
                return Ok(Parsed::Incomplete);
            };
            if first != b'*' {
                return self.parse_inline(buf);
            }
            let Some((count, next)) = read_header(buf, 1, ProtocolError::TooBigCount)? else {
                return Ok(Parsed::Incomplete);
            };
            if count <= 0 {
                // Redis ignores `*0` and `*-1` without a reply.
                return Ok(Parsed::Skip(next));
            }
            let count = count as usize;
            if count > self.limits.max_args {
                return Err(ProtocolError::InvalidMultibulkLength);
            }
            self.args.clear();
            self.state = State::Args {
                remaining: count,
                pos: next,
            };
        }
        let State::Args {
            mut remaining,
            mut pos,
        } = self.state
        else {
            return Ok(Parsed::Incomplete);
        };
        while remaining > 0 {
            let Some(&kind) = buf.get(pos) else {
                break;
            };
            if kind != b'$' {
                self.state = State::Start;
                return Err(ProtocolError::ExpectedBulk(kind as char));
            }
            let header = read_header(buf, pos + 1, ProtocolError::TooBigBulkCount);
            let Some((len, data_start)) = header.inspect_err(|_| self.state = State::Start)? else {
                break;
            };
            if len < 0 || len as usize > self.limits.max_bulk_len {
                self.state = State::Start;
                return Err(ProtocolError::InvalidBulkLength);
            }
            let data_end = data_start + len as usize;
            if buf.len() < data_end + 2 {
                break;
            }
            if &buf[data_end..data_end + 2] != b"\r\n" {
                self.state = State::Start;
                return Err(ProtocolError::BadTerminator);
            }
            self.args.push((data_start, data_end));
            pos = data_end + 2;
            remaining -= 1;
        }
        if remaining == 0 {
            self.state = State::Start;
            Ok(Parsed::Command(pos))
        } else {
            self.state = State::Args { remaining, pos };
            Ok(Parsed::Incomplete)
        }
    }

    fn parse_inline(&mut self, buf: &[u8]) -> Result<Parsed, ProtocolError> {
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            if buf.len() > MAX_INLINE {
                return Err(ProtocolError::TooBigInline);
            }
            return Ok(Parsed::Incomplete);
        };
        let mut line = &buf[..nl];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        let words = split_inline(line)?;
        if words.is_empty() {
            return Ok(Parsed::Skip(nl + 1));
        }
        self.args.clear();
        self.inline.clear();
        self.inline.put_u8(b'*');
        put_decimal(&mut self.inline, words.len() as u64);
        self.inline.put_slice(b"\r\n");
        for word in &words {
            self.inline.put_u8(b'$');
            put_decimal(&mut self.inline, word.len() as u64);
            self.inline.put_slice(b"\r\n");
            let start = self.inline.len();
            self.inline.put_slice(word);
            self.args.push((start, start + word.len()));
            self.inline.put_slice(b"\r\n");
        }
        Ok(Parsed::Inline(nl + 1))
    }
}

/// Reads `<integer>\r\n` starting at `pos`; returns the value and the index
/// after the CRLF, or `None` when the line is not complete yet.
fn read_header(
    buf: &[u8],
    pos: usize,
    too_big: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = buf.get(pos..).unwrap_or_default();
    if let Some((value, len)) = short_decimal_line(rest) {
        return Ok(Some((value, pos + len)));
    }
    let Some(cr) = memchr::memchr(b'\r', rest) else {
        if rest.len() > MAX_INLINE {
            return Err(too_big);
        }
        return Ok(None);
    };
    if rest.len() < cr + 2 {
        return Ok(None);
    }
    let invalid = match too_big {
        ProtocolError::TooBigCount => ProtocolError::InvalidMultibulkLength,
        _ => ProtocolError::InvalidBulkLength,
    };
    if rest[cr + 1] != b'\n' {
        return Err(invalid);
    }
    let value = parse_i64(&rest[..cr]).ok_or(invalid)?;
    Ok(Some((value, pos + cr + 2)))
}

/// The common header: 1 to 18 digits and `\r\n`, read in one pass (a
/// `memchr` for the line end costs more than the line). Returns the value
/// and the length with the line end; `None` for anything else, which
/// [`read_header`] then handles in full.
pub(crate) fn short_decimal_line(rest: &[u8]) -> Option<(i64, usize)> {
    let mut value: i64 = 0;
    let mut i = 0;
    while let Some(&b) = rest.get(i) {
        let digit = b.wrapping_sub(b'0');
        if digit < 10 {
            if i == 18 {
                return None;
            }
            value = value * 10 + i64::from(digit);
            i += 1;
            continue;
        }
        return match (b, rest.get(i + 1)) {
            // `string2ll` refuses leading zeros ("03").
            (b'\r', Some(b'\n')) if i == 1 || (i > 1 && rest.first() != Some(&b'0')) => {
                Some((value, i + 2))
            }
            _ => None,
        };
    }
    None
}

/// Parses a strict decimal `i64` like Redis's `string2ll`: optional `-`, no
/// `+`, no leading zeros, no spaces, no overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] => return if neg { None } else { Some(0) },
        [b'0', ..] => return None,
        _ => {}
    }
    // Accumulate as a negative number so that i64::MIN parses.
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(c - b'0'))?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// Appends the decimal representation of `n`.
pub fn put_decimal(out: &mut BytesMut, n: u64) {
    // Most lengths and counts in a request have one or two digits.
    if n < 10 {
        out.put_u8(b'0' + n as u8);
        return;
    }
    if n < 100 {
        out.put_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
        return;
    }
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut n = n;
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&tmp[i..]);
}

/// Splits an inline command line into arguments like Redis's `sdssplitargs`:
/// whitespace separated, with `"..."` (C escapes, `\xHH`) and `'...'` quoting.
fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let mut word = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    match c {
                        b'\\'
                            if i + 3 < line.len()
                                && line[i + 1] == b'x'
                                && line[i + 2].is_ascii_hexdigit()
                                && line[i + 3].is_ascii_hexdigit() =>
                        {
                            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                            word.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                            i += 4;
                        }
                        b'\\' if i + 1 < line.len() => {
                            word.push(match line[i + 1] {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 8,
                                b'a' => 7,
                                other => other,
                            });
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                                return Err(ProtocolError::UnbalancedQuotes);
                            }
                            break;
                        }
                        other => {
                            word.push(other);
                            i += 1;
                        }
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                        word.push(b'\'');
                        i += 2;
                    } else if c == b'\'' {
                        i += 1;
                        if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        break;
                    } else {
                        word.push(c);
                        i += 1;
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_fast_path_matches_the_full_parse() {
        for line in [
            &b"0\r\n"[..],
            b"5\r\nx",
            b"123456789012345678\r\n",
            b"1234567890123456789\r\n",
            b"9999999999999999999\r\n",
            b"-1\r\n",
            b"12a\r\n",
            b"\r\n",
            b"12\r",
            b"12\rx",
            b"12",
            b"03\r\n",
            b"00\r\n",
            b"-0\r\n",
        ] {
            let full = match memchr::memchr(b'\r', line) {
                Some(cr) if line.get(cr + 1) == Some(&b'\n') => {
                    parse_i64(&line[..cr]).map(|v| (v, cr + 2))
                }
                _ => None,
            };
            let fast = short_decimal_line(line);
            if fast.is_some() {
                assert_eq!(fast, full, "{}", String::from_utf8_lossy(line));
            }
            let via_header = read_header(line, 0, ProtocolError::TooBigBulkCount);
            match full {
                Some(v) => assert_eq!(via_header, Ok(Some(v))),
                None => assert!(!matches!(via_header, Ok(Some(_)))),
            }
        }
        assert_eq!(
            short_decimal_line(b"123456789012345678\r\n"),
            Some((123_456_789_012_345_678, 20))
        );
        assert_eq!(short_decimal_line(b"1234567890123456789\r\n"), None);
    }

    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut p = RequestParser::new(RequestLimits::default());
        let mut buf = input;
        let mut out = Vec::new();
        loop {
            match p.parse(buf)? {
                Parsed::Command(n) => {
                    out.push(p.args().iter().map(|&(s, e)| buf[s..e].to_vec()).collect());
                    buf = &buf[n..];
                }
                Parsed::Inline(n) => {
                    let enc = p.take_inline();
                    out.push(p.args().iter().map(|&(s, e)| enc[s..e].to_vec()).collect());
                    buf = &buf[n..];
                }
                Parsed::Skip(n) => buf = &buf[n..],
                Parsed::Incomplete => return Ok(out),
            }
        }
    }

    #[test]
    fn parses_pipelined_commands() {
        let got = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(
            got,
            vec![vec![b"GET".to_vec(), b"a".to_vec()], vec![b"PING".to_vec()]]
        );
    }

    #[test]
    fn binary_safe_values() {
        let got = parse_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n").unwrap();
        assert_eq!(got[0][2], b"a\r\nb".to_vec());
    }

    #[test]
    fn resumes_byte_by_byte() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        let mut p = RequestParser::new(RequestLimits::default());
        for end in 0..input.len() {
            assert_eq!(
                p.parse(&input[..end]).unwrap(),
                Parsed::Incomplete,
                "at {end}"
            );
        }
        assert_eq!(p.parse(input).unwrap(), Parsed::Command(input.len()));
        assert_eq!(p.args().len(), 3);
    }

    #[test]
    fn inline_commands() {
        let got = parse_all(b"PING\r\nset k \"a b\\x41\\n\"\n\r\n  \r\necho 'it\\'s'\r\n").unwrap();
        assert_eq!(
            got,
            vec![
                vec![b"PING".to_vec()],
                vec![b"set".to_vec(), b"k".to_vec(), b"a bA\n".to_vec()],
                vec![b"echo".to_vec(), b"it's".to_vec()],
            ]
        );
    }

    #[test]
    fn empty_arrays_are_skipped() {
        let got = parse_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(got, vec![vec![b"PING".to_vec()]]);
    }

    #[test]
    fn protocol_errors() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*x\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\r\n:1\r\n", ProtocolError::ExpectedBulk(':')),
            (b"*1\r\n$-5\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$abc\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$1\r\nab\r\n", ProtocolError::BadTerminator),
            (b"*1\r\n$999999999999\r\n", ProtocolError::InvalidBulkLength),
            (b"*99999999999\r\n", ProtocolError::InvalidMultibulkLength),
            (b"get \"a\r\n", ProtocolError::UnbalancedQuotes),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_all(input).unwrap_err(),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn huge_declared_lengths_are_not_allocated() {
        let mut p = RequestParser::new(RequestLimits::default());
        // 512 MB declared but not sent: incomplete, nothing allocated.
        assert_eq!(
            p.parse(b"*2\r\n$3\r\nGET\r\n$536870912\r\n").unwrap(),
            Parsed::Incomplete
        );
    }

    #[test]
    fn too_long_header_line() {
        let mut input = b"*".to_vec();
        input.extend(std::iter::repeat_n(b'1', MAX_INLINE + 10));
        assert_eq!(parse_all(&input).unwrap_err(), ProtocolError::TooBigCount);
        let long_inline = vec![b'a'; MAX_INLINE + 10];
        assert_eq!(
            parse_all(&long_inline).unwrap_err(),
            ProtocolError::TooBigInline
        );
    }

    #[test]
    fn parse_i64_matches_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-0"), None);
        assert_eq!(parse_i64(b"12"), Some(12));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b" 1"), None);
        assert_eq!(parse_i64(b"1 "), None);
        assert_eq!(parse_i64(b"007"), None);
        assert_eq!(parse_i64(b"+1"), None);
    }
}
