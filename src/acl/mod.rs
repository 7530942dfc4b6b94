//! Per-user permissions of the proxy's client users: Redis ACL rules, as
//! `ACL SETUSER` takes them (an ElastiCache user's access string).
//!
//! The nodes see one user, the proxy's; so the proxy checks each client
//! command itself, the way Redis 7.0 does after the arity check: the
//! command (or subcommand) must be allowed, then every key it names must
//! match a key pattern with the permissions the key's spec asks for
//! (`%R~` for keys read, `%W~` for keys written), then every channel it
//! publishes or subscribes to must match a channel pattern. A user has a
//! root selector and may have more (`(...)` rules): a command passes when
//! one selector allows all of it. A refused command gets Redis's own
//! `NOPERM` error and is never sent.
//!
//! [`user`] holds a whole user (flags, passwords, selectors) and applies
//! `ACL SETUSER` rules to it; [`users`] is the proxy's table of users,
//! [`log`] its `ACL LOG`.

pub mod describe;
pub mod log;
pub mod user;
pub mod users;

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

/// Why `ACL SETUSER` refused a rule: Redis's `errno` values, and one of
/// the proxy's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// `ENOENT`: an unknown command or category.
    Unknown,
    /// `EINVAL`: a rule not understood, or a pattern with spaces.
    Syntax,
    /// `EEXIST`: a key pattern after `~*`.
    KeysAfterAll,
    /// `EISDIR`: a channel pattern after `&*`.
    ChannelsAfterAll,
    /// `ENODEV`: removing a password the user does not have.
    NoSuchPassword,
    /// `EBADMSG`: a malformed password hash.
    BadHash,
    /// `ECHILD`: a first argument of a subcommand.
    SubcommandFirstArg,
    /// `+command|first-arg` of a command without subcommands (Redis's
    /// deprecated first-arg rules): not supported by the proxy.
    FirstArg,
    /// `ERANGE`: a database number of a `db=` rule out of range.
    DatabaseRange,
}

impl SetError {
    /// Redis's text for the error (`ACLSetUserStringError`).
    pub fn message(self) -> &'static str {
        match self {
            SetError::Unknown => "Unknown command or category name in ACL",
            SetError::Syntax => "Syntax error",
            SetError::KeysAfterAll => "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns",
            SetError::ChannelsAfterAll => "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels",
            SetError::NoSuchPassword => "The password you are trying to remove from the user does not exist",
            SetError::BadHash => "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters",
            SetError::SubcommandFirstArg => "Allowing first-arg of a subcommand is not supported",
            SetError::FirstArg => "slotbridge does not support first-arg rules of commands without subcommands (such as +select|0); allow the command or a subcommand instead",
            SetError::DatabaseRange => "The provided database ID is out of range",
        }
    }
}

/// A user's permissions: its root selector and further selectors.
#[derive(Debug, Clone)]
pub struct Acl {
    /// The rules given outside parentheses.
    pub(crate) root: Selector,
    /// The `(...)` selectors, in the order given.
    pub(crate) selectors: Vec<Selector>,
}

/// One selector: commands, key patterns and channel patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Redis's `ALLCOMMANDS` flag: set by `+@all`, cleared by any removal;
    /// it also lets a user run commands the built-in table lacks.
    all_commands: bool,
    /// Redis's reserved "future commands" bit: set by `+@all`, cleared
    /// only by `-@all` (how `ACL GETUSER` knows to start from `+@all`).
    future: bool,
    /// One bit per entry of [`COMMANDS`].
    allowed: Vec<u64>,
    /// `allkeys`/`~*`: every key, in any way.
    all_keys: bool,
    /// Key patterns with their permissions (`READ`, `WRITE`), in order.
    keys: Vec<(u8, Vec<u8>)>,
    /// `allchannels`/`&*`: every channel.
    all_channels: bool,
    /// Channel patterns, in order.
    channels: Vec<Vec<u8>>,
    /// Valkey 9.1's `alldbs` (every selector starts with it).
    all_dbs: bool,
    /// The databases of its `db=` rule, ascending (see [`Selector::apply_db_rule`]).
    dbs: Vec<u32>,
    /// The command and category rules since the last `+@all`/`-@all`, as
    /// Redis 7.2 keeps them to describe them (a rule given again, or a
    /// container's rule, replaces the earlier ones it covers).
    rules: Vec<String>,
}

/// How `ACL GETUSER`, `ACL LIST` and `ACL LOG` describe things: as the
/// nodes' Redis version does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Redis 7.0: command rules rebuilt from the bitmap; 7 log fields.
    Redis70,
    /// Redis 7.2 and later: command rules as given; 10 log fields.
    Redis72,
    /// Valkey 9.1 (as 9.1.2 writes it): Redis 7.2's, plus each selector's
    /// databases, and no `sanitize-payload` flags (no-ops since 9.1.2).
    Valkey91,
}

