//! What a command is and where its keys are.

pub mod keys;
pub mod route;
pub mod spec;
pub mod table_gen;

use std::collections::HashMap;
use std::sync::RwLock;

use keys::Args;
use spec::{flags, key_flags, BeginSearch, CommandSpec, FindKeys, KeySpec};

/// Commands the nodes know that the built-in table lacks.
static LEARNED: RwLock<Option<HashMap<Vec<u8>, &'static CommandSpec>>> = RwLock::new(None);

/// Every subcommand the nodes' `COMMAND` lists (`container|sub`), with
/// its ACL categories ([`spec::acl`] bits).
static NODE_SUBCOMMANDS: RwLock<Option<HashMap<String, u32>>> = RwLock::new(None);

/// The spec of a command a server would run: known, with a known
/// subcommand (a container found for a longer command has an unknown
/// one) and the right number of arguments. Redis refuses the others
/// before running them (and does not show them to `MONITOR`).
pub fn runnable<A: Args + ?Sized>(args: &A) -> Option<&'static CommandSpec> {
    find(args).filter(|spec| {
        let unknown_sub = spec.flags & flags::HAS_SUBCOMMANDS != 0 && args.len() > 1;
        !unknown_sub && keys::arity_ok(spec, args.len())
    })
}

/// Finds the spec of a command: the built-in Redis 7 table first, then
/// commands learned from the backend's `COMMAND` reply (modules).
pub fn find<A: Args + ?Sized>(args: &A) -> Option<&'static CommandSpec> {
    if let Some(spec) = keys::lookup_command(args) {
        return Some(spec);
    }
    let learned = LEARNED.read().unwrap_or_else(|e| e.into_inner());
    let name = args.get(0).to_ascii_lowercase();
    learned.as_ref()?.get(&name).copied()
}

/// Whether the command table names `name` (a [`CommandSpec`]'s name)
/// `EVALSHA` or `EVALSHA_RO`. By the table's name, not the client's bytes:
/// a length comparison rejects `GET` at once.
pub fn is_evalsha(name: &str) -> bool {
    matches!(name, "evalsha" | "evalsha_ro")
}

/// `EVAL` or `EVAL_RO` (see [`is_evalsha`]).
pub fn is_eval(name: &str) -> bool {
    matches!(name, "eval" | "eval_ro")
}

/// `FCALL` or `FCALL_RO` (see [`is_evalsha`]).
pub fn is_fcall(name: &str) -> bool {
    matches!(name, "fcall" | "fcall_ro")
}

/// Whether the command runs a script or function: one whose own commands
/// the nodes run, as the proxy's user.
pub fn runs_script(name: &str) -> bool {
    is_eval(name) || is_evalsha(name) || is_fcall(name)
}

/// A command reported by a backend's `COMMAND` that the built-in table lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedCommand {
    /// Lower-case name.
    pub name: String,
    /// Redis arity.
    pub arity: i16,
    /// Position of the first key (0: no keys).
    pub first: i16,
    /// Position of the last key (negative: from the end).
    pub last: i16,
    /// Step between keys.
    pub step: i16,
    /// Whether the command is read-only.
    pub readonly: bool,
    /// Whether its keys are found by the module's own code (`movablekeys`):
    /// the proxy cannot see them.
    pub movable: bool,
    /// Its ACL categories ([`spec::acl`] bits; those the proxy does not
    /// know are left out).
    pub acl: u32,
    /// Its key specifications, when `COMMAND` gives them (Redis 7 and
    /// later) and each can be followed.
    pub key_specs: Option<Vec<KeySpec>>,
}

/// `MSETEX`'s keys: `numkeys` at 1, then key/value pairs.
static MSETEX_KEYS: [KeySpec; 1] = [KeySpec {
    begin: BeginSearch::Index(1),
    find: FindKeys::KeyNum {
        key_num_idx: 0,
        first_key: 1,
        key_step: 2,
    },
    flags: key_flags::OW | key_flags::UPDATE,
}];

