#!/usr/bin/env python3
"""Checks KServe manifests against KServe's own API schema, without a cluster.

    python scripts/validate_kserve.py deploy/kserve/*.yaml

Why: the manifests in deploy/kserve/ are never applied here, so a misspelt key, a value of the
wrong type or a missing required field would otherwise surface only on a real cluster.

How: the kserve package on PyPI ships OpenAPI-generated classes for KServe's resources
(kserve/models/), which refer to the Kubernetes client's classes for core types (V1Container,
V1Probe, ...). Every class lists its fields (`attribute_map`: Python name -> JSON key) and their
types (`openapi_types`). Each YAML document is walked through them from the class of its
apiVersion and kind: keys the class does not have and values of the wrong type are reported with
their path; then each object is built bottom-up with its class's constructor, whose own checks
report missing required fields.

Needs the venv that scripts/setup_validators.sh creates (.cache/venv-validate); run with another
Python, the script starts itself again in that venv when it exists. Prints `OK <file> <n>
documents` per clean file, or one line per problem, `<file>: <kind>/<name>: <path>: <problem>`,
and then exits 1.
"""
import datetime
import difflib
import importlib.util
import os
import re
import sys
import types
from pathlib import Path

VENV = Path(__file__).resolve().parent.parent / ".cache" / "venv-validate"

# Resource classes by (apiVersion, kind).
TOP = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}

# Type names the kserve classes use that neither package defines, with their equivalent.
ALIASES = {
    "ResourceQuantity": "str",
    "K8sIoApiAppsV1DeploymentStrategy": "V1DeploymentStrategy",
}

PRIMITIVES = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "bytes": lambda v: isinstance(v, str),  # base64 text in YAML
    "datetime": lambda v: isinstance(v, (str, datetime.datetime)),
    "date": lambda v: isinstance(v, (str, datetime.date)),
    "object": lambda v: True,  # int-or-string fields (probe ports, ...) and free-form ones
}

FAILED = object()  # what checking returns for a value with a problem below it


def load_schema():
    """kserve.models and kubernetes.client.models. `import kserve` would run kserve/__init__.py,
    which loads the whole model server (FastAPI, grpcio, ...), none of it installed: an empty
    module with the package's folder as its path stands in for it, so that only kserve.models
    and what it imports (kserve.configuration, six, urllib3) are loaded."""
    spec = importlib.util.find_spec("kserve")
    if spec is None:
        raise ImportError("no kserve package")
    package = types.ModuleType("kserve")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["kserve"] = package
    import kserve.models
    import kubernetes.client.models
    return kserve.models, kubernetes.client.models


try:
    import yaml
    KSERVE, K8S = load_schema()
