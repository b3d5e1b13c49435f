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
  }, {
    // `hoopgw login`: a public native client (RFC 8252: any loopback port),
    // authorization code with PKCE, the device flow, refresh tokens.
    client_id: 'hoopgw-cli',
    application_type: 'native',
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
    token_endpoint_auth_method: 'none',
  }],
  // Any login name and password is accepted: the account is the name typed.
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  scopes: ['openid', 'offline_access'],
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token'),
  pkce: { required: () => true },
  jwks: { keys: [signingKey] },
  features: {
    // Its built-in login and consent pages, driven by the tests' scripted browser.
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
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
  ttl: { ClientCredentials: 300, AccessToken: 300, DeviceCode: 300, RefreshToken: 3600 },
  // Throw-away cookie keys: the sessions of a test run.
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
