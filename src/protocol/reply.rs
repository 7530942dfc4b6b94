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

/// A double as the nodes' version replies with one (Redis 7.0: `%.17g`;
/// Redis 7.2 and later, and Valkey: the shortest form), a bulk string in
/// RESP2 and a `,` double in RESP3.
pub fn put_double(out: &mut BytesMut, value: f64, proto: Proto) {
    let text = if crate::nodes::at_least(7, 2) {
        format_shortest(value)
    } else {
        format_g17(value)
    };
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

/// A finite double as Redis 7.2 and later write one (`d2string`): whole
/// numbers below 2^62 as integers, others with the fewest digits that
/// read back the same, placed as `fpconv_dtoa`'s `emit_digits` places
/// them (plain up to 7 zeros, else `1.5e+20`, `1e-07`).
pub fn format_shortest(value: f64) -> String {
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.into();
    }
    const HALF_I64: f64 = (i64::MAX / 2) as f64;
    if value.fract() == 0.0 && value.abs() < HALF_I64 {
        return format!("{}", value as i64);
    }
    let negative = value < 0.0;
    let sci = format!("{:e}", value.abs());
    let (mantissa, exp10) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp10: i32 = exp10.parse().unwrap_or(0);
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let ndigits = digits.len() as i32;
    // value = digits × 10^k
    let k = exp10 - (ndigits - 1);
    let exp = exp10.abs();
    let mut out = String::with_capacity(24);
    if negative {
        out.push('-');
    }
    let text = |d: &[u8]| String::from_utf8_lossy(d).into_owned();
    if k >= 0 && exp < ndigits + 7 {
        out.push_str(&text(&digits));
        out.push_str(&"0".repeat(k as usize));
    } else if k < 0 && (k > -7 || exp < 4) {
        let offset = ndigits + k;
        if offset <= 0 {
            out.push_str("0.");
            out.push_str(&"0".repeat((-offset) as usize));
            out.push_str(&text(&digits));
        } else {
            let (whole, fraction) = digits.split_at(offset as usize);
            out.push_str(&text(whole));
            out.push('.');
            out.push_str(&text(fraction));
        }
    } else {
        let kept = (ndigits as usize).min(18 - usize::from(negative));
        out.push(char::from(digits[0]));
        if kept > 1 {
            out.push('.');
            out.push_str(&text(&digits[1..kept]));
        }
        out.push('e');
        out.push(if exp10 < 0 { '-' } else { '+' });
        out.push_str(&exp.to_string());
    }
    out
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
    fn doubles_as_redis_7_2_writes_them() {
        assert_eq!(format_shortest(0.201), "0.201");
        assert_eq!(format_shortest(0.008), "0.008");
        assert_eq!(format_shortest(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_shortest(12.5), "12.5");
        assert_eq!(format_shortest(-12.5), "-12.5");
        assert_eq!(format_shortest(3.0), "3");
        assert_eq!(format_shortest(-0.0), "-0");
        assert_eq!(format_shortest(1e20), "1e+20");
        assert_eq!(format_shortest(1.5e20), "1.5e+20");
        assert_eq!(format_shortest(1234567.0e10), "12345670000000000");
        assert_eq!(format_shortest(0.00001), "0.00001");
        assert_eq!(format_shortest(1e-7), "1e-7");
        assert_eq!(format_shortest(1.25e-7), "1.25e-7");
        assert_eq!(format_shortest(123.456e-5), "0.00123456");
        assert_eq!(format_shortest(1e300), "1e+300");
        assert_eq!(format_shortest(f64::MAX), "1.7976931348623157e+308");
        // Checked against Valkey 9.1.2's ZSCORE.
        assert_eq!(format_shortest(1e-6), "0.000001");
        assert_eq!(
            format_shortest(12345678901234567890.0),
            "12345678901234567000"
        );
        assert_eq!(format_shortest(4.7e18), "4.7e+18");
        assert_eq!(format_shortest(4e18), "4000000000000000000");
        assert_eq!(format_shortest(123456789.123), "123456789.123");
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
