//! Key-position interpreter: finds the arguments of a command that are keys,
//! driven only by the command's Redis 7 key specifications.
//!
//! This mirrors `getKeysUsingKeySpecs` in Redis 7.0 (`src/db.c`) as called
//! with `GET_KEYSPEC_RETURN_PARTIAL` (and optionally
//! `GET_KEYSPEC_INCLUDE_NOT_KEYS`): a spec that cannot be applied to the given
//! arguments (keyword missing, positions out of range, `unknown` search type)
//! contributes no keys, and the keys of incomplete specs are still reported.
//! The one difference is a malformed `numkeys` argument, which is reported as
//! a [`KeyError`] carrying the error text Redis replies with, so the caller
//! can answer the client without a round trip to a backend.

use super::spec::{flags, key_flags, BeginSearch, CommandSpec, FindKeys, KeySpec};
use super::table_gen::{COMMANDS, MAX_NAME_LEN};

/// Access to the arguments of one parsed command (index 0 is the command name).
pub trait Args {
    /// Number of arguments, including the command name.
    fn len(&self) -> usize;

    /// The argument at index `i`; implementations return an empty slice when
    /// `i >= self.len()` (the interpreter never asks for such an index).
    fn get(&self, i: usize) -> &[u8];

    /// True when there are no arguments at all (not even a command name).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: AsRef<[u8]>> Args for [T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    fn get(&self, i: usize) -> &[u8] {
        <[T]>::get(self, i).map_or(&[], AsRef::as_ref)
    }
}

impl<T: AsRef<[u8]>> Args for Vec<T> {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    fn get(&self, i: usize) -> &[u8] {
        <[T]>::get(self, i).map_or(&[], AsRef::as_ref)
    }
}

impl<T: AsRef<[u8]>, const N: usize> Args for [T; N] {
    fn len(&self) -> usize {
        N
    }

    fn get(&self, i: usize) -> &[u8] {
        <[T]>::get(self, i).map_or(&[], AsRef::as_ref)
    }
}

/// A malformed `numkeys` argument. `Display` is the error Redis replies with
/// (without the leading `-`) for `EVAL`, `EVALSHA`, `FCALL` and friends;
/// a few commands word the same condition differently (e.g. `ZUNIONSTORE`
/// with too many keys says `ERR syntax error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The `numkeys` argument is not a valid 64-bit integer.
    #[error("ERR value is not an integer or out of range")]
    NotAnInteger,
    /// The `numkeys` argument is negative.
    #[error("ERR Number of keys can't be negative")]
    NegativeNumKeys,
    /// The `numkeys` argument names more keys than there are arguments.
    #[error("ERR Number of keys can't be greater than number of args")]
    TooManyKeys,
}

/// Appends the argument indices of all keys of `args` under `spec` to `out`,
/// in the order Redis finds them (spec by spec; duplicates kept).
///
/// Specs flagged [`key_flags::NOT_KEY`] (e.g. the channel of `SPUBLISH`) are
/// only used when `include_not_key` is true. A spec that does not apply to
/// `args` (keyword absent, positions out of range, `unknown` begin-search or
/// find-keys) adds nothing; the keys of [`key_flags::INCOMPLETE`] specs are
/// added like any others, so check that flag when the full key set matters.
///
/// Returns an error, leaving `out` as it was on entry, when a `numkeys`
/// argument is not an integer, is negative, or names more keys than there are
/// arguments. A missing `numkeys` argument (arity error) adds no keys.
pub fn key_indices<A: Args + ?Sized>(
    spec: &CommandSpec,
    args: &A,
    include_not_key: bool,
    out: &mut Vec<usize>,
) -> Result<(), KeyError> {
    let start_len = out.len();
    for ks in spec.key_specs {
        if ks.flags & key_flags::NOT_KEY != 0 && !include_not_key {
            continue;
        }
        if let Err(e) = one_spec(ks, args, out) {
            out.truncate(start_len);
            return Err(e);
        }
    }
    Ok(())
}

