// A real OAuth 2.0 authorization server for the inbound OAuth tests: oidc-provider (OpenID
// Certified) on loopback, issuing client_credentials access tokens as signed JWTs (RFC 9068)
// for one resource, our service. Usage: node server.mjs PORT CONFIG.json
//
// CONFIG: {"issuer", "audience", "jwks": {"keys": [private JWK]}, "scopes": [...],
//          "ttl": seconds, "clients": [{"client_id", "client_secret", "scope", "patient"?}]}
// A client with "patient" gets that patient id as the token's "patient" claim (SMART's
// launch context).
import fs from 'node:fs';
import Provider from 'oidc-provider';

const [, , port, configFile] = process.argv;
const cfg = JSON.parse(fs.readFileSync(configFile, 'utf8'));
const patients = Object.fromEntries(
  cfg.clients.filter((c) => c.patient).map((c) => [c.client_id, c.patient]));

const provider = new Provider(cfg.issuer, {
  clients: cfg.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: c.scope,
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  jwks: cfg.jwks,
  scopes: cfg.scopes,
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => cfg.audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: cfg.scopes.join(' '),
        audience: resource,
        accessTokenFormat: 'jwt',
        accessTokenTTL: cfg.ttl,
        jwt: { sign: { alg: cfg.jwks.keys[0].alg } },
      }),
    },
  },
  extraTokenClaims: (ctx, token) => (
    patients[token.clientId] ? { patient: patients[token.clientId] } : undefined),
});
provider.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(`listening ${port}\n`);
});
