"""Owns the schema side of the schema cross-check: validates configurations against schema/plugin-config.schema.json.

Usage: check_schema.py <schema.json> <cases.json>

cases.json is {"valid": [config, ...], "invalid": [config, ...]}, optionally with
"names": {"valid": [label, ...], "invalid": [label, ...]} to label the cases in the report.
The schema is checked first (Draft 2020-12 meta-schema, and every property has a
"description" so that editors show help); then every "valid" configuration must pass and
every "invalid" one must fail. Every mismatch is listed; the exit status is 1 if there is
any, 2 on a usage or input error, 0 otherwise.
"""

import json
import sys

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError


def described(schema, sub):
    """Whether a property schema has a "description", itself or through a local "$ref"."""
    seen = set()
    while isinstance(sub, dict) and "description" not in sub:
        ref = sub.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/") or ref in seen:
            return False
        seen.add(ref)
        sub = schema
        for part in ref[2:].split("/"):
            sub = sub.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(sub, dict) else {}
    return isinstance(sub, dict) and "description" in sub


def undescribed(schema, node=None, path="#"):
    """Paths of declared property schemas (under any "properties") without a "description"."""
    node = schema if node is None else node
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}/{key}"
            if key == "properties" and isinstance(value, dict):
                for name, sub in value.items():
                    # Booleans (`false` refuses a field in a branch) have nothing to describe.
                    if isinstance(sub, dict) and not _in_branch(path) and not described(schema, sub):
                        out.append(f"{here}/{name}")
                    out.extend(undescribed(schema, sub, f"{here}/{name}"))
            else:
                out.extend(undescribed(schema, value, here))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(undescribed(schema, value, f"{path}/{i}"))
    return out


def _in_branch(path):
    """Property schemas inside if/then/else/not/anyOf/allOf/oneOf only add constraints to a
    property described where it is declared."""
    parts = path.split("/")
    return any(p in ("if", "then", "else", "not", "anyOf", "allOf", "oneOf") for p in parts)


def label(names, kind, index):
    try:
        return f"{kind}[{index}] {names[kind][index]}"
    except (KeyError, IndexError, TypeError):
        return f"{kind}[{index}]"


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            schema = json.load(f)
        with open(argv[2], encoding="utf-8") as f:
            cases = json.load(f)
    except (OSError, ValueError) as e:
        print(f"check_schema: {e}", file=sys.stderr)
        return 2
    if not isinstance(cases, dict) or not all(
        isinstance(cases.get(k, []), list) for k in ("valid", "invalid")
    ):
        print("check_schema: cases must be {\"valid\": [...], \"invalid\": [...]}", file=sys.stderr)
        return 2

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        print(f"the schema itself is invalid: {e.message} (at {list(e.absolute_path)})")
        return 1

    mismatches = []
    for path in undescribed(schema):
        mismatches.append(f"schema: property without a description: {path}")

    validator = Draft202012Validator(schema)
    names = cases.get("names")
    valid = cases.get("valid", [])
    invalid = cases.get("invalid", [])
    for i, config in enumerate(valid):
        errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
        if errors:
            details = "; ".join(
                f"at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
            )
            mismatches.append(f"{label(names, 'valid', i)}: refused by the schema: {details}")
    for i, config in enumerate(invalid):
        if validator.is_valid(config):
            mismatches.append(
                f"{label(names, 'invalid', i)}: accepted by the schema: {json.dumps(config)}"
            )

    for m in mismatches:
        print(m)
    print(
        f"check_schema: {len(valid)} valid and {len(invalid)} invalid configurations, "
        f"{len(mismatches)} mismatch(es)"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