/// The positions of the keys of `args` (not of [`key_flags::NOT_KEY`]
/// specs), each with the flags of the key spec that found it (what ACL
/// key permissions are checked against).
pub fn keys_with_flags<A: Args + ?Sized>(
    spec: &CommandSpec,
    args: &A,
    out: &mut Vec<(usize, u16)>,
) -> Result<(), KeyError> {
    let mut found = Vec::new();
    for ks in spec.key_specs {
        if ks.flags & key_flags::NOT_KEY != 0 {
            continue;
        }
        found.clear();
        one_spec(ks, args, &mut found)?;
        out.extend(found.iter().map(|&pos| (pos, ks.flags)));
    }
    Ok(())
}

/// Applies one key spec; see [`key_indices`].
fn one_spec<A: Args + ?Sized>(
    ks: &KeySpec,
    args: &A,
    out: &mut Vec<usize>,
) -> Result<(), KeyError> {
    // All position arithmetic is done in i64: argc is bounded by memory and
    // every spec field is 16 bits, so nothing here can overflow.
    let argc = i64::try_from(args.len()).unwrap_or(i64::MAX);
    let first = match ks.begin {
        BeginSearch::Index(pos) => i64::from(pos),
        BeginSearch::Keyword {
            keyword,
            start_from,
        } => match find_keyword(args, argc, keyword.as_bytes(), i64::from(start_from)) {
            Some(first) => first,
            None => return Ok(()),
        },
        BeginSearch::Unknown => return Ok(()),
    };

    let (first, last, step) = match ks.find {
        FindKeys::Range {
            last_key,
            key_step,
            limit,
        } => {
            let last_key = i64::from(last_key);
            let last = if last_key >= 0 {
                first + last_key
            } else if limit == 0 {
                argc + last_key
            } else {
                // Redis asserts last_key == -1 here.
                first + ((argc - first) / i64::from(limit) + last_key)
            };
            (first, last, key_step)
        }
        FindKeys::KeyNum {
            key_num_idx,
            first_key,
            key_step,
        } => {
            let idx = first + i64::from(key_num_idx);
            if idx < 0 || idx >= argc {
                return Ok(());
            }
            let numkeys = usize::try_from(idx)
                .ok()
                .and_then(|i| parse_i64(args.get(i)))
                .ok_or(KeyError::NotAnInteger)?;
            if numkeys < 0 {
                return Err(KeyError::NegativeNumKeys);
            }
            let first = first + i64::from(first_key);
            // Every key `key_step` apart (Redis 7.0's commands all have a
            // step of 1; Valkey 9.1's MSETEX has key/value pairs).
            let last =
                first.saturating_add((numkeys - 1).saturating_mul(i64::from(key_step.max(1))));
            if numkeys > 0 && last >= argc {
                return Err(KeyError::TooManyKeys);
            }
            (first, last, key_step)
        }
        FindKeys::Unknown => return Ok(()),
    };

    // Out of bounds: a syntax/arity error Redis reports elsewhere.
    if last >= argc || last < first || first >= argc || first < 0 {
        return Ok(());
    }
    let step = i64::from(step.max(1));
    let mut i = first;
    while i <= last {
        if let Ok(pos) = usize::try_from(i) {
            out.push(pos);
        }
        i += step;
    }
    Ok(())
}

/// The `begin_search` keyword scan of Redis 7.0: returns the index after the
/// keyword, scanning forwards from `start_from` (exclusive of the last
/// argument) or backwards from `argc + start_from` (exclusive of index 1).
fn find_keyword<A: Args + ?Sized>(
    args: &A,
    argc: i64,
    keyword: &[u8],
    start_from: i64,
) -> Option<i64> {
    let (start, end) = if start_from > 0 {
        (start_from, argc - 1)
    } else {
        (argc + start_from, 1)
    };
    let dir = if start <= end { 1 } else { -1 };
    let mut i = start;
    while i != end {
        if i >= argc || i < 1 {
            break;
        }
        let arg = usize::try_from(i).map_or(&[][..], |i| args.get(i));
        if arg.eq_ignore_ascii_case(keyword) {
            return Some(i + 1);
        }
        i += dir;
    }
    None
}

