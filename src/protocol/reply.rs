//! Building replies that the proxy answers itself, in the client's protocol.

use bytes::{BufMut, Bytes, BytesMut};

use super::request::put_decimal;

/// The RESP version a client (or a backend connection) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Proto {
    /// RESP2, the default until `HELLO 3`.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// `+OK\r\n`
pub const OK: &[u8] = b"+OK\r\n";
/// `+PONG\r\n`
pub const PONG: &[u8] = b"+PONG\r\n";

/// Appends a bulk string.
pub fn put_bulk(out: &mut BytesMut, value: &[u8]) {
    out.reserve(value.len() + 16);
    out.put_u8(b'$');
    put_decimal(out, value.len() as u64);
    out.put_slice(b"\r\n");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Appends an integer reply.
pub fn put_int(out: &mut BytesMut, n: i64) {
    out.put_u8(b':');
    if n < 0 {
        out.put_u8(b'-');
    }
    put_decimal(out, n.unsigned_abs());
    out.put_slice(b"\r\n");
}

/// Appends an aggregate header (`*`, `%`, `~`, `>`) with `n` entries.
pub fn put_header(out: &mut BytesMut, kind: u8, n: usize) {
    out.put_u8(kind);
    put_decimal(out, n as u64);
    out.put_slice(b"\r\n");
}

/// Appends an array header.
pub fn put_array(out: &mut BytesMut, n: usize) {
    put_header(out, b'*', n);
}

/// Appends a map header: `%n` in RESP3, `*2n` in RESP2.
pub fn put_map(out: &mut BytesMut, proto: Proto, n: usize) {
    match proto {
        Proto::Resp3 => put_header(out, b'%', n),
        Proto::Resp2 => put_header(out, b'*', n * 2),
    }
}

/// Appends a null: `_` in RESP3, `$-1` in RESP2.
pub fn put_null(out: &mut BytesMut, proto: Proto) {
    out.put_slice(match proto {
        Proto::Resp3 => b"_\r\n",
        Proto::Resp2 => b"$-1\r\n",
    });
}

/// Appends a simple string (must not contain CR or LF).
pub fn put_simple(out: &mut BytesMut, s: &str) {
    out.put_u8(b'+');
    out.put_slice(s.as_bytes());
    out.put_slice(b"\r\n");
}

/// An error reply from a message such as `ERR something` (CR/LF replaced).
pub fn error(msg: &str) -> Bytes {
    error_bytes(msg.as_bytes())
}

/// [`error`] of bytes that need not be UTF-8 (a client's `DEBUG ERROR`
/// text is sent back as it came).
pub fn error_bytes(msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.len() + 3);
    out.put_u8(b'-');
    for &b in msg {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// An integer reply.
pub fn int(n: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    put_int(&mut out, n);
    out.freeze()
}

/// `text` as Redis sends a text reply (`INFO`, `CLIENT LIST`): a bulk
/// string in RESP2, a verbatim string of format `txt` in RESP3.
pub fn text(proto: Proto, text: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 32);
    match proto {
        Proto::Resp2 => put_bulk(&mut out, text),
        Proto::Resp3 => {
            out.put_u8(b'=');
            put_decimal(&mut out, text.len() as u64 + 4);
            out.put_slice(b"\r\ntxt:");
            out.put_slice(text);
            out.put_slice(b"\r\n");
        }
    }
    out.freeze()
}

/// A bulk string reply.
pub fn bulk(value: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    put_bulk(&mut out, value);
    out.freeze()
}

/// Encodes a command (array of bulk strings) for a server.
pub fn command<I, A>(args: I) -> Bytes
where
    I: IntoIterator<Item = A>,
    I::IntoIter: ExactSizeIterator,
    A: AsRef<[u8]>,
{
    let args = args.into_iter();
    let mut out = BytesMut::new();
    put_array(&mut out, args.len());
    for a in args {
        put_bulk(&mut out, a.as_ref());
    }
    out.freeze()
}

/// A double as Redis 7.0 replies with one: `%.17g`, a bulk string in
/// RESP2 and a `,` double in RESP3.
pub fn put_double(out: &mut BytesMut, value: f64, proto: Proto) {
    let text = format_g17(value);
    match proto {
        Proto::Resp2 => put_bulk(out, text.as_bytes()),
        Proto::Resp3 => {
            out.extend_from_slice(b",");
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// C's `printf("%.17g", value)` for finite values.
pub fn format_g17(value: f64) -> String {
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // 17 significant digits, correctly rounded, and the exponent.
    let sci = format!("{value:.16e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if !(-4..17).contains(&exp) {
        let mut m = format!("{}.{}", &digits[..1], &digits[1..]);
        trim_fraction(&mut m);
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{m}e{esign}{:02}", exp.abs());
    }
    let mut text = if exp >= 0 {
        let point = exp as usize + 1;
        format!("{}.{}", &digits[..point], &digits[point..])
    } else {
        format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
    };
    trim_fraction(&mut text);
    format!("{sign}{text}")
}

/// Drops trailing zeros of a fraction, and the point if nothing is left.
fn trim_fraction(text: &mut String) {
    if text.contains('.') {
        while text.ends_with('0') {
            text.pop();
        }
        if text.ends_with('.') {
            text.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_as_printf_g17() {
        // As redis-server 7.0 wrote ages in ACL LOG.
        assert_eq!(format_g17(0.008), "0.0080000000000000002");
        assert_eq!(format_g17(0.019), "0.019");
        assert_eq!(format_g17(0.028), "0.028000000000000001");
        assert_eq!(format_g17(12.5), "12.5");
        assert_eq!(format_g17(3.0), "3");
        assert_eq!(format_g17(1e20), "1e+20");
        assert_eq!(format_g17(0.00001), "1.0000000000000001e-05");
        assert_eq!(format_g17(0.0), "0");
    }

    #[test]
    fn encodings() {
        let mut b = BytesMut::new();
        put_int(&mut b, -42);
        put_map(&mut b, Proto::Resp2, 2);
        put_map(&mut b, Proto::Resp3, 2);
        put_null(&mut b, Proto::Resp2);
        put_null(&mut b, Proto::Resp3);
        assert_eq!(&b[..], b":-42\r\n*4\r\n%2\r\n$-1\r\n_\r\n");
        assert_eq!(&error("ERR a\r\nb")[..], b"-ERR a  b\r\n");
        assert_eq!(
            &command(["GET", "k"])[..],
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
        assert_eq!(&int(i64::MIN)[..], b":-9223372036854775808\r\n");
    }
}
