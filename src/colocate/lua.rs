//! Scripts under co-location rules: keys a script builds at run time must be
//! encoded too, not just `KEYS[]`.
//!
//! The script body is wrapped: a local `redis` that shadows the global one
//! sends every `redis.call`/`redis.pcall` through the same rules, at the key
//! positions of the command table (the key-spec interpreter below mirrors
//! Redis's own). The specs of the commands a script names as literals are
//! a Lua table built at each run; any other command's (a name built at run
//! time, such as Bull's `redis.call(ARGV[10], KEYS[1], id)`) are looked up
//! in one string constant of every command's specs on first use. A shebang
//! line stays first. Regex rules cannot be expressed
//! in Lua: keys a script builds that only a regex rule matches are not
//! encoded (documented limit); `KEYS[]` arguments are always encoded by the
//! proxy itself.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::Rules;
use crate::command::spec::{key_flags, BeginSearch, FindKeys};
use crate::command::table_gen::COMMANDS;

/// One command's key specs as Lua table entries (empty when it has none).
fn spec_entries(c: &crate::command::spec::CommandSpec) -> String {
    let mut specs = String::new();
    for s in c.key_specs {
        if s.flags & key_flags::NOT_KEY != 0 {
            continue;
        }
        let begin = match s.begin {
            BeginSearch::Index(i) => format!("\"i\",{i},0"),
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => format!("\"k\",\"{keyword}\",{start_from}"),
            BeginSearch::Unknown => continue,
        };
        let find = match s.find {
            FindKeys::Range {
                last_key,
                key_step,
                limit,
            } => format!("\"r\",{last_key},{key_step},{limit}"),
            FindKeys::KeyNum {
                key_num_idx,
                first_key,
                key_step,
            } => format!("\"n\",{key_num_idx},{first_key},{key_step}"),
            FindKeys::Unknown => continue,
        };
        let _ = write!(specs, "{{{begin},{find}}},");
    }
    specs
}

/// Every command's key specs as one string, searched by the wrapper for
/// commands missing from [`specs_table`]: `;name=spec/spec...` with each
/// spec's fields comma-separated (as in the table), and `;name=+` for a
/// container whose subcommands have entries of their own.
fn all_specs() -> &'static str {
    static ALL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut out = String::new();
        for c in COMMANDS {
            if c.flags & crate::command::spec::flags::HAS_SUBCOMMANDS != 0 {
                let _ = write!(out, ";{}=+", c.name);
                continue;
            }
            let specs = spec_entries(c);
            if specs.is_empty() {
                continue;
            }
            // `{"i",1,0,"r",0,1,0},{...},` as `i,1,0,r,0,1,0/...`.
            let compact = specs
                .trim_end_matches(',')
                .replace("},{", "/")
                .replace(['{', '}', '"'], "");
            let _ = write!(out, ";{}={compact}", c.name);
        }
        out.push(';');
        out
    })
}

