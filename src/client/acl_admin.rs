//! `ACL SETUSER`, `GETUSER`, `DELUSER`, `LIST`, `USERS`, `DRYRUN`, `LOG`,
//! `SAVE` and `LOAD`, over the proxy's own users (see
//! [`crate::acl::users`]): the nodes keep their one user, the proxy's.
//! Replies and errors are Redis 7.0's.

use bytes::{Bytes, BytesMut};

use super::filter::Filter;
use super::local::{ClientState, LocalOutcome};
use crate::acl::Style;
use crate::command::keys::Args;
use crate::command::route::CommandView;
use crate::protocol::reply::{self, put_array, put_bulk, put_null};
use crate::protocol::request::parse_i64;
use crate::server::Context;

/// Runs one of the subcommands (its arity already checked).
pub fn execute(view: &CommandView<'_>, client: &ClientState, ctx: &Context) -> LocalOutcome {
    let sub = view.get(1).to_ascii_lowercase();
    let style = Style::of_nodes(&ctx.redis_version());
    let reply = match sub.as_slice() {
        b"setuser" => set_user(view, ctx),
        b"deluser" => return delete_users(view, client, ctx),
        b"getuser" => match ctx.users.get(view.get(2)) {
            Some(user) => user.reply(client.proto, style),
            None => {
                let mut out = BytesMut::with_capacity(4);
                put_null(&mut out, client.proto);
                out.freeze()
            }
        },
        b"list" | b"users" => {
            let users = ctx.users.all();
            let mut out = BytesMut::with_capacity(64 * users.len() + 16);
            put_array(&mut out, users.len());
            for user in users {
                match sub.as_slice() {
                    b"users" => put_bulk(&mut out, user.name()),
                    _ => put_bulk(&mut out, &user.describe(style)),
                }
            }
            out.freeze()
        }
        b"dryrun" => dry_run(view, ctx, style),
        b"log" => log(view, client, ctx, style),
        // The proxy's users come from its configuration, not a file.
        _ if crate::nodes::valkey_at_least(8, 0) => reply::error("ERR This instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a configuration file set) in order to store users in the configuration."),
        _ => reply::error("ERR This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration."),
    };
    LocalOutcome::Reply(reply)
}

fn set_user(view: &CommandView<'_>, ctx: &Context) -> Bytes {
    let name = view.get(2);
    if crate::acl::has_spaces(name) {
        return reply::error("ERR Usernames can't contain spaces or null characters");
    }
    let ops: Vec<&[u8]> = (3..view.len()).map(|i| view.get(i)).collect();
    match ctx.users.set_user(name, &ops) {
        Ok(()) => {
            ctx.users_changed();
            ctx.clients.notify_subscribers(Some(name));
            Bytes::from_static(reply::OK)
        }
        Err(Some(bad)) => reply::error(&bad.reply_text()),
        Err(None) => {
            let at = crate::acl::user::User::unclosed_selector(&ops).unwrap_or(0);
            reply::error(&format!(
                "ERR Unmatched parenthesis in acl selector starting at '{}'.",
                String::from_utf8_lossy(view.get(at + 3))
            ))
        }
    }
}

/// `ACL DELUSER`: the users' clients are disconnected, as in Redis (the
/// caller after its reply).
fn delete_users(view: &CommandView<'_>, client: &ClientState, ctx: &Context) -> LocalOutcome {
    let names: Vec<&[u8]> = (2..view.len()).map(|i| view.get(i)).collect();
    if names.iter().any(|n| *n == b"default") {
        return LocalOutcome::Reply(reply::error("ERR The 'default' user cannot be removed"));
    }
    let gone = ctx.users.delete(&names);
    ctx.users_changed();
    let mut killed_me = false;
    for name in &gone {
        let filter = Filter {
            user: Some(name.to_vec()),
            ..Filter::default()
        };
        killed_me |= ctx.clients.kill(&filter, client.info.id).1;
    }
    let reply = reply::int(gone.len() as i64);
    match killed_me {
        true => LocalOutcome::Close(reply),
        false => LocalOutcome::Reply(reply),
    }
}

/// `ACL DRYRUN user command [arg ...]`.
fn dry_run(view: &CommandView<'_>, ctx: &Context, style: Style) -> Bytes {
    let Some(user) = ctx.users.get(view.get(2)) else {
        return reply::error(&format!(
            "ERR User '{}' not found",
            String::from_utf8_lossy(view.get(2))
        ));
    };
    let args: Vec<&[u8]> = (3..view.len()).map(|i| view.get(i)).collect();
    // A subcommand the built-in table lacks: known if the nodes list it.
    let unknown_sub = |spec: &crate::command::spec::CommandSpec| {
        spec.flags & crate::command::spec::flags::HAS_SUBCOMMANDS != 0
            && args.len() > 1
            && crate::command::nodes_know_subcommand(spec.name, args[1]) != Some(true)
    };
    let Some(spec) = crate::command::find(args.as_slice()).filter(|s| !unknown_sub(s)) else {
        return reply::error(&format!(
            "ERR Command '{}' not found",
            String::from_utf8_lossy(view.get(3))
        ));
    };
    if !crate::command::keys::arity_ok(spec, args.len()) {
        return reply::error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        ));
    }
    match user.acl().check_spec(spec, args.as_slice()) {
        Ok(()) => Bytes::from_static(reply::OK),
        Err(denied) => {
            let text = denied.dry_run_text(args.as_slice(), user.name(), style);
            reply::bulk(text.as_bytes())
        }
    }
}

/// `ACL LOG [count | RESET]`.
fn log(view: &CommandView<'_>, client: &ClientState, ctx: &Context, style: Style) -> Bytes {
    let mut count = 10;
    if view.len() > 3 {
        return reply::error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try ACL HELP.",
            String::from_utf8_lossy(view.get(1))
        ));
    }
    if view.len() == 3 {
        if view.get(2).eq_ignore_ascii_case(b"reset") {
            ctx.users.log.reset();
            return Bytes::from_static(reply::OK);
        }
        match parse_i64(view.get(2)) {
            Some(n) => count = n.max(0),
            None => return reply::error("ERR value is not an integer or out of range"),
        }
    }
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    ctx.users.log.reply(count, client.proto, style)
}
