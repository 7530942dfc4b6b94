//! Co-location rules: put related keys in one slot without changing the app.
//!
//! A rule matches client-visible keys (by prefix, glob or regex) and names
//! a group. The key is stored as `{group}key`: the prepended hash tag makes
//! Redis hash every key of the group to the same slot, so multi-key
//! commands, transactions and Lua scripts over a group work on a cluster.
//!
//! The invariant, everywhere keys appear: stored = encode(client key), and
//! decode(stored) = client key. Decoding is exact: `{tag}rest` decodes to
//! `rest` only when encoding `rest` gives back the same bytes, so keys that
//! happen to start with braces, binary keys and keys outside every rule are
//! left alone. Braces inside a group name are replaced by `_` (they would end
//! the hash tag early); an empty group becomes `_`.

pub mod lua;
pub mod rewrite;

use std::borrow::Cow;

use serde::Deserialize;

/// One `[[colocate]]` entry as written in the config.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Rule name (for logs, `rules check` and errors).
    pub name: String,
    /// Match keys starting with this.
    pub prefix: Option<String>,
    /// Match keys by a Redis-style glob (`*`, `?`, `[abc]`, `\\x`).
    pub glob: Option<String>,
    /// Match keys by a regular expression (whole key unless anchored).
    pub regex: Option<String>,
    /// A constant group: every matching key goes to one slot.
    pub group: Option<String>,
    /// The group is the N-th `separator`-delimited segment of the key
    /// (0-based), e.g. 1 for `bull:<queue>:...` → one slot per queue.
    pub group_segment: Option<usize>,
    /// Segment separator for `group_segment` (default `:`).
    pub separator: Option<String>,
    /// The group is this named capture of `regex`.
    pub group_capture: Option<String>,
}

#[derive(Debug)]
enum Matcher {
    Prefix(Vec<u8>),
    Glob(Vec<u8>),
    Regex(regex::bytes::Regex),
}

#[derive(Debug)]
enum Group {
    Constant(Vec<u8>),
    Segment { index: usize, separator: u8 },
    Capture(String),
}

/// A validated rule.
#[derive(Debug)]
pub struct Rule {
    /// Its name.
    pub name: String,
    matcher: Matcher,
    group: Group,
}