except ImportError as err:
    if (VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(VENV / "bin" / "python", [str(VENV / "bin" / "python"), *sys.argv])
    sys.exit(f"validate_kserve: {err}; run scripts/setup_validators.sh first")


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader, except that a key given twice in one mapping is an error rather than
    silently overridden by the second."""


def _mapping_without_duplicates(loader, node):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                _mapping_without_duplicates)


def join(path, key):
    return f"{path}.{key}" if path else str(key)


def describe(value):
    return f"{type(value).__name__} {value!r}"


class Checker:
    def __init__(self):
        self.problems = []  # (path, message)

    def fail(self, path, message):
        self.problems.append((path or "(document)", message))
        return FAILED

    def check(self, value, typ, path):
        """The value as the generated classes take it (objects built), or FAILED."""
        typ = ALIASES.get(typ, typ)
        if m := re.fullmatch(r"[Ll]ist\[(.+)\]", typ):
            if not isinstance(value, list):
                return self.fail(path, f"expected a list, got {describe(value)}")
            items = [self.check(v, m[1], f"{path}[{i}]") for i, v in enumerate(value)]
            return FAILED if any(v is FAILED for v in items) else items
        if m := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", typ):
            if not isinstance(value, dict):
                return self.fail(path, f"expected a mapping, got {describe(value)}")
            items = {k: self.check(v, m[1] or m[2], join(path, k)) for k, v in value.items()}
            bad_keys = [self.fail(join(path, k), "key is not a string")
                        for k in value if not isinstance(k, str)]
            return FAILED if bad_keys or any(v is FAILED for v in items.values()) else items
        if typ in PRIMITIVES:
            if PRIMITIVES[typ](value):
                return value
            hint = " (quote it)" if typ == "str" and isinstance(value, (int, float)) else ""
            return self.fail(path, f"expected {typ}, got {describe(value)}{hint}")
        cls = getattr(KSERVE, typ, None) or getattr(K8S, typ, None)
        if cls is None:
            return self.fail(path, f"schema type {typ} is in neither kserve.models nor "
                                   "kubernetes.client.models: cannot check")
        return self.build(cls, value, path)

    def build(self, cls, value, path):
        """An instance of cls from the mapping `value`, or FAILED."""
        if not isinstance(value, dict):
            return self.fail(path, f"expected a mapping ({cls.__name__}), got {describe(value)}")
        python_name = {key: name for name, key in cls.attribute_map.items()}
        fields, ok = {}, True
        for key, v in value.items():
            if key not in python_name:
                near = difflib.get_close_matches(str(key), python_name, n=1)
                hint = f"; did you mean {near[0]}?" if near else ""
                self.fail(join(path, key), f"unknown field of {cls.__name__}{hint}")
                ok = False
            elif v is not None:  # an explicit null means the same as leaving the key out
                checked = self.check(v, cls.openapi_types[python_name[key]], join(path, key))
                ok = ok and checked is not FAILED
                fields[python_name[key]] = checked
        if not ok:
            return FAILED
        try:
            return cls(**fields)
        except (ValueError, TypeError) as err:
            for field, message in constructor_problems(cls, err):
                self.fail(join(path, field) if field else path, message)
            return FAILED


def constructor_problems(cls, err):
    """(JSON key or "", message) for each complaint in a constructor's error. The kserve classes
    raise ValueError("Invalid value for `x`, must not be `None`") from their setters; the
    Kubernetes client's classes are pydantic models, whose ValidationError (a ValueError)
    lists its complaints."""
    if hasattr(err, "errors"):
        for e in err.errors():
            field = str(e["loc"][0]) if e["loc"] else ""
            message = "required field missing" if e["type"] == "missing" else e["msg"]
            yield cls.attribute_map.get(field, field), message
    elif m := re.search(r"Invalid value for `(\w+)`, must not be `None`", str(err)):
        yield cls.attribute_map.get(m[1], m[1]), "required field missing"
    else:
        yield "", str(err)


def check_document(doc):
    """(kind/name, [(path, problem)]) for one YAML document."""
    if not isinstance(doc, dict):
        return "?/?", [("(document)", f"expected a mapping, got {describe(doc)}")]
    metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    label = f"{doc.get('kind', '?')}/{metadata.get('name', '?')}"
    top = TOP.get((doc.get("apiVersion"), doc.get("kind")))
    if top is None:
        known = ", ".join(f"{kind} ({api})" for api, kind in TOP)
        return label, [("kind", f"apiVersion {doc.get('apiVersion')!r} kind "
                                f"{doc.get('kind')!r} is not one of: {known}")]
    checker = Checker()
    checker.build(getattr(KSERVE, top), doc, "")
    if "name" not in metadata:
        checker.fail("metadata.name", "required field missing")
    return label, checker.problems


def check_file(path):
    """Problem lines for one file, and how many documents it holds."""
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]
    except (OSError, yaml.YAMLError) as err:
        return [f"{path}: -: -: {' '.join(str(err).split())}"], 0
    lines = [] if docs else [f"{path}: -: -: no YAML documents"]
    for doc in docs:
        label, problems = check_document(doc)
        lines += [f"{path}: {label}: {where}: {what}" for where, what in problems]
    return lines, len(docs)


def main(paths):
    if not paths:
        sys.exit("usage: python scripts/validate_kserve.py FILE.yaml...")
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
