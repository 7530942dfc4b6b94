//! HyperLogLog registers merged and counted as Redis does, for `PFCOUNT`
//! over keys in several slots.
//!
//! A node counts the union of several HyperLogLogs only when their keys
//! share a slot. Across slots the proxy reads each value with `GET` and
//! does what `pfcountCommand` does with them (Redis's `hyperloglog.c`): the
//! same validity checks and errors, the same two encodings (dense: 16,384
//! packed 6-bit registers; sparse: run-length opcodes) merged register by
//! register into their maximum, and the same estimator (Ertl's, which Redis
//! uses since 5.0), computed with the same floating-point operations in the
//! same order, so the count is the integer one server would answer (on
//! x86-64, where neither side fuses multiplications and additions).

/// Registers per HyperLogLog (Redis's `HLL_P` = 14).
const REGISTERS: usize = 1 << 14;
/// Bits of a hash left after the register index (`HLL_Q`).
const Q: usize = 64 - 14;
/// Magic, encoding, 3 unused bytes, 8 bytes of cached cardinality.
const HEADER: usize = 16;
/// Length of a dense value: header and 16,384 registers of 6 bits.
const DENSE_SIZE: usize = HEADER + (REGISTERS * 6).div_ceil(8);
/// `HLL_DENSE`.
const DENSE: u8 = 0;
/// The highest encoding a stored value may have (`HLL_MAX_ENCODING`).
const MAX_ENCODING: u8 = 1;
/// `HLL_ALPHA_INF`: 0.5 / ln 2.
#[allow(clippy::excessive_precision)]
const ALPHA_INF: f64 = 0.721347520444481703680;

/// Redis's reply to a string that is not a HyperLogLog.
pub const NOT_HLL: &str = "WRONGTYPE Key is not a valid HyperLogLog string value.";
/// Redis's reply to a sparse value whose runs do not cover every register.
pub const CORRUPT: &str = "INVALIDOBJ Corrupted HLL object detected";

/// Why a value could not be merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not a HyperLogLog at all ([`NOT_HLL`]).
    NotHll,
    /// A sparse encoding that does not add up ([`CORRUPT`]).
    Corrupt,
}

impl Invalid {
    /// The error text Redis answers with.
    pub fn message(self) -> &'static str {
        match self {
            Invalid::NotHll => NOT_HLL,
            Invalid::Corrupt => CORRUPT,
        }
    }
}

/// The register-wise maximum of the HyperLogLogs merged so far, one byte
/// per register (Redis's internal "raw" encoding).
#[derive(Clone)]
pub struct Registers(Box<[u8]>);

impl Default for Registers {
    fn default() -> Self {
        Registers(vec![0; REGISTERS].into_boxed_slice())
    }
}

impl std::fmt::Debug for Registers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.iter().filter(|&&r| r != 0).count();
        write!(f, "Registers({set} of {REGISTERS} set)")
    }
}

impl Registers {
    /// Merges one stored value (the bytes `GET` returned), checked as
    /// `isHLLObjectOrReply` and merged as `hllMerge`; says whether it was
    /// dense.
    pub fn merge(&mut self, value: &[u8]) -> Result<bool, Invalid> {
        if value.len() < HEADER || &value[..4] != b"HYLL" || value[4] > MAX_ENCODING {
            return Err(Invalid::NotHll);
        }
        let data = &value[HEADER..];
        if value[4] == DENSE {
            if value.len() != DENSE_SIZE {
                return Err(Invalid::NotHll);
            }
            for (i, max) in self.0.iter_mut().enumerate() {
                let r = dense_register(data, i);
                if r > *max {
                    *max = r;
                }
            }
            return Ok(true);
        }
        self.merge_sparse(data).map(|()| false)
    }

    /// A stored value holding these registers, dense or sparse. Sparse
    /// needs every register at most 32, which holds when only sparse values
    /// were merged.
    pub fn encode(&self, dense: bool) -> Vec<u8> {
        let mut out = b"HYLL\0\0\0\0\0\0\0\0\0\0\0\x80".to_vec();
        if dense || self.0.iter().any(|&r| r > 32) {
            out.resize(DENSE_SIZE, 0);
            let data = &mut out[HEADER..];
            for (i, &r) in self.0.iter().enumerate() {
                let byte = i * 6 / 8;
                let shift = (i * 6) & 7;
                data[byte] |= r << shift;
                if shift > 2 {
                    data[byte + 1] |= r >> (8 - shift);
                }
            }
            return out;
        }
        out[4] = 1;
        let mut i = 0;
        while let Some(&r) = self.0.get(i) {
            let run = self.0[i..].iter().take_while(|&&x| x == r).count();
            if r == 0 {
                let run = run.min(1 << 14);
                let n = run - 1;
                if n < 64 {
                    out.push(n as u8);
                } else {
                    out.extend([0x40 | (n >> 8) as u8, n as u8]);
                }
                i += run;
            } else {
                let run = run.min(4);
                out.push(0x80 | ((r - 1) << 2) | (run as u8 - 1));
                i += run;
            }
        }
        out
    }

