"""Ingress settings shared by the endpoint tests: an OIDC provider with its endpoints spelt out."""

from __future__ import annotations

OIDC_SECRET_KEY = "gpu-inference:ingressOidcClientSecret"
OIDC = {
    "issuer": "https://login.example.com",
    "authorizationEndpoint": "https://login.example.com/authorize",
    "tokenEndpoint": "https://login.example.com/token",
    "userInfoEndpoint": "https://login.example.com/userinfo",
    "clientId": "gpuinf",
    "clientSecret": OIDC_SECRET_KEY.split(":", 1)[1],
}
