//! One user of the proxy: flags, password hashes and permissions, changed
//! by `ACL SETUSER` rules exactly as Redis 7.0's `ACLSetUser` changes a
//! user, and described as `ACL GETUSER` and `ACL LIST` describe it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{Acl, Selector, SetError, Style};
use crate::protocol::reply::{put_array, put_bulk, put_header, put_map, Proto};

/// A user.
#[derive(Debug, Clone)]
pub struct User {
    name: Vec<u8>,
    enabled: bool,
    nopass: bool,
    /// `sanitize-payload` (`Some(true)`), `skip-sanitize-payload`
    /// (`Some(false)`), or neither flag.
    sanitize: Option<bool>,
    /// SHA-256 hashes, lowercase hexadecimal, in the order added.
    passwords: Vec<String>,
    acl: Arc<Acl>,
}

/// A rule `ACL SETUSER` refused: the rule as given, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRule {
    /// The rule (a selector's whole `(...)` text).
    pub rule: Vec<u8>,
    /// Why.
    pub error: SetError,
}

impl BadRule {
    /// Redis's error line for `ACL SETUSER`.
    pub fn reply_text(&self) -> String {
        // Redis prints the rule as a C string: up to a NUL.
        let rule = self.rule.split(|&b| b == 0).next().unwrap_or_default();
        format!(
            "ERR Error in ACL SETUSER modifier '{}': {}",
            String::from_utf8_lossy(rule),
            self.error.message()
        )
    }
}

/// The SHA-256 of `password` in lowercase hexadecimal, as Redis stores it.
pub fn hash_password(password: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, password);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without leaking where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= (x ^ y) as usize;
    }
    diff == 0
}

/// The hash a password rule names: of the password after `>` or `<`,
/// or the hash itself after `#` or `!` (which must be valid).
fn stored_hash(op: &[u8]) -> Result<String, SetError> {
    let rest = &op[1..];
    match op[0] {
        b'>' | b'<' => Ok(hash_password(rest)),
        _ if valid_hash(rest) => Ok(String::from_utf8_lossy(rest).into_owned()),
        _ => Err(SetError::BadHash),
    }
}

