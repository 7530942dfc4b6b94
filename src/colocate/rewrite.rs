//! Applying co-location rules to commands (encode every key, wrap scripts)
//! and to replies that carry key names (decode them).

use bytes::{BufMut, Bytes, BytesMut};

use super::{glob_match, lua, Rules};
use crate::command::keys::{self, Args};
use crate::command::route::CommandView;
use crate::protocol::reply::{self, put_array, put_bulk, put_header};
use crate::protocol::scan::children;
use crate::scripts::{sha1_hex, ScriptCache};

/// What rewriting a command produced.
#[derive(Debug)]
pub enum Rewritten {
    /// Nothing to change: forward as is.
    Unchanged,
    /// The command to send instead; `filter` is a client glob that key
    /// names in the reply must match (`KEYS`, `SCAN MATCH`), or for
    /// `SCRIPT LOAD` and scripts the client's SHA1, which replaces the
    /// wrapped one in the reply and in errors.
    Command {
        /// Encoded command.
        raw: Bytes,
        /// Its argument ranges.
        args: Vec<(usize, usize)>,
        /// Client-side pattern for key names in the reply (the client's
        /// SHA1 for `SCRIPT LOAD` and scripts).
        filter: Option<Bytes>,
        /// Where a script without declared keys runs: the slot of the
        /// first argument a rule matches (scripts that build their keys
        /// from `ARGV`, such as Django Channels' `channels_redis`).
        slot: Option<u16>,
    },
    /// Answered without a server (an unknown `EVALSHA`).
    Reply(Bytes),
}

