//! The filters of `CLIENT LIST` and `CLIENT KILL` over the proxy's own
//! clients, parsed and answered with Redis's own errors.

use std::net::SocketAddr;
use std::time::Duration;

use super::registry::ClientInfo;

/// A client type of `TYPE` filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientType {
    /// Not subscribed.
    Normal,
    /// Subscribed to channels, patterns or shard channels.
    PubSub,
    /// Replicas and masters: never connected to a proxy.
    Replication,
}

/// Which clients a `CLIENT LIST` or `CLIENT KILL` applies to (all given
/// conditions must hold).
#[derive(Debug, Default)]
pub struct Filter {
    /// `ID id [id ...]` (LIST) or `ID id` (KILL).
    pub ids: Option<Vec<u64>>,
    /// `TYPE type`.
    pub kind: Option<ClientType>,
    /// `USER name`.
    pub user: Option<Vec<u8>>,
    /// `ADDR ip:port`.
    pub addr: Option<String>,
    /// `LADDR ip:port`.
    pub laddr: Option<String>,
    /// `MAXAGE seconds`: clients at least this old.
    pub maxage: Option<u64>,
    /// `SKIPME yes` (KILL's default): never the calling client.
    pub skip_me: bool,
    /// Valkey 9's further filters (see [`super::filter_valkey`]).
    pub extra: Option<Box<super::filter_valkey::Extra>>,
}

/// A parsed `CLIENT KILL`.
#[derive(Debug)]
pub struct Kill {
    /// Which clients.
    pub filter: Filter,
    /// The old form `CLIENT KILL ip:port`, answered `+OK` or an error.
    pub legacy: bool,
}

impl Filter {
    /// Whether client `c` passes, `me` being the calling client's id.
    pub fn matches(&self, c: &ClientInfo, me: u64) -> bool {
        // Killed and about to leave: gone already, as in Redis.
        if c.is_killed() || (self.skip_me && c.id == me) {
            return false;
        }
        if let Some(ids) = &self.ids {
            if !ids.contains(&c.id) {
                return false;
            }
        }
        match self.kind {
            Some(ClientType::Replication) => return false,
            Some(ClientType::PubSub) if !c.is_subscribed() => return false,
            Some(ClientType::Normal) if c.is_subscribed() => return false,
            _ => {}
        }
        if let Some(user) = &self.user {
            let names = c.names();
            let theirs = names.user.as_deref().unwrap_or(b"default");
            if theirs != &user[..] {
                return false;
            }
        }
        if let Some(addr) = &self.addr {
            if c.peer.to_string() != *addr {
                return false;
            }
        }
        if let Some(laddr) = &self.laddr {
            if c.local.map(|a: SocketAddr| a.to_string()).as_deref() != Some(laddr.as_str()) {
                return false;
            }
        }
        if let Some(age) = self.maxage {
            if c.created.elapsed() < Duration::from_secs(age) {
                return false;
            }
        }
        self.extra.as_ref().is_none_or(|extra| extra.matches(c))
    }
}

/// A `TYPE` filter's client type (`primary`: Valkey's name for `master`).
pub(super) fn client_type(name: &[u8], primary: bool) -> Result<ClientType, String> {
    match name.to_ascii_lowercase().as_slice() {
        b"normal" => Ok(ClientType::Normal),
        b"pubsub" => Ok(ClientType::PubSub),
        b"master" | b"replica" | b"slave" => Ok(ClientType::Replication),
        b"primary" if primary => Ok(ClientType::Replication),
        _ => Err(format!(
            "ERR Unknown client type '{}'",
            String::from_utf8_lossy(name)
        )),
    }
}

pub(super) fn text(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).into_owned()
}

/// `CLIENT LIST [TYPE type] [ID id [id ...]]`: `args` after `LIST`
/// (Valkey 8.1 and later: every filter of `KILL`, see
/// [`super::filter_valkey`]). `users` tells whether a user name exists.
pub fn parse_list(args: &[&[u8]], users: impl Fn(&[u8]) -> bool) -> Result<Filter, String> {
    if super::filter_valkey::applies() {
        if args.len() == 1 {
            return Err("ERR syntax error".into());
        }
        return super::filter_valkey::parse(args, false, users);
    }
    let mut filter = Filter::default();
    let mut i = 0;
    while i < args.len() {
        let opt = args[i].to_ascii_lowercase();
        match opt.as_slice() {
            b"type" if i + 1 < args.len() => {
                filter.kind = Some(client_type(args[i + 1], false)?);
                i += 2;
            }
            b"id" if i + 1 < args.len() => {
                let mut ids = Vec::new();
                for a in &args[i + 1..] {
                    // Any integer, as Redis: 0 or a negative one names no
                    // client.
                    match crate::protocol::request::parse_i64(a) {
                        Some(id) => ids.push(u64::try_from(id).unwrap_or(0)),
                        None => return Err("ERR Invalid client ID".into()),
                    }
                }
                filter.ids = Some(ids);
                i = args.len();
            }
            _ => return Err("ERR syntax error".into()),
        }
    }
    Ok(filter)
}

