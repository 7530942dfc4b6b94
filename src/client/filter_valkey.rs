//! Valkey's filters of `CLIENT LIST` and `CLIENT KILL`: from 8.1 one
//! parser serves both (`ID` takes several ids, `MAXAGE` must be positive,
//! `LIST` takes every `KILL` filter), and 9.0 adds `FLAGS`, `NAME`,
//! `IDLE`, `LIB-NAME`, `LIB-VER`, `DB`, `CAPA`, `IP` and a `NOT-` form of
//! most (Valkey's `parseClientFiltersOrReply`, with its error texts).
//! The proxy serves one database and shows every client `idle=0`; the
//! filters see its clients as its `CLIENT LIST` shows them.

use super::filter::{client_type, text, ClientType, Filter};
use super::registry::ClientInfo;
use crate::protocol::request::parse_i64;

/// What Valkey 9 filters beyond [`Filter`]'s conditions (`not_*`: the
/// clients to leave out).
#[derive(Debug, Default)]
pub struct Extra {
    not_ids: Option<Vec<u64>>,
    not_kind: Option<ClientType>,
    not_user: Option<Vec<u8>>,
    not_addr: Option<String>,
    not_laddr: Option<String>,
    idle: Option<i64>,
    flags: Option<Vec<u8>>,
    not_flags: Option<Vec<u8>>,
    name: Option<Vec<u8>>,
    not_name: Option<Vec<u8>>,
    lib_name: Option<Vec<u8>>,
    not_lib_name: Option<Vec<u8>>,
    lib_ver: Option<Vec<u8>>,
    not_lib_ver: Option<Vec<u8>>,
    db: Option<i64>,
    not_db: Option<i64>,
    capa: Option<Vec<u8>>,
    not_capa: Option<Vec<u8>>,
    ip: Option<Vec<u8>>,
    not_ip: Option<Vec<u8>>,
}

/// Whether the nodes parse client filters as Valkey 8.1 and later.
pub fn applies() -> bool {
    crate::nodes::valkey_at_least(8, 1)
}

/// `ID`'s and `NOT-ID`'s ids: every integer argument from `i` on.
fn ids(args: &[&[u8]], i: &mut usize) -> Result<Vec<u64>, String> {
    let mut ids = Vec::new();
    while let Some(id) = args.get(*i).and_then(|a| parse_i64(a)) {
        match u64::try_from(id) {
            Ok(id) if id > 0 => ids.push(id),
            _ => return Err("ERR client-id should be greater than 0".into()),
        }
        *i += 1;
    }
    Ok(ids)
}

/// A positive number of seconds (`MAXAGE`, `IDLE`), `what` naming it in
/// the errors.
fn positive(arg: &[u8], what: &str) -> Result<i64, String> {
    match parse_i64(arg) {
        Some(n) if n > 0 => Ok(n),
        Some(_) => Err(format!("ERR {what} should be greater than 0")),
        None => Err(format!("ERR {what} is not an integer or out of range")),
    }
}

/// A database number (`DB`, `NOT-DB`): the proxy has database 0 only.
fn database(arg: &[u8], what: &str) -> Result<i64, String> {
    match parse_i64(arg).filter(|n| i32::try_from(*n).is_ok()) {
        Some(0) => Ok(0),
        Some(_) => Err(format!("ERR {what} number should be between 0 and 0")),
        None => Err(format!("ERR {what} is not an integer or out of range")),
    }
}

/// Flags a filter may name (Valkey's `validateClientFlagFilter`).
fn known_flags(flags: &[u8], which: &str) -> Result<Vec<u8>, String> {
    match flags.iter().all(|c| b"OSMPxbtRBdcuAUreTIiEN".contains(c)) {
        true => Ok(flags.to_vec()),
        false => Err(format!(
            "ERR Unknown flags found in the {which} filter: {}",
            text(flags)
        )),
    }
}

/// Capabilities a filter may name (`r`).
fn known_capa(capa: &[u8], which: &str) -> Result<Vec<u8>, String> {
    match capa.iter().all(|&c| c == b'r') {
        true => Ok(capa.to_vec()),
        false => Err(format!(
            "ERR Unknown capa found in the {which} filter: {}",
            text(capa)
        )),
    }
}

