"""Schemathesis checks of ours for the contract test (tests/contract.rs).

A JSON Schema cannot say that a base64 string decodes to a JPEG, that a string shaped like a
URL is one, nor that a KServe tensor's shape agrees with its data. Schema-valid requests may be refused for those reasons alone, and
for nothing else: every other rule is in the document.
"""

import schemathesis

# The only refusals a schema-valid request may get: its content, not its form. A string the
# schema's pattern takes for an image URL may still be no URL (a host name with control
# characters), as base64 may be no image.
CONTENT_ONLY = {
    "invalid_image",
    "unsupported_image",
    "image_too_large",
    "invalid_inference_request",
    "invalid_image_url",
}


@schemathesis.check
def refused_only_for_content(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 413, 415, 422):
        return None
    try:
        kind = response.json().get("error_type")
    except Exception:  # noqa: BLE001 - any unreadable body is itself the failure
        kind = None
    # KServe's binary extension: a JSON header then raw tensors, split where the
    # Inference-Header-Content-Length header says; random bytes are no such header.
    binary = case.media_type == "application/octet-stream" and kind == "invalid_json"
    if kind not in CONTENT_ONLY and not binary:
        raise AssertionError(
            f"a schema-valid request was refused with {response.status_code} {kind!r}: "
            "the document does not say this rule"
        )
    return None


@schemathesis.check
def requests_outside_the_schema_are_refused(ctx, response, case):
    """negative_data_rejection where a wrong value can be sent at all (see schemathesis.toml):
    a JSON body or a path parameter outside the schema must not get a 2xx."""
    meta = case.meta
    if meta is None or meta.generation.mode.is_positive:
        return None
    negative = {
        str(location).lower().rsplit(".", 1)[-1]
        for location, info in meta.components.items()
        if not info.mode.is_positive
    }
    json_body = "body" in negative and case.media_type == "application/json"
    if (json_body or "path" in negative) and 200 <= response.status_code < 300:
        raise AssertionError(
            f"a request outside the schema ({', '.join(sorted(negative))}) was accepted "
            f"with {response.status_code}"
        )
    return None
