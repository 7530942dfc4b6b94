//! `LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]` of keys in
//! two slots: both values read with `GET`, the longest common subsequence
//! computed by the proxy exactly as Redis 7.0's `lcsCommand` computes it
//! (the same table, the same walk back, so the same string and ranges).

use bytes::{Bytes, BytesMut};

use crate::protocol::reply::{self, put_array, put_bulk, put_header, put_int, Proto};

/// `LCS`'s options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LcsOptions {
    /// `LEN`: the length only.
    pub len: bool,
    /// `IDX`: the matching ranges and the length.
    pub idx: bool,
    /// `WITHMATCHLEN`: each range with its length.
    pub withmatchlen: bool,
    /// `MINMATCHLEN`: ranges shorter than this are left out.
    pub minmatchlen: u64,
}

/// The largest table (cells of 4 bytes) the proxy builds: 64 MiB.
const MAX_CELLS: u64 = 16 << 20;

/// Parses the options after the two keys, with Redis's errors in its
/// order (the keys' types are checked before, by the caller).
pub fn parse_options(args: &[&[u8]]) -> Result<LcsOptions, &'static str> {
    let mut o = LcsOptions {
        len: false,
        idx: false,
        withmatchlen: false,
        minmatchlen: 0,
    };
    let mut j = 0;
    while j < args.len() {
        let opt = args[j];
        if opt.eq_ignore_ascii_case(b"idx") {
            o.idx = true;
        } else if opt.eq_ignore_ascii_case(b"len") {
            o.len = true;
        } else if opt.eq_ignore_ascii_case(b"withmatchlen") {
            o.withmatchlen = true;
        } else if opt.eq_ignore_ascii_case(b"minmatchlen") && j + 1 < args.len() {
            let n = crate::command::keys::parse_i64(args[j + 1])
                .ok_or("ERR value is not an integer or out of range")?;
            o.minmatchlen = n.max(0) as u64;
            j += 1;
        } else {
            return Err("ERR syntax error");
        }
        j += 1;
    }
    if o.len && o.idx {
        return Err("ERR If you want both the length and indexes, please just use IDX.");
    }
    Ok(o)
}

/// The reply to `LCS` of the values `a` and `b` (a missing key is empty).
pub fn reply(o: &LcsOptions, a: &[u8], b: &[u8], proto: Proto) -> Bytes {
    let (alen, blen) = (a.len(), b.len());
    let cells = (alen as u64 + 1) * (blen as u64 + 1);
    if cells > MAX_CELLS {
        return reply::error(&format!(
            "ERR slotbridge: LCS of keys in two slots is computed by the proxy, which builds tables of at most {MAX_CELLS} cells ((length1+1)*(length2+1)); put both keys in one slot with a {{hash tag}} for longer strings"
        ));
    }
    let width = blen + 1;
    let mut lcs = vec![0u32; (alen + 1) * width];
    let at = |i: usize, j: usize| i * width + j;
    for i in 1..=alen {
        for j in 1..=blen {
            lcs[at(i, j)] = if a[i - 1] == b[j - 1] {
                lcs[at(i - 1, j - 1)] + 1
            } else {
                lcs[at(i - 1, j)].max(lcs[at(i, j - 1)])
            };
        }
    }
    let total = lcs[at(alen, blen)];
    let compute = o.idx || !o.len;
    let mut result = vec![0u8; total as usize];
    let mut idx = total as usize;
    // Ranges: (a_start, a_end, b_start, b_end); `a_start == alen` marks
    // "none open", as in Redis.
    let mut ranges: Vec<[u64; 5]> = Vec::new();
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (alen, 0usize, 0usize, 0usize);
    let (mut i, mut j) = (alen, blen);
    while compute && i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            result[idx - 1] = a[i - 1];
            if a_start == alen {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, j - 1, j - 1);
            } else if a_start == i && b_start == j {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            j -= 1;
        } else {
            if lcs[at(i - 1, j)] > lcs[at(i, j - 1)] {
                i -= 1;
            } else {
                j -= 1;
            }
            if a_start != alen {
                emit = true;
            }
        }
        // Redis computes it in 32 bits, wrapping when no range is open.
        let match_len = (a_end as u32).wrapping_sub(a_start as u32).wrapping_add(1);
        if emit {
            if o.minmatchlen == 0 || u64::from(match_len) >= o.minmatchlen {
                ranges.push([
                    a_start as u64,
                    a_end as u64,
                    b_start as u64,
                    b_end as u64,
                    u64::from(match_len),
                ]);
            }
            a_start = alen;
        }
    }
    let mut out = BytesMut::new();
    if o.idx {
        if proto == Proto::Resp3 {
            put_header(&mut out, b'%', 2);
        } else {
            put_array(&mut out, 4);
        }
        put_bulk(&mut out, b"matches");
        put_array(&mut out, ranges.len());
        for r in &ranges {
            put_array(&mut out, 2 + usize::from(o.withmatchlen));
            put_array(&mut out, 2);
            put_int(&mut out, r[0] as i64);
            put_int(&mut out, r[1] as i64);
            put_array(&mut out, 2);
            put_int(&mut out, r[2] as i64);
            put_int(&mut out, r[3] as i64);
            if o.withmatchlen {
                put_int(&mut out, r[4] as i64);
            }
        }
        put_bulk(&mut out, b"len");
        put_int(&mut out, i64::from(total));
    } else if o.len {
        put_int(&mut out, i64::from(total));
    } else {
        put_bulk(&mut out, &result);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(line: &str) -> Result<LcsOptions, &'static str> {
        let args: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
        parse_options(&args)
    }

    #[test]
    fn the_documented_example() {
        let (a, b) = (b"ohmytext", b"mynewtext");
        let text = |o: &str| {
            String::from_utf8_lossy(&reply(&opts(o).unwrap(), a, b, Proto::Resp2)).into_owned()
        };
        assert_eq!(text(""), "$6\r\nmytext\r\n");
        assert_eq!(text("LEN"), ":6\r\n");
        assert_eq!(
            text("IDX"),
            "*4\r\n$7\r\nmatches\r\n*2\r\n*2\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n*2\r\n*2\r\n:2\r\n:3\r\n*2\r\n:0\r\n:1\r\n$3\r\nlen\r\n:6\r\n"
        );
        assert_eq!(
            text("IDX MINMATCHLEN 4 WITHMATCHLEN"),
            "*4\r\n$7\r\nmatches\r\n*1\r\n*3\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n:4\r\n$3\r\nlen\r\n:6\r\n"
        );
        assert_eq!(
            opts("LEN IDX"),
            Err("ERR If you want both the length and indexes, please just use IDX.")
        );
        assert_eq!(
            opts("MINMATCHLEN x"),
            Err("ERR value is not an integer or out of range")
        );
        assert_eq!(opts("MINMATCHLEN"), Err("ERR syntax error"));
        assert_eq!(opts("MINMATCHLEN -3").unwrap().minmatchlen, 0);
        assert_eq!(
            &reply(&opts("").unwrap(), b"", b"abc", Proto::Resp2)[..],
            b"$0\r\n\r\n"
        );
    }
}