/// Parses the filters `args` (after `LIST` or `KILL`); `skip_me` is the
/// default of `SKIPME` (`KILL`'s yes), `users` tells whether a user
/// exists.
pub fn parse(
    args: &[&[u8]],
    skip_me: bool,
    users: impl Fn(&[u8]) -> bool,
) -> Result<Filter, String> {
    parse_for(args, skip_me, users, crate::nodes::valkey_at_least(9, 0))
}

/// [`parse`] for Valkey 8.1 (`nine` false) or 9.0 and later.
fn parse_for(
    args: &[&[u8]],
    skip_me: bool,
    users: impl Fn(&[u8]) -> bool,
    nine: bool,
) -> Result<Filter, String> {
    let mut filter = Filter {
        skip_me,
        ..Filter::default()
    };
    let mut extra = Extra::default();
    let mut i = 0;
    while i < args.len() {
        let opt = args[i].to_ascii_lowercase();
        let value = args.get(i + 1).copied();
        let user = |name: &[u8]| match users(name) {
            true => Ok(name.to_vec()),
            false => Err(format!("ERR No such user '{}'", text(name))),
        };
        match (opt.as_slice(), value) {
            (b"id", _) => {
                i += 1;
                let mut found = ids(args, &mut i)?;
                let all = filter.ids.get_or_insert_with(Vec::new);
                all.append(&mut found);
                continue;
            }
            (b"not-id", _) if nine => {
                i += 1;
                let mut found = ids(args, &mut i)?;
                let all = extra.not_ids.get_or_insert_with(Vec::new);
                all.append(&mut found);
                continue;
            }
            (b"maxage", Some(v)) => {
                filter.maxage = Some(positive(v, "maxage")?.unsigned_abs());
            }
            (b"type", Some(v)) => filter.kind = Some(client_type(v, true)?),
            (b"addr", Some(v)) => filter.addr = Some(text(v)),
            (b"laddr", Some(v)) => filter.laddr = Some(text(v)),
            (b"user", Some(v)) => filter.user = Some(user(v)?),
            (b"skipme", Some(v)) => match v.to_ascii_lowercase().as_slice() {
                b"yes" => filter.skip_me = true,
                b"no" => filter.skip_me = false,
                _ => return Err("ERR syntax error".into()),
            },
            (b"not-type", Some(v)) if nine => extra.not_kind = Some(client_type(v, true)?),
            (b"not-addr", Some(v)) if nine => extra.not_addr = Some(text(v)),
            (b"not-laddr", Some(v)) if nine => extra.not_laddr = Some(text(v)),
            (b"not-user", Some(v)) if nine => extra.not_user = Some(user(v)?),
            (b"idle", Some(v)) if nine => extra.idle = Some(positive(v, "idle")?),
            (b"flags", Some(v)) if nine => extra.flags = Some(known_flags(v, "provided")?),
            (b"not-flags", Some(v)) if nine => extra.not_flags = Some(known_flags(v, "NOT-FLAGS")?),
            (b"name", Some(v)) if nine => extra.name = Some(v.to_vec()),
            (b"not-name", Some(v)) if nine => extra.not_name = Some(v.to_vec()),
            (b"lib-name", Some(v)) if nine => extra.lib_name = Some(v.to_vec()),
            (b"not-lib-name", Some(v)) if nine => extra.not_lib_name = Some(v.to_vec()),
            (b"lib-ver", Some(v)) if nine => extra.lib_ver = Some(v.to_vec()),
            (b"not-lib-ver", Some(v)) if nine => extra.not_lib_ver = Some(v.to_vec()),
            (b"db", Some(v)) if nine => extra.db = Some(database(v, "DB")?),
            (b"not-db", Some(v)) if nine => extra.not_db = Some(database(v, "NOT-DB")?),
            (b"capa", Some(v)) if nine => extra.capa = Some(known_capa(v, "provided")?),
            (b"not-capa", Some(v)) if nine => extra.not_capa = Some(known_capa(v, "NOT-CAPA")?),
            (b"ip", Some(v)) if nine => extra.ip = Some(v.to_vec()),
            (b"not-ip", Some(v)) if nine => extra.not_ip = Some(v.to_vec()),
            _ => return Err("ERR syntax error".into()),
        }
        i += 2;
    }
    if nine {
        filter.extra = Some(Box::new(extra));
    }
    Ok(filter)
}

