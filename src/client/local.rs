//! Commands the proxy answers itself: connection state (`HELLO`, `AUTH`,
//! `SELECT`, `CLIENT ...`), `PING`, `ECHO`, `QUIT`, `RESET`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::filter;
use super::pause;
use super::registry::ClientInfo;

use bytes::{Bytes, BytesMut};

use crate::command::keys::Args;
use crate::command::route::{CommandView, Local};
use crate::info::ProxyFacts;
use crate::protocol::reply::{self, put_array, put_bulk, put_int, put_map, put_null, Proto};
use crate::protocol::request::parse_i64;
use crate::server::Context;
use crate::tracking::options::Switch;
use crate::tracking::Tracking;

/// Per-connection state that local commands read and change.
#[derive(Debug)]
pub struct ClientState {
    /// Protocol chosen with `HELLO`.
    pub proto: Proto,
    /// Whether `AUTH` succeeded (or no password is configured).
    pub authed: bool,
    /// What `CLIENT LIST` shows (names, protocol), shared with the registry.
    pub info: Arc<ClientInfo>,
    /// `CLIENT REPLY`: which replies the client gets.
    pub replies: ReplyMode,
    /// `CLIENT TRACKING` (client-side caching).
    pub tracking: Tracking,
    /// What the authenticated user may do, when it has `acl` rules
    /// (`None`: everything, the fast path).
    pub acl: Option<Arc<crate::acl::Acl>>,
    /// The version of the configuration and users ([`Context::settings_version`])
    /// its user's rules are from: a change makes the session look the
    /// user up again. `None` only in tests.
    pub user_version: Option<u64>,
}

/// `CLIENT REPLY ON|OFF|SKIP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    /// Every reply (the default).
    On,
    /// No reply.
    Off,
    /// No reply to the next command, then `On`.
    Skip,
}

impl ClientState {
    /// Whether the reply of the command being started is dropped
    /// (`CLIENT REPLY OFF`, or the command after `SKIP`).
    pub fn take_silence(&mut self) -> bool {
        match self.replies {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.replies = ReplyMode::On;
                true
            }
        }
    }
}

impl ClientState {
    /// A fresh connection.
    pub fn new(info: Arc<ClientInfo>, authed: bool) -> Self {
        ClientState {
            proto: Proto::Resp2,
            authed,
            info,
            replies: ReplyMode::On,
            tracking: Tracking::default(),
            acl: None,
            user_version: None,
        }
    }

    /// A fresh connection of the proxy: logged in as the `default` user
    /// when it needs no password, as in Redis.
    pub fn connected(info: Arc<ClientInfo>, ctx: &Context) -> Self {
        let version = ctx.settings_version();
        let default = ctx.users.automatic();
        let mut client = ClientState::new(info, default.is_some());
        client.acl = default.and_then(|u| u.session_acl());
        client.user_version = Some(version);
        client
    }

    fn set_proto(&mut self, proto: Proto) {
        self.proto = proto;
        let v = if proto == Proto::Resp3 { 3 } else { 2 };
        self.info.resp.store(v, Ordering::Relaxed);
    }
}

/// What a local command produced.
#[derive(Debug)]
pub enum LocalOutcome {
    /// A reply.
    Reply(Bytes),
    /// A reply, after which the connection is closed.
    Close(Bytes),
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Runs a local command.
pub fn execute(
    cmd: Local,
    view: &CommandView<'_>,
    client: &mut ClientState,
    ctx: &Context,
) -> LocalOutcome {
    let reply = match cmd {
        Local::Ping => match view.len() {
            1 => Bytes::from_static(reply::PONG),
            2 => reply::bulk(view.get(1)),
            _ => reply::error("ERR wrong number of arguments for 'ping' command"),
        },
        Local::Echo => reply::bulk(view.get(1)),
        Local::Select => select(view.get(1)),
        Local::Quit => return LocalOutcome::Close(Bytes::from_static(reply::OK)),
        Local::Hello => hello(view, client, ctx),
        Local::Auth if view.len() == 2 && ctx.users.default_nopass() => reply::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ),
        Local::Auth if view.len() > 3 => reply::error("ERR syntax error"),
        Local::Auth => {
            let (user, pass) = if view.len() == 3 {
                (view.get(1), view.get(2))
            } else {
                (&b"default"[..], view.get(1))
            };
            auth(user, pass, view.get(0), client, ctx)
        }
        Local::Reset => {
            client.set_proto(Proto::Resp2);
            client.info.update(|n| n.name = None);
            // As Redis, back to the default user.
            let version = ctx.settings_version();
            let default = ctx.users.automatic();
            client.authed = default.is_some();
            client.acl = default.and_then(|u| u.session_acl());
            client.user_version = Some(version);
            client.info.update(|n| n.user = None);
            client.replies = ReplyMode::On;
            // Redis 7.2 and later also clear these (7.0 keeps NO-EVICT).
            if crate::nodes::at_least(7, 2) {
                client.info.set_no_evict(false);
                client.info.set_no_touch(false);
            }
            if client.tracking.on {
                client.tracking = Tracking::default();
                ctx.tracker.disable(client.info.id);
            }
            Bytes::from_static(b"+RESET\r\n")
        }
        Local::Whoami => reply::bulk(
            client
                .info
                .names()
                .user
                .as_deref()
                .unwrap_or(b"default"),
        ),
        Local::Client if view.len() > 1 && view.get(1).eq_ignore_ascii_case(b"kill") => {
            return client_kill(view, client, ctx)
        }
        Local::Client => client_cmd(view, client, ctx),
        Local::Acl => return super::acl_admin::execute(view, client, ctx),
    };
    LocalOutcome::Reply(reply)
}

