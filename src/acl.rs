//! Per-user permissions of the proxy's client users: Redis ACL rules, as
//! `ACL SETUSER` takes them (an ElastiCache user's access string).
//!
//! The nodes see one user, the proxy's; so the proxy checks each client
//! command itself, the way Redis 7.0 does after the arity check: the
//! command (or subcommand) must be allowed, then every key it names must
//! match a key pattern with the permissions the key's spec asks for
//! (`%R~` for keys read, `%W~` for keys written), then every channel it
//! publishes or subscribes to must match a channel pattern. A refused
//! command gets Redis's own `NOPERM` error and is never sent.
//!
//! Supported rules: `on`, `off`, `allcommands`/`+@all`, `nocommands`/
//! `-@all`, `+<command>`, `-<command>`, `+<command>|<sub>`,
//! `-<command>|<sub>`, `+@<category>`, `-@<category>`, `allkeys`, `~*`,
//! `resetkeys`, `~<pattern>`, `%R~`/`%W~`/`%RW~<pattern>`, `allchannels`,
//! `&*`, `resetchannels`, `&<pattern>`. A user starts with no commands,
//! keys or channels (Redis 7's default for a new user).

use bytes::Bytes;

use crate::colocate::glob_match;
use crate::command::keys::{self, Args};
use crate::command::spec::{acl as category, flags, key_flags, CommandSpec};
use crate::command::table_gen::COMMANDS;

/// Read permission on a key pattern (`%R~`).
const READ: u8 = 1;
/// Write permission on a key pattern (`%W~`).
const WRITE: u8 = 2;

/// One user's compiled rules.
#[derive(Debug, Clone)]
pub struct Acl {
    /// `on`: the user may authenticate.
    enabled: bool,
    /// `allcommands`: every command, also those the built-in table lacks
    /// (module commands learned at start-up). Cleared by any removal.
    all_commands: bool,
    /// One bit per entry of [`COMMANDS`].
    allowed: Vec<u64>,
    all_keys: bool,
    keys: Vec<(u8, Vec<u8>)>,
    all_channels: bool,
    channels: Vec<Vec<u8>>,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The command (its full name, `config|get` for a subcommand).
    Command(&'static str),
    /// One of its keys.
    Key,
    /// One of its channels.
    Channel,
}

impl Denied {
    /// Redis's `NOPERM` error for `user`. Redis 7.2 changed the texts:
    /// `new_texts` picks those (the nodes' version decides).
    pub fn reply(&self, user: &[u8], new_texts: bool) -> Bytes {
        let text = match (self, new_texts) {
            (Denied::Command(name), false) => {
                format!("-NOPERM this user has no permissions to run the '{name}' command\r\n")
            }
            (Denied::Command(name), true) => format!(
                "-NOPERM User {} has no permissions to run the '{name}' command\r\n",
                String::from_utf8_lossy(user)
            ),
            (Denied::Key, false) => {
                "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
                    .to_string()
            }
            (Denied::Key, true) => "-NOPERM No permissions to access a key\r\n".to_string(),
            (Denied::Channel, false) => "-NOPERM this user has no permissions to access one of the channels used as arguments\r\n".to_string(),
            (Denied::Channel, true) => "-NOPERM No permissions to access a channel\r\n".to_string(),
        };
        Bytes::from(text)
    }
}

/// The index of `spec` in [`COMMANDS`], or `None` for a learned command.
fn index_of(spec: &CommandSpec) -> Option<usize> {
    crate::command::route::table_index(spec).map(usize::from)
}

/// Indices of `name` and, for a container, of all its subcommands.
fn with_subcommands(name: &str) -> impl Iterator<Item = usize> + '_ {
    COMMANDS.iter().enumerate().filter_map(move |(i, c)| {
        let own = c.name == name;
        let sub = c
            .name
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('|'));
        (own || sub).then_some(i)
    })
}

impl Acl {
    /// Compiles `rules` (space separated). An error names the bad rule.
    pub fn parse(rules: &str) -> Result<Acl, String> {
        let mut acl = Acl {
            enabled: true,
            all_commands: false,
            allowed: vec![0; COMMANDS.len().div_ceil(64)],
            all_keys: false,
            keys: Vec::new(),
            all_channels: false,
            channels: Vec::new(),
        };
        for rule in rules.split_ascii_whitespace() {
            acl.apply(rule)
                .map_err(|why| format!("ACL rule '{rule}': {why}"))?;
        }
        Ok(acl)
    }

