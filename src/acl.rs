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
use crate::protocol::reply;

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

/// The rules `rules` compiled, shared: compiling `+@category` walks the
/// command table, so each text is compiled once, not at every `AUTH`.
pub fn compiled(rules: &str) -> Result<std::sync::Arc<Acl>, String> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Acl>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(acl) = cache.lock().ok().and_then(|c| c.get(rules).cloned()) {
        return Ok(acl);
    }
    let acl = Arc::new(Acl::parse(rules)?);
    if let Ok(mut c) = cache.lock() {
        // Rule texts come from the configuration: a few, unless reloads
        // keep changing them.
        if c.len() >= 256 {
            c.clear();
        }
        c.insert(rules.to_string(), acl.clone());
    }
    Ok(acl)
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
    /// A subcommand the built-in table does not know (`container`, `sub`).
    Subcommand(&'static str, Vec<u8>),
    /// `SORT`'s `BY` or `GET` option.
    SortOption(&'static str),
}

impl Denied {
    /// Redis's `NOPERM` error for `user`. Redis 7.2 changed the texts:
    /// `new_texts` picks those (the nodes' version decides). Client bytes
    /// in it (a subcommand, a user name) cannot break the line:
    /// [`reply::error`] turns CR and LF into spaces, as Redis does.
    pub fn reply(&self, user: &[u8], new_texts: bool) -> Bytes {
        let run = |name: &str| {
            if new_texts {
                format!(
                    "NOPERM User {} has no permissions to run the '{name}' command",
                    String::from_utf8_lossy(user)
                )
            } else {
                format!("NOPERM this user has no permissions to run the '{name}' command")
            }
        };
        let text = match (self, new_texts) {
            (Denied::Command(name), _) => run(name),
            (Denied::Subcommand(container, sub), _) => {
                run(&format!("{container}|{}", String::from_utf8_lossy(sub)))
            }
            (Denied::Key, false) => {
                "NOPERM this user has no permissions to access one of the keys used as arguments"
                    .to_string()
            }
            (Denied::Key, true) => "NOPERM No permissions to access a key".to_string(),
            (Denied::Channel, false) => {
                "NOPERM this user has no permissions to access one of the channels used as arguments"
                    .to_string()
            }
            (Denied::Channel, true) => "NOPERM No permissions to access a channel".to_string(),
            (Denied::SortOption(option), _) => {
                format!("ERR {option} option of SORT denied due to insufficient ACL permissions.")
            }
        };
        reply::error(&text)
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
        let mut said = false;
        for rule in rules.split_ascii_whitespace() {
            said |= rule.eq_ignore_ascii_case("on") || rule.eq_ignore_ascii_case("off");
            acl.apply(rule)
                .map_err(|why| format!("ACL rule '{rule}': {why}"))?;
        }
        if !said {
            // Redis and ElastiCache leave such a user off: say it.
            return Err(
                "the rules must say 'on' (or 'off' to disable the user), as a new Redis user is off"
                    .into(),
            );
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
            // Only these two: `%RW~*` stays a pattern, as in Redis 7.0.
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
                        let bit = match c.to_ascii_uppercase() {
                            'R' => READ,
                            'W' => WRITE,
                            _ => return Err("key permissions are R, W or RW".into()),
                        };
                        if perm & bit != 0 {
                            return Err("key permissions are R, W or RW".into());
                        }
                        perm |= bit;
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
            // As Redis: the same pattern twice adds up its permissions.
            match self.keys.iter_mut().find(|(_, p)| p == pattern.as_bytes()) {
                Some((old, _)) => *old |= perm,
                None => self.keys.push((perm, pattern.as_bytes().to_vec())),
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
        match crate::command::find(args) {
            Some(spec) => self.check_spec(spec, args),
            None => Ok(()),
        }
    }

    /// [`Acl::check`] for a command known to be `spec`.
    fn check_spec<A: Args + ?Sized>(&self, spec: &CommandSpec, args: &A) -> Result<(), Denied> {
        if !keys::arity_ok(spec, args.len()) {
            // A bad arity: the error comes first.
            return Ok(());
        }
        if spec.flags & flags::HAS_SUBCOMMANDS != 0 && args.len() > 1 {
            // A subcommand newer than the built-in table (the nodes may
            // know it): only a user with every command may run it.
            return match self.all_commands {
                true => Ok(()),
                false => Err(Denied::Subcommand(
                    spec.name,
                    args.get(1).to_ascii_lowercase(),
                )),
            };
        }
        if !self.all_commands && spec.flags & flags::NO_AUTH == 0 {
            let allowed = index_of(spec).is_some_and(|i| self.allows(i));
            if !allowed {
                return Err(Denied::Command(spec.name));
            }
        }
        if !self.all_keys && spec.flags & flags::MOVABLE_KEYS != 0 && index_of(spec).is_none() {
            // A module command whose keys only the module's code finds:
            // they cannot be checked.
            return Err(Denied::Command(spec.name));
        }
        if crate::command::runs_script(spec.name) && !self.unconfined() {
            // A script's own commands run on the nodes as the proxy's
            // user, unchecked: only a user the rules do not confine may
            // run one.
            return Err(Denied::Command(spec.name));
        }
        if !self.all_keys && !spec.key_specs.is_empty() {
            for (pos, mut ks_flags) in acl_keys(spec, args) {
                if ks_flags & key_flags::VARIABLE_FLAGS != 0 {
                    ks_flags = variable_key_flags(spec.name, args);
                }
                if !self.key_allowed(args.get(pos), ks_flags) {
                    return Err(Denied::Key);
                }
            }
        }
        if matches!(spec.name, "sort" | "sort_ro") && !self.reads_every_key() {
            sort_patterns(args)?;
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

    /// Neither commands, keys nor channels are limited.
    fn unconfined(&self) -> bool {
        self.all_commands && self.all_keys && self.all_channels
    }

    /// Redis's "full key access" for `SORT ... BY/GET`: a read pattern
    /// that matches the string `*`.
    fn reads_every_key(&self) -> bool {
        self.all_keys
            || self
                .keys
                .iter()
                .any(|(perm, p)| perm & READ != 0 && glob_match(p, b"*"))
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

/// The keys Redis 7.0 checks for a command, with their flags: by its key
/// specs; when one cannot be followed (`SORT`'s and `MIGRATE`'s), or the
/// arguments do not fit them (a bad `numkeys`), by the command's own key
/// finder, as Redis's `getKeysFromCommandWithSpecs` does.
fn acl_keys<A: Args + ?Sized>(spec: &CommandSpec, args: &A) -> Vec<(usize, u16)> {
    use crate::command::spec::{BeginSearch, FindKeys};
    let partial = spec.key_specs.iter().any(|ks| {
        ks.flags & key_flags::NOT_KEY == 0
            && (ks.flags & key_flags::INCOMPLETE != 0
                || matches!(ks.begin, BeginSearch::Unknown)
                || matches!(ks.find, FindKeys::Unknown))
    });
    let mut found = Vec::new();
    if partial || keys::keys_with_flags(spec, args, &mut found).is_err() {
        found.clear();
        native_keys(spec.name, args, &mut found);
    }
    found
}

/// Redis 7.0's `sortGetKeys` and `migrateGetKeys`; the other commands'
/// finders find no key when their key specs could not (a bad `numkeys`).
fn native_keys<A: Args + ?Sized>(name: &str, args: &A, out: &mut Vec<(usize, u16)>) {
    use key_flags::{ACCESS, DELETE, OW, RO, RW, UPDATE};
    match name {
        "sort" | "sort_ro" => {
            out.push((1, RO | ACCESS));
            let mut store = None;
            let mut i = 2;
            while i < args.len() {
                let arg = args.get(i);
                if arg.eq_ignore_ascii_case(b"limit") {
                    i += 2;
                } else if arg.eq_ignore_ascii_case(b"get") || arg.eq_ignore_ascii_case(b"by") {
                    i += 1;
                } else if arg.eq_ignore_ascii_case(b"store") && i + 1 < args.len() {
                    // The last STORE wins, as in SORT itself.
                    store = Some(i + 1);
                }
                i += 1;
            }
            out.extend(store.map(|pos| (pos, OW | UPDATE)));
        }
        "migrate" => {
            let (mut first, mut num) = (3, 1);
            let mut i = 6;
            while i < args.len() {
                let arg = args.get(i);
                if arg.eq_ignore_ascii_case(b"auth2") {
                    i += 2;
                } else if arg.eq_ignore_ascii_case(b"auth") {
                    i += 1;
                } else if arg.eq_ignore_ascii_case(b"keys") {
                    if !args.get(3).is_empty() {
                        return;
                    }
                    first = i + 1;
                    num = args.len() - first;
                    break;
                }
                i += 1;
            }
            out.extend((first..first + num).map(|pos| (pos, RW | ACCESS | DELETE)));
        }
        _ => {}
    }
}

/// `SORT ... BY pattern` (with a `*`) and `... GET pattern` read keys no
/// key spec names: Redis refuses them to a user without read access to
/// every key, with these errors, in argument order.
fn sort_patterns<A: Args + ?Sized>(args: &A) -> Result<(), Denied> {
    let mut i = 2;
    while i < args.len() {
        let arg = args.get(i);
        let rest = args.len() - i - 1;
        if arg.eq_ignore_ascii_case(b"limit") && rest >= 2 {
            i += 3;
        } else if arg.eq_ignore_ascii_case(b"by") && rest >= 1 {
            if args.get(i + 1).contains(&b'*') {
                return Err(Denied::SortOption("BY"));
            }
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"get") && rest >= 1 {
            return Err(Denied::SortOption("GET"));
        } else {
            i += 1;
        }
    }
    Ok(())
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
        Acl::parse(&format!("on {rules}"))
            .unwrap()
            .check(args.as_slice())
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
        assert_eq!(check("+@all", "LMPOP 5 k LEFT"), Ok(()));
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
    fn module_commands_need_all_commands_and_visible_keys() {
        static MOVABLE: CommandSpec = CommandSpec {
            name: "mod.movable",
            arity: -1,
            flags: flags::WRITE | flags::MOVABLE_KEYS,
            acl: 0,
            key_specs: &[],
        };
        let args: [&[u8]; 2] = [b"mod.movable", b"k"];
        let acl = |rules: &str| Acl::parse(&format!("on {rules}")).unwrap();
        assert_eq!(
            acl("+@all ~app:*").check_spec(&MOVABLE, &args),
            Err(Denied::Command("mod.movable"))
        );
        assert_eq!(acl("+@all ~*").check_spec(&MOVABLE, &args), Ok(()));
        assert_eq!(
            acl("-@all +get ~*").check_spec(&MOVABLE, &args),
            Err(Denied::Command("mod.movable"))
        );
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
        assert_eq!(
            Acl::parse("~* +@all").unwrap_err(),
            "the rules must say 'on' (or 'off' to disable the user), as a new Redis user is off"
        );
        assert!(Acl::parse("on %RR~a").is_err());
        // %RW~* is a pattern, not allkeys: another pattern may follow.
        assert!(Acl::parse("on %RW~* ~a:*").is_ok());
    }

    #[test]
    fn what_redis_finds_by_other_means() {
        // The same pattern twice adds up its permissions.
        assert_eq!(check("+@all %R~d:* %W~d:*", "INCR d:1"), Ok(()));
        // SORT: its STORE key, and BY/GET patterns without full read access.
        let rules = "+@all ~app:*";
        assert_eq!(check(rules, "SORT app:l STORE other"), Err(Denied::Key));
        assert_eq!(check(rules, "SORT app:l LIMIT 0 1 STORE app:o"), Ok(()));
        assert_eq!(check(rules, "SORT app:l BY nosort"), Ok(()));
        assert_eq!(
            check(rules, "SORT app:l BY w_*"),
            Err(Denied::SortOption("BY"))
        );
        assert_eq!(
            check(rules, "SORT_RO app:l GET #"),
            Err(Denied::SortOption("GET"))
        );
        assert_eq!(check("+@all ~app:* %R~*", "SORT app:l GET #"), Ok(()));
        // MIGRATE with KEYS checks those keys only.
        assert_eq!(check(rules, "MIGRATE h 1  0 5000 KEYS app:1"), Ok(()));
        // A bad numkeys: no key is found, the command fails on its own.
        assert_eq!(check(rules, "ZUNIONSTORE secret 5 app:1"), Ok(()));
        // Scripts run unchecked on the nodes: only for unconfined users.
        assert_eq!(check(rules, "EVAL s 0"), Err(Denied::Command("eval")));
        assert_eq!(check("+@all ~* &*", "FCALL f 0"), Ok(()));
        // A subcommand newer than the table: only with every command.
        assert_eq!(
            check("~* +client", "CLIENT NO-EVICT on"),
            Ok(()),
            "known to the 7.0 table"
        );
        assert_eq!(
            check("~* +client", "CLIENT SETINFO lib-name x"),
            Err(Denied::Subcommand("client", b"setinfo".to_vec()))
        );
        assert_eq!(check("~* +@all", "CLIENT SETINFO lib-name x"), Ok(()));
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
        assert_eq!(
            Denied::Subcommand("client", b"setinfo".to_vec()).reply(b"ro", false),
            "-NOPERM this user has no permissions to run the 'client|setinfo' command\r\n"
        );
        // A client's subcommand cannot break the reply into two lines.
        assert_eq!(
            Denied::Subcommand("config", b"x\r\n+OK".to_vec()).reply(b"ro", false),
            "-NOPERM this user has no permissions to run the 'config|x  +OK' command\r\n"
        );
        assert_eq!(
            Denied::SortOption("GET").reply(b"ro", false),
            "-ERR GET option of SORT denied due to insufficient ACL permissions.\r\n"
        );
    }
}
