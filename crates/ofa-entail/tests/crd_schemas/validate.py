"""Validates custom resources against the schemas beside this file, strictly: as
`kubectl apply --validate=strict` would, a field the schema does not name is an error (except
under x-kubernetes-preserve-unknown-fields). Reads a multi-document YAML file; prints one line
per resource; exits 1 on the first invalid one or on a kind with no schema here.
"""

import json
import pathlib
import sys

import jsonschema
import yaml

HERE = pathlib.Path(__file__).parent


def strict(schema):
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    return schema


def schemas():
    found = {}
    for f in HERE.glob("*.json"):
        doc = json.loads(f.read_text())
        s = strict(doc["openAPIV3Schema"])
        # metadata is ObjectMeta, checked by the API server: open here.
        s["properties"]["metadata"] = {"type": "object"}
        found[(f"{doc['group']}/{doc['version']}", doc["kind"])] = s
    return found


def main(path):
    known = schemas()
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        schema = known.get(key)
        if schema is None:
            print(f"no schema for {key}", file=sys.stderr)
            return 1
        try:
            jsonschema.validate(doc, schema, cls=jsonschema.Draft7Validator)
        except jsonschema.ValidationError as e:
            where = "/".join(str(p) for p in e.absolute_path)
            print(f"{doc['kind']} {doc['metadata'].get('name')}: {where}: {e.message}", file=sys.stderr)
            return 1
        print(f"valid {doc['kind']} {doc['metadata'].get('name')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
