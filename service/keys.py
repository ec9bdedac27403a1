"""The API keys a server accepts, and their rotation without a restart.

API_KEY_FILE may hold several keys (one per line): add the new key, move clients over, remove
the old one, sending SIGHUP after each edit. A file that cannot be read or holds no valid key
keeps the keys in use, with a log line saying why.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from service.settings import SettingsError, read_key_file

log = logging.getLogger("service")


class KeyRing:
    def __init__(self, keys: tuple[bytes, ...] | None, source: Path | None) -> None:
        self._keys = keys
        self.source = source  # the key file, when keys come from one and can be reloaded

    @property
    def required(self) -> bool:
        return self._keys is not None

    def accepts(self, offered: bytes) -> bool:
        """Compared in constant time against every key, whichever matches (if any)."""
        matched = False
        for key in self._keys or ():
            matched |= hmac.compare_digest(offered, key)
        return matched

    def reload(self) -> None:
        if self.source is None:
            log.info("SIGHUP: no API_KEY_FILE to reload")
            return
        try:
            keys = read_key_file(self.source)
        except SettingsError as exc:
            kept = len(self._keys or ())
            log.error("api keys not reloaded", extra={"reason": str(exc), "keys_kept": kept})
            return
        self._keys = keys
        log.info("api keys reloaded", extra={"keys": len(keys), "path": str(self.source)})
