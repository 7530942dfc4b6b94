//! Static description of Redis commands: arity, flags and key specifications.
//!
//! The shapes mirror what Redis 7 reports in `COMMAND` (see
//! <https://redis.io/docs/reference/key-specs/>), so that one generic
//! interpreter can find the keys of every command, including those whose key
//! positions depend on their arguments (`EVAL`, `ZUNIONSTORE`, `XREAD STREAMS`).

/// Command flags, one bit each, as reported by `COMMAND` in Redis 7.
pub mod flags {
    /// The command may modify data.
    pub const WRITE: u32 = 1 << 0;
    /// The command only reads data.
    pub const READONLY: u32 = 1 << 1;
    /// The command may use more memory (refused under OOM).
    pub const DENYOOM: u32 = 1 << 2;
    /// Administrative command.
    pub const ADMIN: u32 = 1 << 3;
    /// Pub/Sub related command.
    pub const PUBSUB: u32 = 1 << 4;
    /// Not allowed inside scripts.
    pub const NOSCRIPT: u32 = 1 << 5;
    /// The command may block the connection.
    pub const BLOCKING: u32 = 1 << 6;
    /// Allowed while the server loads data.
    pub const LOADING: u32 = 1 << 7;
    /// Allowed on a replica with stale data.
    pub const STALE: u32 = 1 << 8;
    /// Not shown in MONITOR.
    pub const SKIP_MONITOR: u32 = 1 << 9;
    /// Not shown in SLOWLOG.
    pub const SKIP_SLOWLOG: u32 = 1 << 10;
    /// O(1) or O(log N) command.
    pub const FAST: u32 = 1 << 11;
    /// Allowed before authentication.
    pub const NO_AUTH: u32 = 1 << 12;
    /// The command may replicate even if it is not a write.
    pub const MAY_REPLICATE: u32 = 1 << 13;
    /// Not allowed inside MULTI.
    pub const NO_MULTI: u32 = 1 << 14;
    /// The command may be executed without keys even though it has key specs.
    pub const NO_MANDATORY_KEYS: u32 = 1 << 15;
    /// Allowed while a script is busy.
    pub const ALLOW_BUSY: u32 = 1 << 16;
    /// Key positions depend on arguments (movablekeys).
    pub const MOVABLE_KEYS: u32 = 1 << 17;
    /// The command is a container of subcommands (e.g. `OBJECT`).
    pub const HAS_SUBCOMMANDS: u32 = 1 << 18;
    /// Asking flag (allowed on importing slots).
    pub const ASKING: u32 = 1 << 19;
    /// Not allowed while the proxy is in a MULTI (reserved).
    pub const NO_ASYNC_LOADING: u32 = 1 << 20;
}

/// Key-spec flags (subset that routing cares about), as reported by `COMMAND`.
pub mod key_flags {
    /// Read-only access to the key.
    pub const RO: u16 = 1 << 0;
    /// Read-write access.
    pub const RW: u16 = 1 << 1;
    /// Overwrite access.
    pub const OW: u16 = 1 << 2;
    /// The key is deleted.
    pub const RM: u16 = 1 << 3;
    /// The argument is not really a key but must hash like one (e.g. a channel).
    pub const NOT_KEY: u16 = 1 << 4;
    /// The spec may not find all keys (e.g. `SORT ... BY`): routing must be careful.
    pub const INCOMPLETE: u16 = 1 << 5;
    /// The key's access flags depend on arguments.
    pub const VARIABLE_FLAGS: u16 = 1 << 6;
    /// The value is read, copied or returned (ACL read permission).
    pub const ACCESS: u16 = 1 << 7;
    /// Data is added to the value (ACL write permission).
    pub const INSERT: u16 = 1 << 8;
    /// Data is removed from the value (ACL write permission).
    pub const DELETE: u16 = 1 << 9;
    /// The value is changed (ACL write permission).
    pub const UPDATE: u16 = 1 << 10;
}