/// Lower-cased words that appear as string literals in a script body/// Lower-cased words that appear as string literals in a script body
/// (command names in `redis.call('HSET', ...)`).
fn literal_words(body: &[u8]) -> HashSet<Vec<u8>> {
    let mut words = HashSet::new();
    let mut i = 0;
    while i < body.len() {
        let q = body[i];
        if q == b'"' || q == b'\'' {
            let start = i + 1;
            let mut j = start;
            while j < body.len()
                && j - start <= 32
                && (body[j].is_ascii_alphanumeric() || body[j] == b'_')
            {
                j += 1;
            }
            if j < body.len() && body[j] == q && j > start {
                words.insert(body[start..j].to_ascii_lowercase());
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    words
}

/// The key-spec table for the commands a script names as literals (built
/// at each run of the script, so kept small), then [`all_specs`] for the
/// others.
fn specs_table(body: &[u8]) -> String {
    let words = literal_words(body);
    let mut out = format!("local __sb_all = \"{}\"\n", all_specs());
    out.push_str("local __sb_specs = {");
    for c in COMMANDS {
        let container = c.name.split('|').next().unwrap_or(c.name);
        if !words.contains(container.as_bytes()) {
            continue;
        }
        let specs = spec_entries(c);
        if c.flags & crate::command::spec::flags::HAS_SUBCOMMANDS != 0 {
            let _ = write!(out, "[\"{}\"]=\"+\",", c.name);
        } else if specs.is_empty() {
            // Known to have no keys: no search of __sb_all.
            let _ = write!(out, "[\"{}\"]=false,", c.name);
        } else {
            let _ = write!(out, "[\"{}\"]={{{specs}}},", c.name);
        }
    }
    out.push_str("}\n");
    out
}

/// Lua string literal for arbitrary bytes (decimal escapes).
fn lua_string(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"_:-.*?[]^ /".contains(&b) {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\{b}");
        }
    }
    s.push('"');
    s
}

const RUNTIME: &str = r##"
local __sb_call, __sb_pcall = redis.call, redis.pcall
local function __sb_glob(p, s, pi, si)
  while pi <= #p do
    local c = string.sub(p, pi, pi)
    if c == "*" then
      for k = si, #s + 1 do
        if __sb_glob(p, s, pi + 1, k) then return true end
      end
      return false
    elseif c == "?" then
      if si > #s then return false end
      si = si + 1
    elseif c == "\\" and pi < #p then
      pi = pi + 1
      if string.sub(s, si, si) ~= string.sub(p, pi, pi) then return false end
      si = si + 1
    elseif c == "[" then
      if si > #s then return false end
      local ch = string.byte(s, si)
      pi = pi + 1
      local neg = string.sub(p, pi, pi) == "^"
      if neg then pi = pi + 1 end
      local hit = false
      while pi <= #p and string.sub(p, pi, pi) ~= "]" do
        local a = string.byte(p, pi)
        if string.sub(p, pi + 1, pi + 1) == "-" and pi + 2 <= #p and string.sub(p, pi + 2, pi + 2) ~= "]" then
          local b = string.byte(p, pi + 2)
          if a > b then a, b = b, a end
          if ch >= a and ch <= b then hit = true end
          pi = pi + 2
        elseif a == ch then
          hit = true
        end
        pi = pi + 1
      end
      if hit == neg then return false end
      si = si + 1
    else
      if string.sub(s, si, si) ~= c then return false end
      si = si + 1
    end
    pi = pi + 1
  end
  return si > #s
end
local function __sb_tag(k)
  for _, r in ipairs(__sb_rules) do
    local m
    if r[1] == "prefix" then m = string.sub(k, 1, #r[2]) == r[2] else m = __sb_glob(r[2], k, 1, 1) end
    if m then
      local t = ""
      if r[3] == "const" then
        t = r[4]
      else
        local start, i = 1, 0
        while true do
          local e = string.find(k, r[5], start, true)
          if i == r[4] then
            if e then t = string.sub(k, start, e - 1) else t = string.sub(k, start) end
            break
          end
          if not e then break end
          start, i = e + 1, i + 1
        end
      end
      if t == "" then t = "_" end
      t = string.gsub(t, "[{}]", "_")
      return t
    end
  end
  return nil
end
local function __sb_enc(k)
  if type(k) ~= "string" then return k end
  local t = __sb_tag(k)
  if t then return "{" .. t .. "}" .. k end
  return k
end
local function __sb_keys(specs, a)
  local argc, out = #a, {}
  for _, s in ipairs(specs) do
    local first
    if s[1] == "i" then
      first = s[2]
    else
      local from, to, step = s[3], argc - 1, 1
      if from < 0 then from, to, step = argc + from, 1, -1 end
      for i = from, to, step do
        if type(a[i + 1]) == "string" and string.upper(a[i + 1]) == s[2] then first = i + 1 break end
      end
    end
    if first and first < argc then
      if s[4] == "r" then
        local last
        if s[5] >= 0 then last = first + s[5]
        elseif s[7] > 1 then last = first + math.floor((argc - first) / s[7]) + s[5]
        else last = argc + s[5] end
        local i = first
        while i <= last and i < argc do out[#out + 1] = i + 1 i = i + math.max(s[6], 1) end
      else
        local n = tonumber(a[first + s[5] + 1])
        if n and n > 0 then
          local i = first + s[6]
          for _ = 1, n do
            if i >= argc then break end
            out[#out + 1] = i + 1
            i = i + math.max(s[7], 1)
          end
        end
      end
    end
  end
  return out
end
-- A command's specs: the table's, else parsed from __sb_all once (false
-- for a command without keys; "+" for a container of subcommands).
local function __sb_spec(name)
  local s = __sb_specs[name]
  if s ~= nil then return s end
  s = false
  local at = string.find(__sb_all, ";" .. name .. "=", 1, true)
  if at then
    local from = at + #name + 2
    local stop = string.find(__sb_all, ";", from, true)
    local body = string.sub(__sb_all, from, stop - 1)
    if body == "+" then
      s = body
    else
      s = {}
      for one in string.gmatch(body, "[^/]+") do
        local f = {}
        for x in string.gmatch(one, "[^,]+") do f[#f + 1] = tonumber(x) or x end
        s[#s + 1] = f
      end
    end
  end
  __sb_specs[name] = s
  return s
end
local function __sb_rw(...)
  local a = {...}
  local n = select("#", ...)
  if type(a[1]) == "string" then
    local name = string.lower(a[1])
    local specs = __sb_spec(name)
    if specs == "+" then
      specs = type(a[2]) == "string" and __sb_spec(name .. "|" .. string.lower(a[2]))
    end
    if specs then
      for _, i in ipairs(__sb_keys(specs, a)) do a[i] = __sb_enc(a[i]) end
    end
  end
  return unpack(a, 1, n)
end
-- A stored key as the client names it.
local function __sb_dec(k)
  if type(k) == "string" and string.sub(k, 1, 1) == "{" then
    local close = string.find(k, "}", 1, true)
    if close then
      local rest = string.sub(k, close + 1)
      if __sb_enc(rest) == k then return rest end
    end
  end
  return k
end
-- Adds to `out` the client names of `keys` not `seen` that match `p`.
local function __sb_named(p, keys, seen, out)
  for _, k in ipairs(keys) do
    if not seen[k] then
      seen[k] = true
      local d = __sb_dec(k)
      if p == nil or __sb_glob(p, d, 1, 1) then out[#out + 1] = d end
    end
  end
end
local function __sb_failed(r) return type(r) ~= "table" or r.err ~= nil end
-- Commands whose pattern or reply names keys: the script sees client
-- names, as its KEYS[] (dramatiq finds a dead worker's keys with KEYS).
local __sb_first_key = {randomkey = 0, blpop = 1, brpop = 1, bzpopmin = 1,
  bzpopmax = 1, lmpop = 1, blmpop = 1, zmpop = 1, bzmpop = 1}
local function __sb_run(f, ...)
  local n = select("#", ...)
  local a = {...}
  local name = type(a[1]) == "string" and string.lower(a[1]) or ""
  if name == "keys" and n == 2 and type(a[2]) == "string" then
    local p, out, seen = a[2], {}, {}
    local plain = f("keys", p)
    if __sb_failed(plain) then return plain end
    local grouped = f("keys", "{*}" .. p)
    if __sb_failed(grouped) then return grouped end
    __sb_named(p, plain, seen, out)
    __sb_named(p, grouped, seen, out)
    return out
  elseif name == "scan" then
    local b, p, i = {}, nil, 1
    while i <= n do
      if i > 2 and i < n and type(a[i]) == "string" and string.lower(a[i]) == "match" then
        p = a[i + 1]
        i = i + 2
      else
        b[#b + 1] = a[i]
        i = i + 1
      end
    end
    local r = f(unpack(b, 1, #b))
    if __sb_failed(r) or type(r[2]) ~= "table" then return r end
    local out = {}
    __sb_named(p, r[2], {}, out)
    r[2] = out
    return r
  end
  local r = f(__sb_rw(...))
  local at = __sb_first_key[name]
  if at == 0 then
    return __sb_dec(r)
  elseif at and not __sb_failed(r) then
    r[1] = __sb_dec(r[1])
  elseif (name == "xread" or name == "xreadgroup") and not __sb_failed(r) then
    if r.map then
      local m = {}
      for k, v in pairs(r.map) do m[__sb_dec(k)] = v end
      r.map = m
    else
      for _, s in ipairs(r) do
        if type(s) == "table" then s[1] = __sb_dec(s[1]) end
      end
    end
  end
  return r
end
-- A copy of the real table (pairs sees every field, as on one Redis)
-- whose call and pcall follow the rules.
local redis = (function(real)
  local t = {}
  for k, v in pairs(real) do t[k] = v end
  t.call = function(...) return __sb_run(__sb_call, ...) end
  t.pcall = function(...) return __sb_run(__sb_pcall, ...) end
  return t
end)(redis)
-- The script sees its keys as the client named them (values built from
-- KEYS[] must match keys built from ARGV); calls encode them again.
local KEYS = (function(keys)
  local out = {}
  for i, k in ipairs(keys) do out[i] = __sb_dec(k) end
  return out
end)(KEYS)
"##;

/// The script body wrapped so that the keys it builds follow the rules.
pub fn wrap(rules: &Rules, body: &[u8]) -> Vec<u8> {
    let mut rules_lua = String::from("local __sb_rules = {");
    for r in rules.rules() {
        if let Some((kind, pattern, gk, gv)) = r.lua_parts() {
            let group = match gk {
                "const" => lua_string(&gv),
                _ => format!(
                    "{},{}",
                    gv.first().copied().unwrap_or(0),
                    lua_string(&gv[1..])
                ),
            };
            let _ = write!(
                rules_lua,
                "{{\"{kind}\",{},\"{gk}\",{group}}},",
                lua_string(&pattern)
            );
        }
    }
    rules_lua.push_str("}\n");
    let (shebang, rest) = if body.starts_with(b"#!") {
        let end = memchr::memchr(b'\n', body)
            .map(|i| i + 1)
            .unwrap_or(body.len());
        body.split_at(end)
    } else {
        (&b""[..], body)
    };
    let mut out = Vec::with_capacity(body.len() + 8192);
    out.extend_from_slice(shebang);
    if !shebang.is_empty() && !shebang.ends_with(b"\n") {
        out.push(b'\n');
    }
    // All on the line where the client's code starts, so that its lines
    // keep their numbers in the errors a node reports.
    let prefix = [rules_lua.as_str(), &specs_table(rest), RUNTIME].concat();
    out.extend_from_slice(one_line(&prefix).as_bytes());
    out.extend_from_slice(b"; ");
    out.extend_from_slice(rest);
    out
}

/// Lua code as one line: its lines trimmed and joined by spaces, leaving
/// out empty lines and whole-line comments (the prefix has no other
/// comments and no long strings).
fn one_line(lua: &str) -> String {
    lua.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_keeping_the_shebang_first() {
        let rules = Rules::default();
        let w = wrap(&rules, b"#!lua flags=no-writes\nreturn 1");
        assert!(w.starts_with(b"#!lua flags=no-writes\nlocal __sb_rules"));
        assert!(w.ends_with(b"return 1"));
        // The client's lines keep their numbers.
        let newlines = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
        assert_eq!(newlines(&w), 1);
        let body = b"local a = 1\n\nreturn redis.call('GET', KEYS[1])\n";
        let w = wrap(&rules, body);
        assert_eq!(newlines(&w), newlines(body));
        assert!(w.ends_with(body));
        let table = specs_table(b"redis.call('GET', k) redis.call(\"xread\", 'STREAMS', s, 0)");
        assert!(
            table.contains("[\"get\"]={{\"i\",1,0,\"r\",0,1,0},}"),
            "{table}"
        );
        assert!(table.contains("[\"xread\"]={{\"k\",\"STREAMS\",1,\"r\",-1,1,2},}"));
        assert!(!table.contains("[\"set\"]"));
        let table = specs_table(b"redis.call('PUBLISH', c, m) redis.call('XINFO', 'STREAM', s)");
        assert!(table.contains("[\"publish\"]=false,"), "{table}");
        assert!(table.contains("[\"xinfo\"]=\"+\","), "{table}");
        assert!(
            table.contains("[\"xinfo|stream\"]={{\"i\",2,0,\"r\",0,1,0},}"),
            "{table}"
        );
        // Every other command's specs, for names built at run time.
        let all = all_specs();
        assert!(table.contains(all));
        assert!(all.contains(";lpush=i,1,0,r,0,1,0;"), "{all}");
        assert!(all.contains(";xread=k,STREAMS,1,r,-1,1,2;"));
        assert!(all.contains(";xinfo=+;"));
        assert!(all.contains(";xinfo|stream=i,2,0,r,0,1,0;"));
        assert!(!all.contains(";ping="));
        assert!(!all.contains('"') && !all.contains('\\'));
        // Small beside the runtime: a few KB in every wrapped script.
        assert!(all.len() < 8_000, "{}", all.len());
    }
}
