"""kubechain.dev/v1alpha2: v1alpha1 with the LLM's options grouped (endpoint, credentials, parameters).

Served next to v1alpha1, which stays the storage version (see kubechain/api/conversion.py). Every other
kind has the same schema in both versions.
"""
from kubechain.api.v1alpha1 import KINDS as V1ALPHA1_KINDS

from . import llm

VERSION = "v1alpha2"
KINDS = tuple(llm.KIND if k.kind == "LLM" else k for k in V1ALPHA1_KINDS)