/// A valid `#hash`: 64 lowercase hexadecimal characters.
fn valid_hash(hash: &[u8]) -> bool {
    hash.len() == 64 && hash.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

impl User {
    /// A new user as Redis creates one: off, no password, nothing allowed.
    pub fn new(name: &[u8]) -> User {
        User {
            name: name.to_vec(),
            enabled: false,
            nopass: false,
            sanitize: None,
            passwords: Vec::new(),
            acl: Arc::new(Acl {
                root: Selector::empty(),
                selectors: Vec::new(),
            }),
        }
    }

    /// Redis's `default` user: `on nopass ~* &* +@all`, with `password`
    /// instead of `nopass` when one is set.
    pub fn default_user(password: Option<&str>) -> User {
        let mut user = User::new(b"default");
        let pass = password.map(|p| [b">", p.as_bytes()].concat());
        let rules: [&[u8]; 5] = [b"+@all", b"~*", b"&*", b"on", b"nopass"];
        for rule in rules.iter().take(if pass.is_some() { 4 } else { 5 }) {
            let _ = user.apply(rule);
        }
        if let Some(pass) = pass {
            let _ = user.apply(&pass);
        }
        user
    }

    /// A user of the configuration: `rules` as `ACL SETUSER` takes them,
    /// which must say `on` or `off`. An error names the bad rule.
    pub fn from_rules(name: &str, rules: &str) -> Result<User, String> {
        let mut user = User::new(name.as_bytes());
        let ops: Vec<&[u8]> = rules.split_ascii_whitespace().map(str::as_bytes).collect();
        let said = ops
            .iter()
            .any(|r| r.eq_ignore_ascii_case(b"on") || r.eq_ignore_ascii_case(b"off"));
        user.set(&ops).map_err(|bad| match bad {
            None => "a selector's '(' has no ')'".to_string(),
            Some(bad) => format!(
                "ACL rule '{}': {}",
                String::from_utf8_lossy(&bad.rule),
                bad.error.message()
            ),
        })?;
        if !said {
            // Redis and ElastiCache leave such a user off: say it.
            return Err(
                "the rules must say 'on' (or 'off' to disable the user), as a new Redis user is off"
                    .into(),
            );
        }
        Ok(user)
    }

    /// The user's name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// `on`: the user may authenticate.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `nopass`: any password will do.
    pub fn nopass(&self) -> bool {
        self.nopass
    }

    /// The user's permissions.
    pub fn acl(&self) -> &Arc<Acl> {
        &self.acl
    }

    /// What a session keeps: `None` when the user may do everything (the
    /// fast path), else its permissions.
    pub fn session_acl(&self) -> Option<Arc<Acl>> {
        (!self.acl.unconfined()).then(|| self.acl.clone())
    }

    /// Whether `password` logs this user in (if it is on). The password
    /// is hashed and every hash compared in full whatever the outcome, so
    /// timing tells little (a user with more passwords takes longer).
    pub fn accepts(&self, password: &[u8]) -> bool {
        let hashed = hash_password(password);
        let matched = self.passwords.iter().fold(false, |ok, p| {
            ok | constant_time_eq(p.as_bytes(), hashed.as_bytes())
        });
        self.enabled && (self.nopass || matched)
    }

    /// Applies `ACL SETUSER`'s rules, all or none: selectors given over
    /// several arguments are joined first (`Err(None)`: one is never
    /// closed).
    pub fn set(&mut self, ops: &[&[u8]]) -> Result<(), Option<BadRule>> {
        let merged = merge_selectors(ops).ok_or(None)?;
        let mut staged = self.clone();
        for op in &merged {
            staged.apply(op).map_err(|error| {
                Some(BadRule {
                    rule: op.clone(),
                    error,
                })
            })?;
        }
        *self = staged;
        Ok(())
    }

    /// The argument index (among `ops`) of the selector `set` found never
    /// closed, for Redis's error.
    pub fn unclosed_selector(ops: &[&[u8]]) -> Option<usize> {
        let mut open = None;
        for (j, op) in ops.iter().enumerate() {
            if op.first() == Some(&b'(') && op.last() != Some(&b')') {
                open = Some(j);
            } else if open.is_some() && op.last() == Some(&b')') {
                open = None;
            }
        }
        open
    }

    /// One rule (Redis's `ACLSetUser`).
    pub fn apply(&mut self, op: &[u8]) -> Result<(), SetError> {
        if op.is_empty() {
            return Ok(());
        }
        let lower = op.to_ascii_lowercase();
        match lower.as_slice() {
            b"on" => self.enabled = true,
            b"off" => self.enabled = false,
            b"skip-sanitize-payload" => self.sanitize = Some(false),
            b"sanitize-payload" => self.sanitize = Some(true),
            b"nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            b"resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            b"clearselectors" => Arc::make_mut(&mut self.acl).selectors.clear(),
            b"reset" => {
                for rule in [
                    &b"resetpass"[..],
                    b"resetkeys",
                    b"resetchannels",
                    b"off",
                    b"sanitize-payload",
                    b"clearselectors",
                    b"-@all",
                ] {
                    self.apply(rule)?;
                }
                // Valkey 9.1 resets to `alldbs` too.
                Arc::make_mut(&mut self.acl).root.allow_all_dbs();
            }
            _ => return self.apply_other(op),
        }
        Ok(())
    }

    fn apply_other(&mut self, op: &[u8]) -> Result<(), SetError> {
        match op[0] {
            b'>' | b'#' => {
                let hash = stored_hash(op)?;
                if !self.passwords.contains(&hash) {
                    self.passwords.push(hash);
                }
                self.nopass = false;
            }
            b'<' | b'!' => {
                let hash = stored_hash(op)?;
                let at = self.passwords.iter().position(|p| *p == hash);
                let at = at.ok_or(SetError::NoSuchPassword)?;
                self.passwords.remove(at);
            }
            b'(' if op.len() > 1 && op.ends_with(b")") => {
                let mut selector = Selector::empty();
                // Unbalanced quotes: Redis adds the selector empty.
                for rule in split_args(&op[1..op.len() - 1]).unwrap_or_default() {
                    selector.apply(&rule)?;
                }
                Arc::make_mut(&mut self.acl).selectors.push(selector);
            }
            _ => Arc::make_mut(&mut self.acl).root.apply(op)?,
        }
        Ok(())
    }

    /// The flags, in Redis's order (as the nodes' version shows them).
    fn flags(&self, style: Style) -> Vec<&'static str> {
        let mut flags = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            flags.push("nopass");
        }
        match self.sanitize {
            // Valkey 9.1.2 takes both as no-ops and shows neither.
            _ if style == Style::Valkey91 => {}
            Some(false) => flags.push("skip-sanitize-payload"),
            Some(true) => flags.push("sanitize-payload"),
            // Redis 7.2 and later create every user with it.
            None if style == Style::Redis72 => flags.push("sanitize-payload"),
            None => {}
        }
        flags
    }

    /// `ACL LIST`'s line for the user (Redis's `user <name> ` and
    /// `ACLDescribeUser`).
    pub fn describe(&self, style: Style) -> Vec<u8> {
        let mut out = b"user ".to_vec();
        out.extend_from_slice(&self.name);
        out.push(b' ');
        for flag in self.flags(style) {
            out.extend_from_slice(flag.as_bytes());
            out.push(b' ');
        }
        for hash in &self.passwords {
            out.push(b'#');
            out.extend_from_slice(hash.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&self.acl.root.describe(style));
        for selector in &self.acl.selectors {
            out.extend_from_slice(b" (");
            out.extend_from_slice(&selector.describe(style));
            out.push(b')');
        }
        out
    }

    /// `ACL GETUSER`'s reply.
    pub fn reply(&self, proto: Proto, style: Style) -> Bytes {
        let mut out = BytesMut::with_capacity(512);
        let databases = usize::from(style == Style::Valkey91);
        put_map(&mut out, proto, 6 + databases);
        put_bulk(&mut out, b"flags");
        let flags = self.flags(style);
        let set = if proto == Proto::Resp3 { b'~' } else { b'*' };
        put_header(&mut out, set, flags.len());
        for flag in flags {
            put_bulk(&mut out, flag.as_bytes());
        }
        put_bulk(&mut out, b"passwords");
        put_array(&mut out, self.passwords.len());
        for hash in &self.passwords {
            put_bulk(&mut out, hash.as_bytes());
        }
        put_selector(&mut out, &self.acl.root, style);
        put_bulk(&mut out, b"selectors");
        put_array(&mut out, self.acl.selectors.len());
        for selector in &self.acl.selectors {
            put_map(&mut out, proto, 3 + databases);
            put_selector(&mut out, selector, style);
        }
        out.freeze()
    }
}