    /// Whether the user may authenticate (`on`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn set(&mut self, index: usize, allow: bool) {
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if let Some(w) = self.allowed.get_mut(word) {
            if allow {
                *w |= bit;
            } else {
                *w &= !bit;
                self.all_commands = false;
            }
        }
    }

    fn allows(&self, index: usize) -> bool {
        self.allowed
            .get(index / 64)
            .is_some_and(|w| w & (1u64 << (index % 64)) != 0)
    }

    fn apply(&mut self, rule: &str) -> Result<(), String> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "allcommands" | "+@all" => {
                self.allowed.iter_mut().for_each(|w| *w = u64::MAX);
                self.all_commands = true;
            }
            "nocommands" | "-@all" => {
                self.allowed.iter_mut().for_each(|w| *w = 0);
                self.all_commands = false;
            }
            "allkeys" | "~*" => {
                self.all_keys = true;
                self.keys.clear();
            }
            "resetkeys" => {
                self.all_keys = false;
                self.keys.clear();
            }
            "allchannels" | "&*" => {
                self.all_channels = true;
                self.channels.clear();
            }
            "resetchannels" => {
                self.all_channels = false;
                self.channels.clear();
            }
            _ => return self.apply_pattern_or_command(rule, &lower),
        }
        Ok(())
    }

    fn apply_pattern_or_command(&mut self, rule: &str, lower: &str) -> Result<(), String> {
        if let Some(pattern) = rule.strip_prefix('&') {
            if self.all_channels {
                return Err("a channel pattern after '&*' or 'allchannels' has no effect".into());
            }
            self.channels.push(pattern.as_bytes().to_vec());
            return Ok(());
        }
        if rule.starts_with('~') || rule.starts_with('%') {
            let (perm, pattern) = match rule.split_once('~') {
                Some(("", p)) => (READ | WRITE, p),
                Some((flags, p)) => {
                    let mut perm = 0;
                    for c in flags[1..].chars() {
                        perm |= match c.to_ascii_uppercase() {
                            'R' => READ,
                            'W' => WRITE,
                            _ => return Err("key permissions are R, W or RW".into()),
                        };
                    }
                    if perm == 0 || !flags.starts_with('%') {
                        return Err("key permissions are written %R~, %W~ or %RW~".into());
                    }
                    (perm, p)
                }
                None => return Err("a key pattern is written ~pattern or %RW~pattern".into()),
            };
            if self.all_keys {
                return Err("a key pattern after '~*' or 'allkeys' has no effect".into());
            }
            if pattern == "*" && perm == READ | WRITE {
                self.all_keys = true;
            } else {
                self.keys.push((perm, pattern.as_bytes().to_vec()));
            }
            return Ok(());
        }
        let (allow, what) = match lower.split_at_checked(1) {
            Some(("+", what)) => (true, what),
            Some(("-", what)) => (false, what),
            _ => return Err("unknown or unsupported rule (passwords are set by 'password', selectors are not supported)".into()),
        };
        if let Some(name) = what.strip_prefix('@') {
            let Some(&(_, bit)) = category::CATEGORIES.iter().find(|(n, _)| *n == name) else {
                return Err(format!("unknown command category '{name}'"));
            };
            // As Redis: a command of the category with all its subcommands,
            // and each subcommand of the category on its own.
            let mut touched = Vec::new();
            for c in COMMANDS.iter().filter(|c| c.acl & bit != 0) {
                touched.extend(with_subcommands(c.name));
            }
            for i in touched {
                self.set(i, allow);
            }
            return Ok(());
        }
        let known = COMMANDS.iter().any(|c| c.name == what);
        if !known {
            return Err(format!("unknown command '{what}'"));
        }
        let touched: Vec<usize> = with_subcommands(what).collect();
        for i in touched {
            self.set(i, allow);
        }
        Ok(())
    }

    /// Checks a command as Redis does once its arity is right: `Ok` when
    /// the user may run it (unknown commands and bad arities pass, for the
    /// proxy to answer with Redis's own errors).
    pub fn check<A: Args + ?Sized>(&self, args: &A) -> Result<(), Denied> {
        let Some(spec) = crate::command::find(args) else {
            return Ok(());
        };
        if !keys::arity_ok(spec, args.len())
            || (spec.flags & flags::HAS_SUBCOMMANDS != 0 && args.len() > 1)
        {
            // A bad arity or an unknown subcommand: the error comes first.
            return Ok(());
        }
        if !self.all_commands && spec.flags & flags::NO_AUTH == 0 {
            let allowed = index_of(spec).is_some_and(|i| self.allows(i));
            if !allowed {
                return Err(Denied::Command(spec.name));
            }
        }
        if !self.all_keys && !spec.key_specs.is_empty() {
            let mut found = Vec::new();
            // Keys that cannot be found (a bad numkeys) are not checked:
            // the command fails with its own error.
            let _ = keys::keys_with_flags(spec, args, &mut found);
            for (pos, mut ks_flags) in found {
                if ks_flags & key_flags::VARIABLE_FLAGS != 0 {
                    ks_flags = variable_key_flags(spec.name, args);
                }
                if !self.key_allowed(args.get(pos), ks_flags) {
                    return Err(Denied::Key);
                }
            }
        }
        if !self.all_channels {
            let (first, pattern) = match spec.name {
                "publish" | "spublish" => (1..2.min(args.len()), false),
                "subscribe" | "ssubscribe" => (1..args.len(), false),
                "psubscribe" => (1..args.len(), true),
                _ => (0..0, false),
            };
            for i in first {
                if !self.channel_allowed(args.get(i), pattern) {
                    return Err(Denied::Channel);
                }
            }
        }
        Ok(())
    }

    /// Redis's `ACLSelectorCheckKey`: a pattern with every permission the
    /// key's spec needs (read for `ACCESS`, write for `INSERT`, `DELETE`,
    /// `UPDATE`) must match.
    fn key_allowed(&self, key: &[u8], ks_flags: u16) -> bool {
        let mut need = 0;
        if ks_flags & key_flags::ACCESS != 0 {
            need |= READ;
        }
        if ks_flags & (key_flags::INSERT | key_flags::DELETE | key_flags::UPDATE) != 0 {
            need |= WRITE;
        }
        self.keys
            .iter()
            .any(|(perm, p)| perm & need == need && glob_match(p, key))
    }

    /// A channel must match a pattern; a pattern (`PSUBSCRIBE`) must be
    /// one of the patterns, literally.
    fn channel_allowed(&self, channel: &[u8], is_pattern: bool) -> bool {
        self.channels.iter().any(|p| {
            if is_pattern {
                p == channel
            } else {
                glob_match(p, channel)
            }
        })
    }
}