/// Registers the commands the nodes know that the built-in table lacks,
/// in place of those learned before (their specs stay allocated: this
/// happens once per version of the nodes). Returns how many there are.
pub fn learn(commands: Vec<LearnedCommand>) -> usize {
    let mut map = HashMap::new();
    let mut arities = HashMap::new();
    for c in commands {
        if let Some(known) = keys::lookup(c.name.as_bytes()) {
            if known.arity != c.arity {
                arities.insert(known.name, c.arity);
            }
            continue;
        }
        let key_specs: &'static [KeySpec] = if c.name == "msetex" {
            // Valkey 9.1's MSETEX numkeys key value [key value ...] [options]:
            // its keys follow numkeys, which COMMAND's first/last/step
            // cannot say (the key spec of its COMMAND DOCS, here as known).
            &MSETEX_KEYS
        } else if let Some(specs) = c.key_specs.filter(|s| !s.is_empty()) {
            // The nodes' own key specs: where the keys are, and how each is
            // used (ACL key permissions).
            Box::leak(specs.into_boxed_slice())
        } else if c.first > 0 && c.step > 0 {
            let last_key = if c.last < 0 { c.last } else { c.last - c.first };
            Box::leak(Box::new([KeySpec {
                begin: BeginSearch::Index(c.first as u16),
                find: FindKeys::Range {
                    last_key,
                    key_step: c.step as u16,
                    limit: 0,
                },
                // A module's plain key range: read and written, as Redis
                // assumes for ACL checks.
                flags: key_flags::RW | key_flags::ACCESS | key_flags::UPDATE,
            }]))
        } else {
            &[]
        };
        let name: &'static str = Box::leak(c.name.clone().into_boxed_str());
        let spec: &'static CommandSpec = Box::leak(Box::new(CommandSpec {
            name,
            arity: c.arity,
            flags: if c.readonly {
                flags::READONLY
            } else {
                flags::WRITE
            } | if c.movable { flags::MOVABLE_KEYS } else { 0 },
            acl: c.acl,
            key_specs,
        }));
        map.insert(c.name.into_bytes(), spec);
    }
    let n = map.len();
    *LEARNED.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
    *ARITIES.write().unwrap_or_else(|e| e.into_inner()) = Some(arities);
    n
}

/// The arities the nodes give built-in commands where they differ from
/// the table's (Redis 7.2's `ZRANK key member [WITHSCORE]`: -3, not 3).
static ARITIES: RwLock<Option<HashMap<&'static str, i16>>> = RwLock::new(None);

/// The nodes' arity of the built-in command `name`, where it differs from
/// the table's (see [`keys::arity_ok`]).
pub fn nodes_arity(name: &str) -> Option<i16> {
    let arities = ARITIES.read().unwrap_or_else(|e| e.into_inner());
    arities.as_ref()?.get(name).copied()
}

/// Records the subcommands the nodes know, with their ACL categories (an
/// empty list, as from servers older than 7.0, forgets them).
pub fn learn_subcommands(subcommands: Vec<(String, u32)>) {
    let known = (!subcommands.is_empty()).then(|| subcommands.into_iter().collect());
    *NODE_SUBCOMMANDS.write().unwrap_or_else(|e| e.into_inner()) = known;
}

/// Whether the nodes know subcommand `sub` of `container`; `None` until
/// their `COMMAND` reply was read.
pub fn nodes_know_subcommand(container: &str, sub: &[u8]) -> Option<bool> {
    let known = NODE_SUBCOMMANDS.read().unwrap_or_else(|e| e.into_inner());
    let sub = String::from_utf8_lossy(sub).to_lowercase();
    Some(known.as_ref()?.contains_key(&format!("{container}|{sub}")))
}

/// The ACL categories of the nodes' subcommand `fullname`
/// (`container|sub`, lower case), if they list it.
pub fn node_subcommand_acl(fullname: &str) -> Option<u32> {
    let known = NODE_SUBCOMMANDS.read().unwrap_or_else(|e| e.into_inner());
    known.as_ref()?.get(fullname).copied()
}

/// A command learned from the nodes (one the built-in table lacks), by
/// its lower-case name.
pub fn learned(name: &str) -> Option<&'static CommandSpec> {
    let learned = LEARNED.read().unwrap_or_else(|e| e.into_inner());
    learned.as_ref()?.get(name.as_bytes()).copied()
}

/// The ACL category bits of a `COMMAND` entry's categories (`+@read`);
/// names the proxy does not know (a module's own) are left out.
fn category_bits(field: Option<&redis_protocol::resp2::types::OwnedFrame>) -> u32 {
    use redis_protocol::resp2::types::OwnedFrame;
    let Some(OwnedFrame::Array(cats)) = field else {
        return 0;
    };
    cats.iter()
        .filter_map(|c| match c {
            OwnedFrame::SimpleString(b) | OwnedFrame::BulkString(b) => {
                let name = String::from_utf8_lossy(b).to_lowercase();
                let name = name.strip_prefix('@').unwrap_or(&name).to_string();
                spec::acl::CATEGORIES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, bit)| *bit)
            }
            _ => None,
        })
        .fold(0, |all, bit| all | bit)
}