/// ACL categories (`ACL CAT` of Redis 7.0), one bit each.
pub mod acl {
    /// `@keyspace`
    pub const KEYSPACE: u32 = 1 << 0;
    /// `@read`
    pub const READ: u32 = 1 << 1;
    /// `@write`
    pub const WRITE: u32 = 1 << 2;
    /// `@set`
    pub const SET: u32 = 1 << 3;
    /// `@sortedset`
    pub const SORTEDSET: u32 = 1 << 4;
    /// `@list`
    pub const LIST: u32 = 1 << 5;
    /// `@hash`
    pub const HASH: u32 = 1 << 6;
    /// `@string`
    pub const STRING: u32 = 1 << 7;
    /// `@bitmap`
    pub const BITMAP: u32 = 1 << 8;
    /// `@hyperloglog`
    pub const HYPERLOGLOG: u32 = 1 << 9;
    /// `@geo`
    pub const GEO: u32 = 1 << 10;
    /// `@stream`
    pub const STREAM: u32 = 1 << 11;
    /// `@pubsub`
    pub const PUBSUB: u32 = 1 << 12;
    /// `@admin`
    pub const ADMIN: u32 = 1 << 13;
    /// `@fast`
    pub const FAST: u32 = 1 << 14;
    /// `@slow`
    pub const SLOW: u32 = 1 << 15;
    /// `@blocking`
    pub const BLOCKING: u32 = 1 << 16;
    /// `@dangerous`
    pub const DANGEROUS: u32 = 1 << 17;
    /// `@connection`
    pub const CONNECTION: u32 = 1 << 18;
    /// `@transaction`
    pub const TRANSACTION: u32 = 1 << 19;
    /// `@scripting`
    pub const SCRIPTING: u32 = 1 << 20;

    /// Every category by its name in ACL rules (`+@read`).
    pub const CATEGORIES: [(&str, u32); 21] = [
        ("keyspace", KEYSPACE),
        ("read", READ),
        ("write", WRITE),
        ("set", SET),
        ("sortedset", SORTEDSET),
        ("list", LIST),
        ("hash", HASH),
        ("string", STRING),
        ("bitmap", BITMAP),
        ("hyperloglog", HYPERLOGLOG),
        ("geo", GEO),
        ("stream", STREAM),
        ("pubsub", PUBSUB),
        ("admin", ADMIN),
        ("fast", FAST),
        ("slow", SLOW),
        ("blocking", BLOCKING),
        ("dangerous", DANGEROUS),
        ("connection", CONNECTION),
        ("transaction", TRANSACTION),
        ("scripting", SCRIPTING),
    ];
}

/// Where the search for the first key starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// The first key is at this argument index (0 is the command name).
    Index(u16),
    /// The first key follows this keyword, searched from `start_from`
    /// (negative: from the end) in the direction of its sign.
    Keyword {
        /// The keyword, upper case (e.g. `STREAMS`).
        keyword: &'static str,
        /// Where to start searching (1-based from the start, or negative from the end).
        start_from: i16,
    },
    /// Key positions cannot be described (reserved by Redis); treat as no keys.
    Unknown,
}

/// How to find all keys once the first one is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys are a range: `lastkey` relative to the first key (negative: from
    /// the end of the arguments), `keystep` between keys, and when `lastkey`
    /// is -1, `limit` divides the remaining arguments (2 = half of them).
    Range {
        /// Index of the last key relative to the first key, or negative from the end.
        last_key: i16,
        /// Distance between consecutive keys.
        key_step: u16,
        /// When `last_key` is -1: 0/1 = all remaining, N = 1/N of remaining.
        limit: u16,
    },
    /// The number of keys is given by an argument (`EVAL script numkeys k...`).
    KeyNum {
        /// Index of the numkeys argument relative to the begin-search result.
        key_num_idx: u16,
        /// Index of the first key relative to the begin-search result.
        first_key: u16,
        /// Distance between consecutive keys.
        key_step: u16,
    },
    /// Key positions cannot be described; treat as no keys.
    Unknown,
}

/// One key specification of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Where the search starts.
    pub begin: BeginSearch,
    /// How the keys are found from there.
    pub find: FindKeys,
    /// `key_flags` bits.
    pub flags: u16,
}

impl KeySpec {
    /// Whether its keys can be found from the arguments: neither its
    /// begin search nor its find-keys step is `unknown`.
    pub fn followable(&self) -> bool {
        !matches!(self.begin, BeginSearch::Unknown) && !matches!(self.find, FindKeys::Unknown)
    }
}

/// The static description of one command or subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lower-case name; subcommands are `container|sub` (e.g. `object|encoding`).
    pub name: &'static str,
    /// Redis arity: positive = exact argument count (with the name), negative = at least -arity.
    pub arity: i16,
    /// `flags` bits.
    pub flags: u32,
    /// ACL categories ([`acl`] bits); 0 for commands learned at start-up.
    pub acl: u32,
    /// Key specifications, in Redis order.
    pub key_specs: &'static [KeySpec],
}
