//! The command rules of a selector as Redis 7.0 writes them in `ACL
//! GETUSER` and `ACL LIST` (`ACLDescribeSelectorCommandRules`): the
//! rules are not kept as given but rebuilt from the command bitmap,
//! starting from `+@all` or `-@all`, then the categories that fit best,
//! then single commands until the bitmap is matched exactly.
//!
//! Redis emits the single commands in the order of its command table's
//! hash table, which differs from one server process to the next; the
//! proxy emits them in its table's (alphabetical) order.

use super::Selector;
use crate::command::spec::acl::CATEGORIES;
use crate::command::table_gen::COMMANDS;

/// `(allowed, refused)` counts of the category's commands and
/// subcommands in `selector`.
fn count(selector: &Selector, bit: u32) -> (usize, usize) {
    let mut on = 0;
    let mut off = 0;
    for (i, c) in COMMANDS.iter().enumerate() {
        if c.acl & bit != 0 {
            if selector.allows(i) {
                on += 1;
            } else {
                off += 1;
            }
        }
    }
    (on, off)
}

/// The rules that rebuild `selector`'s commands, space separated.
pub fn command_rules(selector: &Selector) -> String {
    let additive = !selector.starts_from_all();
    let mut rules = String::new();
    let mut fake = Selector::empty();
    let start: &[u8] = if additive { b"-@all" } else { b"+@all" };
    let _ = fake.apply(start);
    rules.push_str(if additive { "-@all " } else { "+@all " });

    // The best-fitting categories first, each at most once: more commands
    // in common with the user than different, the fewest differences,
    // then the most in common.
    let mut temp = selector.clone();
    let mut applied = [false; CATEGORIES.len()];
    loop {
        let mut best = None;
        let (mut min_diff, mut max_same) = (usize::MAX, 0);
        for (j, &(_, bit)) in CATEGORIES.iter().enumerate() {
            if applied[j] {
                continue;
            }
            let (on, off) = count(&temp, bit);
            let (diff, same) = if additive { (off, on) } else { (on, off) };
            if same > diff && (diff < min_diff || (diff == min_diff && same > max_same)) {
                best = Some(j);
                min_diff = diff;
                max_same = same;
            }
        }
        let Some(j) = best else { break };
        let (name, bit) = CATEGORIES[j];
        fake.change_category(bit, additive);
        temp.change_category(bit, !additive);
        rules.push_str(if additive { "+@" } else { "-@" });
        rules.push_str(name);
        rules.push(' ');
        applied[j] = true;
    }

    // Then single commands: a command before its subcommands, so that a
    // whole container is one rule when it can be.
    for (i, c) in COMMANDS.iter().enumerate() {
        let user = selector.allows(i);
        if user != fake.allows(i) {
            rules.push(if user { '+' } else { '-' });
            rules.push_str(c.name);
            rules.push(' ');
            fake.change(c.name, user);
        }
    }
    rules.pop();
    debug_assert_eq!(fake.bits(), selector.bits(), "{rules}");
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(given: &str) -> String {
        let mut s = Selector::empty();
        for r in given.split(' ') {
            s.apply(r.as_bytes()).unwrap();
        }
        command_rules(&s)
    }

    #[test]
    fn as_redis_7_0_describes_them() {
        // As redis-server 7.0.15 writes them, but for the order of single
        // commands, which differs from one Redis process to the next.
        assert_eq!(rules("-@all"), "-@all");
        assert_eq!(rules("+@all"), "+@all");
        assert_eq!(rules("+@all -@dangerous"), "+@all -@dangerous");
        assert_eq!(
            rules("+@set +@hash -@geo +get +mget -hset"),
            "-@all +@set +@hash +get -hset +mget"
        );
        assert_eq!(rules("+set"), "-@all +set");
        assert_eq!(rules("+config|get"), "-@all +config|get");
        assert_eq!(rules("+@all -config|set"), "+@all -config|set");
        assert_eq!(rules("+client"), "-@all +client");
    }

    #[test]
    fn as_redis_7_2_keeps_them() {
        use crate::acl::Style;
        let kept = |given: &str| {
            let mut s = Selector::empty();
            for r in given.split(' ') {
                s.apply(r.as_bytes()).unwrap();
            }
            s.describe_commands(Style::Redis72)
        };
        // What redis-py's suite expects of Redis 7.2 and later.
        assert_eq!(
            kept("+@set +@hash -@geo +get +mget -hset"),
            "-@all +@set +@hash -@geo +get +mget -hset"
        );
        assert_eq!(kept("+GET +config|get +config +get"), "-@all +config +get");
        assert_eq!(kept("+get +@all -flushall"), "+@all -flushall");
        assert_eq!(kept("+@Read -@read"), "-@all -@read");
        assert_eq!(Style::of("7.0.15"), Style::Redis70);
        assert_eq!(Style::of("7.2.4"), Style::Redis72);
        assert_eq!(Style::of("8.0.0"), Style::Redis72);
        assert_eq!(Style::of("6.2.14"), Style::Redis70);
    }
}
