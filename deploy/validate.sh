#!/usr/bin/env bash
# Checks deploy/ (Helm chart, sidecar example) and docker/docker-compose.yml
# without a Kubernetes cluster or a Docker engine.
#
#   deploy/validate.sh          (KEEP_RENDER=1 keeps the temporary directory)
#
# Always (needs python3 with PyYAML):
#   - every plain YAML file parses; Chart.yaml has the fields Helm needs;
#   - chart templates have balanced {{ }} and balanced if/range/with/define
#     ... end blocks, and every .Values.x.y they name exists in values.yaml;
#   - the sidecar example's slotbridge.toml parses.
# Rendering, with the first of these found on PATH:
#   - helm: `helm lint` and `helm template`;
#   - go:   the templates are executed by Go's text/template (the engine Helm
#           uses) with the few Sprig functions the chart calls, implemented
#           below. Not a substitute for helm lint, but it catches template
#           errors and wrong output;
#   - neither: rendering is skipped (and said so).
#   Renders: default values, and ci/full-values.yaml (TLS with client
#   certificates, backend password Secret, ServiceMonitor, every config
#   section). The rendered manifests are parsed and checked (ports, probes,
#   security context, selectors, the ConfigMap's TOML and its TLS paths,
#   grace period vs drain timeout), and three bad settings must make
#   rendering fail.
# If a slotbridge binary is found ($SLOTBRIDGE_BIN, or the newest of
# target/release, target/debug and PATH), `slotbridge --check-config`
# validates the sidecar's TOML and the chart's rendered TOML. Its verdict is
# only reported, not enforced, when the binary is older than src/config.rs
# or the TOML uses [tls], [backend.tls] or [lifecycle] and the binary does
# not know them yet.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
chart="$here/helm/slotbridge"
tmp=$(mktemp -d)
trap '[ -n "${KEEP_RENDER:-}" ] || rm -rf "$tmp"' EXIT

if ! python3 -c 'import yaml, tomllib' 2>/dev/null; then
    echo "validate: python3 (3.11+) with PyYAML is required (apt-get install python3-yaml)" >&2
    exit 1
fi

# The newest slotbridge binary around. One older than src/config.rs may not
# know the current fields, so its verdict is then only reported.
bin="${SLOTBRIDGE_BIN:-}"
if [ -z "$bin" ]; then
    for c in "$root/target/release/slotbridge" "$root/target/debug/slotbridge" "$(command -v slotbridge || true)"; do
        if [ -n "$c" ] && [ -x "$c" ] && { [ -z "$bin" ] || [ "$c" -nt "$bin" ]; }; then bin="$c"; fi
    done
fi
stale=0
if [ -n "$bin" ] && [ -f "$root/src/config.rs" ] && [ "$root/src/config.rs" -nt "$bin" ]; then
    stale=1
fi
export SLOTBRIDGE_BIN_STALE=$stale

# ---------------------------------------------------------------------------
# Python checks (static ones, and the checks of rendered manifests).
cat > "$tmp/check.py" <<'PY'
import glob, json, os, re, subprocess, sys, tomllib
import yaml

root, chart, binary = sys.argv[2], sys.argv[3], sys.argv[4]
failures = []

def fail(msg):
    failures.append(msg)
    print("FAIL:    " + msg)

def ok(msg):
    print("ok:      " + msg)

def load_yaml_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]

