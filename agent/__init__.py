"""ml-intern: an LLM agent core with HF Dataset telemetry and opt-in LangFuse forwarding."""

from __future__ import annotations

import os

# litellm fetches its model cost map from the internet at import and retries for ~10 s when
# offline. Use the copy it ships unless the user chose otherwise. This must run before any
# module imports litellm, hence here.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"
