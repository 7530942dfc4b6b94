//! Pure routing: from a parsed command to where it must go.
//!
//! Routing takes values and returns values (no sockets, no topology), so it
//! is unit-tested directly. The session then carries the decision out.

use crate::zset::ZOp;
use bytes::Bytes;

use super::keys::{self, Args};
use super::spec::{flags, CommandSpec};
use crate::cluster::slot::slot;
use crate::protocol::reply;

/// A complete client command: its raw RESP bytes and argument ranges.
#[derive(Debug, Clone, Copy)]
pub struct CommandView<'a> {
    /// The command exactly as the client sent it (RESP array).
    pub raw: &'a [u8],
    /// Byte ranges of the arguments inside `raw`; index 0 is the name.
    pub args: &'a [(usize, usize)],
}

impl Args for CommandView<'_> {
    fn len(&self) -> usize {
        self.args.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        match self.args.get(i) {
            Some(&(s, e)) => self.raw.get(s..e).unwrap_or_default(),
            None => &[],
        }
    }
}

/// How a multi-key command is split and merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// `MGET`: values merged back in the caller's key order.
    Mget,
    /// `MSET`: key/value pairs; `+OK` when every part is OK.
    Mset,
    /// Valkey 9.1's `MSETEX numkeys key value ... [EX ...]` without `NX` or
    /// `XX`: per-slot parts with the same options; `:1` when every part
    /// answers it.
    Msetex,
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: integer replies summed.
    Sum,
    /// `SINTER`, `SUNION`, `SDIFF`, `SINTERCARD`: each set fetched with
    /// `SMEMBERS` and the result computed in the proxy.
    Sets(SetOp),
    /// `SINTERSTORE`, `SUNIONSTORE`, `SDIFFSTORE`: the sources fetched as
    /// for [`SplitKind::Sets`], the result computed in the proxy and
    /// stored by one script (or the destination deleted when empty).
    SStore(SetOp),
    /// `PFCOUNT`: each HyperLogLog fetched with `GET`, merged and counted
    /// in the proxy.
    PfCount,
    /// `PFMERGE`: the destination and sources fetched with `GET`, the
    /// sources merged in the proxy, and the result merged into the
    /// destination by its master in one script.
    PfMerge,
    /// `BITOP`: the sources fetched with `GET`, the result computed in the
    /// proxy and stored with `SET` (or the destination deleted when empty).
    Bitop(BitOp),
    /// `ZUNIONSTORE`, `ZINTERSTORE`, `ZDIFFSTORE`: the sources fetched with
    /// `ZUNION 1 key WITHSCORES`, the result computed in the proxy and
    /// stored by one script (see [`crate::zset`]).
    ZStore(ZOp),
    /// `ZUNION`, `ZINTER`, `ZDIFF`: the sources fetched as for
    /// [`SplitKind::ZStore`], the result computed in the proxy; with
    /// `WITHSCORES`, one script on a node writes the scores as it writes
    /// doubles.
    ZRead(ZOp),
    /// `ZRANGESTORE dst src min max [options]`: the range read by a
    /// read-only script (`ZRANGE src min max [options]` and each member's
    /// score: see [`crate::zset::RANGE_READ`]) and stored as for
    /// [`SplitKind::ZStore`].
    ZRangeStore,
    /// `LCS key1 key2 [options]`: both values read with `GET`, the common
    /// subsequence computed in the proxy (see [`crate::lcs`]); the options,
    /// or Redis's error for them (given once the keys' types are known).
    Lcs(Result<crate::lcs::LcsOptions, &'static str>),
    /// `GEORADIUS ... STORE`, `GEORADIUSBYMEMBER ... STORE`,
    /// `GEOSEARCHSTORE`: the source's master runs the command into a
    /// temporary key and returns what it stored (see [`crate::geo`]),
    /// which is stored as for [`SplitKind::ZStore`].
    GeoStore,
    /// `ZINTERCARD`: the sources fetched as for [`SplitKind::ZStore`], the
    /// size of their intersection counted in the proxy; its `LIMIT` (or the
    /// error Redis gives for it once the keys were found to be sets).
    ZInterCard(Result<u64, &'static str>),
}

/// The arguments of a per-key read before and after the key.
pub type ReadPerKey = (&'static [&'static [u8]], &'static [&'static [u8]]);

/// A `BITOP` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitOp {
    /// Bitwise and.
    And,
    /// Bitwise or.
    Or,
    /// Bitwise exclusive or.
    Xor,
    /// Bitwise not of one source.
    Not,
}

impl SplitKind {
    /// The read sent per key when the proxy computes the result itself:
    /// the arguments before the key and after it (`None`: the command is
    /// split into per-slot parts of itself).
    pub fn read_per_key(self) -> Option<ReadPerKey> {
        let (before, after): ReadPerKey = match self {
            SplitKind::Sets(_) | SplitKind::SStore(_) => (&[b"SMEMBERS"], &[]),
            SplitKind::PfCount | SplitKind::PfMerge | SplitKind::Bitop(_) | SplitKind::Lcs(_) => {
                (&[b"GET"], &[])
            }
            SplitKind::ZStore(_) | SplitKind::ZRead(_) | SplitKind::ZInterCard(_) => {
                (&[b"ZUNION", b"1"], &[b"WITHSCORES"])
            }
            // The range's arguments follow (see `split::range_read`).
            SplitKind::ZRangeStore => (&[b"EVAL", crate::zset::RANGE_READ, b"1"], &[]),
            // Its one read is `geo::read_request`.
            SplitKind::GeoStore => (&[], &[]),
            SplitKind::Mget | SplitKind::Mset | SplitKind::Msetex | SplitKind::Sum => return None,
        };
        Some((before, after))
    }

    /// Whether its first key is a destination that is written but not read
    /// (`BITOP`, the stores; a geo store's destination is found by
    /// [`crate::geo::store_keys`]).
    pub fn skips_destination(self) -> bool {
        matches!(
            self,
            SplitKind::Bitop(_)
                | SplitKind::ZStore(_)
                | SplitKind::SStore(_)
                | SplitKind::ZRangeStore
                | SplitKind::GeoStore
        )
    }

    /// Whether the proxy writes the result itself once the reads are in
    /// (`PFMERGE`, `BITOP`, the sorted-set stores): the client's later
    /// commands wait for it.
    pub fn writes_after_reads(self) -> bool {
        matches!(
            self,
            SplitKind::PfMerge
                | SplitKind::Bitop(_)
                | SplitKind::ZStore(_)
                | SplitKind::SStore(_)
                | SplitKind::ZRangeStore
                | SplitKind::GeoStore
        )
    }

    /// Whether the proxy computes the result from the reads and may need
    /// one more request (the writes above, `ZUNION ... WITHSCORES`): not
    /// inside `MULTI`.
    pub fn takes_two_steps(self) -> bool {
        self.writes_after_reads() || matches!(self, SplitKind::ZRead(_))
    }
}

/// A set operation computed in the proxy across slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    /// Members in every set.
    Inter,
    /// Members in any set.
    Union,
    /// Members of the first set in no other.
    Diff,
    /// Size of the intersection, stopping at the limit (0: none).
    InterCard(u64),
}