/// The key specifications of a `COMMAND` entry (its ninth field, RESP2
/// maps as flat arrays); `None` when absent or when one cannot be
/// followed (`unknown` searches).
fn parse_key_specs(
    field: Option<&redis_protocol::resp2::types::OwnedFrame>,
) -> Option<Vec<KeySpec>> {
    use redis_protocol::resp2::types::OwnedFrame;
    let OwnedFrame::Array(specs) = field? else {
        return None;
    };
    let text = |f: &OwnedFrame| match f {
        OwnedFrame::SimpleString(b) | OwnedFrame::BulkString(b) => {
            Some(String::from_utf8_lossy(b).to_lowercase())
        }
        _ => None,
    };
    // A flat map's value by key.
    let get = |map: &[OwnedFrame], key: &str| -> Option<OwnedFrame> {
        map.chunks(2)
            .find(|kv| kv.len() == 2 && text(&kv[0]).as_deref() == Some(key))
            .map(|kv| kv[1].clone())
    };
    let int = |map: &[OwnedFrame], key: &str| -> Option<i64> {
        match get(map, key)? {
            OwnedFrame::Integer(n) => Some(n),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let OwnedFrame::Array(spec) = spec else {
            return None;
        };
        let mut flags = 0u16;
        if let Some(OwnedFrame::Array(names)) = get(spec, "flags") {
            for name in names.iter().filter_map(text) {
                flags |= match name.as_str() {
                    "ro" => key_flags::RO,
                    "rw" => key_flags::RW,
                    "ow" => key_flags::OW,
                    "rm" => key_flags::RM,
                    "access" => key_flags::ACCESS,
                    "insert" => key_flags::INSERT,
                    "delete" => key_flags::DELETE,
                    "update" => key_flags::UPDATE,
                    "not_key" => key_flags::NOT_KEY,
                    "incomplete" => key_flags::INCOMPLETE,
                    "variable_flags" => key_flags::VARIABLE_FLAGS,
                    _ => 0,
                };
            }
        }
        let OwnedFrame::Array(begin) = get(spec, "begin_search")? else {
            return None;
        };
        let OwnedFrame::Array(begin_spec) = get(&begin, "spec")? else {
            return None;
        };
        let begin = match text(&get(&begin, "type")?)?.as_str() {
            "index" => BeginSearch::Index(u16::try_from(int(&begin_spec, "index")?).ok()?),
            "keyword" => BeginSearch::Keyword {
                keyword: Box::leak(
                    text(&get(&begin_spec, "keyword")?)?
                        .to_uppercase()
                        .into_boxed_str(),
                ),
                start_from: i16::try_from(int(&begin_spec, "startfrom")?).ok()?,
            },
            _ => return None,
        };
        let OwnedFrame::Array(find) = get(spec, "find_keys")? else {
            return None;
        };
        let OwnedFrame::Array(find_spec) = get(&find, "spec")? else {
            return None;
        };
        let small = |key: &str| int(&find_spec, key).and_then(|n| u16::try_from(n).ok());
        let find = match text(&get(&find, "type")?)?.as_str() {
            "range" => FindKeys::Range {
                last_key: i16::try_from(int(&find_spec, "lastkey")?).ok()?,
                key_step: small("keystep")?,
                limit: small("limit")?,
            },
            "keynum" => FindKeys::KeyNum {
                key_num_idx: small("keynumidx")?,
                first_key: small("firstkey")?,
                key_step: small("keystep")?,
            },
            _ => return None,
        };
        out.push(KeySpec { begin, find, flags });
    }
    Some(out)
}

/// The full names (`container|sub`) of the subcommands a RESP2 `COMMAND`
/// reply lists (the tenth field of each command), with their ACL
/// categories.
pub fn parse_subcommands(frame: &[u8]) -> Vec<(String, u32)> {
    use redis_protocol::resp2::{decode::decode, types::OwnedFrame};
    let Ok(Some((OwnedFrame::Array(entries), _))) = decode(frame) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for entry in &entries {
        let OwnedFrame::Array(fields) = entry else {
            continue;
        };
        let Some(OwnedFrame::Array(subs)) = fields.get(9) else {
            continue;
        };
        for sub in subs {
            if let OwnedFrame::Array(sub_fields) = sub {
                if let Some(OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b)) =
                    sub_fields.first()
                {
                    let name = String::from_utf8_lossy(b).to_lowercase();
                    names.push((name, category_bits(sub_fields.get(6))));
                }
            }
        }
    }
    names
}