fn encode_command(args: &[Vec<u8>]) -> (Bytes, Vec<(usize, usize)>) {
    let mut out = BytesMut::with_capacity(args.iter().map(|a| a.len() + 16).sum::<usize>() + 16);
    let mut ranges = Vec::with_capacity(args.len());
    put_array(&mut out, args.len());
    for a in args {
        out.put_u8(b'$');
        out.put_slice(a.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
        let start = out.len();
        out.put_slice(a);
        ranges.push((start, start + a.len()));
        out.put_slice(b"\r\n");
    }
    (out.freeze(), ranges)
}

/// The SHA1 of the wrapped form of the script `body` with SHA1 `sha`.
fn wrapped_sha(rules: &Rules, scripts: &ScriptCache, sha: [u8; 40], body: &[u8]) -> [u8; 40] {
    scripts.wrapped_sha(sha, body, |b| {
        metrics::counter!(crate::metrics::COLOCATE_SCRIPTS).increment(1);
        lua::wrap(rules, b)
    })
}

/// Applies the rules to one command.
pub fn rewrite(
    rules: &Rules,
    scripts: &ScriptCache,
    view: &CommandView<'_>,
    keys_buf: &mut Vec<usize>,
) -> Rewritten {
    let name = view.get(0).to_ascii_lowercase();
    let mut args: Option<Vec<Vec<u8>>> = None;
    let owned = |view: &CommandView<'_>| {
        (0..view.len())
            .map(|i| view.get(i).to_vec())
            .collect::<Vec<_>>()
    };
    let mut filter = None;
    let mut slot = None;
    match name.as_slice() {
        b"script" if view.len() >= 2 => {
            let sub = view.get(1).to_ascii_lowercase();
            match sub.as_slice() {
                // The nodes load the wrapped body (and refuse one that does
                // not compile); the client's SHA1 is the one of its own
                // body, which replaces the wrapped one in the reply.
                b"load" if view.len() == 3 => {
                    let body = Bytes::copy_from_slice(view.get(2));
                    scripts.remember(&body);
                    let sha = sha1_hex(&body);
                    let wsha = wrapped_sha(rules, scripts, sha, &body);
                    let wrapped = scripts.get(&wsha).unwrap_or(body);
                    let a = vec![view.get(0).to_vec(), view.get(1).to_vec(), wrapped.to_vec()];
                    let (raw, args) = encode_command(&a);
                    return Rewritten::Command {
                        raw,
                        args,
                        filter: Some(Bytes::copy_from_slice(&sha)),
                        slot: None,
                    };
                }
                // Asked of the nodes by the wrapped SHA1s.
                b"exists" => {
                    let mut a = owned(view);
                    for arg in a.iter_mut().skip(2) {
                        if let Some(body) = scripts.get(arg) {
                            *arg = wrapped_sha(rules, scripts, sha1_hex(&body), &body).to_vec();
                        }
                    }
                    args = Some(a);
                }
                _ => {}
            }
        }
        // Scripts run wrapped, by the SHA1 of the wrapped body (loaded on
        // a node at its first NOSCRIPT, like any script).
        b"evalsha" | b"evalsha_ro" | b"eval" | b"eval_ro" if view.len() >= 3 => {
            let by_sha = name.starts_with(b"evalsha");
            let (sha, body) = if by_sha {
                let Some(body) = scripts.get(view.get(1)) else {
                    return Rewritten::Reply(reply::error(crate::nodes::noscript_text()));
                };
                (sha1_hex(&body), body)
            } else {
                let body = Bytes::copy_from_slice(view.get(1));
                scripts.remember(&body);
                (sha1_hex(&body), body)
            };
            let wsha = wrapped_sha(rules, scripts, sha, &body);
            // The client's SHA1 in the node's errors.
            filter = Some(Bytes::copy_from_slice(&sha));
            if view.get(2) == b"0" {
                slot = (3..view.len()).find_map(|i| {
                    let arg = view.get(i);
                    rules
                        .classify(arg)
                        .map(|_| crate::cluster::slot::slot(&rules.encode(arg)))
                });
            }
            let mut a = owned(view);
            a[0] = if name.ends_with(b"_ro") {
                b"EVALSHA_RO".to_vec()
            } else {
                b"EVALSHA".to_vec()
            };
            a[1] = wsha.to_vec();
            args = Some(a);
        }
        b"keys" if view.len() == 2 => {
            filter = Some(Bytes::copy_from_slice(view.get(1)));
            let mut a = owned(view);
            a[1] = b"*".to_vec();
            args = Some(a);
        }
        b"scan" => {
            let mut a = owned(view);
            if let Some(i) =
                (2..a.len().saturating_sub(1)).find(|&i| a[i].eq_ignore_ascii_case(b"match"))
            {
                filter = Some(Bytes::copy_from_slice(&a[i + 1]));
                a.drain(i..i + 2);
            }
            args = Some(a);
        }
        _ => {}
    }
    // Encode every key position.
    keys_buf.clear();
    if let Some(spec) = crate::command::find(view) {
        let _ = keys::key_indices(spec, view, false, keys_buf);
    }
    // DEBUG OBJECT and the like name a key the table does not describe.
    if name == b"debug" {
        keys::debug_keys(view, keys_buf);
    }
    // SORT's STORE destination is a key the table's key specs cannot
    // describe (Redis marks it "unknown").
    if (name == b"sort" || name == b"sort_ro") && view.len() > 3 {
        if let Some(i) = (2..view.len() - 1)
            .rev()
            .find(|&i| view.get(i).eq_ignore_ascii_case(b"store"))
        {
            keys_buf.push(i + 1);
        }
    }
    for &k in keys_buf.iter() {
        let key = view.get(k);
        if let Some((rule, tag)) = rules.classify(key) {
            metrics::counter!(crate::metrics::COLOCATE_KEYS, "rule" => rule.name.clone())
                .increment(1);
            let mut enc = Vec::with_capacity(key.len() + tag.len() + 2);
            enc.push(b'{');
            enc.extend_from_slice(&tag);
            enc.push(b'}');
            enc.extend_from_slice(key);
            args.get_or_insert_with(|| owned(view))[k] = enc;
        }
    }
    match args {
        None => Rewritten::Unchanged,
        Some(a) => {
            let (raw, args) = encode_command(&a);
            Rewritten::Command {
                raw,
                args,
                filter,
                slot,
            }
        }
    }
}

/// A script's error (`... script: <sha>, on @user_script:1.`) naming the
/// client's SHA1 `sha` instead of the wrapped body's.
fn client_sha_in_error(frame: &[u8], sha: &[u8]) -> Option<Bytes> {
    const AT: &[u8] = b"script: ";
    let start = memchr::memmem::rfind(frame, AT)? + AT.len();
    let wrapped = frame.get(start..start + 40)?;
    if !wrapped.iter().all(u8::is_ascii_hexdigit) || sha.len() != 40 {
        return None;
    }
    Some(Bytes::from(
        [&frame[..start], sha, &frame[start + 40..]].concat(),
    ))
}

/// Re-encodes an aggregate with each child transformed by `f`; children
/// for which `f` returns `None` are dropped.
fn map_children(frame: &[u8], mut f: impl FnMut(usize, &[u8]) -> Option<Vec<u8>>) -> Option<Bytes> {
    let kids = children(frame)?;
    let kind = frame[0];
    let mut items = Vec::with_capacity(kids.len());
    for (i, &(s, e)) in kids.iter().enumerate() {
        if let Some(item) = f(i, &frame[s..e]) {
            items.push(item);
        }
    }
    let mut out = BytesMut::with_capacity(frame.len());
    let n = if kind == b'%' {
        items.len() / 2
    } else {
        items.len()
    };
    put_header(&mut out, kind, n);
    for item in items {
        out.put_slice(&item);
    }
    Some(out.freeze())
}

