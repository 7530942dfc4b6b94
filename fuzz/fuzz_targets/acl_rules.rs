#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| fuzz_checks::acl_rules(data));
