//! One client's tracking state and the commands that change and show it:
//! `CLIENT TRACKING`, `CLIENT CACHING`, `CLIENT TRACKINGINFO` and `CLIENT
//! GETREDIR`, with Redis's own replies and errors.

use bytes::{Bytes, BytesMut};

use crate::protocol::reply::{put_array, put_bulk, put_header, put_int, put_map, Proto};
use crate::protocol::request::parse_i64;

/// Which reads a tracking client has tracked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Every read.
    #[default]
    Default,
    /// Only a read right after `CLIENT CACHING YES`.
    OptIn,
    /// Every read except one right after `CLIENT CACHING NO`.
    OptOut,
}

/// A client's tracking state (off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracking {
    /// `CLIENT TRACKING ON` is in force.
    pub on: bool,
    /// Its mode.
    pub mode: Mode,
    /// `NOLOOP` was given: the client's own writes do not invalidate its
    /// keys (in `BCAST` mode they still do, a cache miss, never stale
    /// data).
    pub noloop: bool,
    /// `CLIENT CACHING YES|NO` was given for the next command.
    pub caching: bool,
    /// The client its invalidations go to (`REDIRECT`), 0 for itself.
    pub redirect: u64,
    /// `BCAST`: told of every change to keys under its prefixes (kept by
    /// the tracker), whatever it read.
    pub bcast: bool,
}

/// What `CLIENT TRACKING` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch {
    /// Tracking off.
    Off,
    /// Tracking on, with these prefixes added (in `BCAST` mode; the empty
    /// prefix when none was given).
    On(Vec<Bytes>),
}

impl Tracking {
    /// Whether the command being started, which reads when `readonly`, is
    /// tracked. Any command but `CLIENT` ends a `CLIENT CACHING` choice.
    pub fn tracks(&mut self, readonly: bool) -> bool {
        let caching = std::mem::take(&mut self.caching);
        self.on
            && readonly
            && match self.mode {
                Mode::Default => true,
                Mode::OptIn => caching,
                Mode::OptOut => !caching,
            }
    }

    /// `CLIENT TRACKING ON|OFF [options]`, given the arguments after
    /// `TRACKING`; `exists` tells whether a client id is connected (a
    /// `REDIRECT` target must be), `existing` the client's prefixes.
    pub fn command(
        &mut self,
        args: &[&[u8]],
        exists: impl Fn(u64) -> bool,
        existing: &[Bytes],
    ) -> Result<Switch, String> {
        let Some((&switch, options)) = args.split_first() else {
            return Err("ERR wrong number of arguments for 'client|tracking' command".into());
        };
        let (mut mode, mut noloop, mut bcast, mut prefixes, mut redirect) =
            (None, false, false, Vec::new(), 0u64);
        let mut both = false;
        let mut i = 0;
        while i < options.len() {
            let opt = options[i].to_ascii_lowercase();
            let more = i + 1 < options.len();
            match opt.as_slice() {
                b"redirect" if more => {
                    i += 1;
                    if redirect != 0 {
                        return Err(
                            "ERR A client can only redirect to a single other client".into()
                        );
                    }
                    let Some(id) = parse_i64(options[i]) else {
                        return Err("ERR value is not an integer or out of range".into());
                    };
                    match u64::try_from(id) {
                        Ok(id) if id != 0 && exists(id) => redirect = id,
                        _ => {
                            return Err(
                                "ERR The client ID you want redirect to does not exist".into()
                            )
                        }
                    }
                }
                b"prefix" if more => {
                    i += 1;
                    prefixes.push(options[i]);
                }
                b"bcast" => bcast = true,
                b"noloop" => noloop = true,
                b"optin" | b"optout" => {
                    let m = if opt == b"optin" {
                        Mode::OptIn
                    } else {
                        Mode::OptOut
                    };
                    both |= mode.is_some_and(|old| old != m);
                    mode = Some(m);
                }
                _ => return Err("ERR syntax error".into()),
            }
            i += 1;
        }
        if switch.eq_ignore_ascii_case(b"off") {
            *self = Tracking::default();
            return Ok(Switch::Off);
        }
        if !switch.eq_ignore_ascii_case(b"on") {
            return Err("ERR syntax error".into());
        }
        if !prefixes.is_empty() && !bcast {
            return Err("ERR PREFIX option requires BCAST mode to be enabled".into());
        }
        if self.on && self.bcast != bcast {
            return Err("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.".into());
        }
        if bcast && mode.is_some() {
            return Err("ERR OPTIN and OPTOUT are not compatible with BCAST".into());
        }
        if both {
            return Err("ERR You can't specify both OPTIN mode and OPTOUT mode".into());
        }
        let switching = matches!(
            (mode, self.mode),
            (Some(Mode::OptIn), Mode::OptOut) | (Some(Mode::OptOut), Mode::OptIn)
        );
        if self.on && switching {
            return Err("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.".into());
        }
        if bcast {
            overlaps(&prefixes, existing)?;
        }
        *self = Tracking {
            on: true,
            mode: mode.unwrap_or_default(),
            noloop,
            caching: self.caching,
            redirect,
            bcast,
        };
        if !bcast {
            return Ok(Switch::On(Vec::new()));
        }
        if prefixes.is_empty() {
            prefixes.push(b"");
        }
        Ok(Switch::On(
            prefixes.into_iter().map(Bytes::copy_from_slice).collect(),
        ))
    }