fn decoded_bulk(rules: &Rules, frame: &[u8]) -> Vec<u8> {
    match crate::protocol::scan::bulk_body(frame) {
        Some(key) => {
            let mut out = BytesMut::new();
            put_bulk(&mut out, rules.decode(key));
            out.to_vec()
        }
        None => frame.to_vec(),
    }
}

/// Decodes key names in the reply of command `name` (and applies the
/// client's pattern). `None`: the reply needs no change.
pub fn decode_reply(
    rules: &Rules,
    name: &str,
    frame: &Bytes,
    filter: Option<&[u8]>,
) -> Option<Bytes> {
    if frame.first() == Some(&b'-') {
        return match (name, filter) {
            ("eval" | "evalsha" | "eval_ro" | "evalsha_ro", Some(sha)) => {
                client_sha_in_error(frame, sha)
            }
            _ => None,
        };
    }
    let keep = |key: &[u8]| filter.is_none_or(|p| glob_match(p, key));
    let key_list = |list: &[u8]| {
        map_children(list, |_, item| {
            let key = crate::protocol::scan::bulk_body(item)?;
            let key = rules.decode(key);
            keep(key).then(|| {
                let mut out = BytesMut::new();
                put_bulk(&mut out, key);
                out.to_vec()
            })
        })
    };
    match name {
        "keys" => key_list(frame),
        "scan" => map_children(frame, |i, item| {
            if i == 1 {
                key_list(item).map(|b| b.to_vec())
            } else {
                Some(item.to_vec())
            }
        }),
        // The client's SHA1 (see `rewrite`), for the wrapped body's.
        "script|load" => filter.map(reply::bulk),
        "randomkey" => {
            crate::protocol::scan::bulk_body(frame).map(|k| reply::bulk(rules.decode(k)))
        }
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" | "blmpop" | "lmpop" | "zmpop" | "bzmpop" => {
            map_children(frame, |i, item| {
                Some(if i == 0 {
                    decoded_bulk(rules, item)
                } else {
                    item.to_vec()
                })
            })
        }
        "xread" | "xreadgroup" => {
            if frame.first() == Some(&b'%') {
                map_children(frame, |i, item| {
                    Some(if i % 2 == 0 {
                        decoded_bulk(rules, item)
                    } else {
                        item.to_vec()
                    })
                })
            } else {
                map_children(frame, |_, pair| {
                    map_children(pair, |i, item| {
                        Some(if i == 0 {
                            decoded_bulk(rules, item)
                        } else {
                            item.to_vec()
                        })
                    })
                    .map(|b| b.to_vec())
                })
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::colocate::RuleConfig;

    fn rules() -> Rules {
        Rules::new(&[RuleConfig {
            name: "bull".into(),
            prefix: Some("bull:".into()),
            group_segment: Some(1),
            ..Default::default()
        }])
        .unwrap()
    }

    fn view_of(parts: &[&str]) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut raw = Vec::new();
        let mut args = Vec::new();
        for p in parts {
            let s = raw.len();
            raw.extend_from_slice(p.as_bytes());
            args.push((s, raw.len()));
        }
        (raw, args)
    }

    fn rewritten(parts: &[&str]) -> Vec<String> {
        let (raw, args) = view_of(parts);
        let view = CommandView {
            raw: &raw,
            args: &args,
        };
        match rewrite(&rules(), &ScriptCache::default(), &view, &mut Vec::new()) {
            Rewritten::Command { raw, args, .. } => args
                .iter()
                .map(|&(s, e)| String::from_utf8_lossy(&raw[s..e]).into_owned())
                .collect(),
            Rewritten::Unchanged => parts.iter().map(|s| s.to_string()).collect(),
            Rewritten::Reply(r) => vec![String::from_utf8_lossy(&r).into_owned()],
        }
    }

    #[test]
    fn a_script_without_keys_runs_where_its_first_matching_argument_lives() {
        let slot_of = |parts: &[&str]| {
            let (raw, args) = view_of(parts);
            let view = CommandView {
                raw: &raw,
                args: &args,
            };
            match rewrite(&rules(), &ScriptCache::default(), &view, &mut Vec::new()) {
                Rewritten::Command { slot, .. } => slot,
                _ => None,
            }
        };
        let group = crate::cluster::slot::slot(b"{q}");
        assert_eq!(
            slot_of(&["EVAL", "return 1", "0", "x", "bull:q:1"]),
            Some(group)
        );
        assert_eq!(slot_of(&["EVAL", "return 1", "0", "x", "y"]), None);
        // Declared keys route the script as always.
        assert_eq!(slot_of(&["EVAL", "return 1", "1", "k", "bull:q:1"]), None);
    }

    #[test]
    fn keys_are_encoded_values_are_not() {
        assert_eq!(
            rewritten(&["SET", "bull:q:1", "bull:q:2"]),
            vec!["SET", "{q}bull:q:1", "bull:q:2"]
        );
        assert_eq!(
            rewritten(&["MSET", "bull:a:1", "v", "other", "w"]),
            vec!["MSET", "{a}bull:a:1", "v", "other", "w"]
        );
        assert_eq!(rewritten(&["GET", "plain"]), vec!["GET", "plain"]);
        assert_eq!(
            rewritten(&["SORT", "bull:q:l", "ALPHA", "STORE", "bull:q:dst"]),
            vec!["SORT", "{q}bull:q:l", "ALPHA", "STORE", "{q}bull:q:dst"]
        );
        assert_eq!(
            rewritten(&["XREAD", "STREAMS", "bull:q:s", "0"]),
            vec!["XREAD", "STREAMS", "{q}bull:q:s", "0"]
        );
        let eval = rewritten(&["EVAL", "return 1", "1", "bull:q:k", "arg"]);
        assert_eq!(eval[0], "EVALSHA");
        assert_eq!(eval[1].len(), 40);
        assert_eq!(eval[3], "{q}bull:q:k");
        assert_eq!(eval[4], "arg");
        assert_eq!(
            rewritten(&["EVALSHA", &"0".repeat(40), "0"]),
            vec!["-NOSCRIPT No matching script. Please use EVAL.\r\n"]
        );
    }

    #[test]
    fn replies_are_decoded() {
        let r = rules();
        let keys = Bytes::from_static(
            b"*3\r\n$11\r\n{q}bull:q:1\r\n$5\r\nplain\r\n$11\r\n{z}bull:z:1\r\n",
        );
        assert_eq!(
            &decode_reply(&r, "keys", &keys, Some(b"bull:q*")).unwrap()[..],
            b"*1\r\n$8\r\nbull:q:1\r\n"
        );
        let pop = Bytes::from_static(b"*2\r\n$11\r\n{q}bull:q:w\r\n$1\r\nv\r\n");
        assert_eq!(
            &decode_reply(&r, "blpop", &pop, None).unwrap()[..],
            b"*2\r\n$8\r\nbull:q:w\r\n$1\r\nv\r\n"
        );
        let xr = Bytes::from_static(b"*1\r\n*2\r\n$11\r\n{q}bull:q:s\r\n*0\r\n");
        assert_eq!(
            &decode_reply(&r, "xread", &xr, None).unwrap()[..],
            b"*1\r\n*2\r\n$8\r\nbull:q:s\r\n*0\r\n"
        );
        let scan = Bytes::from_static(b"*2\r\n$1\r\n0\r\n*1\r\n$11\r\n{q}bull:q:1\r\n");
        assert_eq!(
            &decode_reply(&r, "scan", &scan, None).unwrap()[..],
            b"*2\r\n$1\r\n0\r\n*1\r\n$8\r\nbull:q:1\r\n"
        );
        // Scripts: the client's SHA1 in errors and SCRIPT LOAD's reply.
        let client = [b'c'; 40];
        let err = Bytes::from(format!(
            "-ERR boom script: {}, on @user_script:1.\r\n",
            "a".repeat(40)
        ));
        assert_eq!(
            decode_reply(&r, "evalsha", &err, Some(&client)).unwrap(),
            Bytes::from(format!(
                "-ERR boom script: {}, on @user_script:1.\r\n",
                "c".repeat(40)
            ))
        );
        let other = Bytes::from_static(b"-ERR no sha here\r\n");
        assert!(decode_reply(&r, "eval", &other, Some(&client)).is_none());
        let loaded = Bytes::from(format!("$40\r\n{}\r\n", "a".repeat(40)));
        assert_eq!(
            decode_reply(&r, "script|load", &loaded, Some(&client)).unwrap(),
            Bytes::from(format!("$40\r\n{}\r\n", "c".repeat(40)))
        );
    }
}