impl Style {
    /// The style of nodes whose `redis_version` is `version`.
    pub fn of(version: &str) -> Style {
        if crate::nodes::pack(version) > crate::nodes::pack("7.0") {
            Style::Redis72
        } else {
            Style::Redis70
        }
    }

    /// The style of the nodes, whose `redis_version` is `version`: [`Style::of`],
    /// or [`Style::Valkey91`] for Valkey 9.1 and later.
    pub fn of_nodes(version: &str) -> Style {
        if crate::nodes::valkey_at_least(9, 1) {
            Style::Valkey91
        } else {
            Style::of(version)
        }
    }

    /// Redis 7.2's texts, fields and command rules.
    pub fn newer_than_7_0(self) -> bool {
        self != Style::Redis70
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The command (its full name, `config|get` for a subcommand).
    Command(&'static str),
    /// The key at this argument position.
    Key(usize),
    /// The channel at this argument position.
    Channel(usize),
    /// A subcommand the built-in table does not know (`container`, `sub`).
    Subcommand(&'static str, Vec<u8>),
    /// `SORT`'s `BY` or `GET` option.
    SortOption(&'static str),
    /// Database 0 (Valkey 9.1's `db=` rules), named at this argument
    /// position (0: by the command itself).
    Database(usize),
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
            (Denied::Key(_), false) => {
                "NOPERM this user has no permissions to access one of the keys used as arguments"
                    .to_string()
            }
            (Denied::Key(_), true) => "NOPERM No permissions to access a key".to_string(),
            (Denied::Channel(_), false) => {
                "NOPERM this user has no permissions to access one of the channels used as arguments"
                    .to_string()
            }
            (Denied::Channel(_), true) => "NOPERM No permissions to access a channel".to_string(),
            (Denied::SortOption(option), _) => {
                format!("ERR {option} option of SORT denied due to insufficient ACL permissions.")
            }
            (Denied::Database(_), _) => "NOPERM No permissions to access database".to_string(),
        };
        reply::error(&text)
    }

    /// What `ACL DRYRUN` answers for `user` and a command refused with
    /// this.
    pub fn dry_run_text<A: Args + ?Sized>(&self, args: &A, user: &[u8], style: Style) -> String {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if style.newer_than_7_0() {
            // Redis 7.2: the NOPERM texts, naming the key or channel
            // (`getAclErrorMessage`, verbose).
            let named = |what: &str, pos: usize| {
                format!(
                    "User {} has no permissions to access the '{}' {what}",
                    lossy(user),
                    lossy(args.get(pos))
                )
            };
            return match self {
                Denied::Key(pos) => named("key", *pos),
                Denied::Channel(pos) => named("channel", *pos),
                Denied::Database(pos) => format!(
                    "User {} has no permissions to access database {}",
                    lossy(user),
                    lossy(args.get(*pos))
                ),
                _ => {
                    let text = self.reply(user, true);
                    let text = String::from_utf8_lossy(&text);
                    text.trim_start_matches("-NOPERM ").trim_end().to_string()
                }
            };
        }
        match self {
            Denied::Command(name) => {
                format!("This user has no permissions to run the '{name}' command")
            }
            Denied::Subcommand(container, sub) => format!(
                "This user has no permissions to run the '{container}|{}' command",
                lossy(sub)
            ),
            Denied::Key(pos) => format!(
                "This user has no permissions to access the '{}' key",
                lossy(args.get(*pos))
            ),
            Denied::Channel(pos) => format!(
                "This user has no permissions to access the '{}' channel",
                lossy(args.get(*pos))
            ),
            Denied::SortOption(option) => {
                format!("{option} option of SORT denied due to insufficient ACL permissions.")
            }
            Denied::Database(_) => "No permissions to access database".to_string(),
        }
    }

    /// Redis's order of reasons (Valkey's `ACL_DENIED_DB` <
    /// `ACL_DENIED_CMD` < `KEY` < `CHANNEL`) and the argument position:
    /// with several selectors, the error kept is the highest, then the
    /// latest argument.
    fn rank(&self) -> (u8, usize) {
        match self {
            Denied::Database(pos) => (0, *pos),
            Denied::Command(_) | Denied::Subcommand(..) | Denied::SortOption(_) => (1, 0),
            Denied::Key(pos) => (2, *pos),
            Denied::Channel(pos) => (4, *pos),
        }
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

/// Whether `s` has a space or a NUL (Redis's `ACLStringHasSpaces`).
pub(crate) fn has_spaces(s: &[u8]) -> bool {
    s.iter()
        .any(|&c| c == 0 || c == b' ' || (b'\t'..=b'\r').contains(&c))
}

impl Acl {
    /// Compiles `rules` (space separated) for a user of the
    /// configuration. An error names the bad rule.
    pub fn parse(rules: &str) -> Result<Acl, String> {
        let user = user::User::from_rules("config", rules)?;
        Ok(Acl::clone(user.acl()))
    }

    /// Checks a command as Redis does once its arity is right: `Ok` when
    /// the user may run it (unknown commands and bad arities pass, for the
    /// proxy to answer with Redis's own errors). `SORT ... BY/GET` is also
    /// checked, as `SORT` itself checks it in Redis.
    pub fn check<A: Args + ?Sized>(&self, args: &A) -> Result<(), Denied> {
        match crate::command::find(args) {
            Some(spec) if keys::arity_ok(spec, args.len()) => {
                self.check_spec(spec, args)?;
                if matches!(spec.name, "sort" | "sort_ro") && !self.reads_every_key() {
                    sort_patterns(args)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Redis's ACL check of a command known to be `spec` (what `ACL
    /// DRYRUN` answers): the first selector that allows it decides; when
    /// none does, the most telling refusal is returned.
    pub fn check_spec<A: Args + ?Sized>(&self, spec: &CommandSpec, args: &A) -> Result<(), Denied> {
        let mut refused: Option<Denied> = None;
        for selector in std::iter::once(&self.root).chain(&self.selectors) {
            match selector.check_spec(spec, args) {
                Ok(()) => return Ok(()),
                Err(denied) => {
                    if refused.as_ref().is_none_or(|r| denied.rank() > r.rank()) {
                        refused = Some(denied);
                    }
                }
            }
        }
        Err(refused.unwrap_or(Denied::Command(spec.name)))
    }

    /// Whether a subscription may stay after the user's rules changed
    /// (Redis's `ACLKillPubsubClientsIfNeeded`): some selector allows all
    /// channels, or has a pattern matching `channel` (for a `PSUBSCRIBE`
    /// pattern, `literal`: a pattern equal to it).
    pub fn channel_permitted(&self, channel: &[u8], literal: bool) -> bool {
        std::iter::once(&self.root)
            .chain(&self.selectors)
            .any(|s| s.all_channels || s.channel_allowed(channel, literal))
    }

    /// Neither commands, keys, channels nor databases are limited (the
    /// root selector allows everything).
    pub fn unconfined(&self) -> bool {
        self.root.unconfined()
    }

    /// Redis's "full key access" for `SORT ... BY/GET`: some selector has
    /// a read pattern that matches the string `*`.
    fn reads_every_key(&self) -> bool {
        std::iter::once(&self.root)
            .chain(&self.selectors)
            .any(Selector::reads_every_key)
    }
}

impl Selector {
    /// A selector that allows nothing (a new user's, or after `reset`).
    pub fn empty() -> Selector {
        Selector {
            all_commands: false,
            future: false,
            allowed: vec![0; COMMANDS.len().div_ceil(64)],
            all_keys: false,
            keys: Vec::new(),
            all_channels: false,
            channels: Vec::new(),
            all_dbs: true,
            dbs: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// Records a command or category rule for Redis 7.2's description
    /// (`ACLUpdateCommandRules`).
    fn remember(&mut self, what: &str, allow: bool) {
        self.rules.retain(|r| {
            let old = &r[1..];
            !(old == what
                || (old.len() > what.len()
                    && old.starts_with(what)
                    && old.as_bytes()[what.len()] == b'|'))
        });
        self.rules
            .push(format!("{}{what}", if allow { '+' } else { '-' }));
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

    /// Whether the command at `index` of [`COMMANDS`] is allowed.
    pub(crate) fn allows(&self, index: usize) -> bool {
        self.allowed
            .get(index / 64)
            .is_some_and(|w| w & (1u64 << (index % 64)) != 0)
    }

    /// Allows or forbids a command with all its subcommands (Redis's
    /// `ACLChangeSelectorPerm`).
    pub(crate) fn change(&mut self, name: &str, allow: bool) {
        let touched: Vec<usize> = with_subcommands(name).collect();
        for i in touched {
            self.set(i, allow);
        }
    }

    /// Allows or forbids every command of a category, as Redis does: a
    /// command of the category with all its subcommands, and each
    /// subcommand of the category on its own.
    pub(crate) fn change_category(&mut self, bit: u32, allow: bool) {
        let mut touched = Vec::new();
        for c in COMMANDS.iter().filter(|c| c.acl & bit != 0) {
            touched.extend(with_subcommands(c.name));
        }
        for i in touched {
            self.set(i, allow);
        }
    }

    /// Applies one rule (Redis's `ACLSetSelector`).
    pub fn apply(&mut self, rule: &[u8]) -> Result<(), SetError> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_slice() {
            b"allkeys" | b"~*" => {
                self.all_keys = true;
                self.keys.clear();
            }
            b"resetkeys" => {
                self.all_keys = false;
                self.keys.clear();
            }
            b"allchannels" | b"&*" => {
                self.all_channels = true;
                self.channels.clear();
            }
            b"resetchannels" => {
                self.all_channels = false;
                self.channels.clear();
            }
            b"allcommands" | b"+@all" => {
                self.allowed.iter_mut().for_each(|w| *w = u64::MAX);
                self.all_commands = true;
                self.future = true;
                self.rules.clear();
            }
            b"nocommands" | b"-@all" => {
                self.allowed.iter_mut().for_each(|w| *w = 0);
                self.all_commands = false;
                self.future = false;
                self.rules.clear();
            }
            _ if crate::nodes::valkey_at_least(9, 1) => {
                if let Some(done) = self.apply_db_rule(rule, &lower) {
                    return done;
                }
                return self.apply_pattern_or_command(rule, &lower);
            }
            _ => return self.apply_pattern_or_command(rule, &lower),
        }
        Ok(())
    }

    /// Valkey 9.1's database rules: `alldbs`, `resetdbs` and
    /// `db=<id>[,<id>...]` (`None` for any other rule). As
    /// `ACLSetSelectorDatabasePermissions`: a list with an empty item or a
    /// stray comma is a syntax error, an item must be a whole number as
    /// `strtoll` reads it, from 0 to 2^31-1.
    fn apply_db_rule(&mut self, rule: &[u8], lower: &[u8]) -> Option<Result<(), SetError>> {
        match lower {
            b"alldbs" => {
                self.all_dbs = true;
                self.dbs.clear();
            }
            b"resetdbs" => {
                self.all_dbs = false;
                self.dbs.clear();
            }
            _ if lower.starts_with(b"db=") => {
                let list = &rule[3..];
                let mut dbs = Vec::new();
                if list.is_empty() || list.first() == Some(&b',') || list.last() == Some(&b',') {
                    return Some(Err(SetError::Syntax));
                }
                for item in list.split(|&c| c == b',') {
                    match parse_db_id(item) {
                        Ok(id) => dbs.push(id),
                        Err(e) => return Some(Err(e)),
                    }
                }
                dbs.sort_unstable();
                dbs.dedup();
                self.all_dbs = false;
                self.dbs = dbs;
            }
            _ => return None,
        }
        Some(Ok(()))
    }

    fn apply_pattern_or_command(&mut self, rule: &[u8], lower: &[u8]) -> Result<(), SetError> {
        match rule.first() {
            Some(b'~' | b'%') => return self.add_key_pattern(rule),
            Some(b'&') => {
                if self.all_channels {
                    return Err(SetError::ChannelsAfterAll);
                }
                let pattern = &rule[1..];
                if has_spaces(pattern) {
                    return Err(SetError::Syntax);
                }
                if !self.channels.iter().any(|p| p == pattern) {
                    self.channels.push(pattern.to_vec());
                }
                return Ok(());
            }
            _ => {}
        }
        let (allow, what) = match lower.split_first() {
            Some((b'+', what)) => (true, what),
            Some((b'-', what)) => (false, what),
            _ => return Err(SetError::Syntax),
        };
        let what = std::str::from_utf8(what).map_err(|_| SetError::Unknown)?;
        if let Some(name) = what.strip_prefix('@') {
            let Some(&(_, bit)) = category::CATEGORIES.iter().find(|(n, _)| *n == name) else {
                return Err(SetError::Unknown);
            };
            self.change_category(bit, allow);
            self.remember(what, allow);
            return Ok(());
        }
        // The table's commands, those learned from the nodes, and the
        // nodes' subcommands of the table's containers.
        let known = |name: &str| {
            COMMANDS.iter().any(|c| c.name == name)
                || crate::command::learned(name).is_some()
                || crate::command::node_subcommand_acl(name).is_some()
        };
        match what.rsplit_once('|') {
            Some((container, sub)) if allow => {
                if !known(container) {
                    return Err(SetError::Unknown);
                }
                if container.contains('|') {
                    return Err(SetError::SubcommandFirstArg);
                }
                if sub.is_empty() {
                    return Err(SetError::Syntax);
                }
                let has_subcommands = COMMANDS
                    .iter()
                    .any(|c| c.name == container && c.flags & flags::HAS_SUBCOMMANDS != 0);
                if !has_subcommands {
                    return Err(SetError::FirstArg);
                }
                if !known(what) {
                    return Err(SetError::Unknown);
                }
            }
            _ if !known(what) => return Err(SetError::Unknown),
            _ => {}
        }
        self.change(what, allow);
        if !allow {
            // Any removal, of a command the table lacks too.
            self.all_commands = false;
        }
        self.remember(what, allow);
        Ok(())
    }

    /// `~pattern`, `%R~pattern`, `%W~pattern`, `%RW~pattern`.
    fn add_key_pattern(&mut self, rule: &[u8]) -> Result<(), SetError> {
        if self.all_keys {
            return Err(SetError::KeysAfterAll);
        }
        let (perm, pattern) = if rule[0] == b'%' {
            let mut perm = 0;
            let mut offset = 1;
            while offset < rule.len() {
                let c = rule[offset];
                offset += 1;
                match c.to_ascii_uppercase() {
                    b'R' if perm & READ == 0 => perm |= READ,
                    b'W' if perm & WRITE == 0 => perm |= WRITE,
                    b'~' => break,
                    _ => return Err(SetError::Syntax),
                }
            }
            if perm == 0 {
                return Err(SetError::Syntax);
            }
            (perm, &rule[offset..])
        } else {
            (READ | WRITE, &rule[1..])
        };
        if has_spaces(pattern) {
            return Err(SetError::Syntax);
        }
        // As Redis: the same pattern twice adds up its permissions.
        match self.keys.iter_mut().find(|(_, p)| p == pattern) {
            Some((old, _)) => *old |= perm,
            None => self.keys.push((perm, pattern.to_vec())),
        }
        Ok(())
    }

    /// One selector's verdict on a command (Redis's `ACLSelectorCheckCmd`).
    fn check_spec<A: Args + ?Sized>(&self, spec: &CommandSpec, args: &A) -> Result<(), Denied> {
        if !self.all_dbs && self.dbs.first() != Some(&0) {
            if let Some(pos) = database_denied(spec, args) {
                return Err(Denied::Database(pos));
            }
        }
        if spec.flags & flags::HAS_SUBCOMMANDS != 0 && args.len() > 1 {
            // A subcommand the built-in table lacks. Unknown to nodes of
            // Redis 7.0 too: their error follows. Newer nodes know it and
            // its categories: the rules decide, as for learned commands.
            if self.all_commands || crate::nodes::table_covers() {
                return Ok(());
            }
            let sub = String::from_utf8_lossy(args.get(1)).to_lowercase();
            let fullname = format!("{}|{sub}", spec.name);
            return match crate::command::node_subcommand_acl(&fullname) {
                Some(categories) if self.allows_learned(&fullname, categories) => Ok(()),
                _ => Err(Denied::Subcommand(spec.name, sub.into_bytes())),
            };
        }
        if !self.all_commands && spec.flags & flags::NO_AUTH == 0 {
            let allowed = match index_of(spec) {
                Some(i) => self.allows(i),
                None => self.allows_learned(spec.name, spec.acl),
            };
            if !allowed {
                return Err(Denied::Command(spec.name));
            }
        }
        let described =
            !spec.key_specs.is_empty() && spec.key_specs.iter().all(|ks| ks.followable());
        if !self.all_keys
            && spec.flags & flags::MOVABLE_KEYS != 0
            && index_of(spec).is_none()
            && !described
        {
            // A module command whose keys only the module's code finds:
            // they cannot be checked.
            return Err(Denied::Command(spec.name));
        }
        if crate::command::runs_script(spec.name) && !self.unconfined() {
            // A script's own commands run on the nodes as the proxy's
            // user, unchecked: only a selector the rules do not confine
            // may run one.
            return Err(Denied::Command(spec.name));
        }
        if !self.all_keys && !spec.key_specs.is_empty() {
            for (pos, mut ks_flags) in acl_keys(spec, args) {
                if ks_flags & key_flags::VARIABLE_FLAGS != 0 {
                    ks_flags = variable_key_flags(spec.name, args);
                }
                if !self.key_allowed(args.get(pos), ks_flags) {
                    return Err(Denied::Key(pos));
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
                    return Err(Denied::Channel(i));
                }
            }
        }
        Ok(())
    }

    /// Whether a command the built-in table lacks (learned from the
    /// nodes, or a subcommand only they know), of ACL `categories`, is
    /// allowed: as Redis recomputes a command's bit from the rules given
    /// since the last `+@all`/`-@all`, starting from whether that was
    /// `+@all`.
    fn allows_learned(&self, name: &str, categories: u32) -> bool {
        let container = name.split_once('|').map(|(c, _)| c);
        let mut allowed = self.future;
        for rule in &self.rules {
            let (allow, what) = (rule.starts_with('+'), rule.get(1..).unwrap_or_default());
            let hit = match what.strip_prefix('@') {
                Some(category) => category::CATEGORIES
                    .iter()
                    .any(|(n, bit)| *n == category && categories & bit != 0),
                None => what == name || Some(what) == container,
            };
            if hit {
                allowed = allow;
            }
        }
        allowed
    }

    /// Neither commands, keys, channels nor databases are limited.
    fn unconfined(&self) -> bool {
        self.all_commands && self.all_keys && self.all_channels && self.all_dbs
    }

    /// A read pattern that matches the string `*`.
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

    /// The key patterns as `ACL GETUSER` shows them (`~*` for all keys).
    pub fn describe_keys(&self) -> Vec<u8> {
        if self.all_keys {
            return b"~*".to_vec();
        }
        let mut out = Vec::new();
        for (i, (perm, pattern)) in self.keys.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(match *perm {
                READ => b"%R~",
                WRITE => b"%W~",
                _ => b"~",
            });
            out.extend_from_slice(pattern);
        }
        out
    }

    /// The channel patterns as `ACL GETUSER` shows them (`&*` for all).
    pub fn describe_channels(&self) -> Vec<u8> {
        if self.all_channels {
            return b"&*".to_vec();
        }
        let mut out = Vec::new();
        for (i, pattern) in self.channels.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.push(b'&');
            out.extend_from_slice(pattern);
        }
        out
    }

    /// The command rules as `ACL GETUSER` shows them.
    pub fn describe_commands(&self, style: Style) -> String {
        match style {
            Style::Redis70 => describe::command_rules(self),
            Style::Redis72 | Style::Valkey91 => {
                let mut out = String::from(if self.future { "+@all" } else { "-@all" });
                for rule in &self.rules {
                    out.push(' ');
                    out.push_str(rule);
                }
                out
            }
        }
    }

    /// The databases as Valkey 9.1's `ACL GETUSER` shows them.
    pub fn describe_dbs(&self) -> Vec<u8> {
        if self.all_dbs {
            return b"alldbs".to_vec();
        }
        if self.dbs.is_empty() {
            return Vec::new();
        }
        let ids: Vec<String> = self.dbs.iter().map(u32::to_string).collect();
        format!("db={}", ids.join(",")).into_bytes()
    }

    /// The whole selector as `ACL LIST` writes it (Redis's
    /// `ACLDescribeSelector`): keys, channels, databases (Valkey 9.1, not
    /// when all), then command rules.
    pub fn describe(&self, style: Style) -> Vec<u8> {
        let mut out = Vec::new();
        if self.all_keys || !self.keys.is_empty() {
            out.extend_from_slice(&self.describe_keys());
            out.push(b' ');
        }
        if self.all_channels {
            out.extend_from_slice(b"&* ");
        } else {
            out.extend_from_slice(b"resetchannels ");
            if !self.channels.is_empty() {
                out.extend_from_slice(&self.describe_channels());
                out.push(b' ');
            }
        }
        if !self.all_dbs {
            match self.dbs.is_empty() {
                true => out.extend_from_slice(b"resetdbs"),
                false => out.extend_from_slice(&self.describe_dbs()),
            }
            out.push(b' ');
        }
        out.extend_from_slice(self.describe_commands(style).as_bytes());
        out
    }

    /// Valkey 9.1's `alldbs` (what `reset` leaves).
    pub(crate) fn allow_all_dbs(&mut self) {
        self.all_dbs = true;
        self.dbs.clear();
    }

    /// Whether `+@all` was the last of `+@all`/`-@all` (see `future`).
    pub(crate) fn starts_from_all(&self) -> bool {
        self.future
    }

    /// The command bitmap, for the description's comparisons.
    pub(crate) fn bits(&self) -> &[u64] {
        &self.allowed
    }
}

/// A database number of a `db=` rule, read as `strtoll` does (blanks and
/// a sign before the digits), from 0 to 2^31-1.
fn parse_db_id(item: &[u8]) -> Result<u32, SetError> {
    let text = std::str::from_utf8(item).map_err(|_| SetError::Syntax)?;
    let trimmed = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(SetError::Syntax);
    }
    match digits.parse::<u64>() {
        Ok(0) => Ok(0),
        Ok(_) if negative => Err(SetError::DatabaseRange),
        Ok(n) => u32::try_from(n)
            .ok()
            .filter(|&n| n <= i32::MAX as u32)
            .ok_or(SetError::DatabaseRange),
        // More digits than a 64-bit number holds: strtoll's ERANGE.
        Err(_) => Err(SetError::DatabaseRange),
    }
}

/// Where a selector without database 0 refuses a command (Valkey 9.1's
/// database check, with the one database the proxy serves): the position
/// of a database argument naming 0, or 0 for the command itself; `None`
/// when the command does not touch a database. `SELECT` and `SWAPDB` of
/// other databases are not refused here (one server would only check them
/// in range; the proxy then refuses them as databases it does not serve).
fn database_denied<A: Args + ?Sized>(spec: &CommandSpec, args: &A) -> Option<usize> {
    let zero = |i: usize| crate::protocol::request::parse_i64(args.get(i)) == Some(0);
    match spec.name {
        "select" => zero(1).then_some(1),
        "swapdb" => (zero(1) && zero(2)).then_some(1),
        "move" => Some(if zero(2) { 2 } else { 0 }),
        "copy" => Some(copy_db_position(args, zero).unwrap_or(0)),
        _ => {
            let touches = spec.acl & (category::KEYSPACE | category::READ | category::WRITE) != 0
                || !spec.key_specs.is_empty()
                || spec.flags & flags::MOVABLE_KEYS != 0;
            touches.then_some(0)
        }
    }
}

/// `COPY`'s first `DB` clause when every clause names a database that
/// exists (Valkey's `copyDbIdArgs`).
fn copy_db_position<A: Args + ?Sized>(args: &A, exists: impl Fn(usize) -> bool) -> Option<usize> {
    let mut first = None;
    let mut j = 3;
    while j < args.len() {
        let arg = args.get(j);
        if arg.eq_ignore_ascii_case(b"replace") {
            j += 1;
        } else if arg.eq_ignore_ascii_case(b"db") && j + 1 < args.len() {
            if !exists(j + 1) {
                return None;
            }
            first.get_or_insert(j + 1);
            j += 2;
        } else {
            return None;
        }
    }
    first
}

/// The keys Redis 7.0 checks for a command, with their flags: by its key
/// specs; when one cannot be followed (`SORT`'s and `MIGRATE`'s), or the
/// arguments do not fit them (a bad `numkeys`), by the command's own key
/// finder, as Redis's `getKeysFromCommandWithSpecs` does.
fn acl_keys<A: Args + ?Sized>(spec: &CommandSpec, args: &A) -> Vec<(usize, u16)> {
    let partial = spec.key_specs.iter().any(|ks| {
        ks.flags & key_flags::NOT_KEY == 0
            && (ks.flags & key_flags::INCOMPLETE != 0 || !ks.followable())
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

    /// A selector with `rules` applied, database rules included (as with
    /// Valkey 9.1 nodes).
    fn selector(rules: &[&str]) -> Result<Selector, SetError> {
        let mut s = Selector::empty();
        for rule in rules {
            let lower = rule.to_ascii_lowercase();
            match s.apply_db_rule(rule.as_bytes(), lower.as_bytes()) {
                Some(done) => done?,
                None => s.apply(rule.as_bytes())?,
            }
        }
        Ok(s)
    }

    #[test]
    fn database_rules_as_valkey_9_1() {
        let s = selector(&["~*", "+@all", "db=3,1,1"]).unwrap();
        assert_eq!(s.describe_dbs(), b"db=1,3");
        assert_eq!(
            s.describe(Style::Valkey91),
            b"~* resetchannels db=1,3 +@all"
        );
        let none = selector(&["resetdbs"]).unwrap();
        assert_eq!(none.describe_dbs(), b"");
        assert_eq!(
            none.describe(Style::Valkey91),
            b"resetchannels resetdbs -@all"
        );
        let all = selector(&["db=2", "ALLDBS"]).unwrap();
        assert_eq!(all.describe_dbs(), b"alldbs");
        assert_eq!(all.describe(Style::Valkey91), b"resetchannels -@all");
        assert_eq!(selector(&["DB=+7"]).unwrap().describe_dbs(), b"db=7");
        assert_eq!(
            selector(&["db=2147483647"]).unwrap().describe_dbs(),
            b"db=2147483647"
        );
        for bad in ["db=", "db=a", "db=,1", "db=1,", "db=1,,2", "db=1 ", "db=+"] {
            assert_eq!(selector(&[bad]).err(), Some(SetError::Syntax), "{bad}");
        }
        for far in ["db=-1", "db=2147483648", "db=99999999999999999999999"] {
            assert_eq!(
                selector(&[far]).err(),
                Some(SetError::DatabaseRange),
                "{far}"
            );
        }
    }

    #[test]
    fn database_zero_is_checked_as_valkey_9_1_checks_it() {
        let s = selector(&["~*", "&*", "+@all", "db=1,3"]).unwrap();
        let acl = Acl {
            root: s,
            selectors: Vec::new(),
        };
        let run = |cmd: &str| {
            let args: Vec<&[u8]> = cmd.split(' ').map(str::as_bytes).collect();
            acl.check(args.as_slice())
        };
        assert_eq!(run("GET k"), Err(Denied::Database(0)));
        assert_eq!(run("DBSIZE"), Err(Denied::Database(0)));
        assert_eq!(run("FLUSHALL"), Err(Denied::Database(0)));
        assert_eq!(run("SELECT 0"), Err(Denied::Database(1)));
        assert_eq!(run("SWAPDB 0 0"), Err(Denied::Database(1)));
        assert_eq!(run("MOVE k 0"), Err(Denied::Database(2)));
        assert_eq!(run("MOVE k 1"), Err(Denied::Database(0)));
        assert_eq!(run("COPY a b REPLACE DB 0"), Err(Denied::Database(5)));
        assert_eq!(run("COPY a b DB 0 DB 9"), Err(Denied::Database(0)));
        // Databases the proxy does not serve are its own refusal.
        assert_eq!(run("SELECT 1"), Ok(()));
        assert_eq!(run("PING"), Ok(()));
        assert_eq!(run("PUBLISH c m"), Ok(()));
        assert_eq!(run("CLIENT LIST"), Ok(()));
        assert!(!acl.unconfined());
        // Another selector with database 0 lets the command through.
        let mut two = acl.clone();
        two.selectors.push(selector(&["~x*", "+get"]).unwrap());
        let get = |a: &Acl, cmd: &str| {
            let args: Vec<&[u8]> = cmd.split(' ').map(str::as_bytes).collect();
            a.check(args.as_slice())
        };
        assert_eq!(get(&two, "GET x1"), Ok(()));
        assert_eq!(get(&two, "GET y1"), Err(Denied::Key(1)));
        assert_eq!(
            String::from_utf8_lossy(&Denied::Database(0).reply(b"u", true)),
            "-NOPERM No permissions to access database\r\n"
        );
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
        assert_eq!(check(rules, "SET r:1 v"), Err(Denied::Key(1)));
        assert_eq!(check(rules, "SET w:1 v"), Ok(()));
        assert_eq!(check(rules, "GET w:1"), Err(Denied::Key(1)));
        assert_eq!(check(rules, "GETSET both:1 v"), Ok(()));
        // COPY reads its source and writes its destination.
        assert_eq!(check(rules, "COPY r:1 w:1"), Ok(()));
        assert_eq!(check(rules, "COPY w:1 r:1"), Err(Denied::Key(1)));
        assert_eq!(check(rules, "MGET r:1 other"), Err(Denied::Key(2)));
        // EXISTS neither reads nor writes the value: any pattern will do.
        assert_eq!(check(rules, "EXISTS w:1"), Ok(()));
        assert_eq!(check(rules, "EXISTS other"), Err(Denied::Key(1)));
        // SET reads only with GET; BITFIELD writes only with SET/INCRBY.
        assert_eq!(check(rules, "SET w:1 v GET"), Err(Denied::Key(1)));
        assert_eq!(check(rules, "BITFIELD r:1 GET u8 0"), Ok(()));
        assert_eq!(check(rules, "BITFIELD r:1 SET u8 0 1"), Err(Denied::Key(1)));
        assert_eq!(check("+@all", "GET k"), Err(Denied::Key(1)));
        // A bad numkeys is the command's own error.
        assert_eq!(check("+@all", "LMPOP 5 k LEFT"), Ok(()));
    }

    #[test]
    fn channels() {
        let rules = "+@all ~* &news.*";
        assert_eq!(check(rules, "PUBLISH news.a m"), Ok(()));
        assert_eq!(check(rules, "PUBLISH other m"), Err(Denied::Channel(1)));
        assert_eq!(
            check(rules, "SUBSCRIBE news.a other"),
            Err(Denied::Channel(2))
        );
        assert_eq!(check(rules, "PSUBSCRIBE news.*"), Ok(()));
        assert_eq!(check(rules, "PSUBSCRIBE news.a*"), Err(Denied::Channel(1)));
        assert_eq!(check(rules, "UNSUBSCRIBE other"), Ok(()));
        assert_eq!(check("+@all ~*", "SPUBLISH c m"), Err(Denied::Channel(1)));
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
            ("+nosuch", "ACL rule '+nosuch': Unknown command or category name in ACL"),
            ("+@nosuch", "ACL rule '+@nosuch': Unknown command or category name in ACL"),
            ("~* ~a:*", "ACL rule '~a:*': Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns"),
            ("%X~a", "ACL rule '%X~a': Syntax error"),
            ("+select|0", "ACL rule '+select|0': slotbridge does not support first-arg rules of commands without subcommands (such as +select|0); allow the command or a subcommand instead"),
            ("+config|get|x", "ACL rule '+config|get|x': Allowing first-arg of a subcommand is not supported"),
        ] {
            assert_eq!(Acl::parse(&format!("on {rules}")).unwrap_err(), err);
        }
        assert!(!user::User::from_rules("u", "off +@all").unwrap().enabled());
        assert_eq!(
            Acl::parse("~* +@all").unwrap_err(),
            "the rules must say 'on' (or 'off' to disable the user), as a new Redis user is off"
        );
        assert!(Acl::parse("on %RR~a").is_err());
        // %RW~* is a pattern, not allkeys: another pattern may follow.
        assert!(Acl::parse("on %RW~* ~a:*").is_ok());
    }

    #[test]
    fn a_selector_allows_what_it_allows_whole() {
        // Redis 7.0: one selector must allow the command and all its keys.
        let rules = "on ~r:* +get (~w:* +set)";
        assert_eq!(check(rules, "GET r:1"), Ok(()));
        assert_eq!(check(rules, "SET w:1 v"), Ok(()));
        assert_eq!(check(rules, "SET r:1 v"), Err(Denied::Key(1)));
        assert_eq!(check(rules, "GET w:1"), Err(Denied::Key(1)));
        assert_eq!(check(rules, "DEL r:1"), Err(Denied::Command("del")));
        // The latest key any selector refused is the one reported.
        assert_eq!(
            check("on ~a +mget (~b +mget)", "MGET a b"),
            Err(Denied::Key(2))
        );
    }

    #[test]
    fn what_redis_finds_by_other_means() {
        // The same pattern twice adds up its permissions.
        assert_eq!(check("+@all %R~d:* %W~d:*", "INCR d:1"), Ok(()));
        // SORT: its STORE key, and BY/GET patterns without full read access.
        let rules = "+@all ~app:*";
        assert_eq!(check(rules, "SORT app:l STORE other"), Err(Denied::Key(3)));
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
            Denied::Key(1).reply(b"ro", true),
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