/// `SELECT db`: database 0 is the only one; the index is checked as one
/// Redis with the default 16 databases checks it, so that an index no
/// server has gets Redis's error, and only 1 to 15 get the cluster's.
pub(crate) fn select(db: &[u8]) -> Bytes {
    match parse_i64(db) {
        Some(0) => Bytes::from_static(reply::OK),
        Some(n) if i32::try_from(n).is_err() => {
            reply::error("ERR value is out of range, value must between -2147483648 and 2147483647")
        }
        Some(n) if !(0..16).contains(&n) => reply::error("ERR DB index is out of range"),
        Some(_) => crate::command::route::only_database_0("SELECT"),
        None => reply::error("ERR value is not an integer or out of range"),
    }
}

/// `AUTH user pass` (also `HELLO ... AUTH`, named `command`), against
/// the proxy's users (see [`crate::acl::users`]); a failure is logged in
/// `ACL LOG`, as Redis logs it.
fn auth(
    user: &[u8],
    pass: &[u8],
    command: &[u8],
    client: &mut ClientState,
    ctx: &Context,
) -> Bytes {
    let version = ctx.settings_version();
    let Some(found) = ctx.users.authenticate(user, pass) else {
        let info = client.info.line(0);
        let info = info.trim_end_matches('\n').to_string();
        ctx.users
            .log
            .add(crate::acl::log::Reason::Auth, false, command, user, info);
        return reply::error(WRONGPASS);
    };
    client.authed = true;
    client.acl = found.session_acl();
    client.user_version = Some(version);
    client
        .info
        .update(|n| n.user = Some(Bytes::copy_from_slice(user)));
    Bytes::from_static(reply::OK)
}

