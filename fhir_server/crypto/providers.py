"""Which `KeyProvider` holds the key-encryption keys: the setting `key_provider` chooses, and
nothing else in the server knows (the stores see a codec, datakeys.db a provider)."""

from __future__ import annotations

from ..settings import Settings
from .keyring import KeyProvider, KeyRingError, LocalKeyRing, create_key_ring


def open_provider(settings: Settings, create: bool = False) -> KeyProvider:
    """The provider `settings` name, checked (KeyRingError if unusable); `create`: make its
    keys first (`keys init`), refusing to replace existing ones."""
    if settings.key_provider == "local":
        if create:
            create_key_ring(settings.key_ring_path)
        return LocalKeyRing(settings.key_ring_path)
    if settings.pkcs11_module is None or not settings.pkcs11_token or settings.pkcs11_pin_file is None:
        raise KeyRingError("key_provider pkcs11 needs FHIR_SERVER_PKCS11_MODULE, "
                           "FHIR_SERVER_PKCS11_TOKEN and FHIR_SERVER_PKCS11_PIN_FILE")
    try:
        from .hsm import Pkcs11KeyRing  # the optional `hsm` dependency, only when chosen
    except ImportError:
        raise KeyRingError("key_provider pkcs11 needs python-pkcs11: "
                           "pip install 'fhir-server[hsm]'") from None
    return Pkcs11KeyRing(settings.pkcs11_module, settings.pkcs11_token, settings.pkcs11_pin_file,
                         create=create)
