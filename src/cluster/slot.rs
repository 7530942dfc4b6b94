//! Key → slot hashing: CRC16/XMODEM of the key (or of its `{hash tag}`) mod 16384.

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The slot of `key`, honouring Redis's hash-tag rule: if the key contains a
/// `{` followed later by a `}` with at least one byte between them, only the
/// bytes between the first `{` and the first `}` after it are hashed.
#[inline]
pub fn slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_part(key)) & 0x3FFF
}

/// The part of `key` that is hashed.
#[inline]
pub fn hash_part(key: &[u8]) -> &[u8] {
    // A plain loop beats memchr's setup on the shortest keys only.
    let open = if key.len() <= 8 {
        key.iter().position(|&b| b == b'{')
    } else {
        memchr::memchr(b'{', key)
    };
    if let Some(open) = open {
        if let Some(len) = memchr::memchr(b'}', &key[open + 1..]) {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// A temporary key in the slot of `key` for the proxy's own use (`what`
/// names the use): `{tag}slotbridge:<what>:<pid>:<random>`, a name no
/// client key is expected to have (the process id and a number drawn at
/// start).
pub fn temp_key(key: &[u8], what: &str) -> Vec<u8> {
    static SUFFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let suffix = SUFFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        format!("{}:{:016x}", std::process::id(), h.finish())
    });
    let mut temp = b"{".to_vec();
    temp.extend_from_slice(&tag_for(key));
    temp.extend_from_slice(b"}slotbridge:");
    temp.extend_from_slice(what.as_bytes());
    temp.push(b':');
    temp.extend_from_slice(suffix.as_bytes());
    temp
}

/// Bytes `t` such that a key `{t}...` hashes to the slot of `key`: its
/// hashed part when that can be a tag, else the smallest decimal number
/// that hashes there (from a table made at first use).
pub fn tag_for(key: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let part = hash_part(key);
    if !part.is_empty() && !part.contains(&b'}') {
        return std::borrow::Cow::Borrowed(part);
    }
    static NUMBERS: std::sync::OnceLock<Box<[u32]>> = std::sync::OnceLock::new();
    let numbers = NUMBERS.get_or_init(|| {
        let mut numbers = vec![u32::MAX; SLOTS];
        let mut missing = SLOTS;
        let mut n = 0u32;
        let mut digits = bytes::BytesMut::with_capacity(10);
        while missing > 0 && n < 1 << 24 {
            digits.clear();
            crate::protocol::request::put_decimal(&mut digits, u64::from(n));
            let s = usize::from(slot(&digits));
            if numbers[s] == u32::MAX {
                numbers[s] = n;
                missing -= 1;
            }
            n += 1;
        }
        numbers.into_boxed_slice()
    });
    let n = numbers.get(usize::from(slot(key))).copied().unwrap_or(0);
    std::borrow::Cow::Owned(n.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"123456789"), 0x31C3 & 0x3FFF);
        assert_eq!(slot(b""), 0);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
    }

    #[test]
    fn hash_tag_edge_cases() {
        assert_eq!(hash_part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_part(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_part(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_part(b"{"), b"{");
        assert_eq!(hash_part(b"a}b{c"), b"a}b{c");
    }

    #[test]
    fn tags_hash_to_the_slot_of_their_key() {
        for key in [
            &b"foo"[..],
            b"{user}a",
            b"a{b",
            b"a}b",
            b"{}x",
            b"",
            b"x{}y}",
        ] {
            let mut tagged = b"{".to_vec();
            tagged.extend_from_slice(&tag_for(key));
            tagged.extend_from_slice(b"}tmp");
            assert_eq!(slot(&tagged), slot(key), "{}", String::from_utf8_lossy(key));
        }
    }
}