/// Whether every flag of `wanted` is one of the client's (`flags`, as
/// its `CLIENT LIST` line shows them; a monitor counts as a replica, `S`).
fn has_flags(flags: &str, wanted: &[u8]) -> bool {
    wanted.iter().all(|&f| match f {
        b'S' => flags.contains('O'),
        _ => flags.as_bytes().contains(&f),
    })
}

/// Valkey's `clientMatchesIpFilter`: the peer address starts with `ip`,
/// then (past a `]`) a colon and a port not starting with 0.
fn ip_matches(peer: &str, ip: &[u8]) -> bool {
    let peer = peer.strip_prefix('[').unwrap_or(peer).as_bytes();
    let Some(rest) = peer.strip_prefix(ip) else {
        return false;
    };
    let rest = rest.strip_prefix(b"]").unwrap_or(rest);
    matches!(rest, [b':', port, ..] if *port != b'0')
}

impl Extra {
    /// Whether client `c` passes the conditions of Valkey 9.
    pub fn matches(&self, c: &ClientInfo) -> bool {
        let names = c.names();
        let user = names.user.as_deref().unwrap_or(b"default");
        let same = |field: &Option<bytes::Bytes>, v: &Option<Vec<u8>>| match v {
            Some(v) => field.as_deref() == Some(v.as_slice()),
            None => false,
        };
        let differs = |field: &Option<bytes::Bytes>, v: &Option<Vec<u8>>| match v {
            Some(v) => field.as_deref() != Some(v.as_slice()),
            None => false,
        };
        let flags = c.flags();
        let peer = c.peer.to_string();
        let local = c.local.map(|a| a.to_string()).unwrap_or_default();
        let kind = if c.is_subscribed() {
            ClientType::PubSub
        } else {
            ClientType::Normal
        };
        let capa: &[u8] = if c.capa_redirect() { b"r" } else { b"" };
        let has_capa = |wanted: &[u8]| wanted.iter().all(|f| capa.contains(f));
        let refused = [
            self.idle.is_some_and(|idle| idle > 0),
            self.flags.as_ref().is_some_and(|f| !has_flags(&flags, f)),
            differs(&names.name, &self.name),
            differs(&names.lib_name, &self.lib_name),
            differs(&names.lib_ver, &self.lib_ver),
            self.db.is_some_and(|db| db != 0),
            self.capa.as_ref().is_some_and(|f| !has_capa(f)),
            self.ip.as_ref().is_some_and(|ip| !ip_matches(&peer, ip)),
            self.not_addr.as_ref().is_some_and(|a| *a == peer),
            self.not_laddr.as_ref().is_some_and(|a| *a == local),
            self.not_kind.is_some_and(|k| k == kind),
            self.not_ids.as_ref().is_some_and(|ids| ids.contains(&c.id)),
            self.not_user.as_ref().is_some_and(|u| u.as_slice() == user),
            self.not_flags
                .as_ref()
                .is_some_and(|f| has_flags(&flags, f)),
            same(&names.name, &self.not_name),
            same(&names.lib_name, &self.not_lib_name),
            same(&names.lib_ver, &self.not_lib_ver),
            self.not_db == Some(0),
            self.not_capa.as_ref().is_some_and(|f| has_capa(f)),
            self.not_ip.as_ref().is_some_and(|ip| ip_matches(&peer, ip)),
        ];
        !refused.contains(&true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_filters_as_valkey_matches_them() {
        assert!(ip_matches("127.0.0.1:5000", b"127.0.0.1"));
        assert!(!ip_matches("127.0.0.1:5000", b"127.0.0"));
        assert!(!ip_matches("127.0.0.10:5000", b"127.0.0.1"));
        assert!(ip_matches("[::1]:5000", b"::1"));
        assert!(!ip_matches("127.0.0.1:0", b"127.0.0.1"));
    }

    #[test]
    fn flags_as_client_list_shows_them() {
        assert!(has_flags("N", b"N"));
        assert!(!has_flags("P", b"N"));
        assert!(has_flags("Pt", b"tP"));
        assert!(has_flags("O", b"S"));
        assert!(!has_flags("P", b"x"));
    }

    #[test]
    fn errors_as_valkey_writes_them() {
        let users = |u: &[u8]| u == b"default";
        let err = |args: &[&[u8]]| parse(args, false, users).unwrap_err();
        assert_eq!(
            err(&[b"ID", b"0"]),
            "ERR client-id should be greater than 0"
        );
        assert_eq!(err(&[b"ID", b"1", b"x"]), "ERR syntax error");
        assert_eq!(
            err(&[b"MAXAGE", b"0"]),
            "ERR maxage should be greater than 0"
        );
        assert_eq!(
            err(&[b"MAXAGE", b"x"]),
            "ERR maxage is not an integer or out of range"
        );
        assert_eq!(err(&[b"TYPE", b"x"]), "ERR Unknown client type 'x'");
        assert_eq!(err(&[b"USER", b"nobody"]), "ERR No such user 'nobody'");
        assert_eq!(err(&[b"SKIPME", b"maybe"]), "ERR syntax error");
        assert_eq!(err(&[b"TYPE"]), "ERR syntax error");
        let f = parse(&[b"ID", b"3", b"4", b"TYPE", b"primary"], false, users).unwrap();
        assert_eq!(f.ids, Some(vec![3, 4]));
        assert_eq!(f.kind, Some(ClientType::Replication));
        // Valkey 8.1 knows none of 9.0's filters.
        assert_eq!(err(&[b"NOT-ID", b"1"]), "ERR syntax error");
        assert_eq!(err(&[b"FLAGS", b"N"]), "ERR syntax error");
        let nine = |args: &[&[u8]]| parse_for(args, false, users, true).unwrap_err();
        for (args, error) in [
            (
                &[&b"FLAGS"[..], b"Nz"],
                "ERR Unknown flags found in the provided filter: Nz",
            ),
            (
                &[b"NOT-CAPA", b"x"],
                "ERR Unknown capa found in the NOT-CAPA filter: x",
            ),
            (&[b"DB", b"3"], "ERR DB number should be between 0 and 0"),
            (
                &[b"NOT-DB", b"x"],
                "ERR NOT-DB is not an integer or out of range",
            ),
            (&[b"IDLE", b"-1"], "ERR idle should be greater than 0"),
            (&[b"NOT-USER", b"x"], "ERR No such user 'x'"),
        ] {
            assert_eq!(nine(args), error);
        }
    }

    #[test]
    fn valkey_9_filters_match_as_client_list_shows_clients() {
        let users = |u: &[u8]| u == b"default" || u == b"app";
        let peer: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let c = ClientInfo::new(7, peer, Some("127.0.0.1:6380".parse().unwrap()));
        c.update(|n| {
            n.name = Some(bytes::Bytes::from_static(b"w1"));
            n.lib_name = Some(bytes::Bytes::from_static(b"redis-py"));
        });
        let passes = |args: &[&[u8]]| parse_for(args, false, users, true).unwrap().matches(&c, 1);
        assert!(passes(&[b"NAME", b"w1", b"FLAGS", b"N", b"DB", b"0"]));
        assert!(!passes(&[b"NAME", b"w2"]));
        assert!(!passes(&[b"NOT-NAME", b"w1"]));
        assert!(passes(&[b"NOT-NAME", b"w2", b"LIB-NAME", b"redis-py"]));
        assert!(!passes(&[b"LIB-VER", b"1"]));
        assert!(passes(&[b"NOT-LIB-VER", b"1"]));
        assert!(!passes(&[b"NOT-ID", b"6", b"7"]));
        assert!(passes(&[b"NOT-ID", b"6", b"NOT-TYPE", b"pubsub"]));
        assert!(!passes(&[b"NOT-TYPE", b"normal"]));
        assert!(!passes(&[b"NOT-USER", b"default"]));
        assert!(passes(&[b"NOT-USER", b"app", b"IP", b"127.0.0.1"]));
        assert!(!passes(&[b"NOT-IP", b"127.0.0.1"]));
        assert!(!passes(&[b"NOT-ADDR", b"127.0.0.1:5000"]));
        assert!(!passes(&[b"NOT-LADDR", b"127.0.0.1:6380"]));
        assert!(!passes(&[b"CAPA", b"r"]));
        assert!(passes(&[b"NOT-CAPA", b"r", b"NOT-FLAGS", b"P"]));
        assert!(!passes(&[b"NOT-FLAGS", b"N"]));
        assert!(!passes(&[b"NOT-DB", b"0"]));
        // Every client shows idle=0.
        assert!(!passes(&[b"IDLE", b"1"]));
    }
}