    /// Sparse opcodes: `00xxxxxx` a run of up to 64 empty registers,
    /// `01xxxxxx yyyyyyyy` one of up to 16,384, `1vvvvvxx` up to 4
    /// registers of value 1 to 32. Redis reads past a truncated two-byte
    /// opcode into the string's terminating zero; so does this.
    fn merge_sparse(&mut self, data: &[u8]) -> Result<(), Invalid> {
        let mut i = 0usize;
        let mut p = 0usize;
        while let Some(&op) = data.get(p) {
            if op & 0xc0 == 0 {
                i += usize::from(op & 0x3f) + 1;
                p += 1;
            } else if op & 0xc0 == 0x40 {
                let low = data.get(p + 1).copied().unwrap_or(0);
                i += ((usize::from(op & 0x3f) << 8) | usize::from(low)) + 1;
                p += 2;
            } else {
                let len = usize::from(op & 0x3) + 1;
                let value = ((op >> 2) & 0x1f) + 1;
                if i + len > REGISTERS {
                    // Refused even when the registers before it add up, as
                    // since the fix of CVE-2025-32023 (7.2.10, 7.4.5, 8.0.3
                    // and distributions' builds of older versions, Debian's
                    // 7.0.15 among them); unpatched servers accepted it.
                    return Err(Invalid::Corrupt);
                }
                for max in &mut self.0[i..i + len] {
                    if value > *max {
                        *max = value;
                    }
                }
                i += len;
                p += 1;
            }
        }
        if i == REGISTERS {
            Ok(())
        } else {
            Err(Invalid::Corrupt)
        }
    }

    /// The estimated cardinality (`hllCount` over raw registers).
    pub fn count(&self) -> u64 {
        let mut histogram = [0u32; 64];
        for &r in self.0.iter() {
            histogram[usize::from(r & 63)] += 1;
        }
        let m = REGISTERS as f64;
        let mut z = m * tau((m - f64::from(histogram[Q + 1])) / m);
        for j in (1..=Q).rev() {
            z += f64::from(histogram[j]);
            z *= 0.5;
        }
        z += m * sigma(f64::from(histogram[0]) / m);
        // llroundl: halves away from zero, as f64::round.
        (ALPHA_INF * m * m / z).round() as u64
    }
}

/// Register `i` of dense data (6 bits, least significant first). The last
/// register's second byte is Redis's terminating zero.
fn dense_register(data: &[u8], i: usize) -> u8 {
    let byte = i * 6 / 8;
    let shift = (i * 6) & 7;
    let b0 = u32::from(data.get(byte).copied().unwrap_or(0));
    let b1 = u32::from(data.get(byte + 1).copied().unwrap_or(0));
    (((b0 >> shift) | (b1 << (8 - shift))) & 63) as u8
}

/// `hllSigma`.
fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let previous = z;
        z += x * y;
        y += y;
        if previous == z {
            return z;
        }
    }
}

