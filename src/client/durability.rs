//! The opt-in write durability policy (`[durability]`): a `WAIT` after
//! every write, so that an acknowledged write has reached the master's
//! replicas (within the timeout) before the client hears about it.

use crate::backend::WaitAfter;
use crate::command::keys::lookup;
use crate::command::spec::flags;
use crate::config::DurabilityConfig;
use crate::protocol::reply;

/// The `WAIT` to send after `payload` to a master with `replicas` replicas,
/// or `None` when the policy is off, the master has no replicas, or the
/// command does not write. Writes are commands flagged `write` or
/// `may_replicate`, scripts and functions (`EVAL`, `EVALSHA`, `FCALL`) and
/// `MULTI ... EXEC` blocks.
pub fn wait_after(policy: &DurabilityConfig, replicas: usize, payload: &[u8]) -> Option<WaitAfter> {
    if policy.wait_replicas == 0 || replicas == 0 || !is_write(payload) {
        return None;
    }
    let wanted = policy
        .wait_replicas
        .min(u32::try_from(replicas).unwrap_or(u32::MAX));
    metrics::counter!(crate::metrics::WRITE_WAITS).increment(1);
    Some(WaitAfter {
        command: reply::command([
            "WAIT".as_bytes(),
            wanted.to_string().as_bytes(),
            policy.wait_timeout_ms.to_string().as_bytes(),
        ]),
        replicas: wanted,
    })
}

/// Whether an encoded command (`*N\r\n$L\r\nNAME\r\n...`) may write.
fn is_write(payload: &[u8]) -> bool {
    let Some(name) = command_name(payload) else {
        return false;
    };
    // Scripts and functions may write; a MULTI block is sent as one payload.
    for always in [&b"multi"[..], b"eval", b"evalsha", b"fcall"] {
        if name.eq_ignore_ascii_case(always) {
            return true;
        }
    }
    lookup(name).is_some_and(|spec| spec.flags & (flags::WRITE | flags::MAY_REPLICATE) != 0)
}

/// The first argument of an encoded command.
fn command_name(payload: &[u8]) -> Option<&[u8]> {
    let rest = payload.strip_prefix(b"*")?;
    let line_end = rest.iter().position(|&b| b == b'\r')?;
    let rest = rest.get(line_end + 2..)?.strip_prefix(b"$")?;
    let len_end = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(rest.get(..len_end)?)
        .ok()?
        .parse()
        .ok()?;
    rest.get(len_end + 2..len_end + 2 + len)
}

#[cfg(test)]
fn wait_bytes(w: &Option<WaitAfter>) -> Option<bytes::Bytes> {
    w.as_ref().map(|w| w.command.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(n: u32) -> DurabilityConfig {
        DurabilityConfig {
            wait_replicas: n,
            wait_timeout_ms: 50,
        }
    }

    #[test]
    fn writes_get_a_wait_capped_at_the_replica_count() {
        let set = reply::command(["SET", "k", "v"]);
        let w = wait_after(&policy(2), 1, &set);
        assert_eq!(
            wait_bytes(&w).as_deref(),
            Some(&b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$2\r\n50\r\n"[..])
        );
        assert_eq!(w.map(|w| w.replicas), Some(1));
        let w = wait_after(&policy(1), 3, &reply::command(["mset", "a", "1"]));
        assert_eq!(
            wait_bytes(&w).as_deref(),
            Some(&b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$2\r\n50\r\n"[..])
        );
    }

    #[test]
    fn reads_off_policy_and_replica_less_masters_get_none() {
        let get = reply::command(["GET", "k"]);
        let set = reply::command(["SET", "k", "v"]);
        assert!(wait_after(&policy(1), 1, &get).is_none());
        assert!(wait_after(&policy(0), 1, &set).is_none());
        assert!(wait_after(&policy(1), 0, &set).is_none());
        assert!(wait_after(&policy(1), 1, b"garbage").is_none());
        assert!(wait_after(&policy(1), 1, b"*1\r\n$99\r\nSET\r\n").is_none());
    }

    #[test]
    fn scripts_and_transactions_count_as_writes() {
        for cmd in [
            reply::command(["EVAL", "return 1", "0"]),
            reply::command(["evalsha", "abc", "0"]),
            reply::command(["FCALL", "f", "0"]),
            reply::command(["MULTI"]),
            reply::command(["INCR", "x"]),
        ] {
            assert!(wait_after(&policy(1), 1, &cmd).is_some(), "{cmd:?}");
        }
        assert!(wait_after(&policy(1), 1, &reply::command(["EVAL_RO", "return 1", "0"])).is_none());
    }
}