/// The keys a cluster node finds in `XREAD`/`XREADGROUP` (Redis's
/// `xreadGetKeys`, which nodes use instead of the key spec): the stream
/// names after the first `STREAMS` reached by skipping the options. The
/// key spec of `XREADGROUP` looks for `STREAMS` only from the fifth
/// argument, where it follows `GROUP g c`; without `GROUP` it finds no key
/// while a node still finds them (and refuses a cross-slot list).
pub fn xread_node_keys<A: Args + ?Sized>(args: &A, out: &mut Vec<usize>) {
    let argc = args.len();
    let mut i = 1;
    let mut streams = None;
    while i < argc {
        let a = args.get(i);
        if a.eq_ignore_ascii_case(b"block") || a.eq_ignore_ascii_case(b"count") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"group") {
            i += 3;
        } else if a.eq_ignore_ascii_case(b"noack") {
            i += 1;
        } else {
            if a.eq_ignore_ascii_case(b"streams") {
                streams = Some(i);
            }
            break;
        }
    }
    let Some(pos) = streams else { return };
    let num = argc - pos - 1;
    if num == 0 || !num.is_multiple_of(2) {
        return;
    }
    out.extend(pos + 1..pos + 1 + num / 2);
}

/// The keys of a `DEBUG` subcommand that reads a key, at the arities the
/// server accepts (`OBJECT`, `SDSLEN`, `LISTPACK`, `HTSTATS-KEY`:
/// `DEBUG sub key`; `QUICKLIST key [level]`; `DIGEST-VALUE key...`).
/// `DEBUG` has no key specs: the server reads them in the subcommand.
pub fn debug_keys<A: Args + ?Sized>(args: &A, out: &mut Vec<usize>) {
    let argc = args.len();
    let sub = args.get(1);
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    if (argc == 3
        && ["object", "sdslen", "listpack", "htstats-key"]
            .into_iter()
            .any(is))
        || ((argc == 3 || argc == 4) && is("quicklist"))
    {
        out.push(2);
    } else if is("digest-value") {
        out.extend(2..argc);
    }
}

pub use crate::protocol::request::parse_i64;

/// Checks the argument count (`argc`, including the command name and, for a
/// subcommand, the container name) against the Redis arity of `spec`:
/// positive arity is an exact count, negative arity a minimum of `-arity`.
/// A count the table refuses is checked again against the nodes' arity
/// where newer nodes changed it (see [`super::nodes_arity`]).
pub fn arity_ok(spec: &CommandSpec, argc: usize) -> bool {
    let fits = |arity: i16| {
        if arity >= 0 {
            usize::from(arity.unsigned_abs()) == argc
        } else {
            argc >= usize::from(arity.unsigned_abs())
        }
    };
    fits(spec.arity) || super::nodes_arity(spec.name).is_some_and(fits)
}

/// Finds a spec by name (`get`, `object|encoding`) in the generated table.
/// Matching is ASCII case-insensitive and allocation-free; names longer than
/// the longest command name are simply not found.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut buf = [0u8; MAX_NAME_LEN];
    let lower = buf.get_mut(..name.len())?;
    for (dst, src) in lower.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    find_lower(lower)
}

/// Binary search for an already lower-cased name.
fn find_lower(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .binary_search_by(|c| c.name.as_bytes().cmp(name))
        .ok()
        .and_then(|i| COMMANDS.get(i))
}