/// Parses a RESP2 `COMMAND` reply into the fields routing needs.
pub fn parse_command_reply(frame: &[u8]) -> Vec<LearnedCommand> {
    use redis_protocol::resp2::{decode::decode, types::OwnedFrame};
    let Ok(Some((OwnedFrame::Array(entries), _))) = decode(frame) else {
        return Vec::new();
    };
    let int = |f: Option<&OwnedFrame>| match f {
        Some(OwnedFrame::Integer(n)) => i16::try_from(*n).ok(),
        _ => None,
    };
    entries
        .iter()
        .filter_map(|e| {
            let OwnedFrame::Array(fields) = e else {
                return None;
            };
            let name = match fields.first()? {
                OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => String::from_utf8_lossy(b).to_lowercase(),
                _ => return None,
            };
            let flagged = |flag: &[u8]| matches!(fields.get(2), Some(OwnedFrame::Array(flags))
                if flags.iter().any(|f| matches!(f, OwnedFrame::SimpleString(s) | OwnedFrame::BulkString(s) if s == flag)));
            let (readonly, movable) = (flagged(b"readonly"), flagged(b"movablekeys"));
            Some(LearnedCommand {
                name,
                arity: int(fields.get(1))?,
                first: int(fields.get(3))?,
                last: int(fields.get(4))?,
                step: int(fields.get(5))?,
                readonly,
                movable,
                acl: category_bits(fields.get(6)),
                key_specs: parse_key_specs(fields.get(8)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_subcommands_a_command_reply_lists() {
        let reply = b"*2\r\n*10\r\n$6\r\nclient\r\n:-2\r\n*0\r\n:0\r\n:0\r\n:0\r\n*0\r\n*0\r\n*0\r\n*1\r\n*10\r\n$11\r\nclient|capa\r\n:-3\r\n*0\r\n:0\r\n:0\r\n:0\r\n*0\r\n*0\r\n*0\r\n*0\r\n*6\r\n$3\r\nget\r\n:2\r\n*0\r\n:1\r\n:1\r\n:1\r\n";
        assert_eq!(
            parse_subcommands(reply),
            vec![("client|capa".to_string(), 0)]
        );
        assert!(parse_subcommands(b"-ERR\r\n").is_empty());
    }

    #[test]
    fn parses_command_reply_entries() {
        let reply = b"*1\r\n*6\r\n$8\r\nmymod.do\r\n:-2\r\n*1\r\n+readonly\r\n:1\r\n:1\r\n:1\r\n";
        let got = parse_command_reply(reply);
        assert_eq!(
            got,
            vec![LearnedCommand {
                name: "mymod.do".into(),
                arity: -2,
                first: 1,
                last: 1,
                step: 1,
                readonly: true,
                movable: false,
                acl: 0,
                key_specs: None,
            }]
        );
    }

    #[test]
    fn parses_categories_and_key_specs() {
        // Redis 8.0.2's HTTL and a keyword/keynum spec.
        let reply = b"*2\r\n*10\r\n$4\r\nhttl\r\n:-5\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*4\r\n+@read\r\n+@hash\r\n+@fast\r\n+@mymodule\r\n*0\r\n*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RO\r\n+access\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n*10\r\n$4\r\nxyzz\r\n:-3\r\n*1\r\n+write\r\n:0\r\n:0\r\n:0\r\n*0\r\n*0\r\n*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RW\r\n+update\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$7\r\nkeyword\r\n$4\r\nspec\r\n*4\r\n$7\r\nkeyword\r\n$4\r\nkeys\r\n$9\r\nstartfrom\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$6\r\nkeynum\r\n$4\r\nspec\r\n*6\r\n$9\r\nkeynumidx\r\n:0\r\n$8\r\nfirstkey\r\n:1\r\n$7\r\nkeystep\r\n:1\r\n*0\r\n";
        let got = parse_command_reply(reply);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].acl,
            spec::acl::READ | spec::acl::HASH | spec::acl::FAST
        );
        assert_eq!(
            got[0].key_specs,
            Some(vec![KeySpec {
                begin: BeginSearch::Index(1),
                find: FindKeys::Range {
                    last_key: 0,
                    key_step: 1,
                    limit: 0
                },
                flags: key_flags::RO | key_flags::ACCESS,
            }])
        );
        assert_eq!(got[1].acl, 0);
        assert_eq!(
            got[1].key_specs,
            Some(vec![KeySpec {
                begin: BeginSearch::Keyword {
                    keyword: "KEYS",
                    start_from: 1
                },
                find: FindKeys::KeyNum {
                    key_num_idx: 0,
                    first_key: 1,
                    key_step: 1
                },
                flags: key_flags::RW | key_flags::UPDATE,
            }])
        );
        // An unknown search: no specs (first/last/step then serve).
        let unknown = b"*1\r\n*10\r\n$2\r\nzz\r\n:-2\r\n*0\r\n:1\r\n:1\r\n:1\r\n*0\r\n*0\r\n*1\r\n*6\r\n$5\r\nflags\r\n*0\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$7\r\nunknown\r\n$4\r\nspec\r\n*0\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$7\r\nunknown\r\n$4\r\nspec\r\n*0\r\n*0\r\n";
        assert_eq!(parse_command_reply(unknown)[0].key_specs, None);
    }
}
