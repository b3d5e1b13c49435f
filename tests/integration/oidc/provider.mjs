// A real OpenID Provider for hoopgw's identity integration test.
//
// Usage: node provider.mjs PORT   (0: any free port)
//
// Serves oidc-provider on http://127.0.0.1:PORT with one confidential client
// ("hoopgw-test" / "hoopgw-test-secret") allowed the client_credentials
// grant.  Asking for the resource indicator "urn:hoopgw" yields an RFC 9068
// JWT access token (RS256, typ at+jwt) whose audience is "hoopgw" and which
// carries a "groups" claim.  Prints "listening <issuer>" once it accepts
// connections; the test waits for that line.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const port = Number.parseInt(process.argv[2] ?? '', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`usage: node provider.mjs PORT (got ${JSON.stringify(process.argv[2])})`);
  process.exit(2);
}

// A fresh signing key per run: the test must find it through discovery and
// the JWKS, never by being told.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

function makeProvider(issuer) {
  return new Provider(issuer, {
  clients: [{
    client_id: 'hoopgw-test',
    client_secret: 'hoopgw-test-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signingKey] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => 'urn:hoopgw',
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== 'urn:hoopgw') {
          throw new Provider.errors.InvalidTarget();
        }
        return {
          scope: 'gateway',
          audience: 'hoopgw',
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  extraTokenClaims: async () => ({ groups: ['dba', 'dev'] }),
  ttl: { ClientCredentials: 300 },
  // Throw-away cookie keys: this provider serves no browser sessions.
  cookies: { keys: [randomBytes(32).toString('hex')] },
  });
}

// Listen first, so that port 0 works: the issuer URL needs the real port.
const server = createServer();
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = makeProvider(issuer);
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());
  console.log(`listening ${issuer}`);
});
server.on('error', (err) => {
  console.error(`cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