/// `CLIENT KILL ip:port` or `CLIENT KILL <filter> <value> ...`: `args`
/// after `KILL`. `users` tells whether a user name exists.
pub fn parse_kill(args: &[&[u8]], users: impl Fn(&[u8]) -> bool) -> Result<Kill, String> {
    if args.len() == 1 {
        let filter = Filter {
            addr: Some(text(args[0])),
            ..Filter::default()
        };
        return Ok(Kill {
            filter,
            legacy: true,
        });
    }
    if super::filter_valkey::applies() && !args.is_empty() {
        let filter = super::filter_valkey::parse(args, true, users)?;
        return Ok(Kill {
            filter,
            legacy: false,
        });
    }
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return Err("ERR syntax error".into());
    }
    let mut filter = Filter {
        skip_me: true,
        ..Filter::default()
    };
    for pair in args.chunks(2) {
        let (opt, value) = (pair[0].to_ascii_lowercase(), pair[1]);
        match opt.as_slice() {
            b"id" => match crate::protocol::request::parse_i64(value).map(u64::try_from) {
                Some(Ok(id)) if id > 0 => filter.ids = Some(vec![id]),
                _ => return Err("ERR client-id should be greater than 0".into()),
            },
            b"type" => filter.kind = Some(client_type(value, false)?),
            b"user" => {
                if !users(value) {
                    return Err(format!("ERR No such user '{}'", text(value)));
                }
                filter.user = Some(value.to_vec());
            }
            b"addr" => filter.addr = Some(text(value)),
            b"laddr" => filter.laddr = Some(text(value)),
            // Redis 7.4's and Valkey 8's filter: a syntax error for older
            // nodes' clients.
            b"maxage" if !crate::nodes::at_least(7, 4) && !crate::nodes::valkey_at_least(8, 0) => {
                return Err("ERR syntax error".into())
            }
            b"maxage" => match crate::protocol::request::parse_i64(value) {
                Some(age) if age > 0 => filter.maxage = Some(age.unsigned_abs()),
                Some(_) => return Err("ERR maxage should be greater than 0".into()),
                None => return Err("ERR maxage is not an integer or out of range".into()),
            },
            b"skipme" => match value.to_ascii_lowercase().as_slice() {
                b"yes" => filter.skip_me = true,
                b"no" => filter.skip_me = false,
                _ => return Err("ERR syntax error".into()),
            },
            _ => return Err("ERR syntax error".into()),
        }
    }
    Ok(Kill {
        filter,
        legacy: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn client(id: u64, port: u16) -> ClientInfo {
        let peer: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        ClientInfo::new(id, peer, Some("127.0.0.1:6380".parse().unwrap()))
    }

    #[test]
    fn list_filters() {
        let f = parse_list(&[b"ID", b"2", b"3"], |_| true).unwrap();
        assert!(!f.matches(&client(1, 5000), 9));
        assert!(f.matches(&client(3, 5000), 9));
        let f = parse_list(&[b"type", b"pubsub"], |_| true).unwrap();
        let c = client(1, 5000);
        assert!(!f.matches(&c, 9));
        c.set_subscriptions([1, 0, 0]);
        assert!(f.matches(&c, 9));
        assert!(!parse_list(&[b"TYPE", b"normal"], |_| true)
            .unwrap()
            .matches(&c, 9));
        assert!(!parse_list(&[b"TYPE", b"replica"], |_| true)
            .unwrap()
            .matches(&c, 9));
        assert_eq!(
            parse_list(&[b"TYPE", b"x y"], |_| true).unwrap_err(),
            "ERR Unknown client type 'x y'"
        );
        assert_eq!(
            parse_list(&[b"ID", b"z"], |_| true).unwrap_err(),
            "ERR Invalid client ID"
        );
        assert_eq!(
            parse_list(&[b"bogus"], |_| true).unwrap_err(),
            "ERR syntax error"
        );
    }

    #[test]
    fn kill_filters() {
        let users = |u: &[u8]| u == b"default" || u == b"app";
        let k = parse_kill(&[b"127.0.0.1:5000"], users).unwrap();
        assert!(k.legacy);
        // The old form may kill the caller itself.
        assert!(k.filter.matches(&client(1, 5000), 1));
        let k = parse_kill(&[b"ADDR", b"127.0.0.1:5000"], users).unwrap();
        assert!(!k.legacy);
        assert!(
            !k.filter.matches(&client(1, 5000), 1),
            "SKIPME yes by default"
        );
        assert!(k.filter.matches(&client(1, 5000), 2));
        assert!(!k.filter.matches(&client(1, 5001), 2));
        let k = parse_kill(&[b"laddr", b"127.0.0.1:6380", b"skipme", b"no"], users).unwrap();
        assert!(k.filter.matches(&client(1, 5000), 1));
        let k = parse_kill(&[b"USER", b"app"], users).unwrap();
        let c = client(4, 5000);
        assert!(!k.filter.matches(&c, 1));
        c.update(|n| n.user = Some(Bytes::from_static(b"app")));
        assert!(k.filter.matches(&c, 1));
        let err = |args: &[&[u8]]| parse_kill(args, users).unwrap_err();
        assert_eq!(err(&[b"USER", b"nobody"]), "ERR No such user 'nobody'");
        assert_eq!(
            err(&[b"ID", b"0"]),
            "ERR client-id should be greater than 0"
        );
        assert_eq!(err(&[b"ID", b"1", b"TYPE"]), "ERR syntax error");
        assert!(
            parse_kill(&[b"ID"], users).unwrap().legacy,
            "an address, as in Redis"
        );
        assert_eq!(err(&[b"SKIPME", b"maybe"]), "ERR syntax error");
        assert_eq!(err(&[b"PORT", b"1"]), "ERR syntax error");
        assert_eq!(err(&[b"TYPE", b"x"]), "ERR Unknown client type 'x'");
    }
}