fn hello(view: &CommandView<'_>, client: &mut ClientState, ctx: &Context) -> Bytes {
    let mut proto = client.proto;
    let mut i = 1;
    if view.len() > 1 {
        match parse_i64(view.get(1)) {
            Some(2) => proto = Proto::Resp2,
            Some(3) => proto = Proto::Resp3,
            Some(_) => return Bytes::from_static(b"-NOPROTO unsupported protocol version\r\n"),
            None => return reply::error("ERR Protocol version is not an integer or out of range"),
        }
        i = 2;
    }
    // As Redis 7.2 (7.0 logged in first): every option is read, and a
    // name checked, before the credentials are tried, so a bad option
    // changes nothing.
    let mut setname = None;
    let mut credentials = None;
    while i < view.len() {
        let opt = view.get(i);
        let more = view.len() - i - 1;
        if opt.eq_ignore_ascii_case(b"auth") && more >= 2 {
            credentials = Some((view.get(i + 1), view.get(i + 2)));
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"setname") && more >= 1 {
            let name = view.get(i + 1);
            if name.iter().any(|&b| b <= b' ' || b > b'~') {
                return reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            setname = Some(Bytes::copy_from_slice(name));
            i += 2;
        } else {
            return reply::error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            ));
        }
    }
    if let Some((user, pass)) = credentials {
        let r = auth(user, pass, view.get(0), client, ctx);
        if r[0] == b'-' {
            return r;
        }
    }
    if !client.authed {
        // Redis 7.2 reworded it.
        let syntax = match crate::acl::Style::of(&ctx.redis_version()) {
            crate::acl::Style::Redis70 => "HELLO AUTH",
            crate::acl::Style::Redis72 | crate::acl::Style::Valkey91 => "HELLO <proto> AUTH",
        };
        return reply::error(&format!("NOAUTH HELLO must be called with the client already authenticated, otherwise the {syntax} <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
    }
    if let Some(name) = setname {
        // An empty name clears it, as `CLIENT SETNAME ""`.
        client
            .info
            .update(|n| n.name = (!name.is_empty()).then_some(name));
    }
    client.set_proto(proto);
    let mut out = BytesMut::with_capacity(160);
    put_map(&mut out, proto, 7);
    // As the nodes introduce themselves (Valkey by its own name).
    let (server, version) =
        crate::nodes::identity().unwrap_or_else(|| ("redis".to_string(), ctx.redis_version()));
    put_bulk(&mut out, b"server");
    put_bulk(&mut out, server.as_bytes());
    put_bulk(&mut out, b"version");
    put_bulk(&mut out, version.as_bytes());
    put_bulk(&mut out, b"proto");
    put_int(&mut out, if proto == Proto::Resp3 { 3 } else { 2 });
    put_bulk(&mut out, b"id");
    put_int(&mut out, client.info.id as i64);
    put_bulk(&mut out, b"mode");
    put_bulk(&mut out, b"standalone");
    put_bulk(&mut out, b"role");
    put_bulk(&mut out, b"master");
    put_bulk(&mut out, b"modules");
    put_modules(&mut out, proto, &crate::nodes::modules());
    out.freeze()
}

/// `HELLO`'s `modules`: the nodes' `MODULE LIST` (RESP2: an array of flat
/// name/value arrays), each module a map in RESP3, as one server lists
/// them.
fn put_modules(out: &mut BytesMut, proto: Proto, list: &[u8]) {
    let modules = crate::protocol::scan::children(list).unwrap_or_default();
    put_array(out, modules.len());
    for (s, e) in modules {
        let module = &list[s..e];
        let fields = crate::protocol::scan::children(module).map_or(0, |f| f.len());
        let body = module
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&[][..], |nl| &module[nl + 1..]);
        match (proto, module.first()) {
            (Proto::Resp3, Some(b'*')) => {
                put_map(out, proto, fields / 2);
                out.extend_from_slice(body);
            }
            _ => out.extend_from_slice(module),
        }
    }
}