/// `hllTau`.
fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let previous = z;
        y *= 0.5;
        z -= (1.0 - x).powf(2.0) * y;
        if previous == z {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis's `MurmurHash64A` with `hllPatLen`'s seed, to build values as
    /// `PFADD` does.
    fn murmur(key: &[u8]) -> u64 {
        const M: u64 = 0xc6a4a7935bd1e995;
        let mut h: u64 = 0xadc83b19 ^ (key.len() as u64).wrapping_mul(M);
        let mut chunks = key.chunks_exact(8);
        for c in &mut chunks {
            let mut k = u64::from_le_bytes(c.try_into().unwrap());
            k = k.wrapping_mul(M);
            k ^= k >> 47;
            k = k.wrapping_mul(M);
            h ^= k;
            h = h.wrapping_mul(M);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            for (i, &b) in rest.iter().enumerate() {
                h ^= u64::from(b) << (8 * i);
            }
            h = h.wrapping_mul(M);
        }
        h ^= h >> 47;
        h = h.wrapping_mul(M);
        h ^= h >> 47;
        h
    }

    /// The register and run length `hllPatLen` gives an element.
    fn position(element: &[u8]) -> (usize, u8) {
        let hash = murmur(element);
        let index = (hash as usize) & (REGISTERS - 1);
        let rest = (hash >> 14) | (1 << Q);
        (index, rest.trailing_zeros() as u8 + 1)
    }

    fn encoded(registers: &[u8], dense: bool) -> Vec<u8> {
        let mut r = Registers::default();
        r.0.copy_from_slice(registers);
        r.encode(dense)
    }

    fn dense(registers: &[u8]) -> Vec<u8> {
        encoded(registers, true)
    }

    fn sparse(registers: &[u8]) -> Vec<u8> {
        encoded(registers, false)
    }

    fn registers_of(elements: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
        let mut r = vec![0u8; REGISTERS];
        for e in elements {
            let (i, n) = position(&e);
            r[i] = r[i].max(n);
        }
        r
    }

    fn count_of(values: &[&[u8]]) -> Result<u64, Invalid> {
        let mut max = Registers::default();
        for v in values {
            max.merge(v)?;
        }
        Ok(max.count())
    }

    #[test]
    fn empty_counts_zero() {
        assert_eq!(Registers::default().count(), 0);
        assert_eq!(count_of(&[&sparse(&[0; REGISTERS])]), Ok(0));
        assert_eq!(count_of(&[&dense(&[0; REGISTERS])]), Ok(0));
    }

    #[test]
    fn estimates_are_close_and_encodings_agree() {
        for n in [1usize, 10, 1000, 50_000] {
            let r = registers_of((0..n).map(|i| format!("e{i}").into_bytes()));
            let d = count_of(&[&dense(&r)]).unwrap();
            if r.iter().all(|&x| x <= 32) {
                assert_eq!(count_of(&[&sparse(&r)]), Ok(d));
            }
            let error = (d as f64 - n as f64).abs() / n as f64;
            assert!(error < 0.02, "{n} elements counted as {d}");
        }
    }

    #[test]
    fn merging_is_the_union() {
        let a = registers_of((0..3000).map(|i| format!("e{i}").into_bytes()));
        let b = registers_of((2000..5000).map(|i| format!("e{i}").into_bytes()));
        let both = registers_of((0..5000).map(|i| format!("e{i}").into_bytes()));
        let union = count_of(&[&dense(&both)]).unwrap();
        assert_eq!(count_of(&[&dense(&a), &sparse(&b)]), Ok(union));
        assert_eq!(count_of(&[&sparse(&b), &dense(&a), &dense(&a)]), Ok(union));
    }

    #[test]
    fn encodings_round_trip() {
        let r = registers_of((0..800).map(|i| format!("e{i}").into_bytes()));
        for dense in [false, true] {
            let value = encoded(&r, dense);
            let mut back = Registers::default();
            assert_eq!(back.merge(&value), Ok(dense));
            assert_eq!(&back.0[..], &r[..]);
        }
        assert_eq!(sparse(&[0; REGISTERS]).len(), HEADER + 2);
        let mut high = vec![0u8; REGISTERS];
        high[7] = 40;
        assert_eq!(
            sparse(&high).len(),
            DENSE_SIZE,
            "a register over 32 needs dense"
        );
    }

    #[test]
    fn invalid_values_are_refused_as_redis_refuses_them() {
        assert_eq!(count_of(&[b"hello"]), Err(Invalid::NotHll));
        assert_eq!(
            count_of(&[b"HYLX\0\0\0\0\0\0\0\0\0\0\0\0\x7f"]),
            Err(Invalid::NotHll)
        );
        assert_eq!(
            count_of(&[b"HYLL\x02\0\0\0\0\0\0\0\0\0\0\0\x7f"]),
            Err(Invalid::NotHll)
        );
        let mut short = dense(&[1; REGISTERS]);
        short.pop();
        assert_eq!(count_of(&[&short]), Err(Invalid::NotHll));
        // Sparse runs covering too few or too many registers.
        assert_eq!(
            count_of(&[b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\0"]),
            Err(Invalid::Corrupt)
        );
        let mut long = sparse(&[0; REGISTERS]);
        long.push(0x00);
        assert_eq!(count_of(&[&long]), Err(Invalid::Corrupt));
        // A value run past the end, even right after the last register.
        let mut past = sparse(&[0; REGISTERS]);
        past.push(0x80);
        assert_eq!(count_of(&[&past]), Err(Invalid::Corrupt));
        // A truncated two-byte opcode reads a zero, as Redis does: 255
        // empty registers, then 0x3f00 + 1 more.
        assert_eq!(
            count_of(&[b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\0\x40\xfe\x7f"]),
            Ok(0)
        );
        assert_eq!(
            count_of(&[b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\0\x7f"]),
            Err(Invalid::Corrupt)
        );
    }
}