/// A selector's three fields of `ACL GETUSER` (four with Valkey 9.1's
/// databases).
fn put_selector(out: &mut BytesMut, selector: &Selector, style: Style) {
    put_bulk(out, b"commands");
    put_bulk(out, selector.describe_commands(style).as_bytes());
    put_bulk(out, b"keys");
    put_bulk(out, &selector.describe_keys());
    put_bulk(out, b"channels");
    put_bulk(out, &selector.describe_channels());
    if style == Style::Valkey91 {
        put_bulk(out, b"databases");
        put_bulk(out, &selector.describe_dbs());
    }
}

/// Redis's `sdssplitargs`, as it splits a selector's rules: blanks
/// between arguments, `"..."` with `\\n`, `\\xHH` and other escapes, `'...'`
/// with `\\'`; the text ends at a NUL. `None` for unbalanced quotes (or a
/// closing quote not followed by a blank).
pub fn split_args(text: &[u8]) -> Option<Vec<Vec<u8>>> {
    let text = text.split(|&b| b == 0).next().unwrap_or_default();
    let blank = |c: u8| c == b' ' || (b'\t'..=b'\r').contains(&c);
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < text.len() && blank(text[i]) {
            i += 1;
        }
        if i >= text.len() {
            return Some(out);
        }
        let mut arg = Vec::new();
        // Inside "..." or '...': the quote that closes it.
        let mut quote: Option<u8> = None;
        loop {
            let c = text.get(i).copied();
            let next = text.get(i + 1).copied();
            match (quote, c, next) {
                (Some(b'"'), Some(b'\\'), Some(b'x'))
                    if text.get(i + 2).and_then(|&h| hex(h)).is_some()
                        && text.get(i + 3).and_then(|&h| hex(h)).is_some() =>
                {
                    let hi = hex(text[i + 2]).unwrap_or(0);
                    let lo = hex(text[i + 3]).unwrap_or(0);
                    arg.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                (Some(b'"'), Some(b'\\'), Some(e)) => {
                    arg.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 1;
                }
                (Some(b'\''), Some(b'\\'), Some(b'\'')) => {
                    arg.push(b'\'');
                    i += 1;
                }
                // Unbalanced, or a closing quote not followed by a blank.
                (Some(_), None, _) => return None,
                (Some(q), Some(c), n) if c == q => {
                    if n.is_some_and(|n| !blank(n)) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                (Some(_), Some(c), _) => arg.push(c),
                (None, None | Some(b' ' | b'\n' | b'\r' | b'\t'), _) => break,
                (None, Some(q @ (b'"' | b'\'')), _) => quote = Some(q),
                (None, Some(c), _) => arg.push(c),
            }
            i += 1;
        }
        out.push(arg);
    }
}

/// Joins a selector given over several arguments (`(~a` `+get)`) into
/// one, as Redis's `ACLMergeSelectorArguments`; `None` when one is never
/// closed.
fn merge_selectors(ops: &[&[u8]]) -> Option<Vec<Vec<u8>>> {
    let mut merged = Vec::with_capacity(ops.len());
    let mut open: Option<Vec<u8>> = None;
    for op in ops {
        if op.first() == Some(&b'(') && op.last() != Some(&b')') {
            open = Some(op.to_vec());
            continue;
        }
        if let Some(mut selector) = open.take() {
            selector.push(b' ');
            selector.extend_from_slice(op);
            if op.last() == Some(&b')') {
                merged.push(selector);
            } else {
                open = Some(selector);
            }
            continue;
        }
        merged.push(op.to_vec());
    }
    open.is_none().then_some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(rules: &str) -> User {
        let mut u = User::new(b"u1");
        let ops: Vec<&[u8]> = rules.split(' ').map(str::as_bytes).collect();
        u.set(&ops).unwrap();
        u
    }

    #[test]
    fn acl_list_lines_as_redis_7_0() {
        // As redis-server 7.0.15 writes them (single commands in the
        // proxy's order).
        let u = user("on >p1 #5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 ~cache:* %R~ro:* &ch* +@set +@hash -@geo +get +mget -hset (+set %W~app*)");
        assert_eq!(
            String::from_utf8(u.describe(Style::Redis70)).unwrap(),
            "user u1 on #f64551fcd6f07823cb87971cfb91446425da18286b3ab1ef935e0cbd7a69f68a #5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 ~cache:* %R~ro:* resetchannels &ch* -@all +@set +@hash +get -hset +mget (%W~app* resetchannels -@all +set)"
        );
        assert_eq!(
            String::from_utf8(User::default_user(None).describe(Style::Redis70)).unwrap(),
            "user default on nopass ~* &* +@all"
        );
        assert_eq!(
            String::from_utf8(user("reset").describe(Style::Redis70)).unwrap(),
            "user u1 off sanitize-payload resetchannels -@all"
        );
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
        // Lengths that differ by a multiple of 256 must still differ.
        assert!(!constant_time_eq(&[0u8; 256], b""));
    }

    #[test]
    fn passwords() {
        let mut u = user("on >a >b >a");
        assert_eq!(u.passwords.len(), 2);
        assert!(u.accepts(b"a") && u.accepts(b"b") && !u.accepts(b"c"));
        assert_eq!(
            u.set(&[b"<c"]),
            Err(Some(BadRule {
                rule: b"<c".to_vec(),
                error: SetError::NoSuchPassword
            }))
        );
        assert_eq!(u.passwords.len(), 2, "all or nothing");
        u.set(&[b"<a", b"nopass"]).unwrap();
        assert!(u.accepts(b"anything") && u.passwords.is_empty());
        u.set(&[b"off"]).unwrap();
        assert!(!u.accepts(b"anything"));
        assert_eq!(
            u.set(&[b"#ABC"]).unwrap_err().unwrap().error,
            SetError::BadHash
        );
    }

    #[test]
    fn selector_rules_split_as_sdssplitargs() {
        let split = |s: &str| split_args(s.as_bytes());
        let strs = |v: Vec<Vec<u8>>| -> Vec<String> {
            v.into_iter()
                .map(|a| String::from_utf8(a).unwrap())
                .collect()
        };
        assert_eq!(strs(split(" +get  ~x ").unwrap()), ["+get", "~x"]);
        assert_eq!(strs(split("\"+get\" ~x").unwrap()), ["+get", "~x"]);
        assert_eq!(strs(split("'~a' +set").unwrap()), ["~a", "+set"]);
        assert_eq!(strs(split("~\"\\x41\"").unwrap()), ["~A"]);
        assert_eq!(strs(split("'it\\'s'").unwrap()), ["it's"]);
        assert_eq!(split("~\"a"), None);
        assert_eq!(split("\"a\"b"), None);
        assert_eq!(strs(split("+get\0~a").unwrap()), ["+get"]);
        let mut u = User::new(b"u");
        u.set(&[b"(~\"a)"]).unwrap();
        assert_eq!(u.acl.selectors.len(), 1, "an empty selector, as Redis adds");
        assert_eq!(
            BadRule {
                rule: b"~a\0b".to_vec(),
                error: SetError::Syntax
            }
            .reply_text(),
            "ERR Error in ACL SETUSER modifier '~a': Syntax error"
        );
    }

    #[test]
    fn selectors_over_several_arguments() {
        let u = user("on (~a +get) (~b +set)");
        assert_eq!(u.acl.selectors.len(), 2);
        let mut u = User::new(b"x");
        assert_eq!(u.set(&[b"(~a", b"+get"]), Err(None));
        assert_eq!(User::unclosed_selector(&[b"on", b"(~a", b"+get"]), Some(1));
        u.set(&[b"(~a", b"+get)"]).unwrap();
        assert_eq!(u.acl.selectors.len(), 1);
        assert_eq!(
            u.set(&[b"(~a +nosuch)"]).unwrap_err().unwrap().reply_text(),
            "ERR Error in ACL SETUSER modifier '(~a +nosuch)': Unknown command or category name in ACL"
        );
    }
}