fn client_cmd(view: &CommandView<'_>, client: &mut ClientState, ctx: &Context) -> Bytes {
    let sub = view.get(1).to_ascii_lowercase();
    match sub.as_slice() {
        b"setname" if view.len() == 3 => {
            let name = view.get(2);
            if name.iter().any(|&b| b <= b' ' || b > b'~') {
                return reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            let name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
            client.info.update(|n| n.name = name);
            Bytes::from_static(reply::OK)
        }
        b"getname" => match &client.info.names().name {
            Some(n) => reply::bulk(n),
            None => {
                let mut out = BytesMut::new();
                put_null(&mut out, client.proto);
                out.freeze()
            }
        },
        b"id" => reply::int(client.info.id as i64),
        // Redis 7.2's subcommands: unknown to older nodes, as to them.
        b"setinfo" | b"no-touch" if !crate::nodes::at_least(7, 2) => reply::error(&format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(view.get(1))
        )),
        b"setinfo" if view.len() == 4 => {
            let attr = view.get(2).to_ascii_lowercase();
            // As Redis checks names: no spaces, newlines or other bytes
            // outside '!'..='~' (they would forge CLIENT LIST lines).
            if matches!(attr.as_slice(), b"lib-name" | b"lib-ver")
                && view.get(3).iter().any(|&b| b <= b' ' || b > b'~')
            {
                // Named as the client wrote it, as Redis does.
                return reply::error(&format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(view.get(2))
                ));
            }
            let value = Some(Bytes::copy_from_slice(view.get(3)));
            match attr.as_slice() {
                b"lib-name" => client.info.update(|n| n.lib_name = value),
                b"lib-ver" => client.info.update(|n| n.lib_ver = value),
                _ => {
                    return reply::error(&format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(view.get(2))
                    ))
                }
            }
            Bytes::from_static(reply::OK)
        }
        b"info" => reply::text(client.proto, client.info.line(view.raw.len()).as_bytes()),
        b"list" => {
            let args: Vec<&[u8]> = (2..view.len()).map(|i| view.get(i)).collect();
            let (me, qbuf) = (client.info.id, view.raw.len());
            let users = |u: &[u8]| ctx.users.get(u).is_some();
            match (args.is_empty(), filter::parse_list(&args, users)) {
                (true, _) => reply::text(client.proto, ctx.clients.list(None, me, qbuf).as_bytes()),
                (false, Ok(f)) => reply::text(
                    client.proto,
                    ctx.clients.list(Some(&f), me, qbuf).as_bytes(),
                ),
                (false, Err(e)) => reply::error(&e),
            }
        }
        // Valkey 8's: the client can take `-REDIRECT` replies, which the
        // proxy never sends (it follows every redirection itself).
        b"capa" if view.len() >= 3 && crate::nodes::valkey_at_least(8, 0) => {
            if (2..view.len()).any(|i| view.get(i).eq_ignore_ascii_case(b"redirect")) {
                client.info.set_capa_redirect();
            }
            Bytes::from_static(reply::OK)
        }
        b"no-evict" | b"no-touch" if view.len() == 3 => {
            let on = match view.get(2).to_ascii_lowercase().as_slice() {
                b"on" => true,
                b"off" => false,
                _ => return reply::error("ERR syntax error"),
            };
            if sub == b"no-evict" {
                client.info.set_no_evict(on);
            } else {
                client.info.set_no_touch(on);
            }
            Bytes::from_static(reply::OK)
        }
        // This proxy's clients are paused, not the nodes (see
        // `client::pause`).
        b"pause" if view.len() <= 4 => {
            let args: Vec<&[u8]> = (2..view.len()).map(|i| view.get(i)).collect();
            match pause::parse(&args) {
                Ok((ms, mode)) => {
                    ctx.pause.pause(pause::end_after(ms), mode);
                    Bytes::from_static(reply::OK)
                }
                Err(e) => reply::error(e),
            }
        }
        b"unpause" => {
            ctx.pause.unpause();
            Bytes::from_static(reply::OK)
        }
        b"pause" => reply::error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try {} HELP.",
            String::from_utf8_lossy(view.get(1)),
            String::from_utf8_lossy(view.get(0)).to_ascii_uppercase()
        )),
        b"tracking" => {
            let args: Vec<&[u8]> = (2..view.len()).map(|i| view.get(i)).collect();
            let version = ctx.redis_version();
            if !crate::tracking::options::supported_by(&version) {
                return reply::error(&format!(
                    "ERR slotbridge: CLIENT TRACKING needs Redis 7.0.5 or later on the nodes (they run {version}); older versions can put an invalidation inside a transaction's reply on the shared connections"
                ));
            }
            let existing = ctx.tracker.prefixes(client.info.id);
            let exists = |id| ctx.clients.get(id).is_some();
            match client.tracking.command(&args, exists, &existing) {
                Ok(Switch::On(prefixes)) => {
                    let target = match client.tracking.redirect {
                        0 => None,
                        id => ctx.clients.get(id),
                    };
                    let resp3 = client.proto == Proto::Resp3;
                    if target.is_some() && !resp3 {
                        // Connected by its first reads (see
                        // crate::backend::inbox).
                        let opts = ctx.topology.conn_options();
                        for shard in ctx.topology.load().shards() {
                            opts.inboxes.ensure(shard.master.addr(), opts);
                        }
                    }
                    ctx.tracker.enable(&client.info, target.as_ref());
                    if client.tracking.bcast {
                        ctx.tracker.add_prefixes(client.info.id, prefixes);
                        let opts = ctx.topology.conn_options();
                        for shard in ctx.topology.load().shards() {
                            opts.inboxes.ensure_broadcast(shard.master.addr(), opts);
                        }
                    }
                    Bytes::from_static(reply::OK)
                }
                Ok(Switch::Off) => {
                    ctx.tracker.disable(client.info.id);
                    Bytes::from_static(reply::OK)
                }
                Err(e) => reply::error(&e),
            }
        }
        b"caching" if view.len() == 3 => match client.tracking.caching_command(view.get(2)) {
            Ok(()) => Bytes::from_static(reply::OK),
            Err(e) => reply::error(&e),
        },
        b"trackinginfo" if view.len() == 2 => client.tracking.info(
            client.proto,
            ctx.tracker.redirect_broken(client.info.id),
            &ctx.tracker.prefixes(client.info.id),
        ),
        b"getredir" if view.len() == 2 => reply::int(client.tracking.redirect()),
        b"caching" | b"trackinginfo" | b"getredir" => reply::error(&format!(
            "ERR wrong number of arguments for 'client|{}' command",
            String::from_utf8_lossy(&sub)
        )),
        // Unknown to the nodes too (as their `COMMAND` lists, or for
        // nodes of 7.0, whose subcommands the built-in table has): their
        // error.
        _ if crate::command::find(view).is_some_and(|s| s.name == "client")
            && crate::command::nodes_know_subcommand("client", view.get(1))
                .map_or(crate::nodes::table_covers(), |known| !known) =>
        {
            reply::error(&format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(view.get(1))
            ))
        }
        // The subcommands the proxy answers, with other arities.
        b"setinfo" | b"no-touch" | b"no-evict" | b"capa" => reply::error(&format!(
            "ERR wrong number of arguments for 'client|{}' command",
            String::from_utf8_lossy(&sub)
        )),
        _ => reply::error(&format!(
            "ERR unsupported command 'client|{}' by slotbridge",
            String::from_utf8_lossy(&sub)
        )),
    }
}

