"""Moved to ``service.contract`` (the one training/serving contract module).

Re-exported so code written against the old path keeps importing; new code
imports ``service.contract``.
"""

from service.contract import (  # noqa: F401
    BUNDLE_FORMAT_VERSION,
    CAT_INPUT,
    CURRENT_POINTER,
    MISSING_TOKEN,
    NUM_INPUT,
    OOV_ID,
    PROB_OUTPUT,
    VERSION_PATTERN,
    BundleSchema,
    FieldKind,
    FieldSchema,
    atomic_write_text,
    canonical_value,
    list_versions,
    load_schema,
    load_vocab,
    read_current,
    resolve_current,
    write_current,
)
