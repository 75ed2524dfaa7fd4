#!/usr/bin/env python3
"""Checks the deployment files in deploy/ against their schemas, without a cluster.

    python scripts/validate_manifests.py          # deploy/kubernetes/*.yaml, deploy/systemd/*
    python scripts/validate_manifests.py FILE...  # .yaml manifests and .service units

Why: nothing here applies these files (no cluster, no systemd as PID 1), so a misspelt field,
a string where a number belongs or a field in the wrong place would otherwise surface only when
someone deploys them. Depending on the client, a cluster may accept an unknown field with no
more than a warning and drop it, so unknown fields are errors here.

How, by kind:
- Kubernetes' own kinds (ConfigMap, Deployment, Service, ...): the strict JSON schemas of the
  kubernetes-validate package (PyPI), which refuse unknown fields, for Kubernetes 1.30 (the
  oldest these files support: the preStop sleep action) and 1.37 (the newest it ships).
- ServiceMonitor (prometheus-operator's CRD): @kubernetes-models/prometheus-operator (npm),
  whose compiled JSON-schema validator checks types, required fields and patterns. That schema,
  like the CRD's, allows unknown fields, so each key is also looked up in the package's
  TypeScript declarations of the same schema, read with the TypeScript compiler's API.
- kustomization.yaml: its apiVersion and kind, and that `resources` lists exactly the other
  manifests of its folder.
- systemd units: `systemd-analyze verify` in a scratch root that holds the unit and a stand-in
  for its ExecStart binary; any complaint counts. Skipped with a note without systemd-analyze.
Also refused: a key given twice in one mapping (YAML keeps the last silently), and a Deployment
or StatefulSet whose selector does not match its pod template's labels.

Needs what scripts/setup_validators.sh installs (.cache/venv-validate, .cache/npm-validate);
with another Python the script starts itself again in that venv. Prints `OK <file> <n>
documents` per clean file, else one line per problem, `<file>: <kind>/<name>: <path>:
<problem>`, and exits 1.
"""
import difflib
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "venv-validate"
NPM = ROOT / ".cache" / "npm-validate"
K8S_VERSIONS = ("1.30", "1.37")

try:
    import jsonschema
    import yaml
    from referencing import Registry, Resource
    from kubernetes_validate import utils as kv
except ImportError as err:
    if (VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(VENV / "bin" / "python", [str(VENV / "bin" / "python"), *sys.argv])
    sys.exit(f"validate_manifests: {err}; run scripts/setup_validators.sh first")

# Reads a JSON array of ServiceMonitors on stdin; writes, for each, its [path, problem] pairs
# ([path, "unknown field", known keys] for keys that the declared type does not have).
SERVICE_MONITOR_JS = r"""
import ts from "typescript";
const dir = process.cwd()
  + "/node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/";
const { ServiceMonitor } = await import(dir + "ServiceMonitor.js");
const program = ts.createProgram([dir + "ServiceMonitor.d.ts"], { strict: true, noEmit: true,
  module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext });
const checker = program.getTypeChecker();
const file = checker.getSymbolAtLocation(program.getSourceFile(dir + "ServiceMonitor.d.ts"));
const top = checker.getDeclaredTypeOfSymbol(
  checker.getExportsOfModule(file).find((s) => s.name === "IServiceMonitor"));
const join = (path, key) => (path ? `${path}.${key}` : key);

// Unknown keys: each mapping's keys against the properties of its declared type.
function walk(value, type, path, out) {
  type = checker.getNonNullableType(type);
  if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) {
    return out.push([path, "no declared type to check the keys against"]);
  }
  if (Array.isArray(value)) {
    if (checker.isArrayType(type)) {
      const item = checker.getTypeArguments(type)[0];
      value.forEach((v, i) => walk(v, item, `${path}[${i}]`, out));
    }
    return;
  }
  if (value === null || typeof value !== "object") return;
  const objects = type.isUnion() ? type.types.filter((t) => t.flags & ts.TypeFlags.Object) : [type];
  if (objects.length !== 1) return;  // no mapping allowed here (the schema check says so)
  const index = checker.getIndexTypeOfType(objects[0], ts.IndexKind.String);
  const known = checker.getPropertiesOfType(objects[0]).map((p) => p.name);
  for (const [key, v] of Object.entries(value)) {
    const property = checker.getPropertyOfType(objects[0], key);
    if (property) walk(v, checker.getTypeOfSymbol(property), join(path, key), out);
    else if (index) walk(v, index, join(path, key), out);
    else out.push([join(path, key), "unknown field", known]);
  }
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const results = JSON.parse(Buffer.concat(chunks).toString("utf8")).map((doc) => {
  const out = [];
  try {
    new ServiceMonitor(doc).validate();
  } catch (err) {
    for (const e of err.errors ?? [{ instancePath: "", message: String(err) }]) {
      const path = e.instancePath.split("/").slice(1)
        .map((p) => p.replaceAll("~1", "/").replaceAll("~0", "~"))
        .map((p) => (/^\d+$/.test(p) ? `[${p}]` : `.${p}`)).join("").replace(/^\./, "");
      out.push([path, e.message]);
    }
  }
  walk(doc, top, "", out);
  return [...new Map(out.map((p) => [JSON.stringify(p), p])).values()];
});
process.stdout.write(JSON.stringify(results));
"""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (the second would win)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=True) for k, _ in node.value]
        for key_node, key in zip((k for k, _ in node.value), keys):
            if keys.count(key) > 1:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep)