    /// `CLIENT CACHING YES|NO`.
    pub fn caching_command(&mut self, arg: &[u8]) -> Result<(), String> {
        if !self.on {
            return Err("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled".into());
        }
        if arg.eq_ignore_ascii_case(b"yes") {
            if self.mode != Mode::OptIn {
                return Err(
                    "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."
                        .into(),
                );
            }
        } else if arg.eq_ignore_ascii_case(b"no") {
            if self.mode != Mode::OptOut {
                return Err(
                    "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode."
                        .into(),
                );
            }
        } else {
            return Err("ERR syntax error".into());
        }
        self.caching = true;
        Ok(())
    }

    /// `CLIENT GETREDIR`: -1 when tracking is off, else the id of the
    /// client invalidations go to (0: none).
    pub fn redirect(&self) -> i64 {
        if self.on {
            i64::try_from(self.redirect).unwrap_or(0)
        } else {
            -1
        }
    }

    /// `CLIENT TRACKINGINFO`, as Redis shapes it (`broken`: the redirect
    /// target left; `prefixes`: its `BCAST` prefixes, sorted).
    pub fn info(&self, proto: Proto, broken: bool, prefixes: &[Bytes]) -> Bytes {
        let mut flags: Vec<&[u8]> = Vec::with_capacity(4);
        if !self.on {
            flags.push(b"off");
        } else {
            flags.push(b"on");
            if self.bcast {
                flags.push(b"bcast");
            }
            match self.mode {
                Mode::Default => {}
                Mode::OptIn => flags.push(b"optin"),
                Mode::OptOut => flags.push(b"optout"),
            }
            match (self.caching, self.mode) {
                (true, Mode::OptIn) => flags.push(b"caching-yes"),
                (true, Mode::OptOut) => flags.push(b"caching-no"),
                _ => {}
            }
            if self.noloop {
                flags.push(b"noloop");
            }
            if broken {
                flags.push(b"broken_redirect");
            }
        }
        let mut out = BytesMut::with_capacity(96);
        put_map(&mut out, proto, 3);
        put_bulk(&mut out, b"flags");
        let set = if proto == Proto::Resp3 { b'~' } else { b'*' };
        put_header(&mut out, set, flags.len());
        for flag in flags {
            put_bulk(&mut out, flag);
        }
        put_bulk(&mut out, b"redirect");
        put_int(&mut out, self.redirect());
        put_bulk(&mut out, b"prefixes");
        put_array(&mut out, prefixes.len());
        for p in prefixes {
            put_bulk(&mut out, p);
        }
        out.freeze()
    }
}