/// How the replies of a command sent to every master are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    /// Integers summed (`DBSIZE`).
    Sum,
    /// `+OK` when all are OK (`FLUSHALL`, `SCRIPT FLUSH`, `CONFIG SET`).
    AllOk,
    /// Arrays concatenated (`KEYS`).
    Concat,
    /// The first reply, once all succeeded (`SCRIPT LOAD`).
    First,
    /// Arrays of 0/1 combined with AND (`SCRIPT EXISTS`).
    AllTrue,
    /// `INFO`, rebuilt to look like one server.
    Info,
    /// Arrays merged without duplicates (`PUBSUB CHANNELS`).
    Union,
    /// Flat name/count arrays summed per name (`PUBSUB NUMSUB`).
    SumPairs,
    /// The smallest integer (`WAIT`: replicas that acknowledged everywhere).
    Min,
    /// Arrays of integers, the smallest at each position (`WAITAOF`).
    MinEach,
    /// At most this many entries of all masters, newest first
    /// (`SLOWLOG GET [count]`; negative: all).
    Newest(i64),
    /// `LATENCY LATEST`: per event, the newest sample and largest maximum.
    LatencyLatest,
    /// `LATENCY HISTORY`: the samples of all masters in time order.
    LatencyHistory,
    /// `LATENCY HISTOGRAM`: calls and cumulative buckets added up.
    LatencyHistogram,
    /// `MEMORY STATS`: figures summed, ratios computed again.
    MemoryStats,
    /// `FUNCTION STATS`: a running script of any master.
    FunctionStats,
    /// `SCRIPT KILL`, `FUNCTION KILL`: `+OK` when a master killed its
    /// script (see [`crate::merge::kill`]).
    Kill,
    /// `MEMORY DOCTOR`, `LATENCY DOCTOR`: each master's report, under its
    /// address (see [`crate::introspection::doctor`]).
    Doctor,
    /// `DEBUG DIGEST`: the digest of all masters' keys together (see
    /// [`crate::merge::digest`]).
    Digest,
}