def mapping(value):
    return value if isinstance(value, dict) else {}


def join(path, key):
    return f"{path}.{key}" if path else str(key)


def dotted(parts):
    path = ""
    for p in parts:
        path = f"{path}[{p}]" if isinstance(p, int) else join(path, p)
    return path


def hint(key, known):
    near = difflib.get_close_matches(str(key), known, n=1)
    return f"; did you mean {near[0]}?" if near else ""


_validators = {}


def k8s_validator(doc, version):
    """A strict JSON-schema validator for the document's kind, or None if there is no schema.
    The file naming (`<kind>-<group>-<version>.json` in `v<k8s>-local-strict/`) is that of the
    pinned kubernetes-validate release, as in its own validate()."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", str(doc.get("apiVersion")))
    key = (version, str(doc.get("kind")).lower(), group_version)
    if key not in _validators:
        full = [v for v in kv.all_versions() if kv.major_minor(v) == version][-1]
        folder = f"kubernetes-json-schema/v{full}-local-strict"
        try:
            schema = kv.schema_contents(f"{folder}/{key[1]}-{group_version}.json", version)
        except FileNotFoundError:
            _validators[key] = None
        else:
            definitions = kv.schema_contents(f"{folder}/_definitions.json", version)
            registry = Registry()
            for contents in (schema, definitions):  # each under its own $id
                registry = Resource.from_contents(contents) @ registry
            _validators[key] = jsonschema.Draft202012Validator(schema, registry=registry)
    return _validators[key]


def k8s_problems(doc):
    """[(path, problem)] of a document of one of Kubernetes' own kinds, for every version."""
    found = {}  # (path, problem) -> versions
    for version in K8S_VERSIONS:
        validator = k8s_validator(doc, version)
        if validator is None:
            found.setdefault(("kind", f"no schema for {doc.get('kind')} {doc.get('apiVersion')}"),
                             []).append(version)
            continue
        for err in validator.iter_errors(doc):
            path = dotted(err.absolute_path)
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                known = list(err.schema.get("properties", {}))
                for key in err.instance:
                    if key not in known:
                        found.setdefault((join(path, key), "unknown field" + hint(key, known)),
                                         []).append(version)
            else:
                message = err.message if len(err.message) < 200 else err.message[:200] + "..."
                found.setdefault((path or "(document)", message), []).append(version)
    # Beyond the schema, as the API server does: a workload must select its own pods.
    spec = mapping(doc.get("spec"))
    if doc.get("kind") in ("Deployment", "StatefulSet") and "template" in spec:
        wanted = mapping(mapping(spec.get("selector")).get("matchLabels"))
        labels = mapping(mapping(mapping(spec["template"]).get("metadata")).get("labels"))
        for key, value in wanted.items():
            if labels.get(key) != value:
                problem = f"the selector wants {value!r}: the pods would not be selected"
                found[(f"spec.template.metadata.labels.{key}", problem)] = list(K8S_VERSIONS)
    return [(path, problem if len(versions) == len(K8S_VERSIONS)
             else f"{problem} (Kubernetes {', '.join(versions)} only)")
            for (path, problem), versions in found.items()]