def merge(base, over):
    """Helm's coalescing: maps merge, everything else replaces, null deletes."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out

def values_for(files):
    vals = yaml.safe_load(open(os.path.join(chart, "values.yaml")))
    for f in files:
        vals = merge(vals, yaml.safe_load(open(f)) or {})
    return vals

def check_config(toml_text, what, strict=True):
    if not binary:
        return
    path = os.path.join(os.environ["TMPDIR_VALIDATE"], "check.toml")
    with open(path, "w") as f:
        f.write(toml_text)
    r = subprocess.run([binary, "--check-config", "--config", path],
                       capture_output=True, text=True)
    msg = (r.stdout + r.stderr).strip()
    if os.environ.get("SLOTBRIDGE_BIN_STALE") == "1":
        strict = False
    if r.returncode == 0:
        ok(f"{what}: {os.path.relpath(binary, root)} --check-config accepts it")
    elif strict:
        fail(f"{what}: slotbridge --check-config: {msg}")
    else:
        why = "binary older than src/config.rs" if os.environ.get("SLOTBRIDGE_BIN_STALE") == "1" else "keys pending in the binary"
        print(f"info:    {what}: not enforced ({why}): {msg}")

# -- static ------------------------------------------------------------------
def static():
    plain = [os.path.join(chart, "Chart.yaml"), os.path.join(chart, "values.yaml")]
    plain += sorted(glob.glob(os.path.join(chart, "ci", "*.yaml")))
    plain += [os.path.join(root, "deploy", "sidecar-example.yaml"),
              os.path.join(root, "docker", "docker-compose.yml")]
    for p in plain:
        try:
            n = len(load_yaml_all(p))
            ok(f"YAML parses: {os.path.relpath(p, root)} ({n} document{'s' if n != 1 else ''})")
        except Exception as e:
            fail(f"{os.path.relpath(p, root)}: {e}")

    meta = yaml.safe_load(open(os.path.join(chart, "Chart.yaml")))
    missing = [k for k in ("apiVersion", "name", "version", "appVersion") if not meta.get(k)]
    if missing or meta.get("apiVersion") != "v2":
        fail(f"Chart.yaml: needs apiVersion v2, name, version, appVersion (missing: {missing})")
    elif not re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", str(meta["version"])):
        fail(f"Chart.yaml: version {meta['version']!r} is not SemVer")
    else:
        ok(f"Chart.yaml: {meta['name']} {meta['version']}, appVersion {meta['appVersion']}")

    values = yaml.safe_load(open(os.path.join(chart, "values.yaml")))
    for p in sorted(glob.glob(os.path.join(chart, "templates", "*"))):
        name = os.path.relpath(p, root)
        text = open(p).read()
        # {{ }} balance, in order.
        depth, bad = 0, False
        for m in re.finditer(r"\{\{|\}\}", text):
            depth += 1 if m.group() == "{{" else -1
            if depth not in (0, 1):
                bad = True
                break
        if bad or depth:
            fail(f"{name}: unbalanced {{{{ }}}}")
            continue
        actions = [a.strip() for a in re.findall(r"\{\{-?(.*?)-?\}\}", text, re.S)]
        actions = [a for a in actions if not a.startswith("/*")]
        opened = sum(1 for a in actions if re.match(r"(if|range|with|define|block)\b", a))
        closed = sum(1 for a in actions if re.match(r"end\b", a))
        if opened != closed:
            fail(f"{name}: {opened} if/range/with/define blocks but {closed} end")
            continue
        refs = sorted(set(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text)))
        for ref in refs:
            node = values
            for part in ref.strip(".").split("."):
                if not isinstance(node, dict) or part not in node:
                    fail(f"{name}: .Values{ref} is not in values.yaml")
                    break
                node = node[part]
        ok(f"{name}: balanced {{{{ }}}} and blocks, {len(refs)} .Values references exist")

    side = load_yaml_all(os.path.join(root, "deploy", "sidecar-example.yaml"))
    cms = [d for d in side if d.get("kind") == "ConfigMap"]
    deps = [d for d in side if d.get("kind") == "Deployment"]
    try:
        toml_text = cms[0]["data"]["slotbridge.toml"]
        cfg = tomllib.loads(toml_text)
        assert cfg["listen"] == "127.0.0.1:6380" and cfg["seeds"], "listen/seeds"
        pod = deps[0]["spec"]["template"]["spec"]
        sb = [c for c in pod["initContainers"] if c["name"] == "slotbridge"][0]
        assert sb["restartPolicy"] == "Always", "native sidecar restartPolicy"
        assert sb["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness /readyz"
        app = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in app.get("env", [])}
        assert env.get("REDIS_URL") == "redis://127.0.0.1:6380", "REDIS_URL"
        assert pod["volumes"][0]["configMap"]["name"] == cms[0]["metadata"]["name"], "ConfigMap name"
        ok("deploy/sidecar-example.yaml: native sidecar, /readyz probe, REDIS_URL, ConfigMap TOML parses")
        check_config(toml_text, "sidecar slotbridge.toml")
    except Exception as e:
        fail(f"deploy/sidecar-example.yaml: {type(e).__name__}: {e}")

# -- rendered manifests ------------------------------------------------------
def sub(labels, of):
    return all(of.get(k) == v for k, v in labels.items())

def rendered(stream_path, label, values_files):
    vals = values_for(values_files)
    docs = load_yaml_all(stream_path)
    by_kind = {}
    for d in docs:
        for k in ("apiVersion", "kind"):
            if not d.get(k):
                fail(f"{label}: a document has no {k}")
        name = (d.get("metadata") or {}).get("name", "")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
            fail(f"{label}: {d.get('kind')} name {name!r} is not a DNS-1123 label")
        for k, v in ((d.get("metadata") or {}).get("labels") or {}).items():
            if len(str(v)) > 63:
                fail(f"{label}: label {k} longer than 63 characters")
        by_kind.setdefault(d["kind"], []).append(d)
    want = {"ConfigMap", "Deployment", "Service"}
    if vals["podDisruptionBudget"]["enabled"]:
        want.add("PodDisruptionBudget")
    if vals["serviceMonitor"]["enabled"]:
        want.add("ServiceMonitor")
    if set(by_kind) != want:
        fail(f"{label}: kinds {sorted(by_kind)}, expected {sorted(want)}")
        return
    try:
        cm = by_kind["ConfigMap"][0]
        toml_text = cm["data"]["slotbridge.toml"]
        cfg = tomllib.loads(toml_text)
        assert cfg["listen"] == f"0.0.0.0:{vals['ports']['client']}", f"listen {cfg['listen']}"
        assert cfg["admin"] == f"0.0.0.0:{vals['ports']['admin']}", f"admin {cfg['admin']}"
        assert cfg["seeds"] == vals["seeds"], "seeds"
        for k, v in vals["config"].items():
            if isinstance(v, dict):
                for kk, vv in v.items():
                    assert cfg[k][kk] == vv, f"config.{k}.{kk}: {cfg.get(k, {}).get(kk)!r} != {vv!r}"
                if not v and k not in ("tls", "backend"):
                    assert k not in cfg, f"empty [{k}] rendered"
            else:
                assert cfg[k] == v, f"config.{k}"
        assert "password" not in cfg.get("backend", {}), "backend password in ConfigMap"

        dep = by_kind["Deployment"][0]
        pod = dep["spec"]["template"]
        spec = pod["spec"]
        c = spec["containers"][0]
        assert c["args"][:2] == ["--config", "/etc/slotbridge/slotbridge.toml"], "args"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"client": vals["ports"]["client"], "admin": vals["ports"]["admin"]}, f"ports {ports}"
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}, "livenessProbe"
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}, "readinessProbe"
        sc, psc = c["securityContext"], spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001, "podSecurityContext"
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"], "securityContext"
        assert c["resources"]["requests"] and c["resources"]["limits"], "resources"
        assert re.fullmatch(r"[0-9a-f]{64}", pod["metadata"]["annotations"]["checksum/config"]), "checksum/config"
        assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(vals["preStopSleepSeconds"])], "preStop"
        drain = (vals["config"].get("lifecycle") or {}).get("drain_timeout_ms") or 10000
        assert spec["terminationGracePeriodSeconds"] > vals["preStopSleepSeconds"] + drain / 1000, "grace period"
        vols = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert set(vols) == set(mounts), f"volumes {sorted(vols)} vs mounts {sorted(mounts)}"
        env = {e["name"]: e for e in c.get("env", [])}
        if vals["backendAuth"]["secretName"]:
            ref = env["SLOTBRIDGE_BACKEND_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": vals["backendAuth"]["secretName"], "key": vals["backendAuth"]["secretKey"]}, "secretKeyRef"
        else:
            assert not env, "env without backendAuth"
        client_tls = vals["tls"]["client"]
        if client_tls["enabled"]:
            d = mounts["client-tls"]
            assert vols["client-tls"]["secret"]["secretName"] == client_tls["secretName"]
            # The whole Secret as a directory: no items, no subPath, so
            # renewed certificates (and the CA) reach the pod.
            assert "items" not in vols["client-tls"]["secret"], "client TLS Secret items"
            assert not [m for m in c["volumeMounts"] if m["name"] == "client-tls" and "subPath" in m], "client TLS subPath"
            assert (cfg["tls"]["cert_file"], cfg["tls"]["key_file"]) == (d + "/tls.crt", d + "/tls.key"), "client TLS paths"
        elif not vals["tls"]["backend"]["enabled"]:
            assert "tls" not in cfg, "[tls] without TLS enabled"
        ca = cfg.get("tls", {}).get("client_ca_file")
        if client_tls["enabled"] and client_tls["verifyClients"]:
            assert ca == d + "/" + client_tls["caKey"], f"client_ca_file {ca!r}"
        else:
            assert ca is None, f"client_ca_file {ca!r} without tls.client.verifyClients"
        if vals["tls"]["backend"]["enabled"]:
            assert cfg["tls"]["backend"] is True, "tls.backend"
            assert cfg["tls"]["backend_ca_file"] == mounts["backend-ca"] + "/ca.crt", "backend CA path"
            assert vols["backend-ca"]["secret"]["items"] == [{"key": vals["tls"]["backend"]["caKey"], "path": "ca.crt"}]
        for k in ("nodeSelector", "affinity", "tolerations"):
            assert spec.get(k) == (vals[k] or None), k

        svc = by_kind["Service"][0]
        assert svc["spec"]["type"] == vals["service"]["type"], "service type"
        assert {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
            "client": (vals["ports"]["client"], "client"), "admin": (vals["ports"]["admin"], "admin")}, "service ports"
        assert sub(svc["spec"]["selector"], pod["metadata"]["labels"]), "service selector"
        assert sub(dep["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]), "deployment selector"
        if "PodDisruptionBudget" in by_kind:
            pdb = by_kind["PodDisruptionBudget"][0]
            assert pdb["apiVersion"] == "policy/v1"
            assert pdb["spec"]["minAvailable"] == vals["podDisruptionBudget"]["minAvailable"]
            assert sub(pdb["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]), "pdb selector"
        if "ServiceMonitor" in by_kind:
            sm = by_kind["ServiceMonitor"][0]
            assert sm["apiVersion"] == "monitoring.coreos.com/v1"
            ep = sm["spec"]["endpoints"][0]
            assert (ep["port"], ep["path"]) == ("admin", "/metrics"), "servicemonitor endpoint"
            assert sub(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]), "servicemonitor selector"
            assert sub(vals["serviceMonitor"]["labels"], sm["metadata"]["labels"]), "servicemonitor labels"
        kinds = ", ".join(sorted(by_kind))
        ok(f"{label}: {kinds} render and check out (ports, probes, security, selectors, TOML)")
        check_config(toml_text, f"{label} slotbridge.toml", strict=True)
    except (AssertionError, KeyError, IndexError, TypeError) as e:
        fail(f"{label}: {type(e).__name__}: {e}")

if sys.argv[1] == "static":
    static()
elif sys.argv[1] == "rendered":
    rendered(sys.argv[5], sys.argv[6], sys.argv[7:])
elif sys.argv[1] == "context":
    # Template context for the Go renderer: .Values, .Chart, .Release.
    meta = yaml.safe_load(open(os.path.join(chart, "Chart.yaml")))
    out, overrides = sys.argv[5], sys.argv[6:]
    vals = values_for([o for o in overrides if not o.startswith("{")])
    for o in overrides:
        if o.startswith("{"):
            vals = merge(vals, json.loads(o))
    json.dump({
        "Values": vals,
        "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta["appVersion"]},
        "Release": {"Name": "demo", "Namespace": "default", "Service": "Helm",
                    "IsInstall": True, "IsUpgrade": False, "Revision": 1},
    }, open(out, "w"))
sys.exit(1 if failures else 0)
PY

# ---------------------------------------------------------------------------
# Go renderer: text/template plus the Sprig functions the chart uses.
cat > "$tmp/render.go" <<'GO'
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
)

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(1)
}

func toInt64(v interface{}) int64 {
	switch x := v.(type) {
	case nil:
		return 0
	case float64:
		return int64(x)
	case int:
		return int64(x)
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	case bool:
		if x {
			return 1
		}
		return 0
	}
	return 0
}

func empty(v interface{}) bool {
	r := reflect.ValueOf(v)
	if !r.IsValid() {
		return true
	}
	switch r.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return r.Len() == 0
	case reflect.Bool:
		return !r.Bool()
	case reflect.Float32, reflect.Float64:
		return r.Float() == 0
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return r.Int() == 0
	case reflect.Interface, reflect.Ptr:
		return r.IsNil()
	}
	return false
}

func kindOf(v interface{}) string { return reflect.ValueOf(v).Kind().String() }

func strval(v interface{}) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	}
	return fmt.Sprintf("%v", v)
}

func yamlScalar(v interface{}) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		b, _ := json.Marshal(x)
		return string(b)
	case map[string]interface{}:
		return "{}"
	case []interface{}:
		return "[]"
	}
	return fmt.Sprintf("%v", v)
}

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_./-]*$`)

func yamlKey(k string) string {
	if plainKey.MatchString(k) {
		return k
	}
	return yamlScalar(k)
}

func yamlBlock(b *strings.Builder, v interface{}, ind int) {
	pad := strings.Repeat(" ", ind)
	switch x := v.(type) {
	case map[string]interface{}:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !empty(x[k]) && (kindOf(x[k]) == "map" || kindOf(x[k]) == "slice") {
				b.WriteString(pad + yamlKey(k) + ":\n")
				yamlBlock(b, x[k], ind+2)
			} else {
				b.WriteString(pad + yamlKey(k) + ": " + yamlScalar(x[k]) + "\n")
			}
		}
	case []interface{}:
		for _, item := range x {
			if !empty(item) && (kindOf(item) == "map" || kindOf(item) == "slice") {
				var sub strings.Builder
				yamlBlock(&sub, item, ind+2)
				b.WriteString(pad + "- " + strings.TrimPrefix(sub.String(), pad+"  "))
			} else {
				b.WriteString(pad + "- " + yamlScalar(item) + "\n")
			}
		}
	default:
		b.WriteString(pad + yamlScalar(v) + "\n")
	}
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

func funcs(t *template.Template) template.FuncMap {
	return template.FuncMap{
		"include": func(name string, data interface{}) (string, error) {
			var buf bytes.Buffer
			err := t.ExecuteTemplate(&buf, name, data)
			return buf.String(), err
		},
		"required": func(msg string, v interface{}) (interface{}, error) {
			if s, ok := v.(string); v == nil || (ok && s == "") {
				return nil, errors.New(msg)
			}
			return v, nil
		},
		"fail": func(msg string) (string, error) { return "", errors.New(msg) },
		"default": func(d interface{}, given ...interface{}) interface{} {
			if len(given) == 0 || empty(given[0]) {
				return d
			}
			return given[0]
		},
		"empty": empty,
		"quote": func(v ...interface{}) string {
			var out []string
			for _, s := range v {
				if s != nil {
					out = append(out, fmt.Sprintf("%q", strval(s)))
				}
			}
			return strings.Join(out, " ")
		},
		"toYaml": func(v interface{}) string {
			if empty(v) || (kindOf(v) != "map" && kindOf(v) != "slice") {
				return yamlScalar(v)
			}
			var b strings.Builder
			yamlBlock(&b, v, 0)
			return strings.TrimSuffix(b.String(), "\n")
		},
		"toJson": func(v interface{}) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"indent":     indent,
		"nindent":    func(n int, s string) string { return "\n" + indent(n, s) },
		"trunc":      func(n int, s string) string { if n >= 0 && len(s) > n { return s[:n] }; return s },
		"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
		"trim":       strings.TrimSpace,
		"replace":    func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
		"contains":   func(sub, s string) bool { return strings.Contains(s, sub) },
		"sha256sum": func(s string) string {
			h := sha256.Sum256([]byte(s))
			return hex.EncodeToString(h[:])
		},
		"kindIs": func(k string, v interface{}) bool { return kindOf(v) == k },
		"kindOf": kindOf,
		"int64":  toInt64,
		"add": func(a ...interface{}) int64 {
			var s int64
			for _, x := range a {
				s += toInt64(x)
			}
			return s
		},
		"div":     func(a, b interface{}) int64 { return toInt64(a) / toInt64(b) },
		"ternary": func(yes, no interface{}, c bool) interface{} { if c { return yes }; return no },
		"dict": func(kv ...interface{}) map[string]interface{} {
			d := map[string]interface{}{}
			for i := 0; i+1 < len(kv); i += 2 {
				d[strval(kv[i])] = kv[i+1]
			}
			return d
		},
		"set": func(d map[string]interface{}, k string, v interface{}) map[string]interface{} {
			d[k] = v
			return d
		},
		"deepCopy": func(v interface{}) (interface{}, error) {
			b, err := json.Marshal(v)
			if err != nil {
				return nil, err
			}
			var out interface{}
			err = json.Unmarshal(b, &out)
			return out, err
		},
		"list": func(v ...interface{}) []interface{} { return v },
		"append": func(l interface{}, v interface{}) []interface{} {
			r := reflect.ValueOf(l)
			out := make([]interface{}, 0, r.Len()+1)
			for i := 0; i < r.Len(); i++ {
				out = append(out, r.Index(i).Interface())
			}
			return append(out, v)
		},
		"join": func(sep string, l interface{}) string {
			r := reflect.ValueOf(l)
			parts := make([]string, r.Len())
			for i := range parts {
				parts[i] = strval(r.Index(i).Interface())
			}
			return strings.Join(parts, sep)
		},
	}
}

// render CHART CONTEXT.json MANIFESTS.yaml NOTES.txt
func main() {
	chart, ctxFile, outFile, notesFile := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	raw, err := os.ReadFile(ctxFile)
	if err != nil {
		die("%v", err)
	}
	var ctx map[string]interface{}
	if err := json.Unmarshal(raw, &ctx); err != nil {
		die("%v", err)
	}
	name := ctx["Chart"].(map[string]interface{})["Name"].(string)
	base := name + "/templates"
	t := template.New("gotpl")
	t.Funcs(funcs(t)).Option("missingkey=zero")
	files, _ := filepath.Glob(filepath.Join(chart, "templates", "*"))
	sort.Strings(files)
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			die("%v", err)
		}
		if _, err := t.New(base + "/" + filepath.Base(f)).Parse(string(text)); err != nil {
			die("parse: %v", err)
		}
	}
	var manifests strings.Builder
	for _, f := range files {
		file := filepath.Base(f)
		if strings.HasPrefix(file, "_") {
			continue
		}
		data := map[string]interface{}{}
		for k, v := range ctx {
			data[k] = v
		}
		data["Template"] = map[string]interface{}{"Name": base + "/" + file, "BasePath": base}
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, base+"/"+file, data); err != nil {
			die("render: %v", err)
		}
		out := strings.ReplaceAll(buf.String(), "<no value>", "")
		if file == "NOTES.txt" {
			if err := os.WriteFile(notesFile, []byte(out), 0o644); err != nil {
				die("%v", err)
			}
		} else if strings.TrimSpace(out) != "" {
			manifests.WriteString("---\n# Source: " + base + "/" + file + "\n" + out + "\n")
		}
	}
	if err := os.WriteFile(outFile, []byte(manifests.String()), 0o644); err != nil {
		die("%v", err)
	}
}
GO

py() { TMPDIR_VALIDATE="$tmp" python3 "$tmp/check.py" "$1" "$root" "$chart" "$bin" "${@:2}"; }

status=0
echo "== static checks"
py static || status=1
[ -n "$bin" ] || echo "skipped: slotbridge --check-config (no binary; set SLOTBRIDGE_BIN or build one)"

full="$chart/ci/full-values.yaml"
# Settings that must make rendering fail: a grace period that does not cover
# preStop + drain, no seeds, and client certificates without client TLS.
bad_grace='{"terminationGracePeriodSeconds": 10}'
bad_seeds='{"seeds": []}'
bad_verify='{"tls": {"client": {"verifyClients": true}}}'

expect_failure() { # LABEL EXPECTED-TEXT COMMAND...
    local label=$1 want=$2 out
    shift 2
    if out=$("$@" 2>&1); then
        echo "FAIL:    $label: rendering succeeded, expected an error"; status=1
    elif grep -q -- "$want" <<<"$out"; then
        echo "ok:      $label: rendering fails with '$want'"
    else
        echo "FAIL:    $label: unexpected error: $out"; status=1
    fi
}

echo "== rendering"
if command -v helm >/dev/null; then
    echo "using $(helm version --short 2>/dev/null || echo helm)"
    if helm lint "$chart"; then echo "ok:      helm lint (default values)"; else echo "FAIL:    helm lint"; status=1; fi
    if helm lint "$chart" -f "$full"; then echo "ok:      helm lint (ci/full-values.yaml)"; else echo "FAIL:    helm lint -f ci/full-values.yaml"; status=1; fi
    if helm template demo "$chart" > "$tmp/default.yaml"; then
        py rendered "$tmp/default.yaml" "helm template (default values)" || status=1
    else
        echo "FAIL:    helm template (default values)"; status=1
    fi
    if helm template demo "$chart" -f "$full" > "$tmp/full.yaml"; then
        py rendered "$tmp/full.yaml" "helm template (ci/full-values.yaml)" "$full" || status=1
    else
        echo "FAIL:    helm template (ci/full-values.yaml)"; status=1
    fi
    expect_failure "terminationGracePeriodSeconds=10" "terminationGracePeriodSeconds" helm template demo "$chart" --set terminationGracePeriodSeconds=10
    expect_failure "seeds={}" "seeds" helm template demo "$chart" --set 'seeds=null'
    expect_failure "tls.client.verifyClients without enabled" "verifyClients needs" helm template demo "$chart" --set tls.client.verifyClients=true
elif command -v go >/dev/null; then
    echo "helm not found; rendering with Go $(go env GOVERSION) text/template (Helm's engine) and the Sprig subset in this script"
    export GOPROXY=off GOFLAGS="" GOCACHE="${GOCACHE:-$tmp/gocache}"
    go build -o "$tmp/render" "$tmp/render.go"
    render() { # OUT CONTEXT-ARGS...
        local out=$1; shift
        py context "$tmp/ctx.json" "$@" && "$tmp/render" "$chart" "$tmp/ctx.json" "$out" "$out.notes"
    }
    for variant in default full; do
        label="render ($([ $variant = default ] && echo "default values" || echo "ci/full-values.yaml"))"
        args=(); [ $variant = full ] && args=("$full")
        if render "$tmp/$variant.yaml" "${args[@]}"; then
            py rendered "$tmp/$variant.yaml" "$label" "${args[@]}" || status=1
        else
            echo "FAIL:    $label: rendering failed (above)"; status=1
        fi
    done
    if [ -s "$tmp/full.yaml.notes" ] && ! grep -q '<no value>\|%!' "$tmp/full.yaml.notes"; then
        echo "ok:      NOTES.txt renders"
    else
        echo "FAIL:    NOTES.txt"; status=1
    fi
    expect_failure "terminationGracePeriodSeconds=10" "terminationGracePeriodSeconds" render "$tmp/bad.yaml" "$bad_grace"
    expect_failure "seeds=[]" "seeds: set at least one" render "$tmp/bad.yaml" "$bad_seeds"
    expect_failure "tls.client.verifyClients without enabled" "verifyClients needs" render "$tmp/bad.yaml" "$bad_verify"
    echo "skipped: helm lint (helm not installed; Helm is not packaged by Debian)"
else
    echo "skipped: rendering the chart (neither helm nor go on PATH; apt-get install golang-go enables it)"
fi

echo
if [ "$status" -eq 0 ]; then
    echo "validate: all checks passed"
else
    echo "validate: some checks FAILED" >&2
fi
exit "$status"
