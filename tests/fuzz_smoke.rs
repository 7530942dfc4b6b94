//! A deterministic, fast stand-in for the cargo-fuzz targets in `fuzz/`.
//!
//! Runs every fuzz check (`fuzz/checks.rs`, shared with the fuzz targets) over the seed corpus in `fuzz/corpus/<target>/`, over inputs
//! that once crashed (named cases below), and over 20,000 pseudo-random
//! inputs per target from a fixed-seed xorshift generator: random bytes and
//! mutations of the seeds. No fuzzing engine, no new dependency; a failure
//! prints the input as a Rust byte string to paste into a named case.
//!
//! Real fuzzing: `make fuzz` (see the Makefile).

// The checks live with the fuzz targets; this test includes the same file
// (it cannot depend on the fuzz crate, which is a workspace of its own).
#[path = "../fuzz/checks.rs"]
mod fuzz_checks;

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use fuzz_checks::{XorShift, COMMAND_NAMES, TARGETS};

/// Pseudo-random inputs per target.
const ITERATIONS: usize = 20_000;

/// Numbers the mutator inserts or puts in place of another number.
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"2",
    b"7",
    b"-1",
    b"-2",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"4611686018427387904",
    b"18446744073709551615",
    b"99999999999999999999",
    b"536870913",
    b"16384",
];

/// Byte strings the mutator inserts: RESP syntax, boundary numbers and the
/// words the parsers look for.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b"*",
    b"$",
    b":",
    b"%",
    b"~",
    b">",
    b"|",
    b"=",
    b"+",
    b"-",
    b"{",
    b"}",
    b"{a}",
    b" ",
    b"\"",
    b"'",
    b"\\x4",
    b"\\",
    b"[",
    b"]",
    b"=\"",
    b"\n[limits]\n",
    b"MOVED ",
    b"ASK ",
    b"LIMIT",
    b"BLOCK",
    b"STREAMS",
    b"KEYS",
    b"keys=",
    b"# Keyspace\r\n",
    b"# Memory\r\n",
    b"_human",
    b"\xff",
    b"\xc3\xa9",
];

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fuzz", "corpus", target]
        .iter()
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .iter()
        .map(|p| std::fs::read(p).expect("read seed"))
        .collect()
}

fn random_bytes(rng: &mut XorShift) -> Vec<u8> {
    const RESPISH: &[u8] = b"*$:+-%~>|_#,(=!\r\n0123456789 a{}\"'\\";
    let len = rng.below(64);
    let biased = rng.below(2) == 0;
    (0..len)
        .map(|_| {
            if biased {
                RESPISH[rng.below(RESPISH.len())]
            } else {
                rng.next_u64() as u8
            }
        })
        .collect()
}

fn mutate(rng: &mut XorShift, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.truncate(rng.below(len + 1)),
            2 if len > 0 => {
                let start = rng.below(len);
                let end = start + rng.below(len - start) + 1;
                let piece = data[start..end].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, piece);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(8)).min(len);
                data.drain(start..end);
            }
            4 => {
                // Splice: the head of this input, the tail of another seed.
                let other = &seeds[rng.below(seeds.len())];
                data.truncate(rng.below(len + 1));
                data.extend_from_slice(&other[rng.below(other.len() + 1)..]);
            }
            5 if len > 0 => {
                // Replace a run of digits by another number.
                let i = rng.below(len);
                if let Some(start) = (i..len).find(|&j| data[j].is_ascii_digit()) {
                    let end = (start..len)
                        .find(|&j| !data[j].is_ascii_digit())
                        .unwrap_or(len);
                    let number = NUMBERS[rng.below(NUMBERS.len())];
                    data.splice(start..end, number.iter().copied());
                }
            }
            6 => {
                let number = NUMBERS[rng.below(NUMBERS.len())];
                let at = rng.below(len + 1);
                data.splice(at..at, number.iter().copied());
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                data.splice(at..at, token.iter().copied());
            }
        }
    }
    data
}

/// A command for `route_split`: a name from the list, then keys that often
/// share hash tags, numbers and option words.
fn random_command(rng: &mut XorShift) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "a", "b", "c", "{a}1", "{a}2", "{b}x", "{}", "{", "}", "0", "1", "2", "3", "-1", "LIMIT",
        "BLOCK", "STREAMS", "KEYS", "STORE", "BY", "GET", "WEIGHTS", "ENCODING", "",
    ];
    let mut out = vec![rng.below(COMMAND_NAMES.len()) as u8];
    for i in 0..rng.below(24) {
        if i > 0 {
            out.push(b' ');
        }
        if rng.below(3) == 0 {
            out.extend_from_slice(format!("k{}", rng.below(40)).as_bytes());
        } else {
            out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
        }
    }
    out
}

