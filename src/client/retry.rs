//! Classifying a backend outcome, in one place: deliver it, follow a
//! redirection, or retry.
//!
//! The rule for retries: a command is sent again only when it provably did
//! not run — it was never written (`NotSent`), or the server answered with a
//! redirection or `TRYAGAIN`/`NOSCRIPT`, all of which mean "not executed".
//! A command whose connection died after it was written (`Lost`) may have
//! run: only read-only commands are retried then (an `INCR` could apply
//! twice).

use crate::backend::{Reply, ReplyStatus};
use crate::protocol::scan::{reply_kind, ReplyKind};

/// What a backend outcome asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Give the reply to the client.
    Deliver,
    /// `-MOVED`: the slot has a new owner.
    Moved(Redirect<'a>),
    /// `-ASK`: try this node once, with `ASKING`.
    Ask(Redirect<'a>),
    /// The server did not execute the command and says to try later:
    /// `-TRYAGAIN` (multi-key command during a slot migration),
    /// `-CLUSTERDOWN` (failover in progress), `-LOADING`, `-MASTERDOWN`.
    NotExecuted,
    /// `-NOSCRIPT`: the node lacks the script.
    NoScript,
    /// The command was never sent (connect failed): safe to retry.
    NotSent,
    /// The command was sent but the connection died before the reply: it
    /// may have run, so only a read may be retried.
    Lost,
    /// A retry timer fired.
    Timer,
}

/// Classifies one reply.
pub fn classify(r: &Reply) -> Outcome<'_> {
    match r.status {
        ReplyStatus::Answered => {}
        ReplyStatus::NotSent => return Outcome::NotSent,
        ReplyStatus::Lost => return Outcome::Lost,
        ReplyStatus::RetryTimer => return Outcome::Timer,
        ReplyStatus::Final => return Outcome::Deliver,
    }
    if r.data.is_empty() || reply_kind(r.data[0]) != ReplyKind::Error {
        return Outcome::Deliver;
    }
    if let Some(redirect) = parse_redirect(&r.data) {
        return if redirect.ask {
            Outcome::Ask(redirect)
        } else {
            Outcome::Moved(redirect)
        };
    }
    const LATER: [&[u8]; 4] = [b"-TRYAGAIN", b"-CLUSTERDOWN", b"-LOADING", b"-MASTERDOWN"];
    if LATER.iter().any(|p| r.data.starts_with(p)) {
        Outcome::NotExecuted
    } else if r.data.starts_with(b"-NOSCRIPT") || r.data.starts_with(b"-ERR Function not found") {
        Outcome::NoScript
    } else {
        Outcome::Deliver
    }
}

/// A parsed `-MOVED slot addr` or `-ASK slot addr`.
#[derive(Debug, PartialEq, Eq)]
pub struct Redirect<'a> {
    /// ASK (one-shot) rather than MOVED (permanent).
    pub ask: bool,
    /// The slot.
    pub slot: u16,
    /// `host:port` (or `:port` when the server does not know its endpoint).
    pub addr: &'a str,
}

/// Parses a redirection error frame.
pub fn parse_redirect(frame: &[u8]) -> Option<Redirect<'_>> {
    let body = frame.strip_prefix(b"-")?.strip_suffix(b"\r\n")?;
    let text = std::str::from_utf8(body).ok()?;
    let mut words = text.split(' ');
    let ask = match words.next()? {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let slot: u16 = words.next()?.parse().ok()?;
    let addr = words.next()?;
    (slot < 16384 && !addr.is_empty()).then_some(Redirect { ask, slot, addr })
}

/// The address a redirection names; `:port` (unknown endpoint) gets the
/// host of `current`, the node that sent it.
pub fn redirect_addr(redirect: &Redirect<'_>, current: Option<&str>) -> String {
    if let Some(port) = redirect.addr.strip_prefix(':') {
        let host = current
            .and_then(|a| a.rsplit_once(':').map(|(h, _)| h))
            .unwrap_or("127.0.0.1");
        return format!("{host}:{port}");
    }
    redirect.addr.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn reply(data: &'static [u8], status: ReplyStatus) -> Reply {
        Reply {
            seq: 0,
            part: 0,
            data: Bytes::from_static(data),
            status,
            ends: Vec::new(),
        }
    }

    #[test]
    fn parses_redirects() {
        assert_eq!(
            parse_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect {
                ask: false,
                slot: 3999,
                addr: "127.0.0.1:6381"
            })
        );
        assert_eq!(parse_redirect(b"-ERR x\r\n"), None);
        assert_eq!(parse_redirect(b"-MOVED 99999 h:1\r\n"), None);
        assert_eq!(parse_redirect(b"-MOVED x h:1\r\n"), None);
        let r = parse_redirect(b"-ASK 5 :7001\r\n").unwrap();
        assert_eq!(redirect_addr(&r, Some("10.1.2.3:7000")), "10.1.2.3:7001");
    }

    #[test]
    fn classifies() {
        assert_eq!(
            classify(&reply(b"+OK\r\n", ReplyStatus::Answered)),
            Outcome::Deliver
        );
        assert_eq!(
            classify(&reply(b"-ERR x\r\n", ReplyStatus::Answered)),
            Outcome::Deliver
        );
        assert!(matches!(
            classify(&reply(b"-MOVED 1 h:1\r\n", ReplyStatus::Answered)),
            Outcome::Moved(_)
        ));
        assert!(matches!(
            classify(&reply(b"-ASK 1 h:1\r\n", ReplyStatus::Answered)),
            Outcome::Ask(_)
        ));
        assert_eq!(
            classify(&reply(
                b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
                ReplyStatus::Answered
            )),
            Outcome::NotExecuted
        );
        assert_eq!(
            classify(&reply(
                b"-NOSCRIPT No matching script.\r\n",
                ReplyStatus::Answered
            )),
            Outcome::NoScript
        );
        assert_eq!(
            classify(&reply(b"-ERR down\r\n", ReplyStatus::NotSent)),
            Outcome::NotSent
        );
        // Sent but unanswered: the caller retries reads only.
        assert_eq!(
            classify(&reply(b"-ERR lost\r\n", ReplyStatus::Lost)),
            Outcome::Lost
        );
        assert_eq!(
            classify(&reply(
                b"-CLUSTERDOWN The cluster is down\r\n",
                ReplyStatus::Answered
            )),
            Outcome::NotExecuted
        );
    }
}