/// Like [`lookup`] on `args.get(0)`, but resolves a container
/// ([`flags::HAS_SUBCOMMANDS`]) to its subcommand named by `args.get(1)`;
/// returns the container itself when the subcommand is missing or unknown.
/// Returns `None` for an unknown command or empty `args`.
pub fn lookup_command<A: Args + ?Sized>(args: &A) -> Option<&'static CommandSpec> {
    if args.is_empty() {
        return None;
    }
    let cmd = lookup(args.get(0))?;
    // A subcommand's full name (`config|get`) names no command.
    if cmd.name.as_bytes().contains(&b'|') {
        return None;
    }
    if cmd.flags & flags::HAS_SUBCOMMANDS == 0 || args.len() < 2 {
        return Some(cmd);
    }
    let container = cmd.name.as_bytes();
    let sub = args.get(1);
    let total = container.len() + 1 + sub.len();
    let mut buf = [0u8; MAX_NAME_LEN];
    let Some(full) = buf.get_mut(..total) else {
        return Some(cmd);
    };
    let (head, tail) = full.split_at_mut(container.len());
    head.copy_from_slice(container);
    if let Some((bar, rest)) = tail.split_first_mut() {
        *bar = b'|';
        for (dst, src) in rest.iter_mut().zip(sub) {
            *dst = src.to_ascii_lowercase();
        }
    }
    Some(find_lower(full).unwrap_or(cmd))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits on spaces; `""` stands for an empty argument.
    fn argv(s: &str) -> Vec<Vec<u8>> {
        s.split(' ')
            .map(|a| {
                if a == "\"\"" {
                    Vec::new()
                } else {
                    a.as_bytes().to_vec()
                }
            })
            .collect()
    }

    fn keys_opt(cmd: &str, include_not_key: bool) -> Result<Vec<usize>, KeyError> {
        let args = argv(cmd);
        let spec = lookup_command(&args).expect("known command");
        let mut out = Vec::new();
        key_indices(spec, &args, include_not_key, &mut out).map(|()| out)
    }

    fn keys(cmd: &str) -> Result<Vec<usize>, KeyError> {
        keys_opt(cmd, false)
    }

    fn ok(cmd: &str) -> Vec<usize> {
        keys(cmd).expect("no key error")
    }

    #[test]
    fn xread_keys_as_a_node_finds_them() {
        let node = |cmd: &str| {
            let mut out = Vec::new();
            xread_node_keys(&argv(cmd), &mut out);
            out
        };
        // No GROUP: the key spec (STREAMS from the fifth argument) finds
        // nothing, a node finds the streams.
        let no_group = "XREADGROUP COUNT 1 STREAMS a b > >";
        assert_eq!(ok(no_group), Vec::<usize>::new());
        assert_eq!(node(no_group), vec![4, 5]);
        // Options are skipped with their values, even one named STREAMS.
        assert_eq!(
            node("XREADGROUP GROUP streams c BLOCK 0 NOACK STREAMS s >"),
            vec![8]
        );
        assert_eq!(node("XREAD BLOCK streams STREAMS s 0"), vec![4]);
        // Unbalanced, empty or no STREAMS at all: none (a syntax error).
        assert!(node("XREADGROUP COUNT 1 STREAMS a b >").is_empty());
        assert!(node("XREAD STREAMS").is_empty());
        assert!(node("XREAD FOO STREAMS a 0").is_empty());
    }

    #[test]
    fn table_is_sorted_unique_and_lower_case() {
        assert!(COMMANDS.len() > 200);
        for w in COMMANDS.windows(2) {
            assert!(
                w[0].name.as_bytes() < w[1].name.as_bytes(),
                "{} >= {}",
                w[0].name,
                w[1].name
            );
        }
        for c in COMMANDS {
            assert!(c.name.len() <= MAX_NAME_LEN);
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            if let Some((container, _)) = c.name.split_once('|') {
                let parent = lookup(container.as_bytes()).expect("container present");
                assert!(parent.flags & flags::HAS_SUBCOMMANDS != 0, "{}", c.name);
            }
        }
        assert!(COMMANDS.iter().any(|c| c.name.len() == MAX_NAME_LEN));
    }

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(lookup(b"GET").map(|c| c.name), Some("get"));
        assert_eq!(lookup(b"gEt").map(|c| c.name), Some("get"));
        assert_eq!(
            lookup(b"OBJECT|Encoding").map(|c| c.name),
            Some("object|encoding")
        );
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(b"").is_none());
        assert!(lookup(&[b'a'; 1000]).is_none());
        assert!(lookup(&[0xff, 0x00, b'|']).is_none());
    }

    #[test]
    fn lookup_command_resolves_subcommands() {
        let name = |s: &str| lookup_command(&argv(s)).map(|c| c.name);
        assert_eq!(name("OBJECT ENCODING k"), Some("object|encoding"));
        assert_eq!(name("xinfo Stream k"), Some("xinfo|stream"));
        assert_eq!(name("MEMORY USAGE k"), Some("memory|usage"));
        assert_eq!(name("CLIENT KILL x"), Some("client|kill"));
        assert_eq!(name("OBJECT"), Some("object"));
        assert_eq!(name("OBJECT nosuch"), Some("object"));
        assert_eq!(name("OBJECT \"\""), Some("object"));
        let long = format!("CONFIG {}", "x".repeat(500));
        assert_eq!(name(&long), Some("config"));
        // Non-containers ignore args[1].
        assert_eq!(name("GET encoding"), Some("get"));
        assert_eq!(name("nosuch a b"), None);
        let empty: Vec<Vec<u8>> = Vec::new();
        assert!(lookup_command(&empty).is_none());
        assert!(lookup_command(&argv("config|get maxmemory")).is_none());
        assert!(lookup_command(&argv("CONFIG|GET")).is_none());
    }

    #[test]
    fn arity() {
        let get = lookup(b"get").expect("get");
        assert!(arity_ok(get, 2));
        assert!(!arity_ok(get, 1));
        assert!(!arity_ok(get, 3));
        let set = lookup(b"set").expect("set");
        assert!(!arity_ok(set, 2));
        assert!(arity_ok(set, 3));
        assert!(arity_ok(set, 9));
        let enc = lookup(b"object|encoding").expect("object|encoding");
        assert!(arity_ok(enc, 3));
        assert!(!arity_ok(enc, 2));
    }

    #[test]
    fn simple_commands() {
        assert_eq!(ok("GET k"), [1]);
        assert_eq!(ok("SET k v EX 10 NX"), [1]);
        assert_eq!(ok("MGET a b c"), [1, 2, 3]);
        assert_eq!(ok("MSET a 1 b 2 c 3"), [1, 3, 5]);
        assert_eq!(ok("DEL a b a"), [1, 2, 3]);
        assert_eq!(ok("EXISTS a b"), [1, 2]);
        assert_eq!(ok("RENAME a b"), [1, 2]);
        assert_eq!(ok("BITOP AND dest a b"), [2, 3, 4]);
        assert_eq!(ok("PFCOUNT a b"), [1, 2]);
        assert_eq!(ok("WATCH a b"), [1, 2]);
        assert_eq!(ok("BLPOP a b 0"), [1, 2]);
        assert_eq!(ok("LMOVE src dst LEFT RIGHT"), [1, 2]);
        assert_eq!(ok("SMOVE src dst member"), [1, 2]);
        assert_eq!(ok("COPY src dst DB 1 REPLACE"), [1, 2]);
        assert_eq!(ok("SORT key"), [1]);
        assert_eq!(ok("PING"), Vec::<usize>::new());
    }

    #[test]
    fn numkeys_commands() {
        assert_eq!(ok("EVAL s 0"), Vec::<usize>::new());
        assert_eq!(ok("EVAL s 0 arg1 arg2"), Vec::<usize>::new());
        assert_eq!(ok("EVAL s 2 a b arg"), [3, 4]);
        assert_eq!(ok("EVAL s 2 a b"), [3, 4]);
        assert_eq!(keys("EVAL s 3 a b"), Err(KeyError::TooManyKeys));
        assert_eq!(
            keys("EVAL s 9223372036854775807 a"),
            Err(KeyError::TooManyKeys)
        );
        assert_eq!(keys("EVAL s x a"), Err(KeyError::NotAnInteger));
        assert_eq!(keys("EVAL s 01 a"), Err(KeyError::NotAnInteger));
        assert_eq!(keys("EVAL s +1 a"), Err(KeyError::NotAnInteger));
        assert_eq!(
            keys("EVAL s 99999999999999999999 a"),
            Err(KeyError::NotAnInteger)
        );
        assert_eq!(keys("EVAL s -1 a"), Err(KeyError::NegativeNumKeys));
        assert_eq!(ok("EVALSHA sha 1 a b"), [3]);
        assert_eq!(ok("EVAL_RO s 1 a"), [3]);
        assert_eq!(ok("FCALL f 2 a b x"), [3, 4]);
        assert_eq!(ok("FCALL_RO f 0"), Vec::<usize>::new());
        assert_eq!(ok("ZUNIONSTORE dest 2 a b WEIGHTS 1 2"), [1, 3, 4]);
        assert_eq!(keys("ZUNIONSTORE dest 3 a b"), Err(KeyError::TooManyKeys));
        assert_eq!(ok("ZINTERSTORE dest 1 a"), [1, 3]);
        assert_eq!(ok("ZUNION 2 a b WITHSCORES"), [2, 3]);
        assert_eq!(ok("ZDIFFSTORE dest 2 a b"), [1, 3, 4]);
        assert_eq!(ok("ZINTERCARD 2 a b LIMIT 1"), [2, 3]);
        assert_eq!(ok("SINTERCARD 3 a b c"), [2, 3, 4]);
        assert_eq!(ok("LMPOP 2 a b LEFT COUNT 1"), [2, 3]);
        assert_eq!(ok("BLMPOP 0 2 a b RIGHT"), [3, 4]);
        assert_eq!(ok("ZMPOP 1 a MIN"), [2]);
        assert_eq!(ok("BZMPOP 1.5 2 a b MAX COUNT 3"), [3, 4]);
        assert_eq!(keys("BZMPOP 0 x a MIN"), Err(KeyError::NotAnInteger));
    }

    #[test]
    fn error_leaves_out_untouched() {
        let args = argv("EVAL s 5 a");
        let spec = lookup_command(&args).expect("eval");
        let mut out = vec![42];
        assert_eq!(
            key_indices(spec, &args, true, &mut out),
            Err(KeyError::TooManyKeys)
        );
        assert_eq!(out, [42]);
    }

    #[test]
    fn key_error_messages() {
        assert_eq!(
            KeyError::NotAnInteger.to_string(),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            KeyError::NegativeNumKeys.to_string(),
            "ERR Number of keys can't be negative"
        );
        assert_eq!(
            KeyError::TooManyKeys.to_string(),
            "ERR Number of keys can't be greater than number of args"
        );
    }

    #[test]
    fn keyword_commands() {
        assert_eq!(ok("XREAD COUNT 2 STREAMS a b 0 0"), [4, 5]);
        assert_eq!(ok("XREAD streams a 0"), [2]);
        assert_eq!(ok("xread block 0 StReAmS a b c $ $ $"), [4, 5, 6]);
        assert_eq!(ok("XREADGROUP GROUP g c STREAMS a b > >"), [5, 6]);
        assert_eq!(
            ok("XREADGROUP GROUP g c COUNT 1 BLOCK 0 NOACK STREAMS a >"),
            [10]
        );
        // Single key, then the KEYS variant (whose spec Redis marks incomplete).
        assert_eq!(ok("MIGRATE host 6379 key 0 5000"), [3]);
        assert_eq!(
            ok("MIGRATE host 6379 \"\" 0 5000 COPY REPLACE KEYS a b"),
            [3, 9, 10]
        );
        assert_eq!(ok("MIGRATE host 6379 \"\" 0 5000 AUTH pw KEYS a"), [3, 9]);
        assert_eq!(ok("GEORADIUS src 0 0 10 km STORE dst"), [1, 7]);
        assert_eq!(ok("GEORADIUS src 0 0 10 km STOREDIST dst"), [1, 7]);
        assert_eq!(ok("GEORADIUS src 0 0 10 km COUNT 5 STORE dst"), [1, 9]);
        assert_eq!(ok("GEORADIUS src 0 0 10 km"), [1]);
        assert_eq!(ok("GEORADIUSBYMEMBER src m 10 km STORE dst"), [1, 6]);
    }

    #[test]
    fn subcommands() {
        assert_eq!(ok("OBJECT ENCODING key"), [2]);
        assert_eq!(ok("OBJECT HELP"), Vec::<usize>::new());
        assert_eq!(ok("XINFO STREAM key FULL"), [2]);
        assert_eq!(ok("MEMORY USAGE key SAMPLES 0"), [2]);
        assert_eq!(ok("CLIENT KILL ID 1"), Vec::<usize>::new());
    }

    #[test]
    fn pubsub_and_not_keys() {
        assert_eq!(ok("SUBSCRIBE a b"), Vec::<usize>::new());
        assert_eq!(ok("PUBLISH ch msg"), Vec::<usize>::new());
        assert_eq!(ok("SPUBLISH ch msg"), Vec::<usize>::new());
        assert_eq!(keys_opt("SPUBLISH ch msg", true), Ok(vec![1]));
        assert_eq!(keys_opt("SSUBSCRIBE a b", true), Ok(vec![1, 2]));
        assert_eq!(keys_opt("SUBSCRIBE a b", true), Ok(vec![]));
    }

    #[test]
    fn incomplete_and_unknown_specs_are_flagged() {
        let migrate = lookup(b"migrate").expect("migrate");
        assert!(migrate
            .key_specs
            .iter()
            .any(|k| k.flags & key_flags::INCOMPLETE != 0));
        let sort = lookup(b"sort").expect("sort");
        assert!(sort
            .key_specs
            .iter()
            .any(|k| k.begin == BeginSearch::Unknown));
        // SORT ... STORE dst: the STORE spec is `unknown`, so only the source is found.
        assert_eq!(ok("SORT src BY w_* STORE dst"), [1]);
    }

    #[test]
    fn malformed_inputs_do_not_panic() {
        assert_eq!(ok("XREAD STREAMS"), Vec::<usize>::new());
        assert_eq!(ok("XREAD STREAMS a"), Vec::<usize>::new());
        assert_eq!(ok("XREAD STREAMS a b c"), [2]);
        assert_eq!(ok("XREAD COUNT 1 STREAMS"), Vec::<usize>::new());
        assert_eq!(ok("EVAL s"), Vec::<usize>::new());
        assert_eq!(ok("EVAL"), Vec::<usize>::new());
        assert_eq!(ok("GET"), Vec::<usize>::new());
        assert_eq!(ok("RENAME a"), [1]);
        assert_eq!(ok("ZUNIONSTORE dest"), [1]);
        assert_eq!(ok("ZUNIONSTORE dest 0"), [1]);
        assert_eq!(ok("MSET a"), [1]);
        assert_eq!(ok("MSET"), Vec::<usize>::new());
        assert_eq!(ok("BLMPOP 0"), Vec::<usize>::new());
        assert_eq!(ok("MIGRATE KEYS"), Vec::<usize>::new());
        assert_eq!(ok("MIGRATE h p \"\" 0 5000 KEYS"), [3]);
        assert_eq!(ok("OBJECT ENCODING"), Vec::<usize>::new());
        assert_eq!(ok("GEORADIUS k STORE"), [1]);
    }

    #[test]
    fn every_command_survives_arbitrary_args() {
        let words: [&[u8]; 10] = [
            b"0", b"1", b"2", b"-1", b"STREAMS", b"KEYS", b"STORE", b"x", b"", b"99",
        ];
        for c in COMMANDS {
            let name = c.name.replace('|', " ");
            for n in 0..8 {
                for w in words {
                    let mut args: Vec<&[u8]> = name.split(' ').map(str::as_bytes).collect();
                    args.extend(std::iter::repeat_n(w, n));
                    let mut out = Vec::new();
                    if key_indices(c, &args[..], true, &mut out).is_ok() {
                        assert!(out.iter().all(|&i| i > 0 && i < args.len()), "{}", c.name);
                    }
                }
            }
        }
    }

    /// Hand-written specs exercising shapes Redis 7.0 itself does not use.
    #[test]
    fn synthetic_specs() {
        static SPECS: [KeySpec; 3] = [
            KeySpec {
                begin: BeginSearch::Keyword {
                    keyword: "K",
                    start_from: 0,
                },
                find: FindKeys::Range {
                    last_key: 0,
                    key_step: 0,
                    limit: 0,
                },
                flags: 0,
            },
            KeySpec {
                begin: BeginSearch::Index(1),
                find: FindKeys::Range {
                    last_key: -1,
                    key_step: 0,
                    limit: 3,
                },
                flags: 0,
            },
            KeySpec {
                begin: BeginSearch::Index(1),
                find: FindKeys::Unknown,
                flags: key_flags::NOT_KEY,
            },
        ];
        let spec = CommandSpec {
            name: "synthetic",
            arity: -1,
            flags: 0,
            acl: 0,
            key_specs: &SPECS,
        };
        let mut out = Vec::new();
        let args: [&[u8]; 7] = [b"synthetic", b"K", b"a", b"b", b"c", b"d", b"e"];
        assert_eq!(key_indices(&spec, &args, true, &mut out), Ok(()));
        // start_from 0 never finds the keyword; limit 3 of 6 remaining = 2 keys.
        assert_eq!(out, [1, 2]);
    }
}
