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
}