/// Commands the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// `PING [message]`
    Ping,
    /// `ECHO message`
    Echo,
    /// `SELECT db`
    Select,
    /// `QUIT`
    Quit,
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`
    Hello,
    /// `AUTH [user] pass`
    Auth,
    /// `RESET`
    Reset,
    /// `CLIENT ...`
    Client,
    /// `ACL WHOAMI`
    Whoami,
    /// `ACL SETUSER`, `GETUSER`, `DELUSER`, `LIST`, `USERS`, `DRYRUN`,
    /// `LOG`, `SAVE`, `LOAD`: over the proxy's users.
    Acl,
}

/// Transaction commands, handled by the session's transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxCmd {
    /// `MULTI`
    Multi,
    /// `EXEC`
    Exec,
    /// `DISCARD`
    Discard,
    /// `WATCH key...` with all keys in this slot.
    Watch(u16),
    /// `UNWATCH`
    Unwatch,
}

/// Subscription commands, served on the client's private subscription
/// connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubCmd {
    /// `SUBSCRIBE channel...`
    Subscribe,
    /// `PSUBSCRIBE pattern...`
    PSubscribe,
    /// `UNSUBSCRIBE [channel...]`
    Unsubscribe,
    /// `PUNSUBSCRIBE [pattern...]`
    PUnsubscribe,
    /// `SSUBSCRIBE channel...` (the session subscribes per slot).
    SSubscribe,
    /// `SUNSUBSCRIBE [channel...]`.
    SUnsubscribe,
    /// `MONITOR`: the proxy's clients' commands, streamed like messages.
    Monitor,
}

/// Where a command goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A subscription command.
    Sub(SubCmd),
    /// A transaction command.
    Tx(TxCmd),
    /// `SCAN`, iterated master by master with a proxy cursor.
    Scan,
    /// `RANDOMKEY`, asked of the masters in turn until one has a key.
    RandomKey,
    /// To the master of this slot.
    Slot(u16),
    /// A blocking command for this slot: needs its own backend connection.
    Blocking(u16),
    /// `BLPOP` & co, `LMPOP`, `ZMPOP` on keys in several slots (keys in
    /// the scratch): popped in key order, then waited for on every slot
    /// (see [`crate::client::multipop`]).
    CrossSlotPop,
    /// `XREAD`, `XREADGROUP` of streams in several slots (keys in the
    /// scratch): read on every slot, then waited for on every slot with
    /// `BLOCK` (see [`crate::client::stream_read`]).
    CrossSlotStreams,
    /// `RENAME`, `RENAMENX`, `COPY`, `SMOVE`, `LMOVE` & co to a key in
    /// another slot: carried out in steps (see [`crate::client::moves`],
    /// [`crate::client::element_moves`]).
    CrossSlotMove,
    /// `SORT`/`SORT_RO` with a `BY` pattern or `GET` (which nodes refuse),
    /// or `STORE` into another slot: computed by the proxy (see
    /// [`crate::client::sort`]).
    ProxySort,
    /// Keys in several slots of a splittable command (keys in the scratch).
    Split(SplitKind),
    /// To every master, replies combined.
    Fanout(Fanout),
    /// To any one master.
    AnyMaster,
    /// Answered by the proxy.
    Local(Local),
    /// Answered at once with this reply (errors).
    Reply(Bytes),
}

/// Classic (non-shard) subscriptions and `PUBLISH` all go to the master
/// owning this slot. A cluster delivers every `PUBLISH` to every node, so
/// any node would do for delivery; one home node makes `PUBLISH` return the
/// exact number of subscribers, as one server would.
pub const PUBSUB_HOME_SLOT: u16 = 0;

/// Reusable buffers for routing (one per session, so routing allocates nothing).
#[derive(Debug, Default)]
pub struct Scratch {
    /// Argument indices of the keys of the last routed command.
    pub keys: Vec<usize>,
    /// The slot of each of those keys (set when it has keys).
    pub slots: Vec<u16>,
    /// Whether the last routed command only reads.
    pub readonly: bool,
    /// The last routed command's name (`""` when unknown).
    pub name: &'static str,
    /// Its position in the built-in command table (for metrics).
    pub index: Option<u16>,
    /// The last looked-up plain command, reused while a pipeline repeats it.
    last: Option<&'static CommandSpec>,
}

/// Position of a spec in the built-in table, by address (no search).
/// The position of `spec` in the built-in table (`None` for a command
/// learned at start-up).
pub(crate) fn table_index(spec: &CommandSpec) -> Option<u16> {
    let table = super::table_gen::COMMANDS;
    let base = table.as_ptr() as usize;
    let size = std::mem::size_of::<CommandSpec>();
    let addr = spec as *const CommandSpec as usize;
    if size == 0 || addr < base || addr >= base + std::mem::size_of_val(table) {
        return None;
    }
    u16::try_from((addr - base) / size).ok()
}

/// Decides where `cmd` goes. `scratch.keys` receives the key positions.
pub fn route(cmd: &CommandView<'_>, scratch: &mut Scratch) -> Route {
    scratch.keys.clear();
    let cached = scratch.last.filter(|s| {
        s.flags & flags::HAS_SUBCOMMANDS == 0 && cmd.get(0).eq_ignore_ascii_case(s.name.as_bytes())
    });
    let spec = match cached {
        Some(s) => s,
        None => {
            let Some(spec) = super::find(cmd) else {
                scratch.name = "unknown";
                scratch.index = None;
                return Route::Reply(unknown_command(cmd));
            };
            if !spec.name.contains('|') {
                scratch.last = Some(spec);
            }
            scratch.index = table_index(spec);
            spec
        }
    };
    scratch.name = spec.name;
    scratch.readonly = spec.flags & flags::READONLY != 0;
    if !keys::arity_ok(spec, cmd.len()) {
        return Route::Reply(reply::error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        )));
    }
    if spec.name == "client" {
        // CLIENT is the proxy's own, including subcommands newer than the
        // built-in table (CLIENT SETINFO arrived in Redis 7.2).
        return Route::Local(Local::Client);
    }
    if spec.flags & flags::HAS_SUBCOMMANDS != 0 && cmd.len() > 1 {
        // An unknown subcommand of a known container: Redis's error, at
        // once (inside MULTI too, where Redis refuses it when queued), or
        // the server's own where it may know subcommands the table lacks.
        if nodes_refuse_subcommand(spec, cmd) {
            return Route::Reply(unknown_subcommand(spec, cmd));
        }
        // The nodes' newer CLUSTER subcommands (MYSHARDID, SLOT-STATS)
        // describe one node of a cluster the proxy hides.
        if spec.name == "cluster" {
            return Route::Reply(reply::error(
                "ERR This instance has cluster support disabled",
            ));
        }
        return Route::AnyMaster;
    }
    if spec.key_specs.is_empty() {
        if spec.name == "debug" {
            return debug_route(cmd, scratch);
        }
        return keyless(spec, cmd);
    }
    // Shard channels are not keys but are routed like them.
    let channels = matches!(spec.name, "spublish" | "ssubscribe" | "sunsubscribe");
    if keys::key_indices(spec, cmd, channels, &mut scratch.keys).is_err() {
        // A bad numkeys: the command names no key and fails on any node,
        // with its own error (which differs by command).
        scratch.keys.clear();
        return Route::AnyMaster;
    }
    if scratch.keys.is_empty() && spec.name == "xreadgroup" {
        // No GROUP before STREAMS: the node still finds the streams.
        keys::xread_node_keys(cmd, &mut scratch.keys);
    }
    let Some((&first, rest)) = scratch.keys.split_first() else {
        return keyless(spec, cmd);
    };
    let first_slot = slot(cmd.get(first));
    scratch.slots.clear();
    scratch.slots.push(first_slot);
    let mut other = None;
    for &k in rest {
        let s = slot(cmd.get(k));
        scratch.slots.push(s);
        if s != first_slot && other.is_none() {
            other = Some(s);
        }
    }
    if spec.name == "mset" && cmd.len().is_multiple_of(2) {
        // Key/value pairs: Redis checks this in the command itself, which a
        // split would bypass.
        return Route::Reply(reply::error(
            "ERR wrong number of arguments for 'mset' command",
        ));
    }
    // SORT and GEORADIUS have movable keys: one bit test for the rest.
    if spec.flags & flags::MOVABLE_KEYS != 0 {
        if matches!(spec.name, "sort" | "sort_ro")
            && crate::client::sort::needs_proxy(spec.name == "sort_ro", cmd)
        {
            return Route::ProxySort;
        }
        // The key specs name GEORADIUS's first STORE; the node stores into
        // the last one, which decides.
        if matches!(spec.name, "georadius" | "georadiusbymember") {
            if let Some((src, dest)) = crate::geo::store_keys(spec.name, cmd) {
                if slot(cmd.get(src)) != slot(cmd.get(dest)) {
                    return Route::Split(SplitKind::GeoStore);
                }
            }
        }
    }
    if let Some(other) = other {
        return match spec.name {
            // The session subscribes per slot, as one server would at once.
            "ssubscribe" => Route::Sub(SubCmd::SSubscribe),
            "sunsubscribe" => Route::Sub(SubCmd::SUnsubscribe),
            "mget" => Route::Split(SplitKind::Mget),
            "mset" => Route::Split(SplitKind::Mset),
            // With NX or XX, all keys or none are set: not over several
            // nodes (as MSETNX).
            "msetex" if !msetex_conditional(cmd, scratch.keys.len()) => {
                Route::Split(SplitKind::Msetex)
            }
            "del" | "unlink" | "exists" | "touch" => Route::Split(SplitKind::Sum),
            "sinter" => Route::Split(SplitKind::Sets(SetOp::Inter)),
            "sunion" => Route::Split(SplitKind::Sets(SetOp::Union)),
            "sdiff" => Route::Split(SplitKind::Sets(SetOp::Diff)),
            "sinterstore" => Route::Split(SplitKind::SStore(SetOp::Inter)),
            "sunionstore" => Route::Split(SplitKind::SStore(SetOp::Union)),
            "sdiffstore" => Route::Split(SplitKind::SStore(SetOp::Diff)),
            "pfcount" => Route::Split(SplitKind::PfCount),
            "pfmerge" => Route::Split(SplitKind::PfMerge),
            "bitop" => bitop_route(cmd, scratch.keys.len()),
            "zunionstore" => Route::Split(SplitKind::ZStore(ZOp::Union)),
            "zinterstore" => Route::Split(SplitKind::ZStore(ZOp::Inter)),
            "zdiffstore" => Route::Split(SplitKind::ZStore(ZOp::Diff)),
            "zrangestore" => Route::Split(SplitKind::ZRangeStore),
            "lcs" => {
                let options: Vec<&[u8]> = (3..cmd.len()).map(|i| cmd.get(i)).collect();
                Route::Split(SplitKind::Lcs(crate::lcs::parse_options(&options)))
            }
            "blpop" | "brpop" | "bzpopmin" | "bzpopmax" | "blmpop" | "bzmpop" | "lmpop"
            | "zmpop" => Route::CrossSlotPop,
            "xread" | "xreadgroup" => Route::CrossSlotStreams,
            "copy" => copy_to_other_db(cmd).unwrap_or(Route::CrossSlotMove),
            "rename" | "renamenx" | "smove" | "lmove" | "rpoplpush" | "blmove" | "brpoplpush" => {
                Route::CrossSlotMove
            }
            "georadius" | "georadiusbymember" | "geosearchstore"
                if crate::geo::store_keys(spec.name, cmd).is_some() =>
            {
                Route::Split(SplitKind::GeoStore)
            }
            "zunion" => Route::Split(SplitKind::ZRead(ZOp::Union)),
            "zinter" => Route::Split(SplitKind::ZRead(ZOp::Inter)),
            "zdiff" => Route::Split(SplitKind::ZRead(ZOp::Diff)),
            // ZINTERCARD checks its LIMIT after the keys' types (the error
            // waits for the reads), SINTERCARD before.
            "zintercard" => Route::Split(SplitKind::ZInterCard(intercard_limit(cmd, scratch))),
            "sintercard" => match intercard_limit(cmd, scratch) {
                Ok(limit) => Route::Split(SplitKind::Sets(SetOp::InterCard(limit))),
                Err(e) => Route::Reply(reply::error(e)),
            },
            _ => Route::Reply(cross_slot(spec.name, first_slot, other)),
        };
    }
    if is_blocking(spec, cmd) {
        return Route::Blocking(first_slot);
    }
    match spec.name {
        "watch" => Route::Tx(TxCmd::Watch(first_slot)),
        "move" => move_route(cmd),
        "copy" => copy_to_other_db(cmd).unwrap_or(Route::Slot(first_slot)),
        "ssubscribe" => Route::Sub(SubCmd::SSubscribe),
        "sunsubscribe" => Route::Sub(SubCmd::SUnsubscribe),
        _ => Route::Slot(first_slot),
    }
}

/// The error for a command that would reach a database other than 0,
/// which a cluster does not have, naming the fix.
pub fn only_database_0(command: &str) -> Bytes {
    reply::error(&format!(
        "ERR slotbridge: only database 0 exists on a Redis Cluster; {command} another database is not possible (use key prefixes instead of databases)"
    ))
}

/// A database index as Redis reads it (an `int`, one of the default 16
/// databases), or Redis's error; `invalid` replaces the error for a
/// non-integer when Redis names the argument.
fn db_index(arg: &[u8], invalid: Option<&str>) -> Result<i64, Bytes> {
    use crate::protocol::request::parse_i64;
    match parse_i64(arg) {
        None => Err(reply::error(
            invalid.unwrap_or("ERR value is not an integer or out of range"),
        )),
        Some(n) if i32::try_from(n).is_err() => Err(reply::error(invalid.unwrap_or(
            "ERR value is out of range, value must between -2147483648 and 2147483647",
        ))),
        Some(n) if !(0..16).contains(&n) => Err(reply::error("ERR DB index is out of range")),
        Some(n) => Ok(n),
    }
}

/// `MOVE key db`: Redis's errors for the index, else the cluster's (a
/// cluster has database 0 only).
fn move_route(cmd: &CommandView<'_>) -> Route {
    Route::Reply(match db_index(cmd.get(2), None) {
        Err(e) => e,
        Ok(0) => reply::error("ERR source and destination objects are the same"),
        Ok(_) => only_database_0("MOVE to"),
    })
}

/// `COPY src dst [DB db] [REPLACE]` with a `DB` other than 0, or an
/// option error found on the way (in Redis's order); `None` to run it.
fn copy_to_other_db(cmd: &CommandView<'_>) -> Option<Route> {
    let mut db = 0;
    let mut j = 3;
    while j < cmd.len() {
        let opt = cmd.get(j);
        if opt.eq_ignore_ascii_case(b"replace") {
            j += 1;
        } else if opt.eq_ignore_ascii_case(b"db") && j + 1 < cmd.len() {
            match db_index(cmd.get(j + 1), None) {
                Ok(n) => db = n,
                Err(e) => return Some(Route::Reply(e)),
            }
            j += 2;
        } else {
            return Some(Route::Reply(reply::error("ERR syntax error")));
        }
    }
    (db != 0).then(|| Route::Reply(only_database_0("COPY to")))
}

/// `SWAPDB a b`: Redis's errors for the indexes; swapping a database
/// with itself is done, any other swap needs a second database.
fn swapdb_route(cmd: &CommandView<'_>) -> Route {
    let ids = db_index(cmd.get(1), Some("ERR invalid first DB index")).and_then(|a| {
        Ok((
            a,
            db_index(cmd.get(2), Some("ERR invalid second DB index"))?,
        ))
    });
    Route::Reply(match ids {
        Err(e) => e,
        Ok((a, b)) if a == b => Bytes::from_static(reply::OK),
        Ok(_) => only_database_0("SWAPDB with"),
    })
}

/// The `LIMIT` of `SINTERCARD`/`ZINTERCARD numkeys key... [LIMIT n]` (0
/// when absent), or Redis's error for it.
fn intercard_limit(cmd: &CommandView<'_>, scratch: &Scratch) -> Result<u64, &'static str> {
    let tail: Vec<&[u8]> = (2 + scratch.keys.len()..cmd.len())
        .map(|i| cmd.get(i))
        .collect();
    crate::zset::intercard_limit(&tail)
}

/// `BITOP op dest src...` across slots, with Redis's checks before any
/// key is read: the operation's name, then `NOT`'s single source.
fn bitop_route(cmd: &CommandView<'_>, nkeys: usize) -> Route {
    let op = cmd.get(1);
    let op = if op.eq_ignore_ascii_case(b"and") {
        BitOp::And
    } else if op.eq_ignore_ascii_case(b"or") {
        BitOp::Or
    } else if op.eq_ignore_ascii_case(b"xor") {
        BitOp::Xor
    } else if op.eq_ignore_ascii_case(b"not") {
        BitOp::Not
    } else {
        return Route::Reply(reply::error("ERR syntax error"));
    };
    if op == BitOp::Not && nkeys != 2 {
        return Route::Reply(reply::error(
            "ERR BITOP NOT must be called with a single source key.",
        ));
    }
    Route::Split(SplitKind::Bitop(op))
}

/// Whether the command blocks (and so runs on a connection of its own).
pub fn is_blocking(spec: &CommandSpec, cmd: &CommandView<'_>) -> bool {
    if spec.flags & flags::BLOCKING == 0 {
        return false;
    }
    match spec.name {
        // Only blocking with a BLOCK option.
        "xread" | "xreadgroup" => (1..cmd.len()).any(|i| cmd.get(i).eq_ignore_ascii_case(b"block")),
        _ => true,
    }
}

fn keyless(spec: &CommandSpec, cmd: &CommandView<'_>) -> Route {
    let name = spec.name;
    match name {
        "ping" => Route::Local(Local::Ping),
        "echo" => Route::Local(Local::Echo),
        "select" => Route::Local(Local::Select),
        "quit" => Route::Local(Local::Quit),
        "hello" => Route::Local(Local::Hello),
        "auth" => Route::Local(Local::Auth),
        "reset" => Route::Local(Local::Reset),
        // A server's help text lists what it has, as the proxy does.
        "client|help" => Route::AnyMaster,
        n if n.starts_with("client|") || n == "client" => Route::Local(Local::Client),
        "subscribe" => Route::Sub(SubCmd::Subscribe),
        "psubscribe" => Route::Sub(SubCmd::PSubscribe),
        "unsubscribe" => Route::Sub(SubCmd::Unsubscribe),
        "punsubscribe" => Route::Sub(SubCmd::PUnsubscribe),
        "monitor" => Route::Sub(SubCmd::Monitor),
        "sunsubscribe" => Route::Sub(SubCmd::SUnsubscribe),
        // Every classic subscriber behind the proxy is on the home (see
        // PUBSUB_HOME_SLOT), where PUBLISH counts them; the other masters
        // hold the proxy's mirrors of keyspace-notification subscriptions.
        "pubsub|channels" | "pubsub|numpat" | "pubsub|numsub" => Route::Slot(PUBSUB_HOME_SLOT),
        "pubsub|shardchannels" => Route::Fanout(Fanout::Union),
        "pubsub|shardnumsub" => Route::Fanout(Fanout::SumPairs),
        "multi" => Route::Tx(TxCmd::Multi),
        "exec" => Route::Tx(TxCmd::Exec),
        "discard" => Route::Tx(TxCmd::Discard),
        "unwatch" => Route::Tx(TxCmd::Unwatch),
        "scan" => Route::Scan,
        "randomkey" => Route::RandomKey,
        "info" => Route::Fanout(Fanout::Info),
        "dbsize" => Route::Fanout(Fanout::Sum),
        "config|set" if sets_credentials(cmd) => Route::Reply(reply::error(
            "ERR slotbridge: CONFIG SET of requirepass, masterauth or masteruser is not passed to the cluster (it would lock the proxy's own connections out); change the nodes' password on the nodes and in slotbridge's [backend] settings, the clients' password in its [auth] settings",
        )),
        "config|set" if sets_node_address(cmd).is_some() => {
            Route::Reply(reply::error(&format!(
                "ERR slotbridge: CONFIG SET of {} is not passed to the cluster (it is each node's own address: one value on every master would break the cluster and the proxy's connections); set it on each node",
                sets_node_address(cmd).unwrap_or_default()
            )))
        }
        "flushall" | "flushdb" | "script|flush" | "config|set" | "config|resetstat"
        | "function|flush" | "function|delete" | "function|restore" => Route::Fanout(Fanout::AllOk),
        "keys" => Route::Fanout(Fanout::Concat),
        "slowlog|get" => Route::Fanout(Fanout::Newest(if cmd.len() > 2 {
            crate::protocol::request::parse_i64(cmd.get(2)).unwrap_or(10)
        } else {
            10
        })),
        "slowlog|len" => Route::Fanout(Fanout::Sum),
        "slowlog|reset" => Route::Fanout(Fanout::AllOk),
        // Valkey 8.1's generalised slow log, learned from the nodes:
        // merged as SLOWLOG is (the nodes check the type and count).
        "commandlog" => commandlog_route(cmd),
        "acl|whoami" => Route::Local(Local::Whoami),
        "acl|setuser" | "acl|getuser" | "acl|deluser" | "acl|list" | "acl|users"
        | "acl|dryrun" | "acl|log" | "acl|save" | "acl|load" => Route::Local(Local::Acl),
        // One server's view: the proxy is a master without replicas (as
        // its INFO replication section says).
        "role" => Route::Reply(Bytes::from_static(b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n")),
        "script|load" | "function|load" => Route::Fanout(Fanout::First),
        // One server's dataset is every master's: each saves (or rewrites
        // its AOF); the first reply once all succeeded.
        "save" | "bgsave" | "bgrewriteaof" => Route::Fanout(Fanout::First),
        "memory|purge" => Route::Fanout(Fanout::AllOk),
        // The number of event series reset, summed over the masters (an
        // event recorded on two counts twice).
        "latency|reset" => Route::Fanout(Fanout::Sum),
        "latency|latest" => Route::Fanout(Fanout::LatencyLatest),
        "latency|history" => Route::Fanout(Fanout::LatencyHistory),
        "latency|histogram" => Route::Fanout(Fanout::LatencyHistogram),
        "memory|stats" => Route::Fanout(Fanout::MemoryStats),
        "memory|doctor" | "latency|doctor" => Route::Fanout(Fanout::Doctor),
        "script|debug" => Route::Reply(script_debug(cmd.get(2))),
        "function|stats" => Route::Fanout(Fanout::FunctionStats),
        // The proxy is a master (ROLE, INFO): turning it into one is done.
        "replicaof" | "slaveof"
            if cmd.get(1).eq_ignore_ascii_case(b"no") && cmd.get(2).eq_ignore_ascii_case(b"one") =>
        {
            Route::Reply(Bytes::from_static(reply::OK))
        }
        "replicaof" | "slaveof" => Route::Reply(reply::error(
            "ERR slotbridge: REPLICAOF is not passed to the cluster (the proxy stands for all its masters); make a node a replica with CLUSTER REPLICATE on the node itself",
        )),
        "wait" => wait_route(cmd),
        "waitaof" => waitaof_route(cmd),
        "swapdb" => swapdb_route(cmd),
        "script|exists" => Route::Fanout(Fanout::AllTrue),
        // The script runs on one master: each is asked to kill its own.
        "script|kill" | "function|kill" => Route::Fanout(Fanout::Kill),
        // Classic Pub/Sub has one home node (see PUBSUB_HOME_SLOT).
        "publish" => Route::Slot(PUBSUB_HOME_SLOT),
        "time" | "lastsave" | "config|get" | "lolwut" | "script|help" | "config|help"
        | "acl|cat" | "acl|genpass" | "acl|help" | "slowlog|help" | "module|list"
        | "latency|help" | "memory|help" | "memory|malloc-stats"
        | "function|help" | "object|help" | "xinfo|help" | "xgroup|help" | "pubsub|help"
        | "module|help" => Route::AnyMaster,
        // Every master has the libraries, each in its own hash-table order:
        // always the same master, so that two calls list them alike.
        "function|list" | "function|dump" => Route::Slot(PUBSUB_HOME_SLOT),
        n if n == "command" || n.starts_with("command|") => Route::AnyMaster,
        // Scripts and functions without keys run on any master.
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => Route::AnyMaster,
        // Valkey 8 accepts READONLY and READWRITE without cluster mode.
        "readonly" | "readwrite" if crate::nodes::valkey_at_least(8, 0) => {
            Route::Reply(Bytes::from_static(reply::OK))
        }
        "readonly" | "readwrite" | "asking" => Route::Reply(reply::error(
            "ERR This instance has cluster support disabled",
        )),
        n if n == "cluster" || n.starts_with("cluster|") => Route::Reply(reply::error(
            "ERR This instance has cluster support disabled",
        )),
        _ if !spec.key_specs.is_empty() => {
            // A keyed command whose arguments name no key: the server
            // produces the exact syntax error.
            let _ = cmd;
            Route::AnyMaster
        }
        _ => unsupported(name),
    }
}

/// Whether a `CONFIG SET` changes the credentials nodes ask of their
/// clients (the proxy among them) or of each other.
fn sets_credentials(cmd: &CommandView<'_>) -> bool {
    (2..cmd.len()).step_by(2).any(|i| {
        let p = cmd.get(i);
        p.eq_ignore_ascii_case(b"requirepass")
            || p.eq_ignore_ascii_case(b"masterauth")
            || p.eq_ignore_ascii_case(b"masteruser")
    })
}

/// The first parameter of a `CONFIG SET` (lower case) that is one node's
/// own network address or identity in the cluster: the same value set on
/// every master would make them collide, or announce one address for all.
fn sets_node_address(cmd: &CommandView<'_>) -> Option<String> {
    const ADDRESSES: [&[u8]; 8] = [
        b"port",
        b"tls-port",
        b"bind",
        b"bind-source-addr",
        b"replica-announce-ip",
        b"replica-announce-port",
        b"slave-announce-ip",
        b"slave-announce-port",
    ];
    (2..cmd.len()).step_by(2).find_map(|i| {
        let p = cmd.get(i).to_ascii_lowercase();
        (ADDRESSES.contains(&&p[..]) || p.starts_with(b"cluster-announce-"))
            .then(|| String::from_utf8_lossy(&p).into_owned())
    })
}

/// Longest `WAIT` timeout accepted: `WAIT` runs on the shared connections
/// and holds later commands on them while it waits.
pub const MAX_WAIT_TIMEOUT_MS: i64 = 5000;

fn wait_route(cmd: &CommandView<'_>) -> Route {
    use crate::protocol::request::parse_i64;
    // Redis's checks, in its order.
    let Some(replicas) = parse_i64(cmd.get(1)) else {
        return Route::Reply(reply::error("ERR value is not an integer or out of range"));
    };
    match parse_i64(cmd.get(2)) {
        None => Route::Reply(reply::error("ERR timeout is not an integer or out of range")),
        Some(t) if t < 0 => Route::Reply(reply::error("ERR timeout is negative")),
        // Answered at once by every node: nothing to wait for.
        Some(_) if replicas <= 0 => Route::Fanout(Fanout::Min),
        Some(t) if t == 0 || t > MAX_WAIT_TIMEOUT_MS => Route::Reply(reply::error(&format!(
            "ERR slotbridge: WAIT needs a timeout between 1 and {MAX_WAIT_TIMEOUT_MS} ms behind the proxy (it runs on connections shared with other clients)"
        ))),
        Some(_) => Route::Fanout(Fanout::Min),
    }
}

/// `COMMANDLOG GET count type`, `LEN type`, `RESET type`, `HELP`.
fn commandlog_route(cmd: &CommandView<'_>) -> Route {
    let sub = cmd.get(1);
    let is = |name: &[u8]| sub.eq_ignore_ascii_case(name);
    match cmd.len() {
        4 if is(b"get") => match crate::protocol::request::parse_i64(cmd.get(2)) {
            Some(count) if count >= -1 => Route::Fanout(Fanout::Newest(count)),
            _ => Route::AnyMaster,
        },
        3 if is(b"len") => Route::Fanout(Fanout::Sum),
        3 if is(b"reset") => Route::Fanout(Fanout::AllOk),
        _ => Route::AnyMaster,
    }
}

/// `WAITAOF numlocal numreplicas timeout` (Redis 7.2): every master is
/// asked, as for `WAIT`, and the reply counts what all of them reached.
fn waitaof_route(cmd: &CommandView<'_>) -> Route {
    use crate::protocol::request::parse_i64;
    // Redis's checks, in its order.
    let local = match parse_i64(cmd.get(1)) {
        None => return Route::Reply(reply::error("ERR value is not an integer or out of range")),
        Some(n) if !(0..=1).contains(&n) => {
            return Route::Reply(reply::error(
                "ERR value is out of range, value must between 0 and 1",
            ))
        }
        Some(n) => n,
    };
    // Not an integer either: the same text (getPositiveLongFromObjectOrReply).
    let replicas = match parse_i64(cmd.get(2)) {
        Some(n) if n >= 0 => n,
        _ => return Route::Reply(reply::error("ERR value is out of range, must be positive")),
    };
    match parse_i64(cmd.get(3)) {
        None => Route::Reply(reply::error("ERR timeout is not an integer or out of range")),
        Some(t) if t < 0 => Route::Reply(reply::error("ERR timeout is negative")),
        // Nothing to wait for: answered at once by every node.
        Some(_) if local == 0 && replicas == 0 => Route::Fanout(Fanout::MinEach),
        Some(t) if t == 0 || t > MAX_WAIT_TIMEOUT_MS => Route::Reply(reply::error(&format!(
            "ERR slotbridge: WAITAOF needs a timeout between 1 and {MAX_WAIT_TIMEOUT_MS} ms behind the proxy (it runs on connections shared with other clients)"
        ))),
        Some(_) => Route::Fanout(Fanout::MinEach),
    }
}

/// Longest `DEBUG SLEEP` passed to the cluster, in seconds: every master
/// sleeps, and the connections shared with other clients wait meanwhile.
pub const MAX_DEBUG_SLEEP_SECS: f64 = 5.0;

/// `DEBUG` (which nodes refuse unless `enable-debug-command` allows it;
/// they then give one server's error). A subcommand reading a key goes to
/// the key's master; one that sleeps or changes a setting to every master,
/// as one server's whole dataset would; `DIGEST` combines the masters'
/// digests; reports go to any master. The ones that crash, restart, reload
/// from disk or write around the slot map are not passed on.
fn debug_route(cmd: &CommandView<'_>, scratch: &mut Scratch) -> Route {
    let sub = cmd.get(1);
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    let argc = cmd.len();
    // What client libraries' test suites use to fake a server error
    // (`LOADING`, `READONLY`, ...). Redis maps CR and LF to spaces.
    if argc == 3 && is("error") {
        return Route::Reply(reply::error_bytes(cmd.get(2)));
    }
    keys::debug_keys(cmd, &mut scratch.keys);
    if let Some(&first) = scratch.keys.first() {
        let first_slot = slot(cmd.get(first));
        scratch.slots.clear();
        scratch
            .slots
            .extend(scratch.keys.iter().map(|&k| slot(cmd.get(k))));
        return match scratch.slots.iter().find(|&&s| s != first_slot) {
            Some(&other) => Route::Reply(cross_slot("debug", first_slot, other)),
            None => Route::Slot(first_slot),
        };
    }
    if argc == 3 && is("sleep") {
        if sleeps_too_long(debug_sleep_secs(cmd.get(2))) {
            return Route::Reply(debug_sleep_refused());
        }
        return Route::Fanout(Fanout::AllOk);
    }
    if argc == 2 && is("digest") {
        return Route::Fanout(Fanout::Digest);
    }
    // What would crash, restart or stall a node, reload it from disk,
    // write keys around the slot map, or stop its cluster cron.
    let refused = [
        "segfault",
        "panic",
        "restart",
        "crash-and-recover",
        "oom",
        "assert",
        "leak",
        "reload",
        "loadaof",
        "drop-cluster-packet-filter",
        "populate",
        "replicate",
        "change-repl-id",
        "client-eviction",
        "mallctl",
        "mallctl-str",
        "config-rewrite-force-all",
        "clusterlink",
        "aof-flush-sleep",
        "pause-cron",
        "set-disable-deny-scripts",
    ];
    if refused.into_iter().any(is) {
        return Route::Reply(reply::error(&format!(
            "ERR slotbridge: DEBUG {} is not passed to the cluster (it would crash, restart, reload or change a node behind the proxy's back); run it on a node itself",
            String::from_utf8_lossy(&sub[..sub.len().min(64)]).to_uppercase()
        )));
    }
    let everywhere = [
        "set-active-expire",
        "quicklist-packed-threshold",
        "set-skip-checksum-validation",
        "replybuffer",
        "log",
    ];
    if everywhere.into_iter().any(is) {
        return Route::Fanout(Fanout::AllOk);
    }
    // Reports, reply fixtures, the key readers at a wrong arity and the
    // subcommands a node does not know: the server's reply or error.
    Route::AnyMaster
}

/// The seconds of `DEBUG SLEEP <arg>`, read as Redis reads them (C's
/// `strtod`: leading blanks, the longest number at the start, decimal or
/// `0x` hexadecimal, `inf`, `nan`; 0 when there is none).
pub fn debug_sleep_secs(arg: &[u8]) -> f64 {
    let text: String = arg
        .iter()
        .take(64)
        .take_while(|b| b.is_ascii())
        .map(|&b| b as char)
        .collect();
    let text = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'-') => (-1.0, &text[1..]),
        Some(b'+') => (1.0, &text[1..]),
        _ => (1.0, text),
    };
    if let Some(hex) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
        let mut value = 0.0f64;
        let mut digits = 0;
        let mut scale = 1.0f64;
        let mut fraction = false;
        for c in hex.chars() {
            match (c, c.to_digit(16)) {
                ('.', _) if !fraction => fraction = true,
                (_, Some(d)) if fraction => {
                    scale /= 16.0;
                    value += f64::from(d) * scale;
                    digits += 1;
                }
                (_, Some(d)) => {
                    value = value * 16.0 + f64::from(d);
                    digits += 1;
                }
                _ => break,
            }
        }
        return if digits > 0 { sign * value } else { 0.0 };
    }
    (1..=rest.len())
        .rev()
        .find_map(|end| rest.get(..end)?.parse::<f64>().ok())
        .map_or(0.0, |v| sign * v)
}

/// Whether `secs` of `DEBUG SLEEP` are more than the proxy passes on (or
/// not a number).
pub fn sleeps_too_long(secs: f64) -> bool {
    secs.is_nan() || secs > MAX_DEBUG_SLEEP_SECS
}

/// The refusal of a `DEBUG SLEEP` (or the sleeps of one transaction) longer
/// than [`MAX_DEBUG_SLEEP_SECS`].
pub fn debug_sleep_refused() -> Bytes {
    reply::error(&format!(
        "ERR slotbridge: DEBUG SLEEP of more than {MAX_DEBUG_SLEEP_SECS} seconds is not passed to the cluster (every master would stall the connections it shares with other clients past their timeout)"
    ))
}

/// `SCRIPT DEBUG`: `NO` is what every connection has; the Lua debugger
/// needs a server's connection of its own, which the proxy cannot lend.
fn script_debug(mode: &[u8]) -> Bytes {
    if mode.eq_ignore_ascii_case(b"no") {
        Bytes::from_static(reply::OK)
    } else if mode.eq_ignore_ascii_case(b"yes") || mode.eq_ignore_ascii_case(b"sync") {
        reply::error("ERR slotbridge: SCRIPT DEBUG (the Lua debugger) is not available through the proxy; debug the script with redis-cli --ldb against a node")
    } else {
        reply::error("ERR Use SCRIPT DEBUG YES/SYNC/NO")
    }
}

/// Whether an `MSETEX` of `nkeys` keys sets them only if all or none
/// exist (`NX` or `XX` among its options).
fn msetex_conditional(cmd: &CommandView<'_>, nkeys: usize) -> bool {
    (2 + 2 * nkeys..cmd.len()).any(|i| {
        let opt = cmd.get(i);
        opt.eq_ignore_ascii_case(b"nx") || opt.eq_ignore_ascii_case(b"xx")
    })
}

fn unsupported(name: &str) -> Route {
    Route::Reply(reply::error(&format!(
        "ERR unsupported command '{name}' by slotbridge"
    )))
}

/// `-CROSSSLOT` naming the command and two of its slots, with the fix.
pub fn cross_slot(name: &str, a: u16, b: u16) -> Bytes {
    reply::error(&format!(
        "CROSSSLOT Keys in request don't hash to the same slot (command '{name}', slots {a} and {b}); \
         use a {{hash tag}} so that all keys of one command map to the same slot, or a [[colocate]] rule in slotbridge's configuration (unmodified apps)"
    ))
}

/// What Redis answers a client that has not logged in yet: the errors it
/// checks first (an unknown command or subcommand, a wrong number of
/// arguments), `None` for the commands it allows (`no-auth`), else
/// `NOAUTH`.
pub fn before_auth(cmd: &CommandView<'_>) -> Option<Bytes> {
    let Some(spec) = super::find(cmd) else {
        return Some(unknown_command(cmd));
    };
    if !keys::arity_ok(spec, cmd.len()) {
        return Some(reply::error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        )));
    }
    if spec.flags & flags::HAS_SUBCOMMANDS != 0 && nodes_refuse_subcommand(spec, cmd) {
        return Some(unknown_subcommand(spec, cmd));
    }
    match spec.flags & flags::NO_AUTH {
        0 => Some(Bytes::from_static(b"-NOAUTH Authentication required.\r\n")),
        _ => None,
    }
}

/// Whether the nodes do not know the subcommand of `cmd`, which the
/// built-in table does not know either: as their `COMMAND` listed, or
/// before it was read, as their version says.
fn nodes_refuse_subcommand(spec: &CommandSpec, cmd: &CommandView<'_>) -> bool {
    match super::nodes_know_subcommand(spec.name, cmd.get(1)) {
        Some(known) => !known,
        None => crate::nodes::table_covers(),
    }
}

/// Redis's reply to an unknown subcommand of the container `spec`.
fn unknown_subcommand(spec: &CommandSpec, cmd: &CommandView<'_>) -> Bytes {
    let sub = String::from_utf8_lossy(c_str(cmd.get(1)));
    reply::error(&format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        sub.chars().take(128).collect::<String>(),
        spec.name.to_ascii_uppercase()
    ))
}

/// An argument as Redis's error texts show it (`%s`): up to its first NUL.
fn c_str(arg: &[u8]) -> &[u8] {
    &arg[..memchr::memchr(0, arg).unwrap_or(arg.len())]
}

/// Redis's exact reply to an unknown command.
pub fn unknown_command(cmd: &CommandView<'_>) -> Bytes {
    let name = String::from_utf8_lossy(c_str(cmd.get(0)));
    let name: String = name.chars().take(128).collect();
    let mut args = String::new();
    let mut i = 1;
    while i < cmd.len() && args.len() < 128 {
        let a = String::from_utf8_lossy(c_str(cmd.get(i)));
        let room = 128 - args.len();
        let a: String = a.chars().take(room).collect();
        args.push('\'');
        args.push_str(&a);
        args.push_str("' ");
        i += 1;
    }
    reply::error(&format!(
        "ERR unknown command '{name}', with args beginning with: {args}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_of(parts: &[&str]) -> (Route, Vec<usize>) {
        let mut raw = Vec::new();
        let mut args = Vec::new();
        for p in parts {
            let s = raw.len();
            raw.extend_from_slice(p.as_bytes());
            args.push((s, raw.len()));
        }
        let view = CommandView {
            raw: &raw,
            args: &args,
        };
        let mut scratch = Scratch::default();
        let r = route(&view, &mut scratch);
        (r, scratch.keys)
    }

    fn err(r: Route) -> String {
        match r {
            Route::Reply(b) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn single_key_commands() {
        assert_eq!(route_of(&["GET", "foo"]).0, Route::Slot(12182));
        assert_eq!(route_of(&["set", "foo", "1"]).0, Route::Slot(12182));
        assert_eq!(
            route_of(&["RENAME", "{u}a", "{u}b"]).0,
            Route::Slot(slot(b"u"))
        );
    }

    #[test]
    fn config_set_of_credentials_is_refused() {
        for p in ["requirepass", "MasterAuth", "masteruser"] {
            let e = err(route_of(&["CONFIG", "SET", "maxmemory", "0", p, "x"]).0);
            assert!(
                e.starts_with("-ERR slotbridge: CONFIG SET of requirepass"),
                "{e}"
            );
        }
        // A value that happens to read "requirepass" is no parameter.
        assert_eq!(
            route_of(&["config", "set", "notify-keyspace-events", "requirepass"]).0,
            Route::Fanout(Fanout::AllOk)
        );
    }

    #[test]
    fn config_set_of_a_nodes_address_is_refused() {
        for (p, named) in [
            ("Port", "port"),
            ("tls-port", "tls-port"),
            ("bind", "bind"),
            ("bind-source-addr", "bind-source-addr"),
            ("replica-announce-ip", "replica-announce-ip"),
            ("slave-announce-port", "slave-announce-port"),
            ("cluster-announce-ip", "cluster-announce-ip"),
            ("CLUSTER-ANNOUNCE-BUS-PORT", "cluster-announce-bus-port"),
        ] {
            let e = err(route_of(&["CONFIG", "SET", "maxmemory", "0", p, "1"]).0);
            assert_eq!(
                e,
                format!("-ERR slotbridge: CONFIG SET of {named} is not passed to the cluster (it is each node's own address: one value on every master would break the cluster and the proxy's connections); set it on each node\r\n")
            );
        }
        // Values are no parameters; other settings reach every master.
        for ok in [
            &["config", "set", "notify-keyspace-events", "port"][..],
            &["config", "set", "cluster-node-timeout", "5000"],
        ] {
            assert_eq!(route_of(ok).0, Route::Fanout(Fanout::AllOk));
        }
    }

    #[test]
    fn multi_key_split() {
        let (r, keys) = route_of(&["MGET", "a", "b", "c"]);
        assert_eq!(r, Route::Split(SplitKind::Mget));
        assert_eq!(keys, vec![1, 2, 3]);
        let (r, keys) = route_of(&["MSET", "a", "1", "b", "2"]);
        assert_eq!(r, Route::Split(SplitKind::Mset));
        assert_eq!(keys, vec![1, 3]);
        assert_eq!(route_of(&["DEL", "a", "b"]).0, Route::Split(SplitKind::Sum));
        assert_eq!(
            route_of(&["exists", "a", "b"]).0,
            Route::Split(SplitKind::Sum)
        );
        // Same slot: no split.
        assert_eq!(
            route_of(&["MGET", "{x}a", "{x}b"]).0,
            Route::Slot(slot(b"x"))
        );
    }

    #[test]
    fn msetex_is_split_unless_conditional() {
        crate::command::learn(vec![crate::command::LearnedCommand {
            name: "msetex".into(),
            arity: -4,
            first: 0,
            last: 0,
            step: 0,
            readonly: false,
            movable: true,
            acl: 0,
            key_specs: None,
        }]);
        let (r, keys) = route_of(&["MSETEX", "2", "a", "1", "b", "2", "EX", "9"]);
        assert_eq!((r, keys), (Route::Split(SplitKind::Msetex), vec![2, 4]));
        let (r, _) = route_of(&["MSETEX", "2", "{a}1", "1", "{a}2", "2"]);
        assert_eq!(r, Route::Slot(slot(b"a")));
        let e = err(route_of(&["msetex", "2", "a", "1", "b", "2", "px", "5", "nx"]).0);
        assert!(
            e.starts_with(
                "-CROSSSLOT Keys in request don't hash to the same slot (command 'msetex'"
            ),
            "{e}"
        );
        // A bad numkeys: the node's own error.
        assert_eq!(route_of(&["MSETEX", "3", "a", "1"]).0, Route::AnyMaster);
    }

    #[test]
    fn cross_slot_errors() {
        let e = err(route_of(&["MSETNX", "a", "1", "b", "2"]).0);
        assert_eq!(
            e,
            format!(
                "-CROSSSLOT Keys in request don't hash to the same slot (command 'msetnx', slots {} and {}); use a {{hash tag}} so that all keys of one command map to the same slot, or a [[colocate]] rule in slotbridge's configuration (unmodified apps)\r\n",
                slot(b"a"),
                slot(b"b")
            )
        );
        // Carried out by the proxy in steps.
        assert_eq!(route_of(&["RENAME", "a", "b"]).0, Route::CrossSlotMove);
        assert_eq!(
            route_of(&["LMOVE", "a", "b", "LEFT", "LEFT"]).0,
            Route::CrossSlotMove
        );
        assert_eq!(route_of(&["BLPOP", "a", "b", "0"]).0, Route::CrossSlotPop);
        // Computed in the proxy: HyperLogLogs and BITOP, whose checks
        // before any read are Redis's.
        assert_eq!(
            route_of(&["PFCOUNT", "a", "b"]).0,
            Route::Split(SplitKind::PfCount)
        );
        assert_eq!(
            route_of(&["PFMERGE", "a", "b"]).0,
            Route::Split(SplitKind::PfMerge)
        );
        assert_eq!(
            route_of(&["BITOP", "xor", "a", "b", "c"]).0,
            Route::Split(SplitKind::Bitop(BitOp::Xor))
        );
        assert_eq!(
            err(route_of(&["BITOP", "nand", "a", "b"]).0),
            "-ERR syntax error\r\n"
        );
        assert_eq!(
            route_of(&["ZINTERSTORE", "d", "2", "a", "b", "AGGREGATE", "x"]).0,
            Route::Split(SplitKind::ZStore(ZOp::Inter))
        );
        assert_eq!(
            route_of(&["ZDIFF", "2", "a", "b", "WITHSCORES"]).0,
            Route::Split(SplitKind::ZRead(ZOp::Diff))
        );
        // Redis checks ZINTERCARD's LIMIT after the keys' types: the error
        // waits for the reads.
        assert_eq!(
            route_of(&["ZINTERCARD", "2", "a", "b", "LIMIT", "-1"]).0,
            Route::Split(SplitKind::ZInterCard(Err("ERR LIMIT can't be negative")))
        );
        assert_eq!(
            err(route_of(&["BITOP", "NOT", "a", "b", "c"]).0),
            "-ERR BITOP NOT must be called with a single source key.\r\n"
        );
    }

    #[test]
    fn arity_and_unknown() {
        assert_eq!(
            err(route_of(&["GET"]).0),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert_eq!(
            err(route_of(&["FOO", "a", "b"]).0),
            "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
        );
        // As Redis's `%s`: up to a NUL.
        assert_eq!(
            err(route_of(&["F\0OO", "a\0b", "c"]).0),
            "-ERR unknown command 'F', with args beginning with: 'a' 'c' \r\n"
        );
        assert_eq!(
            err(route_of(&["MSET", "a", "1", "b"]).0),
            "-ERR wrong number of arguments for 'mset' command\r\n"
        );
        assert_eq!(
            route_of(&["EVAL", "return 1", "5", "a"]).0,
            Route::AnyMaster
        );
    }

    #[test]
    fn keyless_and_special() {
        assert_eq!(route_of(&["PING"]).0, Route::Local(Local::Ping));
        assert_eq!(
            route_of(&["CLIENT", "SETINFO", "LIB-NAME", "x"]).0,
            Route::Local(Local::Client)
        );
        assert_eq!(route_of(&["CONFIG", "NOSUCH"]).0, Route::AnyMaster);
        assert_eq!(route_of(&["dbsize"]).0, Route::Fanout(Fanout::Sum));
        assert_eq!(route_of(&["EVAL", "return 1", "0"]).0, Route::AnyMaster);
        assert_eq!(
            route_of(&["BLPOP", "q", "0"]).0,
            Route::Blocking(slot(b"q"))
        );
        assert_eq!(
            route_of(&["XREAD", "STREAMS", "s", "0"]).0,
            Route::Slot(slot(b"s"))
        );
        assert_eq!(
            route_of(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]).0,
            Route::Blocking(slot(b"s"))
        );
        // XREADGROUP without GROUP: the streams a node finds, not none.
        let no_group = route_of(&["XREADGROUP", "COUNT", "1", "STREAMS", "a", "b", ">", ">"]);
        assert_eq!(no_group, (Route::CrossSlotStreams, vec![4, 5]));
        assert_eq!(
            route_of(&[
                "XREADGROUP",
                "COUNT",
                "1",
                "STREAMS",
                "{s}a",
                "{s}b",
                ">",
                ">"
            ]),
            (Route::Slot(slot(b"s")), vec![4, 5])
        );
        assert_eq!(route_of(&["MULTI"]).0, Route::Tx(TxCmd::Multi));
        assert_eq!(
            route_of(&["WATCH", "{a}1", "{a}2"]).0,
            Route::Tx(TxCmd::Watch(slot(b"a")))
        );
        assert!(err(route_of(&["WATCH", "a", "b"]).0).starts_with("-CROSSSLOT "));
        assert_eq!(route_of(&["SCAN", "0"]).0, Route::Scan);
        assert_eq!(
            route_of(&["SUBSCRIBE", "a"]).0,
            Route::Sub(SubCmd::Subscribe)
        );
        assert_eq!(
            route_of(&["SSUBSCRIBE", "{c}1", "{c}2"]).0,
            Route::Sub(SubCmd::SSubscribe)
        );
        // Channels of several slots: the session subscribes per slot.
        assert_eq!(
            route_of(&["SSUBSCRIBE", "a", "b"]).0,
            Route::Sub(SubCmd::SSubscribe)
        );
        assert_eq!(
            route_of(&["SUNSUBSCRIBE"]).0,
            Route::Sub(SubCmd::SUnsubscribe)
        );
        assert_eq!(
            route_of(&["SPUBLISH", "ch", "m"]).0,
            Route::Slot(slot(b"ch"))
        );
        assert_eq!(route_of(&["MONITOR"]).0, Route::Sub(SubCmd::Monitor));
        assert_eq!(
            err(route_of(&["debug", "ERROR", "LOADING fake\r\nmessage"]).0),
            "-LOADING fake  message\r\n"
        );
        // DEBUG: a key's master, every master, or refused.
        assert_eq!(
            route_of(&["DEBUG", "OBJECT", "k"]),
            (Route::Slot(slot(b"k")), vec![2])
        );
        assert_eq!(
            route_of(&["debug", "quicklist", "k", "1"]),
            (Route::Slot(slot(b"k")), vec![2])
        );
        assert_eq!(
            route_of(&["DEBUG", "DIGEST-VALUE", "{t}a", "{t}b"]),
            (Route::Slot(slot(b"t")), vec![2, 3])
        );
        assert!(err(route_of(&["DEBUG", "DIGEST-VALUE", "a", "b"]).0).starts_with("-CROSSSLOT"));
        assert_eq!(route_of(&["DEBUG", "OBJECT"]).0, Route::AnyMaster);
        assert_eq!(
            route_of(&["DEBUG", "SLEEP", "0.5"]).0,
            Route::Fanout(Fanout::AllOk)
        );
        assert_eq!(
            route_of(&["DEBUG", "SLEEP", "x"]).0,
            Route::Fanout(Fanout::AllOk)
        );
        assert!(err(route_of(&["DEBUG", "SLEEP", "5.5"]).0).contains("more than 5 seconds"));
        assert_eq!(
            route_of(&["DEBUG", "DIGEST"]).0,
            Route::Fanout(Fanout::Digest)
        );
        assert_eq!(
            route_of(&["DEBUG", "set-active-expire", "0"]).0,
            Route::Fanout(Fanout::AllOk)
        );
        assert_eq!(route_of(&["DEBUG", "FOO"]).0, Route::AnyMaster);
        assert_eq!(route_of(&["DEBUG", "ERROR"]).0, Route::AnyMaster);
        for long in ["0x6", "6x", " 6.5e0", "inf", "nan", "1e3"] {
            assert!(
                err(route_of(&["DEBUG", "SLEEP", long]).0).contains("more than 5 seconds"),
                "{long}"
            );
        }
        assert_eq!(debug_sleep_secs(b"0x1.8"), 1.5);
        assert_eq!(debug_sleep_secs(b"-2"), -2.0);
        assert_eq!(debug_sleep_secs(b"x"), 0.0);
        assert_eq!(debug_sleep_secs(b".5s"), 0.5);
        assert_eq!(route_of(&["DEBUG", "PROTOCOL", "map"]).0, Route::AnyMaster);
        for refused in [
            &["DEBUG", "SEGFAULT"][..],
            &["DEBUG", "RELOAD"],
            &["DEBUG", "PAUSE-CRON", "1"],
            &["DEBUG", "RELOAD", "NOSAVE"],
            &["DEBUG", "POPULATE", "10"],
        ] {
            assert!(
                err(route_of(refused).0).contains("is not passed to the cluster"),
                "{refused:?}"
            );
        }
        assert_eq!(route_of(&["BGSAVE"]).0, Route::Fanout(Fanout::First));
        assert_eq!(
            route_of(&["memory", "purge"]).0,
            Route::Fanout(Fanout::AllOk)
        );
        assert_eq!(
            route_of(&["LATENCY", "RESET"]).0,
            Route::Fanout(Fanout::Sum)
        );
        assert_eq!(
            route_of(&["MEMORY", "STATS"]).0,
            Route::Fanout(Fanout::MemoryStats)
        );
        assert_eq!(
            route_of(&["LATENCY", "DOCTOR"]).0,
            Route::Fanout(Fanout::Doctor)
        );
        assert_eq!(
            route_of(&["SCRIPT", "DEBUG", "no"]).0,
            Route::Reply(Bytes::from_static(reply::OK))
        );
        assert!(err(route_of(&["SCRIPT", "DEBUG", "YES"]).0).contains("redis-cli --ldb"));
        assert_eq!(
            err(route_of(&["SCRIPT", "DEBUG", "x"]).0),
            "-ERR Use SCRIPT DEBUG YES/SYNC/NO\r\n"
        );
        assert_eq!(
            err(route_of(&["LATENCY", "GRAPH", "command"]).0),
            "-ERR unsupported command 'latency|graph' by slotbridge\r\n"
        );
        assert_eq!(
            err(route_of(&["SHUTDOWN"]).0),
            "-ERR unsupported command 'shutdown' by slotbridge\r\n"
        );
        assert_eq!(
            err(route_of(&["CLUSTER", "INFO"]).0),
            "-ERR This instance has cluster support disabled\r\n"
        );
    }
}
