-- Plugin webhook signing secrets are encrypted at rest: signing_secret holds
-- "v1:<base64(nonce|ciphertext)>", AES-256-GCM under a key derived from
-- PROMANAGE_SECRET_KEY, with the plugin id as additional authenticated data
-- (plugins/secret.go). SQL has no key, so rows written before this change
-- ("whsec_..." in clear) are encrypted by the server: on first use, and by
-- the worker at start. The constraint admits only those two forms.
ALTER TABLE plugins ADD CONSTRAINT plugins_signing_secret_format
    CHECK (signing_secret LIKE 'v1:%' OR signing_secret LIKE 'whsec\_%');
COMMENT ON COLUMN plugins.signing_secret IS
    'webhook HMAC key: v1:<base64(nonce|ciphertext)> (AES-256-GCM, key from PROMANAGE_SECRET_KEY, AAD plugin id); whsec_... only in rows from before encryption, upgraded by the server';