/// All rules, in config order (the first match wins).
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Validates the config entries; errors name the rule and field.
    pub fn new(configs: &[RuleConfig]) -> Result<Rules, String> {
        let mut rules = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let name = if c.name.is_empty() {
                format!("#{}", i + 1)
            } else {
                c.name.clone()
            };
            let field = |f: &str| format!("colocate[{name}].{f}");
            let matcher = match (&c.prefix, &c.glob, &c.regex) {
                (Some(p), None, None) if !p.is_empty() => Matcher::Prefix(p.as_bytes().to_vec()),
                (None, Some(g), None) if !g.is_empty() => Matcher::Glob(g.as_bytes().to_vec()),
                (None, None, Some(r)) => Matcher::Regex(
                    regex::bytes::Regex::new(r).map_err(|e| format!("{}: {e}", field("regex")))?,
                ),
                _ => {
                    return Err(format!(
                        "{}: set exactly one non-empty prefix, glob or regex",
                        field("prefix")
                    ))
                }
            };
            let separator = match &c.separator {
                None => b':',
                Some(s) if s.len() == 1 => s.as_bytes()[0],
                Some(_) => return Err(format!("{}: must be one byte", field("separator"))),
            };
            let group = match (&c.group, c.group_segment, &c.group_capture) {
                (Some(g), None, None) => {
                    if g.is_empty() || g.contains(['{', '}']) {
                        return Err(format!(
                            "{}: must be non-empty and without braces",
                            field("group")
                        ));
                    }
                    Group::Constant(g.as_bytes().to_vec())
                }
                (None, Some(index), None) => Group::Segment { index, separator },
                (None, None, Some(cap)) => {
                    let Matcher::Regex(re) = &matcher else {
                        return Err(format!("{}: needs a regex", field("group_capture")));
                    };
                    if !re.capture_names().flatten().any(|n| n == cap) {
                        return Err(format!(
                            "{}: the regex has no capture named '{cap}'",
                            field("group_capture")
                        ));
                    }
                    Group::Capture(cap.clone())
                }
                _ => {
                    return Err(format!(
                        "{}: set exactly one of group, group_segment or group_capture",
                        field("group")
                    ))
                }
            };
            if rules.iter().any(|r: &Rule| r.name == name) {
                return Err(format!("{}: duplicate rule name", field("name")));
            }
            if let Matcher::Prefix(p) = &matcher {
                // The first matching rule wins: a later prefix inside an
                // earlier one could never apply.
                let shadow = rules
                    .iter()
                    .find(|r: &&Rule| matches!(&r.matcher, Matcher::Prefix(q) if p.starts_with(q)));
                if let Some(earlier) = shadow {
                    return Err(format!(
                        "{}: every key it matches is taken by the earlier rule '{}'",
                        field("prefix"),
                        earlier.name
                    ));
                }
            }
            rules.push(Rule {
                name,
                matcher,
                group,
            });
        }
        Ok(Rules { rules })
    }

    /// Whether there are no rules (then nothing is ever rewritten).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule that matches `key` and its hash tag.
    pub fn classify(&self, key: &[u8]) -> Option<(&Rule, Vec<u8>)> {
        self.rules.iter().find_map(|r| r.tag(key).map(|t| (r, t)))
    }

    /// The stored form of a client key.
    pub fn encode<'a>(&self, key: &'a [u8]) -> Cow<'a, [u8]> {
        match self.classify(key) {
            None => Cow::Borrowed(key),
            Some((_, tag)) => {
                let mut out = Vec::with_capacity(key.len() + tag.len() + 2);
                out.push(b'{');
                out.extend_from_slice(&tag);
                out.push(b'}');
                out.extend_from_slice(key);
                Cow::Owned(out)
            }
        }
    }

    /// The client form of a stored key (see the module doc for exactness).
    pub fn decode<'a>(&self, stored: &'a [u8]) -> &'a [u8] {
        if stored.first() != Some(&b'{') {
            return stored;
        }
        let Some(close) = memchr::memchr(b'}', stored) else {
            return stored;
        };
        let rest = &stored[close + 1..];
        match self.encode(rest) {
            Cow::Owned(enc) if enc == stored => rest,
            _ => stored,
        }
    }
}

impl Rule {
    /// The hash tag for `key` if this rule matches it.
    fn tag(&self, key: &[u8]) -> Option<Vec<u8>> {
        let raw: Cow<'_, [u8]> = match (&self.matcher, &self.group) {
            (Matcher::Regex(re), Group::Capture(name)) => {
                let caps = re.captures(key)?;
                Cow::Owned(
                    caps.name(name)
                        .map(|m| m.as_bytes().to_vec())
                        .unwrap_or_default(),
                )
            }
            (m, g) => {
                let matched = match m {
                    Matcher::Prefix(p) => key.starts_with(p),
                    Matcher::Glob(g) => glob_match(g, key),
                    Matcher::Regex(re) => re.is_match(key),
                };
                if !matched {
                    return None;
                }
                match g {
                    Group::Constant(c) => Cow::Borrowed(c.as_slice()),
                    Group::Segment { index, separator } => Cow::Borrowed(
                        key.split(|b| b == separator)
                            .nth(*index)
                            .unwrap_or_default(),
                    ),
                    Group::Capture(_) => return None,
                }
            }
        };
        Some(sanitize(&raw))
    }

    /// Lua-expressible description: (kind, pattern, group kind, group value).
    pub fn lua_parts(&self) -> Option<(&'static str, Vec<u8>, &'static str, Vec<u8>)> {
        let (kind, pattern) = match &self.matcher {
            Matcher::Prefix(p) => ("prefix", p.clone()),
            Matcher::Glob(g) => ("glob", g.clone()),
            Matcher::Regex(_) => return None,
        };
        let (gk, gv) = match &self.group {
            Group::Constant(c) => ("const", c.clone()),
            Group::Segment { index, separator } => (
                "segment",
                vec![u8::try_from(*index).unwrap_or(u8::MAX), *separator],
            ),
            Group::Capture(_) => return None,
        };
        Some((kind, pattern, gk, gv))
    }
}