def service_monitor_problems(docs):
    """[[(path, problem)]] for each ServiceMonitor, checked by node in one run."""
    if not docs:
        return []
    if shutil.which("node") is None:
        return [[("(document)", "node is not installed: cannot check")] for _ in docs]
    if not (NPM / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        return [[("(document)", "no npm packages: run scripts/setup_validators.sh")] for _ in docs]
    run = subprocess.run(["node", "--input-type=module", "-e", SERVICE_MONITOR_JS], cwd=NPM,
                         input=json.dumps(docs, default=str), capture_output=True, text=True)
    if run.returncode != 0:
        return [[("(document)", f"node failed: {run.stderr.strip()[-400:]}")] for _ in docs]
    results = []
    for problems in json.loads(run.stdout):
        results.append([(path, message + (hint(path.rsplit(".", 1)[-1], known[0]) if known else ""))
                        for path, message, *known in problems])
    return results


def kustomization_problems(path, doc):
    """[(path, problem)] of a kustomization.yaml: its kind, and its resources against its folder."""
    if (doc.get("apiVersion"), doc.get("kind")) != ("kustomize.config.k8s.io/v1beta1",
                                                    "Kustomization"):
        return [("kind", "expected kustomize.config.k8s.io/v1beta1 Kustomization")]
    listed = doc.get("resources")
    if not isinstance(listed, list):
        return [("resources", "expected a list of the manifests")]
    folder = Path(path).parent
    others = {p.name for p in folder.glob("*.yaml") if p.name != Path(path).name}
    return ([(f"resources[{i}]", f"{r}: no such file") for i, r in enumerate(listed)
             if not (folder / str(r)).is_file()]
            + [("resources", f"{name} is not listed") for name in sorted(others - set(listed))])


def unit_problems(path):
    """`systemd-analyze verify` output lines for a unit, or None when it cannot run here."""
    if shutil.which("systemd-analyze") is None:
        return None
    with tempfile.TemporaryDirectory() as root:
        unit = Path(root, "etc/systemd/system", Path(path).name)
        unit.parent.mkdir(parents=True)
        shutil.copy(path, unit)
        for line in unit.read_text().splitlines():  # stand-ins for the binaries it starts
            if m := re.match(r"\s*Exec\w+=[-@:+!]*(/\S+)", line):
                binary = Path(root, m[1].lstrip("/"))
                binary.parent.mkdir(parents=True, exist_ok=True)
                binary.write_text("#!/bin/sh\n")
                binary.chmod(0o755)
        run = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "--man=no",
                              "--recursive-errors=no", str(unit)], capture_output=True, text=True)
    lines = (run.stdout + run.stderr).replace(str(unit), Path(path).name).splitlines()
    return lines or ([] if run.returncode == 0 else [f"exit status {run.returncode}"])


def check_file(path):
    """Problem lines for one file, and how many documents it holds."""
    if path.endswith(".service"):
        lines = unit_problems(path)
        if lines is None:
            print(f"SKIP {path}: systemd-analyze is not installed, the unit was not checked")
            return [], 1
        return [f"{path}: unit: {line}" for line in lines], 1
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]
    except (OSError, yaml.YAMLError) as err:
        return [f"{path}: -: -: {' '.join(str(err).split())}"], 0
    results = [None] * len(docs)
    monitors = [i for i, d in enumerate(docs) if isinstance(d, dict)
                and (d.get("apiVersion"), d.get("kind")) == ("monitoring.coreos.com/v1",
                                                             "ServiceMonitor")]
    for i, problems in zip(monitors, service_monitor_problems([docs[i] for i in monitors])):
        results[i] = problems
    lines = [] if docs else [f"{path}: -: -: no YAML documents"]
    for doc, problems in zip(docs, results):
        if not isinstance(doc, dict):
            lines.append(f"{path}: ?/?: (document): expected a mapping")
            continue
        if Path(path).name == "kustomization.yaml":
            problems = kustomization_problems(path, doc)
        else:
            problems = k8s_problems(doc) if problems is None else problems
            if not mapping(doc.get("metadata")).get("name"):
                problems.append(("metadata.name", "required field missing"))
        label = f"{doc.get('kind', '?')}/{mapping(doc.get('metadata')).get('name', '-')}"
        lines += [f"{path}: {label}: {where or '(document)'}: {what}" for where, what in problems]
    return lines, len(docs)


def main(paths):
    defaults = ["deploy/kubernetes/*.yaml", "deploy/systemd/*.service"]
    paths = paths or sorted(os.path.relpath(p) for d in defaults for p in glob.glob(str(ROOT / d)))
    failed = False
    for path in paths:
        lines, n = check_file(path)
        print("\n".join(lines) if lines else f"OK {path} {n} documents")
        failed = failed or bool(lines)
    return 1 if failed else 0


if __name__ == "__main__":
    # 1 means "a manifest has a problem"; a crash of the validator itself is 2, so a broken
    # environment is never mistaken for a caught mistake.
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        sys.exit(2)
