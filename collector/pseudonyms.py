"""Agent pseudonyms: the keyed names exports, the analysis' agent sets and the dashboard
show instead of agent ids (the key is the store's ``PSEUDONYM_SECRET``)."""

from __future__ import annotations

import hashlib
import hmac


def agent_pseudonym(key: bytes, agent_id: str) -> str:
    """A stable pseudonym for an agent in exports: HMAC-SHA256, 16 hex characters."""
    return hmac.new(key, agent_id.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