/// Redis's errors for `BCAST` prefixes that overlap (one is a prefix of
/// the other: both would report the same keys), among those given or
/// with the client's.
fn overlaps(given: &[&[u8]], existing: &[Bytes]) -> Result<(), String> {
    let overlap = |a: &[u8], b: &[u8]| {
        let n = a.len().min(b.len());
        a[..n] == b[..n]
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for (i, p) in given.iter().enumerate() {
        if let Some(e) = existing.iter().find(|e| overlap(e, p)) {
            return Err(format!(
                "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                text(p),
                text(e)
            ));
        }
        if let Some(q) = given[i + 1..].iter().find(|q| overlap(p, q)) {
            return Err(format!(
                "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                text(p),
                text(q)
            ));
        }
    }
    Ok(())
}

/// Whether nodes of `version` (`major.minor.patch`) can track reads on
/// shared connections: before 7.0.5 an invalidation could land inside a
/// transaction's reply (redis#9422, redis#11038), which would break the
/// protocol for every client on the connection.
pub fn supported_by(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    v >= (7, 0, 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_needs_redis_7_0_5() {
        assert!(supported_by("7.0.15") && supported_by("7.2.4") && supported_by("8.0.0"));
        assert!(!supported_by("7.0.4") && !supported_by("6.2.14") && !supported_by("junk"));
    }

    fn run(t: &mut Tracking, args: &str) -> Result<bool, String> {
        let args: Vec<&[u8]> = args.split(' ').map(str::as_bytes).collect();
        t.command(&args, |id| id == 7, &[])
            .map(|s| s != Switch::Off)
    }

    #[test]
    fn modes_and_errors_follow_redis() {
        let mut t = Tracking::default();
        assert_eq!(run(&mut t, "maybe"), Err("ERR syntax error".into()));
        assert_eq!(run(&mut t, "on foo"), Err("ERR syntax error".into()));
        assert!(run(&mut t, "on prefix a")
            .unwrap_err()
            .contains("requires BCAST"));
        assert!(run(&mut t, "on optin optout")
            .unwrap_err()
            .contains("both OPTIN"));
        assert!(run(&mut t, "on bcast optin")
            .unwrap_err()
            .contains("not compatible"));
        assert_eq!(
            run(&mut t, "on redirect 8"),
            Err("ERR The client ID you want redirect to does not exist".into())
        );
        assert!(run(&mut t, "on redirect 0")
            .unwrap_err()
            .contains("does not exist"));
        assert!(run(&mut t, "on redirect 7 redirect 7")
            .unwrap_err()
            .contains("single other client"));
        assert!(run(&mut t, "on redirect x")
            .unwrap_err()
            .contains("integer"));
        assert!(t
            .caching_command(b"yes")
            .unwrap_err()
            .contains("tracking mode"));
        assert_eq!(run(&mut t, "on optin noloop"), Ok(true));
        assert!(run(&mut t, "on optout")
            .unwrap_err()
            .contains("switch OPTIN/OPTOUT"));
        assert!(run(&mut t, "on bcast")
            .unwrap_err()
            .contains("switch BCAST"));
        assert!(t
            .caching_command(b"no")
            .unwrap_err()
            .contains("OPTOUT mode."));
        assert_eq!(t.caching_command(b"maybe"), Err("ERR syntax error".into()));
        assert_eq!(t.caching_command(b"yes"), Ok(()));
        assert!(t.tracks(true));
        assert!(!t.tracks(true), "CACHING YES covers one command");
        // Re-enabling without options resets the mode, as in Redis.
        assert_eq!(run(&mut t, "on"), Ok(true));
        assert_eq!(t.mode, Mode::Default);
        assert!(t.tracks(true) && !t.tracks(false));
        assert_eq!(run(&mut t, "off noloop"), Ok(false));
        assert!(!t.tracks(true));
        assert_eq!(run(&mut t, "on redirect 7"), Ok(true));
        assert_eq!(t.redirect(), 7);
        // Re-enabling without REDIRECT ends the redirection, as in Redis.
        assert_eq!(run(&mut t, "on"), Ok(true));
        assert_eq!(t.redirect(), 0);
    }

    #[test]
    fn bcast_prefixes_follow_redis() {
        let mut t = Tracking::default();
        let on = |t: &mut Tracking, args: &str, existing: &[Bytes]| {
            let args: Vec<&[u8]> = args.split(' ').map(str::as_bytes).collect();
            t.command(&args, |_| false, existing)
        };
        assert_eq!(
            on(&mut t, "on bcast prefix a prefix ab", &[]),
            Err("ERR Prefix 'a' overlaps with another provided prefix 'ab'. Prefixes for a single client must not overlap.".into())
        );
        assert_eq!(
            on(&mut t, "on bcast prefix b", &[Bytes::from("bar")]),
            Err("ERR Prefix 'b' overlaps with an existing prefix 'bar'. Prefixes for a single client must not overlap.".into())
        );
        assert!(!t.on);
        assert_eq!(
            on(&mut t, "on bcast prefix a prefix b", &[]),
            Ok(Switch::On(vec![Bytes::from("a"), Bytes::from("b")]))
        );
        assert!(t.on && t.bcast);
        assert!(on(&mut t, "on", &[]).unwrap_err().contains("switch BCAST"));
        assert_eq!(
            on(&mut t, "on bcast", &[]),
            Ok(Switch::On(vec![Bytes::new()]))
        );
        let prefixes = [Bytes::from("a"), Bytes::from("b")];
        assert_eq!(
            &t.info(Proto::Resp2, false, &prefixes)[..],
            &b"*6\r\n$5\r\nflags\r\n*2\r\n$2\r\non\r\n$5\r\nbcast\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"[..]
        );
        assert_eq!(on(&mut t, "off", &[]), Ok(Switch::Off));
        assert!(!t.bcast);
    }

    #[test]
    fn optout_tracks_all_but_the_next_command() {
        let mut t = Tracking::default();
        assert_eq!(run(&mut t, "on optout"), Ok(true));
        assert_eq!(t.caching_command(b"NO"), Ok(()));
        assert!(!t.tracks(true));
        assert!(t.tracks(true));
    }

    #[test]
    fn trackinginfo_matches_redis_bytes() {
        let mut t = Tracking::default();
        assert_eq!(
            &t.info(Proto::Resp2, false, &[])[..],
            b"*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n"
        );
        run(&mut t, "on optin noloop").unwrap();
        t.caching_command(b"yes").unwrap();
        assert_eq!(
            &t.info(Proto::Resp3, false, &[])[..],
            &b"%3\r\n$5\r\nflags\r\n~4\r\n$2\r\non\r\n$5\r\noptin\r\n$11\r\ncaching-yes\r\n$6\r\nnoloop\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*0\r\n"[..]
        );
        run(&mut t, "on redirect 7").unwrap();
        assert_eq!(
            &t.info(Proto::Resp2, true, &[])[..],
            &b"*6\r\n$5\r\nflags\r\n*2\r\n$2\r\non\r\n$15\r\nbroken_redirect\r\n$8\r\nredirect\r\n:7\r\n$8\r\nprefixes\r\n*0\r\n"[..]
        );
    }
}