fn sanitize(tag: &[u8]) -> Vec<u8> {
    if tag.is_empty() {
        return b"_".to_vec();
    }
    tag.iter()
        .map(|&b| if b == b'{' || b == b'}' { b'_' } else { b })
        .collect()
}

/// Redis's glob matching (`stringmatchlen`): `*`, `?`, `[...]` with ranges
/// and `^` negation, and `\` escapes. Linear in the key per `*`, like Redis
/// since CVE-2022-36021: once what follows a `*` matches nowhere in the
/// rest of the string, no earlier `*` is tried further.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    glob_at(pattern, s, 0) == Glob::Match
}

/// How matching a pattern's tail went.
#[derive(Debug, PartialEq, Eq)]
enum Glob {
    Match,
    NoMatch,
    /// No match from here nor from any later position: give up.
    Never,
}

fn glob_at(p: &[u8], s: &[u8], depth: usize) -> Glob {
    if depth > 64 {
        return Glob::Never;
    }
    let (mut pi, mut si) = (0, 0);
    while pi < p.len() {
        match p[pi] {
            b'*' => {
                while pi + 1 < p.len() && p[pi + 1] == b'*' {
                    pi += 1;
                }
                if pi + 1 == p.len() {
                    return Glob::Match;
                }
                for k in si..=s.len() {
                    match glob_at(&p[pi + 1..], &s[k..], depth + 1) {
                        Glob::NoMatch => {}
                        done => return done,
                    }
                }
                return Glob::Never;
            }
            b'?' => {
                if si >= s.len() {
                    return Glob::NoMatch;
                }
                si += 1;
            }
            b'[' => {
                let Some(&c) = s.get(si) else {
                    return Glob::NoMatch;
                };
                pi += 1;
                let not = p.get(pi) == Some(&b'^');
                if not {
                    pi += 1;
                }
                let mut matched = false;
                while pi < p.len() && p[pi] != b']' {
                    if p[pi] == b'\\' && pi + 1 < p.len() {
                        pi += 1;
                        matched |= p[pi] == c;
                    } else if pi + 2 < p.len() && p[pi + 1] == b'-' && p[pi + 2] != b']' {
                        let (a, b) = (p[pi].min(p[pi + 2]), p[pi].max(p[pi + 2]));
                        matched |= (a..=b).contains(&c);
                        pi += 2;
                    } else {
                        matched |= p[pi] == c;
                    }
                    pi += 1;
                }
                if matched == not {
                    return Glob::NoMatch;
                }
                si += 1;
            }
            b'\\' if pi + 1 < p.len() => {
                pi += 1;
                if s.get(si) != Some(&p[pi]) {
                    return Glob::NoMatch;
                }
                si += 1;
            }
            c => {
                if s.get(si) != Some(&c) {
                    return Glob::NoMatch;
                }
                si += 1;
            }
        }
        pi += 1;
    }
    if si == s.len() {
        Glob::Match
    } else {
        Glob::NoMatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml: &str) -> Rules {
        #[derive(Deserialize)]
        struct W {
            colocate: Vec<RuleConfig>,
        }
        let w: W = toml::from_str(toml).unwrap();
        Rules::new(&w.colocate).unwrap()
    }

    #[test]
    fn encode_decode() {
        let r = rules(
            "[[colocate]]\nname='bull'\nprefix='bull:'\ngroup_segment=1\n[[colocate]]\nname='celery'\nglob='celery*'\ngroup='celery'\n",
        );
        assert_eq!(&*r.encode(b"bull:q1:5"), b"{q1}bull:q1:5");
        assert_eq!(&*r.encode(b"bull:q1"), b"{q1}bull:q1");
        assert_eq!(&*r.encode(b"celery-task"), b"{celery}celery-task");
        assert_eq!(&*r.encode(b"other"), b"other");
        assert_eq!(r.decode(b"{q1}bull:q1:5"), b"bull:q1:5");
        assert_eq!(r.decode(b"{q2}bull:q1:5"), b"{q2}bull:q1:5");
        assert_eq!(r.decode(b"{x}other"), b"{x}other");
        assert_eq!(r.decode(b"other"), b"other");
        // Braces in a group are neutralised; the key still round-trips.
        let k = b"bull:{a}:1";
        assert_eq!(&*r.encode(k), b"{_a_}bull:{a}:1");
        assert_eq!(r.decode(&r.encode(k)), k);
        // Same slot for a whole queue.
        let s = |k: &[u8]| crate::cluster::slot::slot(&r.encode(k));
        assert_eq!(s(b"bull:q1:1"), s(b"bull:q1:wait"));
    }

    #[test]
    fn decode_is_inverse_for_arbitrary_binary_keys() {
        let r = rules("[[colocate]]\nname='p'\nprefix='p'\ngroup_segment=0\nseparator='x'\n[[colocate]]\nname='re'\nregex='^u:(?P<id>[0-9]+)'\ngroup_capture='id'\n");
        let mut seed: u64 = 0x9E3779B97F4A7C15;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 12) as usize;
            let alphabet = b"p{}xu:0123\x00\xff";
            let key: Vec<u8> = (0..len)
                .map(|i| alphabet[((seed >> (i * 4)) % alphabet.len() as u64) as usize])
                .collect();
            let enc = r.encode(&key);
            assert_eq!(r.decode(&enc), &key[..], "{key:?}");
        }
    }

    #[test]
    fn validation_names_the_rule() {
        let bad = |t: &str| {
            #[derive(Deserialize)]
            struct W {
                colocate: Vec<RuleConfig>,
            }
            let w: W = toml::from_str(t).unwrap();
            Rules::new(&w.colocate).unwrap_err()
        };
        assert!(bad("[[colocate]]\nname='a'\ngroup='g'\n").starts_with("colocate[a].prefix"));
        assert!(bad("[[colocate]]\nname='a'\nprefix='x'\n").starts_with("colocate[a].group"));
        assert!(bad("[[colocate]]\nname='a'\nprefix='x'\ngroup='{g}'\n")
            .starts_with("colocate[a].group"));
        assert!(
            bad("[[colocate]]\nname='a'\nregex='('\ngroup='g'\n").starts_with("colocate[a].regex")
        );
        assert!(
            bad("[[colocate]]\nname='a'\nregex='x'\ngroup_capture='q'\n")
                .contains("no capture named")
        );
        assert!(bad(
            "[[colocate]]\nname='a'\nprefix='bull:'\ngroup='g'\n[[colocate]]\nname='b'\nprefix='bull:x'\ngroup='h'\n"
        )
        .starts_with("colocate[b].prefix: every key it matches is taken by the earlier rule 'a'"));
    }

    #[test]
    fn globs_like_redis() {
        // Many stars against a long key: linear, not exponential.
        let long = vec![b'a'; 200_000];
        assert!(!glob_match(b"*a*a*a*a*b", &long));
        assert!(glob_match(b"*a*a*a*a*", &long));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h*llo", b"heeeello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-b]llo", b"hbllo"));
        assert!(glob_match(b"a\\*b", b"a*b"));
        assert!(!glob_match(b"a\\*b", b"axb"));
        assert!(!glob_match(b"abc", b"abcd"));
    }
}