/// The key flags of the two commands whose flags depend on their
/// arguments, as Redis 7.0's `setGetKeys` and `bitfieldGetKeys` find them.
fn variable_key_flags<A: Args + ?Sized>(name: &str, args: &A) -> u16 {
    use key_flags::{ACCESS, OW, RO, RW, UPDATE};
    match name {
        "set" => {
            if (3..args.len()).any(|i| args.get(i).eq_ignore_ascii_case(b"get")) {
                RW | ACCESS | UPDATE
            } else {
                OW | UPDATE
            }
        }
        "bitfield" => {
            let mut i = 2;
            let mut readonly = true;
            while i < args.len() {
                let rest = args.len() - i - 1;
                let arg = args.get(i);
                if arg.eq_ignore_ascii_case(b"get") && rest >= 2 {
                    i += 3;
                } else if arg.eq_ignore_ascii_case(b"overflow") && rest >= 1 {
                    i += 2;
                } else {
                    // SET, INCRBY, or a syntax error: assumed to write.
                    readonly = false;
                    break;
                }
            }
            if readonly {
                RO | ACCESS
            } else {
                RW | ACCESS | UPDATE
            }
        }
        _ => RW | ACCESS | UPDATE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rules: &str, cmd: &str) -> Result<(), Denied> {
        let args: Vec<&[u8]> = cmd.split(' ').map(str::as_bytes).collect();
        Acl::parse(rules).unwrap().check(args.as_slice())
    }

    #[test]
    fn commands_categories_and_subcommands() {
        let ro = "on ~* -@all +@read +ping";
        assert_eq!(check(ro, "GET k"), Ok(()));
        assert_eq!(check(ro, "PING"), Ok(()));
        assert_eq!(check(ro, "SET k v"), Err(Denied::Command("set")));
        assert_eq!(
            check(ro, "CONFIG GET maxmemory"),
            Err(Denied::Command("config|get"))
        );
        // AUTH and HELLO are always allowed; arity errors come first.
        assert_eq!(check(ro, "AUTH u p"), Ok(()));
        assert_eq!(check(ro, "SET k"), Ok(()));
        assert_eq!(check(ro, "NOSUCH"), Ok(()));
        // +container allows every subcommand; +container|sub only that one.
        assert_eq!(check("~* +config", "CONFIG SET a b"), Ok(()));
        assert_eq!(check("~* +config|get", "CONFIG GET a"), Ok(()));
        assert_eq!(
            check("~* +config|get", "CONFIG SET a b"),
            Err(Denied::Command("config|set"))
        );
        // Removal after allcommands.
        assert_eq!(
            check("~* +@all -flushall -@dangerous", "FLUSHALL"),
            Err(Denied::Command("flushall"))
        );
        assert_eq!(
            check("~* +@all -@dangerous", "KEYS *"),
            Err(Denied::Command("keys"))
        );
        assert_eq!(check("~* +@all -@dangerous", "GET k"), Ok(()));
        // Subcommands are in categories of their own (object|encoding is @read).
        assert_eq!(check("~* +@read", "OBJECT ENCODING k"), Ok(()));
    }

    #[test]
    fn key_patterns_and_permissions() {
        let rules = "on +@all %R~r:* %W~w:* ~both:*";
        assert_eq!(check(rules, "GET r:1"), Ok(()));
        assert_eq!(check(rules, "SET r:1 v"), Err(Denied::Key));
        assert_eq!(check(rules, "SET w:1 v"), Ok(()));
        assert_eq!(check(rules, "GET w:1"), Err(Denied::Key));
        assert_eq!(check(rules, "GETSET both:1 v"), Ok(()));
        // COPY reads its source and writes its destination.
        assert_eq!(check(rules, "COPY r:1 w:1"), Ok(()));
        assert_eq!(check(rules, "COPY w:1 r:1"), Err(Denied::Key));
        assert_eq!(check(rules, "MGET r:1 other"), Err(Denied::Key));
        // EXISTS neither reads nor writes the value: any pattern will do.
        assert_eq!(check(rules, "EXISTS w:1"), Ok(()));
        assert_eq!(check(rules, "EXISTS other"), Err(Denied::Key));
        // SET reads only with GET; BITFIELD writes only with SET/INCRBY.
        assert_eq!(check(rules, "SET w:1 v GET"), Err(Denied::Key));
        assert_eq!(check(rules, "BITFIELD r:1 GET u8 0"), Ok(()));
        assert_eq!(check(rules, "BITFIELD r:1 SET u8 0 1"), Err(Denied::Key));
        assert_eq!(check("+@all", "GET k"), Err(Denied::Key));
        // A bad numkeys is the command's own error.
        assert_eq!(check("+@all", "EVAL s 5 k"), Ok(()));
    }

    #[test]
    fn channels() {
        let rules = "+@all ~* &news.*";
        assert_eq!(check(rules, "PUBLISH news.a m"), Ok(()));
        assert_eq!(check(rules, "PUBLISH other m"), Err(Denied::Channel));
        assert_eq!(check(rules, "SUBSCRIBE news.a other"), Err(Denied::Channel));
        assert_eq!(check(rules, "PSUBSCRIBE news.*"), Ok(()));
        assert_eq!(check(rules, "PSUBSCRIBE news.a*"), Err(Denied::Channel));
        assert_eq!(check(rules, "UNSUBSCRIBE other"), Ok(()));
        assert_eq!(check("+@all ~*", "SPUBLISH c m"), Err(Denied::Channel));
    }

    #[test]
    fn bad_rules_are_named() {
        for (rules, err) in [
            ("+nosuch", "ACL rule '+nosuch': unknown command 'nosuch'"),
            ("+@nosuch", "ACL rule '+@nosuch': unknown command category 'nosuch'"),
            (">secret", "ACL rule '>secret': unknown or unsupported rule (passwords are set by 'password', selectors are not supported)"),
            ("~* ~a:*", "ACL rule '~a:*': a key pattern after '~*' or 'allkeys' has no effect"),
            ("%X~a", "ACL rule '%X~a': key permissions are R, W or RW"),
        ] {
            assert_eq!(Acl::parse(rules).unwrap_err(), err);
        }
        assert!(!Acl::parse("off +@all").unwrap().enabled());
    }

    #[test]
    fn errors_as_redis_writes_them() {
        let d = Denied::Command("config|get");
        assert_eq!(
            d.reply(b"ro", false),
            "-NOPERM this user has no permissions to run the 'config|get' command\r\n"
        );
        assert_eq!(
            d.reply(b"ro", true),
            "-NOPERM User ro has no permissions to run the 'config|get' command\r\n"
        );
        assert_eq!(
            Denied::Key.reply(b"ro", true),
            "-NOPERM No permissions to access a key\r\n"
        );
    }
}