fn check(target: &str, f: fn(&[u8]), input: &[u8]) {
    if let Err(e) = panic::catch_unwind(AssertUnwindSafe(|| f(input))) {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!(
            "{target} failed on input b\"{}\": {msg}",
            input.escape_ascii()
        );
    }
}

fn run(target: &str) {
    let f = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, f)| f)
        .expect("known target");
    let seeds = seeds(target);
    for s in &seeds {
        check(target, f, s);
    }
    let mut rng = XorShift::new(target.len() as u64 * 7919 + u64::from(target.as_bytes()[0]));
    for _ in 0..ITERATIONS {
        let input = match rng.below(10) {
            0 | 1 => random_bytes(&mut rng),
            2 if target == "route_split" => random_command(&mut rng),
            _ => mutate(&mut rng, &seeds),
        };
        check(target, f, &input);
    }
}

#[test]
fn smoke_request_parser() {
    run("request_parser");
}

#[test]
fn smoke_frame_scanner() {
    run("frame_scanner");
}

#[test]
fn smoke_route_split() {
    run("route_split");
}

#[test]
fn smoke_merge_replies() {
    run("merge_replies");
}

#[test]
fn smoke_config_parse() {
    run("config_parse");
}

#[test]
fn smoke_reply_handling() {
    run("reply_handling");
}

#[test]
fn smoke_acl_rules() {
    run("acl_rules");
}

// Inputs that once crashed or broke an invariant (also in the seed corpus
// as `fuzz/corpus/<target>/regress-*`).

/// `children` computed a map's element count as `n * 2` in `i64`: a `%`
/// header above `i64::MAX / 2` panicked with "attempt to multiply with
/// overflow" (debug builds; a wrapped count in release).
#[test]
fn regression_children_map_count_overflow() {
    fuzz_checks::frame_scanner(b"%4611686018427387904\r\n");
    fuzz_checks::merge_replies(b"\x06%9223372036854775807\r\n$1\r\na\r\n:1\r\n");
}

/// `MSET a 1 b` (a key without a value) across slots was split into
/// `MSET a 1` and `MSET b ""` instead of Redis's arity error.
#[test]
fn regression_mset_odd_arguments_split() {
    fuzz_checks::route_split(b"MSET a 1 b");
    fuzz_checks::route_split(b"\x01a 1 b 2 c");
}

/// `merge::sum_pairs` added counts with `+=`: two `i64::MAX`-ish counts for
/// one name panicked with "attempt to add with overflow".
#[test]
fn regression_sum_pairs_overflow() {
    fuzz_checks::merge_replies(b"\x00*2\r\n+a\r\n:9223372036854775807\r\n*2\r\n+a\r\n:1\r\n");
}

/// `info::merge` summed `db0:keys=` across masters with `+=`: "attempt to
/// add with overflow".
#[test]
fn regression_info_keyspace_overflow() {
    fuzz_checks::merge_replies(
        b"\x00$52\r\n# Keyspace\r\ndb0:keys=9223372036854775807,expires=1\r\n\r\n$24\r\n# Keyspace\r\ndb0:keys=1\r\n\r\n",
    );
}

/// A subcommand the built-in table does not know was copied into the
/// `NOPERM` error as the client sent it, newline included: the error broke
/// into two lines (found by this smoke run before it landed).
#[test]
fn regression_acl_subcommand_newline() {
    check(
        "acl_rules",
        fuzz_checks::acl_rules,
        b"on ~* +config|get\nCONFIG S@read\nSET appd\nSET a:1 v",
    );
}

/// `merge::pfcount` passed a part starting with `-` or `!` through as the
/// node's error without checking it was one whole line: a truncated part
/// became a reply that is not a RESP frame, and `-` alone then underflowed
/// a length check (found by this smoke run before it landed).
#[test]
fn regression_pfcount_error_part_not_a_frame() {
    fuzz_checks::merge_replies(b"~!_,3,\n~\n\"*5\n'\n044\"!|1{4 95:(\n~7*4\"26}\n*9}\n,_");
    fuzz_checks::merge_replies(b"1-");
}
