"""Who may see what: principals (people, hospital systems, patients), their roles, the credentials they prove
themselves with, and the treatment relationship that lets a clinician read a patient's results.

Rules: docs/rules.md, "Who may see what". Nothing here is home-made cryptography: passwords are Argon2id
(argon2-cffi), second factors RFC 6238 TOTP (pyotp), tokens and secrets come from :mod:`secrets` and are kept
as SHA-256 digests.
"""
