//! `GEORADIUS ... STORE`, `GEORADIUSBYMEMBER ... STORE` and
//! `GEOSEARCHSTORE` with the source and the destination in different
//! slots.
//!
//! The node of the source runs the client's own command, with a
//! temporary key of the source's slot as its destination, inside one
//! script that then reads that key back (members and exact scores:
//! geohashes for `STORE`, distances for `STOREDIST`) and deletes it. So
//! the search, its options and its errors are the node's own. The proxy
//! then stores the members in the real destination, on its master, as the
//! sorted-set stores do.

use bytes::Bytes;

use crate::command::keys::Args;
use crate::protocol::reply;
use crate::protocol::scan::children;

/// The script run on the source's master: `KEYS[1]` the source,
/// `KEYS[2]` the temporary destination, `ARGV` the whole command (its
/// destination replaced by `KEYS[2]`). Returns the command's error, or
/// its count and the stored members with their scores.
const READ_SCRIPT: &[u8] = b"#!lua\n\
    local n = redis.pcall(unpack(ARGV)) \
    if type(n) == 'table' and n.err then return n end \
    local z = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES') \
    redis.call('DEL', KEYS[2]) \
    return {n, z}";

/// The argument indexes of the source and of the destination of a
/// storing geo command (`None`: not one, or no destination named).
/// `GEORADIUS`'s options start at 6, `GEORADIUSBYMEMBER`'s at 5; the last
/// `STORE` or `STOREDIST` wins, as in Redis.
pub fn store_keys<A: Args + ?Sized>(name: &str, args: &A) -> Option<(usize, usize)> {
    let options_from = match name {
        "geosearchstore" => return (args.len() > 2).then_some((2, 1)),
        "georadius" => 6,
        "georadiusbymember" => 5,
        _ => return None,
    };
    let mut dest = None;
    let mut i = options_from;
    while i + 1 < args.len() {
        let arg = args.get(i);
        if arg.eq_ignore_ascii_case(b"store") || arg.eq_ignore_ascii_case(b"storedist") {
            dest = Some(i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
    dest.map(|d| (1, d))
}

/// The read sent to the source's master: the script with the client's
/// command, its destination (argument `dest`) replaced by a temporary key
/// of the source's slot.
pub fn read_request<A: Args + ?Sized>(args: &A, src: usize, dest: usize) -> Bytes {
    let temp = crate::cluster::slot::temp_key(args.get(src), "geo");
    let mut out: Vec<&[u8]> = vec![b"EVAL", READ_SCRIPT, b"2", args.get(src), &temp];
    out.extend((0..args.len()).map(|i| if i == dest { &temp[..] } else { args.get(i) }));
    reply::command(out)
}

/// The count the command gave and the members it stored, from the
/// script's reply; its error (or an unexpected shape) as the reply
/// otherwise.
pub fn parse_read(frame: &[u8]) -> Result<(i64, crate::zset::Members<'_>), Bytes> {
    if frame.first() == Some(&b'-') {
        return Err(Bytes::copy_from_slice(frame));
    }
    let unexpected = || {
        reply::error(
            "ERR slotbridge: unexpected reply shape from a server while storing a geo search",
        )
    };
    let parts = children(frame).ok_or_else(unexpected)?;
    let [(ns, ne), (zs, ze)] = parts.as_slice() else {
        return Err(unexpected());
    };
    let n = crate::merge::integer(&frame[*ns..*ne]).ok_or_else(unexpected)?;
    let members = crate::zset::members(&frame[*zs..*ze]).ok_or_else(unexpected)?;
    Ok((n, members))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<&[u8]> {
        line.split(' ').map(str::as_bytes).collect()
    }

    #[test]
    fn finds_source_and_last_destination() {
        let a = args("GEORADIUS src 15 37 200 km STORE d1 STOREDIST d2 COUNT 3");
        assert_eq!(store_keys("georadius", &a[..]), Some((1, 9)));
        let a = args("GEORADIUSBYMEMBER src m 200 km ASC STORE d");
        assert_eq!(store_keys("georadiusbymember", &a[..]), Some((1, 7)));
        let a = args("GEOSEARCHSTORE d src FROMMEMBER m BYRADIUS 1 km");
        assert_eq!(store_keys("geosearchstore", &a[..]), Some((2, 1)));
        let a = args("GEORADIUS src 15 37 200 km STORE");
        assert_eq!(store_keys("georadius", &a[..]), None);
    }

    #[test]
    fn the_read_replaces_the_destination() {
        let a = args("GEOSEARCHSTORE d src FROMMEMBER m BYRADIUS 1 km");
        let req = read_request(&a[..], 2, 1);
        let temp = crate::cluster::slot::temp_key(b"src", "geo");
        assert_eq!(
            crate::cluster::slot::slot(&temp),
            crate::cluster::slot::slot(b"src")
        );
        let text = String::from_utf8_lossy(&req);
        assert!(!text.contains("\r\nd\r\n"), "{text}");
        assert_eq!(text.matches(&*String::from_utf8_lossy(&temp)).count(), 2);
    }

    #[test]
    fn parses_the_count_and_members() {
        let frame = b"*2\r\n:2\r\n*4\r\n$1\r\na\r\n$3\r\n1.5\r\n$1\r\nb\r\n$1\r\n2\r\n";
        let (n, m) = parse_read(frame).unwrap();
        assert_eq!(n, 2);
        assert_eq!(m, vec![(&b"a"[..], 1.5), (&b"b"[..], 2.0)]);
        let err = b"-ERR syntax error\r\n";
        assert_eq!(parse_read(err), Err(Bytes::from_static(err)));
        assert!(parse_read(b":1\r\n").is_err());
    }
}