/// `CLIENT KILL`: closes the proxy's clients that match; a client that
/// kills itself gets its reply first.
fn client_kill(view: &CommandView<'_>, client: &ClientState, ctx: &Context) -> LocalOutcome {
    let args: Vec<&[u8]> = (2..view.len()).map(|i| view.get(i)).collect();
    let users = |u: &[u8]| ctx.users.get(u).is_some();
    let kill = match filter::parse_kill(&args, users) {
        Ok(k) => k,
        Err(e) => return LocalOutcome::Reply(reply::error(&e)),
    };
    let (count, killed_me) = ctx.clients.kill(&kill.filter, client.info.id);
    let reply = match (kill.legacy, count) {
        (true, 0) => reply::error("ERR No such client"),
        (true, _) => Bytes::from_static(reply::OK),
        (false, n) => reply::int(n as i64),
    };
    if killed_me {
        LocalOutcome::Close(reply)
    } else {
        LocalOutcome::Reply(reply)
    }
}

/// The proxy's own facts for INFO.
pub fn proxy_facts(ctx: &Context) -> ProxyFacts {
    ProxyFacts {
        pid: std::process::id(),
        port: ctx.port,
        uptime_secs: ctx.started.elapsed().as_secs(),
        connected_clients: ctx.stats.connected_clients.load(Ordering::Relaxed),
        total_connections: ctx.stats.total_connections.load(Ordering::Relaxed),
        total_commands: ctx.stats.total_commands.load(Ordering::Relaxed),
        blocked_clients: ctx.clients.blocked(),
        pubsub_clients: ctx.clients.subscribed(),
        pause: ctx.pause.in_force().map(|(mode, left)| {
            let all = mode == pause::PauseMode::All;
            (all, u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
        }),
        tracking_clients: ctx.tracker.clients(),
        tracking: ctx.tracker.sizes(),
        masters: ctx.topology.load().shards().len(),
        rules: ctx.rules.rules().iter().map(|r| r.name.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_lists_the_nodes_modules() {
        let list = b"*1\r\n*8\r\n$4\r\nname\r\n$9\r\nvectorset\r\n$3\r\nver\r\n:1\r\n$4\r\npath\r\n$0\r\n\r\n$4\r\nargs\r\n*0\r\n";
        let mut out = BytesMut::new();
        put_modules(&mut out, Proto::Resp2, list);
        assert_eq!(&out[..], &list[..]);
        let mut out = BytesMut::new();
        put_modules(&mut out, Proto::Resp3, list);
        assert_eq!(
            &out[..],
            &b"*1\r\n%4\r\n$4\r\nname\r\n$9\r\nvectorset\r\n$3\r\nver\r\n:1\r\n$4\r\npath\r\n$0\r\n\r\n$4\r\nargs\r\n*0\r\n"[..]
        );
        let mut out = BytesMut::new();
        put_modules(&mut out, Proto::Resp3, b"*0\r\n");
        assert_eq!(&out[..], b"*0\r\n");
    }

    #[test]
    fn select_replies() {
        assert_eq!(&select(b"0")[..], b"+OK\r\n");
        assert!(select(b"1").starts_with(b"-ERR slotbridge: only database 0"));
        assert_eq!(&select(b"16")[..], b"-ERR DB index is out of range\r\n");
        assert_eq!(&select(b"-1")[..], b"-ERR DB index is out of range\r\n");
        assert!(select(b"2147483648").starts_with(b"-ERR value is out of range, value must"));
        for bad in [&b"015"[..], b"x", b"1.5"] {
            assert_eq!(
                &select(bad)[..],
                b"-ERR value is not an integer or out of range\r\n"
            );
        }
        assert_eq!(
            &select(b"x")[..],
            b"-ERR value is not an integer or out of range\r\n"
        );
    }
}
