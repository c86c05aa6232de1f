// Claims of the JWTs Kratos' session tokenizer mints for ProManage
// (GET /sessions/whoami?tokenize_as=promanage). Kratos sets iss (its public
// base URL), sub (the identity id), sid, exp, nbf, iat and jti; ProManage
// checks aud and reads the profile claims below.
local claims = std.extVar('claims');
local session = std.extVar('session');
local traits = session.identity.traits;
{
  claims: claims {
    aud: ['promanage'],
    email: if std.objectHas(traits, 'email') then traits.email else '',
    name: if std.objectHas(traits, 'name') && std.isString(traits.name) then traits.name else '',
    identity_updated_at: session.identity.updated_at,
  },
}
