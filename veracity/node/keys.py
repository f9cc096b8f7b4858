"""A node's signing key, and the files that hold keys.

A daemon's config names its key directly (``key``: a devnet's, or a test's), or an encrypted
keystore file in the standard Ethereum format (``keystore``: what geth, ``cast wallet`` and
``eth_account.Account.encrypt`` write), decrypted at start with the passphrase in the environment
variable ``keystore_password_env`` (``VERACITY_KEYSTORE_PASSWORD`` unless it names another).
Files that hold keys in the clear (a daemon's config, a devnet's deployment) are written readable
by their owner only (``chain.devnet.write_private``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, model_validator

PASSWORD_ENV = "VERACITY_KEYSTORE_PASSWORD"


def keystore_key(path: Path, password_env: str = PASSWORD_ENV) -> str:
    """The private key (0x hex) in an Ethereum keystore file, decrypted with the passphrase in the
    environment variable ``password_env``. ValueError says what is wrong, in one line."""
    from eth_account import Account

    try:
        keyfile = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"the keystore {path} cannot be read ({exc.strerror})") from None
    except ValueError:
        raise ValueError(f"the keystore {path} is not JSON (an Ethereum keystore file)") from None
    password = os.environ.get(password_env)
    if password is None:
        raise ValueError(f"set {password_env} to the keystore's passphrase")
    try:
        return "0x" + bytes(Account.decrypt(keyfile, password)).hex()
    except ValueError as exc:
        reason = "wrong passphrase" if "MAC mismatch" in str(exc) else str(exc)
        raise ValueError(f"the keystore {path} cannot be decrypted: {reason}") from None
    except (KeyError, TypeError):
        raise ValueError(f"the keystore {path} is not an Ethereum keystore file") from None


class KeyedConfig(BaseModel):
    """A daemon config's key: ``key`` itself, or read from ``keystore`` when that is set."""

    key: str = ""
    keystore: str | None = None
    keystore_password_env: str = PASSWORD_ENV

    @model_validator(mode="before")
    @classmethod
    def names_a_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("key") and not data.get("keystore"):
            raise ValueError("a node needs its key: set key, or keystore (an encrypted Ethereum keystore file)")
        return data

    @model_validator(mode="after")
    def key_from_keystore(self) -> "KeyedConfig":
        if self.keystore is not None:
            self.key = keystore_key(Path(self.keystore), self.keystore_password_env)
        return self
